"""`keeptune train` and `keeptune merge`: one typed function per command.

`keeptune train` takes `key=value` words, which jsonargparse does not parse, so
the CLI hands its arguments to `main` (argparse) before jsonargparse sees them.
"""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Optional

from keeptune.io import atomic_write_json, unwritable
from keeptune.model.load import ModelLoadError, load_model
from keeptune.train.config import Config, load_config, parse_words

TRAIN_USAGE = """\
examples:
  keeptune train configs/smollm2-135m/lora.yaml
  keeptune train configs/smollm2-135m/lora.yaml train.lr=1e-3 lora.rank=16 out=runs/train/r16
  keeptune train configs/smollm2-135m/lora.yaml --resume      # after an interruption
  keeptune train configs/smollm2-135m/lora.yaml out=DIR --overwrite   # DIR exists but keeptune did not make it
  torchrun --nproc_per_node 2 -m keeptune train configs/llama3-8b/lora.yaml
"""


def train(config: Optional[Path] = None, overrides: Optional[list[str]] = None, resume: bool = False) -> Path:
    """Fine-tune a model with LoRA; returns the directory of the final adapter.

    Prints the parameter group and the exact trainable/total ratio, trains with
    a progress bar, logs loss and learning rate to RUN/log.jsonl and TensorBoard,
    writes evenly spaced checkpoints and RUN/adapter.

    Args:
        config: YAML config file (e.g. configs/smollm2-135m/lora.yaml); default: its values on the embedded model.
        overrides: `section.field=value` words applied on top, e.g. train.lr=1e-3 lora.rank=16.
        resume: continue from the last complete checkpoint in the run directory.
    """
    from keeptune.train.loop import train as run_training
    from keeptune.train.retention import check_training

    settings = load_config(config, overrides or [])
    check_training(settings.retention, origin(config, overrides or [], "retention.methods"))  # replay, scale
    if resume:
        settings = dataclasses.replace(settings, resume=True)
    return run_training(settings).adapter


def origin(config: Optional[Path], overrides: list[str], key: str) -> str:
    """Where `key` was set: the last override naming it, else its line in the config file, else defaults."""
    for word in reversed(overrides):
        if word.partition("=")[0].strip() == key:
            return f"override {word!r}"
    if config is not None:
        from keeptune.train.config import read_yaml

        return read_yaml(Path(config))[1].get(key, str(config))
    return "defaults"


def main(argv: list[str]) -> None:
    """`keeptune train [CONFIG] [key=value ...] [--resume]`."""
    config, overrides, resume = parse_words(argv, "keeptune train", train.__doc__.split("\n\n")[0], TRAIN_USAGE, Config,
                                            overwrite=True)
    train(config, overrides, resume)


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

    from keeptune.train.checkpoint import adapter_info, claim_output, publish_dir, staging_dir

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
