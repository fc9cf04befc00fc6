"""Checkpoints: written atomically, read without pickle, enough to resume exactly.

RUN/checkpoints/step-000040/ holds
- adapter_config.json + adapter_model.safetensors: a PEFT adapter
  (`PeftModel.from_pretrained(base, dir)` loads it);
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

import json
import random
import re
import shutil
import warnings
from pathlib import Path
from typing import Optional

import torch
from safetensors.torch import load_file, save_file

from keeptune.core.io import atomic_write_json
from keeptune.core.outputs import replace_dir, staging_dir
from keeptune.model.adapter import CORDA_WEIGHTS
from keeptune.train.distributed import Dist, barrier

CHECKPOINTS = "checkpoints"
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


def full_state(**options):
    """torch.distributed's state-dict options for whole tensors on CPU (gathered from the shards under FSDP)."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions

    return StateDictOptions(full_state_dict=True, cpu_offload=True, **options)


def save(run: Path, step: int, model: torch.nn.Module, peft_model, optimizer, scheduler,
         info: dict, position: dict, d: Dist, corda_initial: Optional[Path] = None) -> Path:
    """Write checkpoint `step` (collective: every rank calls it; rank 0 writes all but its RNG file).

    `corda_initial`: a CorDA run's initial adapter (keeptune.retention.training); the adapter is then saved
    converted for the original base, and its weights as trained in CORDA_WEIGHTS."""
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, get_optimizer_state_dict

    adapter = get_model_state_dict(model, options=full_state(ignore_frozen_params=True))
    optim = get_optimizer_state_dict(model, optimizer, options=full_state())
    target = step_dir(run, step)
    tmp = staging_dir(target) if d.main else target.with_name(f".{target.name}.tmp")
    barrier(d)
    atomic_write_json(tmp / f"rng-rank{d.rank}.json", rng_state())
    barrier(d)
    if d.main:
        if corda_initial is None:
            peft_model.save_pretrained(tmp, state_dict=adapter)
        else:
            save_corda(peft_model, tmp, corda_initial, adapter)
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


def save_corda(peft_model, folder: Path, initial: Path, adapter: dict) -> None:
    """A CorDA adapter as PEFT converts it (rank 2r, for the original base) and its rank-r weights as trained."""
    from peft import get_peft_model_state_dict

    save_file(get_peft_model_state_dict(peft_model, state_dict=adapter), folder / CORDA_WEIGHTS)
    devices = [torch.cuda.current_device()] if torch.cuda.is_available() else []
    modes = [(module, module.training) for module in peft_model.modules()]
    # PEFT loads the initial adapter into the model for the subtraction and deletes it: its new layers' random
    # initialisation must not move the RNG training continues with (a resumed run restores the saved state),
    # and the eval mode it leaves the model in must not stop dropout
    with torch.random.fork_rng(devices=devices), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*corda_config.*ignored.*")  # the initial adapter: as meant
        warnings.filterwarnings("ignore", message="CorDA changes the base weights")  # and deleted at once
        peft_model.save_pretrained(folder, selected_adapters=["default"],
                                   path_initial_model_for_weight_conversion=str(initial))
    for module, training in modes:
        module.training = training
    config = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8"))
    atomic_write_json(folder / "adapter_config.json", {**config, "corda_config": None})  # a plain LoRA now: PEFT
    # would warn at every load that the CorDA settings are ignored


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
