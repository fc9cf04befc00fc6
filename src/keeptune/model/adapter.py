"""A PEFT adapter directory as keeptune writes it: adapter_config.json, adapter_model.safetensors and
keeptune.json (base model, prompt, sequence format, LoRA settings), read without pickle.

Its digest keys evaluations of it; `export_adapter` copies one atomically with a scale folded into
its B matrices (retention method `scale`), `write_adapter` with other weights (retention method
`intruders`); `load_adapter_weights` puts a checkpoint's weights into a loaded PEFT model (a CorDA
checkpoint's rank-r weights into a CorDA model); `mica_saver` saves a MiCA adapter as the plain LoRA
it is once trained.
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from keeptune.core.errors import ModelLoadError
from keeptune.core.io import atomic_write_json, writing_to
from keeptune.core.outputs import replace_dir, staging_dir
from keeptune.core.resume import sha256_file
from keeptune.model.load import PICKLE_SUFFIXES, check_safetensors, json_object
from keeptune.model.lora import is_corda, is_mica

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "keeptune.json")

# A CorDA checkpoint's rank-r weights as trained, on CorDA's residual base (its adapter_model.safetensors is
# PEFT's conversion to a plain rank-2r LoRA on the original base): what resuming and in-place evaluation load.
CORDA_WEIGHTS = "corda_residual_adapter.safetensors"

def adapter_info(adapter: Path) -> dict:
    """An adapter directory's keeptune.json (base model, prompt, format, BOS); {} when it has none.

    ModelLoadError when the directory is no PEFT adapter, its files are broken or a pickle (`check_adapter_files`:
    every command that takes an adapter reads this first), or its keeptune.json is not a JSON object."""
    adapter = Path(adapter)
    if not (adapter / "adapter_config.json").is_file():
        raise ModelLoadError(f"{adapter} is not a PEFT adapter directory: it has no adapter_config.json")
    check_adapter_files(adapter)
    record = adapter / "keeptune.json"
    return json_object(record, f"{record}: ", encoding="utf-8") if record.is_file() else {}


def check_adapter_files(adapter: Path) -> None:
    """Refuse, naming the file, an adapter that PEFT would fail to read or would unpickle: an adapter_config.json
    that is not a JSON object (read as PEFT reads it: UTF-8 without a byte-order mark), weights that are not a
    complete safetensors file, or weights only in a pickle (adapter_model.bin: PEFT would `torch.load` it)."""
    config = adapter / "adapter_config.json"
    json_object(config, f"{config}: ", encoding="utf-8")  # as PEFT reads it: no byte-order mark
    weights = adapter / "adapter_model.safetensors"
    if weights.is_file():
        check_safetensors(weights)
        return
    pickles = sorted(p.name for p in adapter.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if pickles:
        raise ModelLoadError(f"{adapter / pickles[0]}: the adapter's weights are a pickle checkpoint; keeptune refuses "
                             "them because unpickling can run arbitrary code. Save the adapter as safetensors first "
                             "(PEFT's save_pretrained(..., safe_serialization=True), in a trusted environment)")
    raise ModelLoadError(f"{adapter}: the adapter has no weights (adapter_model.safetensors)")

def adapter_digest(adapter: Path) -> str:
    """A short hash of an adapter's weights: what an evaluation of it is keyed on."""
    return sha256_file(Path(adapter) / "adapter_model.safetensors")[:16]

def load_adapter_weights(path: Path, peft_model) -> None:
    """Put a checkpoint's LoRA weights into the (not yet wrapped) PEFT model; a CorDA checkpoint's weights as
    trained, into a CorDA model (on the same residual base)."""
    from peft import set_peft_model_state_dict


    path = Path(path)
    corda = (path / CORDA_WEIGHTS).is_file()
    if corda != is_corda(peft_model):
        raise RuntimeError(f"{path}: a {'CorDA' if corda else 'plain LoRA'} checkpoint cannot be loaded into a "
                           f"{'CorDA' if is_corda(peft_model) else 'plain LoRA'} model (CorDA's base weights are "
                           "a residual): load its adapter_model.safetensors on the original base with PEFT")
    weights = path / (CORDA_WEIGHTS if corda else "adapter_model.safetensors")
    result = set_peft_model_state_dict(peft_model, load_file(weights))
    if result.unexpected_keys:
        raise RuntimeError(f"{path}: adapter weights the model does not have: {result.unexpected_keys[:3]}")

# The LoRA up-projections of a PEFT state dict (linear and embedding layers: lora_B, lora_embedding_B).
LORA_B = re.compile(r"(^|\.)lora_(embedding_)?B(\.|$)")

def fold_scale(tensors: dict[str, torch.Tensor], scale: float) -> dict[str, torch.Tensor]:
    """A LoRA state dict whose update is `scale` x the given one: every B (weight and bias) times `scale`, A
    unchanged. PEFT adds (alpha / r) B A x to a layer's output (and (alpha / r) x B's bias), so (alpha / r) (s B) A
    is s times the update: a plain PEFT load of the result is the adapter scaled by s."""
    return {key: value * scale if LORA_B.search(key) else value for key, value in tensors.items()}

def export_adapter(checkpoint: Path, target: Path, scale: float = 1.0) -> Path:
    """Copy a checkpoint's adapter (and keeptune.json) to `target`, atomically; a `scale` other than 1 is folded
    into the weights (`fold_scale`) and recorded in keeptune.json (``scale``)."""
    if scale == 1:
        return write_adapter(checkpoint, target)
    tensors = fold_scale(load_file(Path(checkpoint) / "adapter_model.safetensors"), scale)
    return write_adapter(checkpoint, target, tensors, {"scale": scale})


def write_adapter(checkpoint: Path, target: Path, tensors: dict[str, torch.Tensor] | None = None,
                  record: dict | None = None) -> Path:
    """`checkpoint`'s adapter files copied to `target` atomically, with `tensors` (a PEFT adapter state dict of the
    same LoRA configuration) as its weights instead of its own and `record` added to its keeptune.json."""
    with writing_to(target):  # a full disk, whoever writes (shutil, safetensors): an error naming the adapter
        tmp = staging_dir(target)
        for name in ADAPTER_FILES:
            if tensors is None or name != "adapter_model.safetensors":
                shutil.copy2(Path(checkpoint) / name, tmp / name)
        if tensors is not None:
            save_file({k: v.contiguous() for k, v in tensors.items()}, tmp / "adapter_model.safetensors",
                      metadata={"format": "pt"})
        if record:
            info = json.loads((tmp / "keeptune.json").read_text(encoding="utf-8"))
            atomic_write_json(tmp / "keeptune.json", {**info, **record})
        replace_dir(tmp, target)
    return target


def mica_saver(peft_model):
    """How a checkpoint saves `peft_model`'s adapter (a keeptune.train.checkpoint.SaveAdapter) when MiCA initialised
    it; None otherwise (PEFT's save_pretrained as it is).

    Training hands the saver the state of the parameters that train, and MiCA's B is frozen, so B (fixed at
    initialisation: a copy taken now, before any distributed wrapping) is added back. The adapter_config.json says
    init_lora_weights true: once trained, a MiCA adapter is a plain LoRA (PEFT's MiCA variant computes and merges
    W x + (alpha / r) B A x as LoRA does; it only keeps B frozen while training), so PEFT loads it without
    decomposing the base weights again, and the MindFormers export, which takes plain LoRA only, takes it."""
    if not is_mica(peft_model):
        return None
    frozen = {name: param.detach().cpu().clone() for name, param in peft_model.named_parameters()
              if ".lora_B." in name and not param.requires_grad}

    def save(model, folder: Path, state: dict) -> None:
        model.save_pretrained(folder, state_dict={**frozen, **state})
        config = json_object(folder / "adapter_config.json", f"{folder / 'adapter_config.json'}: ", encoding="utf-8")
        atomic_write_json(folder / "adapter_config.json", {**config, "init_lora_weights": True})
    return save
