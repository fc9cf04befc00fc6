"""Retention method `corda` (docs/retention.md): start the adapter where the old skill does not look.

PEFT's CorDA in knowledge-preserved mode (keeptune.model.lora.apply_corda): the covariance of the
preservation prompts' activations picks the directions the adapter starts on, and the base weights
become a residual. RUN/corda/ keeps the decomposition (eigens.safetensors, keyed on the prompts,
model, targets, rank and dtype, so a resumed run rebuilds the same residual without running the
prompts again) and the initial adapter (corda_initial/), from which every checkpoint is saved as
PEFT converts it (`save_pretrained(path_initial_model_for_weight_conversion=...)`): a plain LoRA
of rank 2r, alpha 2 x alpha, that applies to the original base model, beside the rank-r weights
as trained on the residual (keeptune.model.adapter.CORDA_WEIGHTS), which resuming and the
experiment's in-place evaluation load.
"""
from __future__ import annotations

import contextlib
import copy
import functools
import json
import time
import warnings
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch
from safetensors.torch import save_file

from keeptune.core.errors import ConfigError
from keeptune.core.io import atomic_write_json
from keeptune.core.outputs import replace_dir, staging_dir
from keeptune.core.resume import sha256_json
from keeptune.evaluate.samples import Sample, load_task_samples, resolve_data_path
from keeptune.evaluate.spec import Compiled, load_spec
from keeptune.evaluate.task import SpecTask
from keeptune.model.adapter import CORDA_WEIGHTS
from keeptune.model.load import model_name
from keeptune.model.lora import LoraSettings, apply_corda, resolve_targets
from keeptune.retention.preservation import plan_preservation, preservation_prompts
from keeptune.train import distributed
from keeptune.train.config import Config
from keeptune.train.distributed import Dist

CORDA_DIR = "corda"  # in the run directory
EIGENS = "eigens.safetensors"
INITIAL = "corda_initial"  # the initial adapter's folder; PEFT names the adapter it loads from it after it
REFERENCE = "corda_reference"  # kl with corda: the frozen initial adapter, the base of the KL term
PROMPTS_KEY = "corda_prompts_sha256"  # in a run's identity (keeptune.json's config)
# The task `keeptune train` checks preservation data against (it has no gate of its own): the default
# experiment's retention task, squad-seed on its packaged article.
TRAIN_GATED_TASK = "squad-seed"

# Prompts: a list of strings, or a function (model, tokenizer) -> list of strings (run after the model loads:
# the offline default is written by the base model).
Prompts = Union[Sequence[str], Callable[[Any, Any], Sequence[str]]]


# --- the prompts ----------------------------------------------------------------------------

def default_prompts(config: Config, preservation: Optional[Prompts]) -> Optional[Prompts]:
    """`preservation`, or with `corda` and none given, `keeptune train`'s (a source that is a file or a task spec
    is read and checked now, before the model loads)."""
    if preservation is not None or "corda" not in config.retention.methods:
        return preservation
    return train_preservation(config)


def corda_prompts(config: Config, d: Dist, preservation: Optional[Prompts], model, tokenizer) -> Optional[list[str]]:
    """CorDA's preservation prompts (given, or from retention.preservation); None without `corda`. A function
    is run by rank 0 first, then by the others (they find its cache). ConfigError when CorDA cannot run here
    (FSDP shards the weights it decomposes)."""
    if "corda" not in config.retention.methods:
        return None
    if d.world > 1 and config.distributed.strategy == "fsdp":
        raise ConfigError("field 'retention.methods': corda needs the whole model on every device "
                          "(distributed.strategy=ddp, or one process), not fsdp")
    preservation = train_preservation(config) if preservation is None else preservation
    if not callable(preservation):
        return list(preservation)
    if not d.main:
        distributed.barrier(d)
    prompts = list(preservation(model, tokenizer))
    if d.main:
        distributed.barrier(d)
    return prompts


def train_preservation(config: Config) -> Callable[[Any, Any], list[str]]:
    """`keeptune train`'s preservation prompts: keeptune.retention.preservation's, of retention.preservation, checked
    against squad-seed's packaged article (the offline default is cached in RUN/corda/preservation)."""
    compiled = load_spec(TRAIN_GATED_TASK)
    samples = load_task_samples(compiled, resolve_data_path(compiled.spec))
    plan_preservation(config.retention, [SpecTask(compiled, samples)])  # ConfigError on a leak, before any load
    return functools.partial(_gated_prompts, config, compiled, samples)


def _gated_prompts(config: Config, compiled: Compiled, samples: list[Sample], model, tokenizer) -> list[str]:
    return preservation_prompts(config.retention, [SpecTask(compiled, samples, tokenizer)],
                                Path(config.out) / CORDA_DIR / "preservation", model, tokenizer,
                                {"model": model_name(config.model.source)})


def prompts_digest(prompts: Sequence[str]) -> str:
    """The sha256 of the prompts as a JSON list (a run's PROMPTS_KEY, part of the decomposition's cache key)."""
    return sha256_json(list(prompts))


def prompt_runner(model, tokenizer, prompts: Sequence[str]) -> Callable[[], None]:
    """A `run_model` for CorDA: each prompt through `model`, one at a time (PEFT's hook takes batch 1), encoded
    as evaluation encodes a plain prompt (no special tokens), cut to the model's context."""
    limit = getattr(model.config, "max_position_embeddings", None)
    device = next(model.parameters()).device
    return functools.partial(_run_prompts, model, tokenizer, prompts, limit, device)


def _run_prompts(model, tokenizer, prompts: Sequence[str], limit: Optional[int], device: torch.device) -> None:
    model.eval()
    with torch.no_grad():
        for prompt in prompts:
            ids = tokenizer(prompt, add_special_tokens=False).input_ids[:limit]
            if ids:
                model(input_ids=torch.tensor([ids], device=device), logits_to_keep=1)


# --- the model and its checkpoints ---------------------------------------------------------------

def corda_model(model, tokenizer, lora: LoraSettings, source: Optional[str], prompts: Sequence[str], out: Path,
                main: bool, kl: bool):
    """`model` wrapped in a CorDA-initialised PEFT LoRA (in place), RUN/corda/ written by rank 0; with `kl`, the
    frozen initial adapter added as `corda_reference`. Returns (PEFT model, seconds spent)."""
    # peft takes about 2 s to import: loaded with the first PEFT model, not with this module
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    if not prompts:
        raise ConfigError("field 'retention.preservation': corda found no preservation prompt to build its "
                          "covariance from")
    started = time.perf_counter()
    folder = Path(out) / CORDA_DIR
    # the cache key is this JSON text itself, stored in eigens.safetensors' metadata: unchanged, old caches serve
    key = json.dumps({"prompts_sha256": prompts_digest(prompts), "model": source,
                      "targets": resolve_targets(model, lora.targets), "rank": lora.rank,
                      "dtype": str(next(model.parameters()).dtype)}, sort_keys=True)
    peft_model = apply_corda(model, lora, prompt_runner(model, tokenizer, prompts), folder / EIGENS, key, main)
    initial = get_peft_model_state_dict(peft_model)  # A0, B0: what training starts from
    config = peft_model.peft_config["default"]
    if main:  # the initial adapter, for PEFT's conversion at every save; loading it must not run CorDA again
        tmp = staging_dir(folder / INITIAL)
        with _init_as_plain(config):
            peft_model.save_pretrained(tmp, selected_adapters=["default"])
        (tmp / "README.md").unlink(missing_ok=True)
        replace_dir(tmp, folder / INITIAL)
    if kl:
        with _init_as_plain(config):
            peft_model.add_adapter(REFERENCE, copy.deepcopy(config))  # frozen: PEFT trains only the active one
        set_peft_model_state_dict(peft_model, initial, adapter_name=REFERENCE)
    return peft_model, time.perf_counter() - started


@contextlib.contextmanager
def _init_as_plain(config):
    """Inside: a LoraConfig says init_lora_weights=True (an adapter made or loaded from it starts from its saved
    weights instead of running CorDA on the residual again)."""
    saved, config.init_lora_weights = config.init_lora_weights, True
    try:
        with warnings.catch_warnings():  # PEFT: "corda_config specified but will be ignored": as meant
            warnings.filterwarnings("ignore", message=".*corda_config.*ignored.*")
            warnings.filterwarnings("ignore", message="CorDA changes the base weights")  # the frozen reference
            yield
    finally:
        config.init_lora_weights = saved


def save_corda(peft_model, folder: Path, adapter: dict, initial: Path) -> None:
    """A checkpoint's CorDA adapter (a keeptune.train.checkpoint.SaveAdapter, with `initial` bound): as PEFT
    converts it (rank 2r, for the original base) and its rank-r weights as trained."""
    from peft import get_peft_model_state_dict  # about 2 s to import; see corda_model

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
