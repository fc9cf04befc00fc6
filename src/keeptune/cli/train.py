"""`keeptune train`: a typed function for the command, and its key=value entry point.

`keeptune train` takes `key=value` words, which jsonargparse does not parse, so
the CLI hands its arguments to `main` (argparse) before jsonargparse sees them.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional

from keeptune.core.config import parse_words, read_yaml
from keeptune.core.outputs import note_progress
from keeptune.retention.config import check_training
from keeptune.retention.training import train as run_training
from keeptune.train.config import Config, load_config

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
    settings = load_config(config, overrides or [])
    check_training(settings.retention, origin(config, overrides or [], "retention.methods"))  # replay, scale
    if resume:
        settings = dataclasses.replace(settings, resume=True)
    note_progress(resume="run the same command again to continue" if settings.resume else
                  "run the same command with --resume to continue from the last checkpoint")
    return run_training(settings).adapter


def origin(config: Optional[Path], overrides: list[str], key: str) -> str:
    """Where `key` was set: the last override naming it, else its line in the config file, else defaults."""
    for word in reversed(overrides):
        if word.partition("=")[0].strip() == key:
            return f"override {word!r}"
    if config is not None:
        return read_yaml(Path(config))[1].get(key, str(config))
    return "defaults"


def main(argv: list[str]) -> None:
    """`keeptune train [CONFIG] [key=value ...] [--resume]`."""
    config, overrides, resume = parse_words(argv, "keeptune train", train.__doc__.split("\n\n")[0], TRAIN_USAGE, Config,
                                            overwrite=True)
    train(config, overrides, resume)


