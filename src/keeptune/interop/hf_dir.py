"""Hugging Face model directories tensor by tensor: read from their safetensors, written in shards.

Import writes a model with `ShardWriter` and export reads one with `model_weights`, so that
memory holds one shard (import) or one tensor (export), never the whole model. `cast` is the
dtype change both directions apply when asked for one: floating-point tensors only.
"""
from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

SHARD_BYTES = 2 * 1024 ** 3
ADAPTER_WEIGHTS = "adapter_model.safetensors"


def cast(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    """`tensor` in `dtype` when it is floating-point and a dtype is given; else as it is."""
    return tensor if dtype is None or not tensor.is_floating_point() else tensor.to(dtype)


def model_weights(folder: Path) -> Iterator[tuple[str, torch.Tensor]]:
    """(name, tensor) of a Hugging Face model directory's safetensors, one tensor in memory at a time."""
    for file in sorted(folder.glob("*.safetensors")):
        with safe_open(file, framework="pt") as handle:
            for name in handle.keys():
                yield name, handle.get_tensor(name)


class ShardWriter:
    """Writes a Hugging Face safetensors model in shards of about SHARD_BYTES, holding one shard in memory."""

    def __init__(self, folder: Path):
        self.folder, self.pending, self.pending_bytes = folder, {}, 0
        self.files: list[tuple[str, list[str]]] = []
        self.total = 0

    def add(self, name: str, tensor: torch.Tensor) -> None:
        self.pending[name] = tensor.contiguous()
        self.pending_bytes += tensor.numel() * tensor.element_size()
        if self.pending_bytes >= SHARD_BYTES:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        name = f".shard-{len(self.files) + 1:05d}.tmp"
        save_file(self.pending, self.folder / name, metadata={"format": "pt"})
        self.files.append((name, list(self.pending)))
        self.total += self.pending_bytes
        self.pending, self.pending_bytes = {}, 0

    def close(self) -> None:
        """Name the shards as save_pretrained does (model.safetensors, or model-0000i-of-0000n + index)."""
        self.flush()
        count = len(self.files)
        weight_map = {}
        for i, (tmp, names) in enumerate(self.files, start=1):
            final = "model.safetensors" if count == 1 else f"model-{i:05d}-of-{count:05d}.safetensors"
            os.replace(self.folder / tmp, self.folder / final)
            weight_map.update(dict.fromkeys(names, final))
        if count > 1:
            index = {"metadata": {"total_size": self.total}, "weight_map": dict(sorted(weight_map.items()))}
            (self.folder / "model.safetensors.index.json").write_text(json.dumps(index, indent=2) + "\n")
