"""More than one device through PyTorch's own engine.

`torchrun --nproc_per_node K keeptune train ...` starts K processes; each reads
RANK, WORLD_SIZE and LOCAL_RANK from the environment and joins the process
group (nccl on GPU, gloo on CPU). The model is wrapped in
DistributedDataParallel (a copy per device, gradients averaged) or sharded with
FSDP2 (`fully_shard` on every decoder layer and the root) for a model that does
not fit one device. A single process without torchrun uses neither.

Whoever joins the group first owns it: `keeptune run` joins at its start, so
that its evaluations before and after training (sharded over the ranks, see
keeptune.evaluate.shard) share the group training uses, and training's own
`cleanup` leaves it in place.
"""
from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from keeptune.model.load import resolve_device


@dataclass(frozen=True)
class Dist:
    """This process's place among the training processes."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    owner: bool = False  # this setup() made the process group: its cleanup() destroys it

    @property
    def main(self) -> bool:
        return self.rank == 0


def rank_and_world() -> tuple[int, int]:
    """(rank, world size) as torchrun sets them (RANK, WORLD_SIZE); (0, 1) in a single process."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


def setup(device: str = "auto", backend: str = "auto") -> Dist:
    """Join the process group when started by torchrun (WORLD_SIZE > 1)."""
    rank, world = rank_and_world()
    dev = resolve_device(device)
    if world == 1:
        return Dist(device=dev)
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dev.type == "cuda":
        dev = torch.device("cuda", local_rank)
        torch.cuda.set_device(dev)
    owner = not dist.is_initialized()
    if owner:
        dist.init_process_group(("nccl" if dev.type == "cuda" else "gloo") if backend == "auto" else backend)
    return Dist(rank, world, local_rank, dev, owner)


def cleanup(d: Dist) -> None:
    """Leave the process group, when this `d`'s setup joined it."""
    if d.owner and dist.is_initialized():
        dist.destroy_process_group()


def barrier(d: Dist) -> None:
    if d.world > 1:
        dist.barrier()


def all_reduce_sum(d: Dist, values: list[float]) -> list[float]:
    """Element-wise sum over ranks (float64)."""
    if d.world == 1:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=d.device)
    dist.all_reduce(tensor)
    return tensor.tolist()


def wrap(model: torch.nn.Module, d: Dist, strategy: str, bf16: bool) -> torch.nn.Module:
    """DDP or FSDP2 around the (PEFT) model; the model itself in a single process."""
    if d.world == 1:
        return model
    if strategy == "ddp":
        return DistributedDataParallel(model, device_ids=[d.device.index] if d.device.type == "cuda" else None)
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard  # about 0.6 s: only when sharding

    # bf16 base weights and float32 LoRA weights share a layer: all-gather both as bf16.
    policy = MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16 \
        else MixedPrecisionPolicy()
    base = model.get_base_model()
    layer_classes = set(getattr(base, "_no_split_modules", None) or [])
    for module in base.modules():
        if type(module).__name__ in layer_classes:
            fully_shard(module, mp_policy=policy)
    fully_shard(model, mp_policy=policy)
    return model


def gradient_sync(model: torch.nn.Module, enabled: bool):
    """Context in which backward all-reduces gradients only if `enabled` (the last micro-batch of a step)."""
    if isinstance(model, DistributedDataParallel) and not enabled:
        return model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(enabled)
    return contextlib.nullcontext()
