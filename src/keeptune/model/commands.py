"""`keeptune merge`: a LoRA adapter merged into its base model, one typed function."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Optional

from keeptune.core.errors import ModelLoadError
from keeptune.core.io import atomic_write_json, unwritable, writing_to
from keeptune.core.outputs import claim_output, publish_dir, staging_dir
from keeptune.model.adapter import adapter_info
from keeptune.model.load import load_model


def merge(adapter: Path, out: Optional[Path] = None, model: Optional[str] = None, dtype: str = "float32",
          overwrite: bool = False) -> Path:
    """Merge a LoRA adapter into its base model and save full weights (safetensors, config, tokenizer).

    The result loads with AutoModelForCausalLM.from_pretrained and evaluates
    like any model directory; keeptune.json (training prompt and format) is
    copied beside it. An existing output directory is replaced only when an
    earlier `keeptune merge` made it and nothing else was put in it since.

    Args:
        adapter: adapter directory (RUN/adapter or RUN/checkpoints/step-N).
        out: output directory; default: ADAPTER-merged. Never the adapter's or the base model's folder.
        model: base model; default: the one recorded in the adapter's keeptune.json.
        dtype: dtype of the merged weights: float32, bfloat16 or float16.
        overwrite: write into an existing directory keeptune did not make; its
            files of the same names are replaced, other files are left alone.
    """
    from peft import PeftModel


    adapter = Path(adapter)
    info = adapter_info(adapter)
    source = model if model is not None else info.get("base_model")
    out = Path(out) if out is not None else adapter.with_name(adapter.name + "-merged")
    inputs = (adapter, source)
    own = claim_output(out, "merge", overwrite, inputs=inputs)  # before minutes of loading: is `out` ours?
    base, tokenizer = load_model(source, dtype=dtype, device="cpu")
    try:
        merged = PeftModel.from_pretrained(base, adapter).merge_and_unload()
    except Exception as err:  # a broken or mismatched adapter: safetensors, shape or key errors
        raise ModelLoadError(f"{adapter}: cannot apply this adapter to {source or 'the embedded default model'}: "
                             f"{type(err).__name__}: {err}") from None
    target = Path(os.path.abspath(out))
    try:
        with writing_to(out):  # a full disk, whoever writes (safetensors raises its own error)
            tmp = staging_dir(target)
            merged.save_pretrained(tmp, safe_serialization=True)
            tokenizer.save_pretrained(tmp)
            if info:
                atomic_write_json(tmp / "keeptune.json", {**info, "merged_from": str(adapter)})
            publish_dir(tmp, target, "merge", own)  # --overwrite of a foreign folder: our names only, the rest stays
    except OSError as err:
        raise unwritable(out, err) from None
    print(f"keeptune: merged {adapter} into {source or 'the embedded default model'}: {out}")
    return out
