"""`keeptune train` and `keeptune merge`: one typed function per command.

`keeptune train` takes `key=value` words, which jsonargparse does not parse, so
the CLI hands its arguments to `main` (argparse) before jsonargparse sees them.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional

from keeptune.io import atomic_write_json
from keeptune.model.load import ModelLoadError, load_model
from keeptune.train.config import Config, load_config, parse_words

TRAIN_USAGE = """\
examples:
  keeptune train configs/smollm2-135m/lora.yaml
  keeptune train configs/smollm2-135m/lora.yaml train.lr=1e-3 lora.rank=16 out=runs/train/r16
  keeptune train configs/smollm2-135m/lora.yaml --resume      # after an interruption
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

    settings = load_config(config, overrides or [])
    if resume:
        settings = dataclasses.replace(settings, resume=True)
    return run_training(settings).adapter


def main(argv: list[str]) -> None:
    """`keeptune train [CONFIG] [key=value ...] [--resume]`."""
    config, overrides, resume = parse_words(argv, "keeptune train", train.__doc__.split("\n\n")[0], TRAIN_USAGE, Config)
    train(config, overrides, resume)


def merge(adapter: Path, out: Optional[Path] = None, model: Optional[str] = None, dtype: str = "float32") -> Path:
    """Merge a LoRA adapter into its base model and save full weights (safetensors, config, tokenizer).

    The result loads with AutoModelForCausalLM.from_pretrained and evaluates
    like any model directory; keeptune.json (training prompt and format) is
    copied beside it.

    Args:
        adapter: adapter directory (RUN/adapter or RUN/checkpoints/step-N).
        out: output directory; default: ADAPTER-merged.
        model: base model; default: the one recorded in the adapter's keeptune.json.
        dtype: dtype of the merged weights: float32, bfloat16 or float16.
    """
    from peft import PeftModel

    from keeptune.train.checkpoint import replace_dir, staging_dir

    adapter = Path(adapter)
    if not (adapter / "adapter_config.json").is_file():
        raise ModelLoadError(f"{adapter} is not a PEFT adapter directory: it has no adapter_config.json")
    record = adapter / "keeptune.json"
    info = json.loads(record.read_text(encoding="utf-8")) if record.is_file() else {}
    source = model if model is not None else info.get("base_model")
    out = Path(out) if out is not None else adapter.with_name(adapter.name + "-merged")
    base, tokenizer = load_model(source, dtype=dtype, device="cpu")
    merged = PeftModel.from_pretrained(base, adapter).merge_and_unload()
    tmp = staging_dir(out)
    merged.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    if info:
        atomic_write_json(tmp / "keeptune.json", {**info, "merged_from": str(adapter)})
    replace_dir(tmp, out)
    print(f"keeptune: merged {adapter} into {source or 'the embedded default model'}: {out}")
    return out
