"""Evaluation shared by every torchrun rank: each evaluates its share of the samples on its own copy of
the model, and the records come together.

Sharding is opt-in: only inside `sharded()` (and with the process group initialized) does `rank_world()`
report the real rank and world size; outside it every function below is the single-process identity
(`share` returns every item, `gather` its own records), so a rank that evaluates alone (a single process,
or rank 0 preparing data while the others wait) never enters a collective the others do not.

    with shard.sharded():                       # every rank, around the same evaluation
        mine = shard.share(items)               # this rank's items: items[rank::world]
        records = [score(item) for item in mine]
        every = shard.gather(records)           # every rank's records, on every rank, in rank order

Records travel as JSON (UTF-8 bytes in a uint8 tensor: sizes all-gathered, then the bytes padded to the
longest), never as pickles; gloo carries them on a CPU, nccl on a GPU (the backend the group was made with).
`lead(fn)` runs a step on rank 0 alone (writing files, checking a folder) and hands its JSON result, or its
error, to every rank, so that no rank waits forever on a rank 0 that failed.
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import os
from collections.abc import Callable, Iterator, Sequence
from typing import Any, TypeVar

import torch
import torch.distributed as dist

from keeptune.core.errors import DataError

T = TypeVar("T")

_SHARDED = contextvars.ContextVar("keeptune_sharded", default=False)


class RankFailed(DataError):
    """Raised on every rank but 0 when rank 0 failed a `lead` step; `kind` is its error's class name."""

    def __init__(self, message: str, kind: str):
        super().__init__(message)
        self.kind = kind


@contextlib.contextmanager
def sharded() -> Iterator[None]:
    """Evaluations in the body are shared among the ranks of the process group (when there is one).
    Every rank must enter it around the same calls."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1 and not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("sharded evaluation under torchrun needs the process group: initialize it first "
                           "(keeptune.train.distributed.setup)")
    token = _SHARDED.set(True)
    try:
        yield
    finally:
        _SHARDED.reset(token)


def rank_world() -> tuple[int, int]:
    """(rank, world size) inside `sharded()` with the group up; (0, 1) everywhere else."""
    if not _SHARDED.get() or not (dist.is_available() and dist.is_initialized()):
        return 0, 1
    return dist.get_rank(), dist.get_world_size()


def share(items: Sequence[T]) -> list[T]:
    """This rank's items: every world-th one from its rank (items[rank::world]); deterministic, so the
    ranks' shares are disjoint and cover the items. Items sorted by cost (longest prompt first) give each
    rank the same mix of long and short ones."""
    rank, world = rank_world()
    return list(items[rank::world])


def barrier() -> None:
    """Wait for every rank (nothing in a single process)."""
    if rank_world()[1] > 1:
        dist.barrier()


def gather(records: list[Any]) -> list[Any]:
    """Every rank's JSON-able records on every rank, concatenated in rank order (rank 0's first). Records
    are not reordered: give each an id or index to put them back in the order the caller needs."""
    if rank_world()[1] == 1:
        return list(records)
    return [record for part in _all_gather_bytes(_encode(records)) for record in json.loads(part)]


def broadcast(value: Any) -> Any:
    """Rank 0's JSON-able `value` on every rank (the other ranks' arguments are ignored)."""
    rank, world = rank_world()
    if world == 1:
        return value
    device = _device()
    data = _encode(value) if rank == 0 else b""
    size = torch.tensor([len(data)], dtype=torch.int64, device=device)
    dist.broadcast(size, src=0)
    buffer = _tensor(data, int(size.item()), device)
    dist.broadcast(buffer, src=0)
    return json.loads(_bytes(buffer, int(size.item())))


def lead(step: Callable[[], Any]) -> Any:
    """`step()` on rank 0 alone; its JSON-able result on every rank. When it raises, rank 0 raises its
    error and every other rank raises RankFailed with the same message (its `kind`: the error's class name)."""
    rank, world = rank_world()
    if world == 1:
        return step()
    if rank == 0:
        try:
            result = step()
        except BaseException as err:
            broadcast({"error": str(err), "kind": type(err).__name__})
            raise
        return broadcast({"result": result})["result"]
    outcome = broadcast(None)
    if "error" in outcome:
        raise RankFailed(f"rank 0: {outcome['error']}", outcome["kind"])
    return outcome["result"]


# --- bytes in tensors ------------------------------------------------------------------------

def _device() -> torch.device:
    """Where the backend takes tensors: the current GPU for nccl, the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _encode(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode("utf-8")


def _tensor(data: bytes, length: int, device: torch.device) -> torch.Tensor:
    """`data` in a uint8 tensor of `length` (at least 1) bytes, zero-padded."""
    buffer = torch.zeros(max(length, 1), dtype=torch.uint8)
    if data:
        buffer[:len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    return buffer.to(device)


def _bytes(buffer: torch.Tensor, length: int) -> bytes:
    return buffer[:length].cpu().numpy().tobytes()


def _all_gather_bytes(data: bytes) -> list[bytes]:
    """Every rank's bytes, in rank order: the sizes first, then the bytes padded to the longest."""
    world, device = dist.get_world_size(), _device()
    size = torch.tensor([len(data)], dtype=torch.int64, device=device)
    sizes = [torch.zeros_like(size) for _ in range(world)]
    dist.all_gather(sizes, size)
    lengths = [int(s.item()) for s in sizes]
    longest = max(max(lengths), 1)
    parts = [torch.zeros(longest, dtype=torch.uint8, device=device) for _ in range(world)]
    dist.all_gather(parts, _tensor(data, longest, device))
    return [_bytes(part, length) for part, length in zip(parts, lengths)]
