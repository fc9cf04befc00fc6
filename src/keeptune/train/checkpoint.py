"""Checkpoints: written atomically, read without pickle, enough to resume exactly.

RUN/checkpoints/step-000040/ holds
- adapter_config.json + adapter_model.safetensors: a PEFT adapter
  (`PeftModel.from_pretrained(base, dir)` loads it; a training method may save
  it its own way, keeptune.train.methods.Prepared.save_adapter: CorDA's is
  converted for the original base);
- keeptune.json: base model, prompt name, sequence format, seq_len, step and the
  LoRA settings, so evaluation can use the training prompt by default;
- optimizer.safetensors: AdamW's tensors; trainer_state.json: its parameter
  groups, the scheduler's state and the data position (the step: the data
  order is a function of seed, epoch and step);
- rng-rank{R}.json: every rank's torch (CPU, CUDA) and Python random states.

It is written into RUN/checkpoints/.step-000040.tmp and renamed in one
`os.replace`, so a directory named step-N is complete: a kill -9 at any moment
leaves the previous checkpoints intact and at most a .tmp directory, which the
next start removes. Tensors are read with safetensors, everything else is JSON:
nothing is ever unpickled. State is gathered with torch.distributed's
state-dict API, so the same code serves a plain model, DDP and FSDP.
"""
from __future__ import annotations

import contextlib
import json
import random
import re
import shutil
from pathlib import Path
from typing import Callable, Optional

import torch
from safetensors.torch import load_file, save_file

from keeptune.core.io import atomic_write_json, writing_to
from keeptune.core.outputs import replace_dir, staging_dir
from keeptune.train.distributed import Dist, barrier

CHECKPOINTS = "checkpoints"
# How a checkpoint writes its adapter: (PEFT model, checkpoint folder, the adapter's gathered state dict) -> None.
SaveAdapter = Callable[[torch.nn.Module, Path, dict], None]
STEP_DIR = re.compile(r"step-(\d+)")


def checkpoint_steps(total: int, count: int) -> list[int]:
    """Steps round(k x total / count), k = 1..count, without repeats or 0; the last is `total`."""
    return sorted({round(k * total / count) for k in range(1, count + 1)} - {0})


def step_dir(run: Path, step: int) -> Path:
    return Path(run) / CHECKPOINTS / f"step-{step:06d}"


def step_of(checkpoint: Path) -> int:
    """The step of a checkpoint directory `step-000120`."""
    return int(STEP_DIR.fullmatch(Path(checkpoint).name).group(1))


def complete_checkpoints(run: Path) -> list[Path]:
    """Complete checkpoint directories of a run, by step."""
    folder = Path(run) / CHECKPOINTS
    found = [p for p in folder.iterdir() if STEP_DIR.fullmatch(p.name)] if folder.is_dir() else []
    return sorted(found, key=step_of)


def remove_partial(run: Path) -> None:
    """Delete what a killed save left behind (.tmp directories)."""
    folder = Path(run) / CHECKPOINTS
    for path in folder.glob(".*.tmp") if folder.is_dir() else []:
        shutil.rmtree(path)


def rng_state() -> dict:
    version, state, gauss = random.getstate()
    cuda = [s.tolist() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else None
    return {"torch": torch.get_rng_state().tolist(), "cuda": cuda, "python": [version, list(state), gauss]}


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if state["cuda"] is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in state["cuda"]])
    version, values, gauss = state["python"]
    random.setstate((version, tuple(values), gauss))


# torch.distributed.checkpoint.state_dict is imported where a checkpoint is written or read: it pulls in FSDP
# (about 0.6 s), which the modules that only list checkpoints (the experiment, the report) do not need.

def full_state(**options):
    """torch.distributed's state-dict options for whole tensors on CPU (gathered from the shards under FSDP)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True, **options)


def save(run: Path, step: int, model: torch.nn.Module, peft_model, optimizer, scheduler,
         info: dict, position: dict, d: Dist,
         save_adapter: Optional[SaveAdapter] = None) -> Path:
    """Write checkpoint `step` (collective: every rank calls it; rank 0 writes all but its RNG file).

    `save_adapter(peft_model, folder, state)`: how the adapter is written (keeptune.train.methods;
    default: PEFT's save_pretrained of the gathered state)."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    adapter = get_model_state_dict(model, options=full_state(ignore_frozen_params=True))
    optim = get_optimizer_state_dict(model, optimizer, options=full_state())
    target = step_dir(run, step)
    tmp = staging_dir(target) if d.main else target.with_name(f".{target.name}.tmp")
    barrier(d)
    with removed_on_error(tmp) if d.main else contextlib.nullcontext(), writing_to(target):  # the first write
        atomic_write_json(tmp / f"rng-rank{d.rank}.json", rng_state())
    barrier(d)
    if d.main:
        with removed_on_error(tmp), writing_to(target):  # a full disk, whoever writes: an error naming the checkpoint
            if save_adapter is None:
                peft_model.save_pretrained(tmp, state_dict=adapter)
            else:
                save_adapter(peft_model, tmp, adapter)
            (tmp / "README.md").unlink(missing_ok=True)  # PEFT's model card template: nothing in it
            atomic_write_json(tmp / "keeptune.json", {**info, "step": step})
            tensors = {f"{name}::{key}": value.contiguous() for name, state in optim["state"].items()
                       for key, value in state.items()}
            save_file(tensors, tmp / "optimizer.safetensors")
            atomic_write_json(tmp / "trainer_state.json", {
                **position, "step": step, "world_size": d.world,
                "optimizer_param_groups": optim["param_groups"], "scheduler": scheduler.state_dict()})
            replace_dir(tmp, target)
    barrier(d)
    return target


@contextlib.contextmanager
def removed_on_error(tmp: Path):
    """The staging folder goes when its checkpoint fails to be written (a full disk gets its space back)."""
    try:
        yield
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def restore(path: Path, model: torch.nn.Module, optimizer, scheduler, d: Dist) -> dict:
    """Optimizer, scheduler and this rank's RNG state from a checkpoint; returns trainer_state.json."""
    from torch.distributed.checkpoint.state_dict import set_optimizer_state_dict

    path = Path(path)
    state = json.loads((path / "trainer_state.json").read_text(encoding="utf-8"))
    optim: dict = {"state": {}, "param_groups": state["optimizer_param_groups"]}
    for key, value in load_file(path / "optimizer.safetensors").items():
        name, item = key.rsplit("::", 1)
        optim["state"].setdefault(name, {})[item] = value
    set_optimizer_state_dict(model, optimizer, optim, options=full_state())
    scheduler.load_state_dict(state["scheduler"])
    rng_file = path / f"rng-rank{d.rank}.json"
    if rng_file.is_file():  # absent when the world size changed: that rank starts from its seed
        set_rng_state(json.loads(rng_file.read_text(encoding="utf-8")))
    return state


def last_step(run: Path) -> tuple[Optional[Path], int]:
    """The last complete checkpoint of a run and its step (None, 0 when there is none)."""
    found = complete_checkpoints(run)
    if not found:
        return None, 0
    return found[-1], step_of(found[-1])
