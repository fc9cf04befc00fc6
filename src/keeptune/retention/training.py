"""Retention methods of training (docs/retention.md): `kl` and `corda`. The other two, `replay`
(preservation data mixed into the training set) and `scale` (adapters evaluated at scaled
strengths), belong to the experiment (`keeptune run`).

kl: the loss of a step becomes

    loss = (sum of CE + kl_weight x sum of KL(base || tuned)) / label tokens of the global batch

where KL(p || q) = sum over the vocabulary of p (log p - log q), at every position whose next
token is a label (the positions the cross-entropy sums over), both softmaxes in float32. The base
distribution comes from the same model with its adapter disabled (PEFT's `disable_adapter`), in
one extra forward without gradients: no second copy of the model. With `corda`, whose disabled
model is CorDA's residual and not the base, it is the model with CorDA's initial adapter instead
(a frozen copy of it, `corda_reference`, selected by PEFT's `adapter_names`): the model before
training, to float error. log.jsonl gets `ce` and `kl`, each per label token, beside `loss`.

corda: PEFT's CorDA in knowledge-preserved mode (keeptune.model.lora.apply_corda): the covariance of
the preservation prompts' activations picks the directions the adapter starts on, and the base
weights become a residual. RUN/corda/ keeps the decomposition (eigens.safetensors, so a resumed run
rebuilds the same residual without running the prompts again) and the initial adapter
(corda_initial/), from which every checkpoint is saved as PEFT converts it
(`save_pretrained(path_initial_model_for_weight_conversion=...)`): a plain LoRA of rank 2r,
alpha 2 x alpha, that applies to the original base model, beside the rank-r weights as trained on
the residual (keeptune.model.adapter.CORDA_WEIGHTS), which resuming and the experiment's
in-place evaluation load.
"""
from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import json
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from keeptune.core.errors import ConfigError
from keeptune.train import distributed
from keeptune.train.config import RetentionConfig
from keeptune.train.records import IGNORE

TRAINING_METHODS = ("kl", "corda")
CORDA_DIR = "corda"  # in the run directory
EIGENS = "eigens.safetensors"
INITIAL = "corda_initial"  # the initial adapter's folder; PEFT names the adapter it loads from it after it
REFERENCE = "corda_reference"  # kl with corda: the frozen initial adapter, the base of the KL term
PROMPTS_KEY = "corda_prompts_sha256"  # in a run's identity (keeptune.json's config)


def check_training(retention: RetentionConfig, origin: str = "") -> None:
    """ConfigError when `retention.methods` names a method training cannot run (replay, scale)."""
    others = [m for m in retention.methods if m not in TRAINING_METHODS]
    if others:
        where = f"{origin}: " if origin else ""
        raise ConfigError(f"{where}field 'retention.methods': {', '.join(others)} "
                          f"{'is an experiment method' if len(others) == 1 else 'are experiment methods'}, run by "
                          "`keeptune run` (replay changes the training set, scale the choice among checkpoints); "
                          "`keeptune train` takes kl and corda")


def training_retention(retention: RetentionConfig) -> RetentionConfig:
    """The retention settings training uses: kl and corda, and the settings of the methods that are off back to
    their defaults (they change nothing in training, so a run resumes whatever they are)."""
    methods = tuple(m for m in retention.methods if m in TRAINING_METHODS)
    default = RetentionConfig()
    kept = {"methods": methods}
    if "kl" in methods:
        kept["kl_weight"] = retention.kl_weight
    if "corda" in methods:
        kept.update(preservation=retention.preservation, preservation_samples=retention.preservation_samples,
                    allow_overlap=retention.allow_overlap)
    return dataclasses.replace(default, **kept)


# --- kl -----------------------------------------------------------------------------------

class KL:
    """The term kl_weight x KL(base || tuned) of training's loss, and the step's sums for log.jsonl."""

    def __init__(self, peft_model, weight: float, reference: Optional[str] = None):
        """`peft_model`: the unwrapped PEFT model (under DDP its forward skips DDP's hooks; no gradient flows
        there); `reference`: an adapter giving the base distribution (None: the adapter disabled)."""
        self.model, self.weight, self.reference = peft_model, weight, reference
        self.ce, self.kl = 0.0, 0.0

    def base_logits(self, batch: dict, keep: torch.Tensor) -> torch.Tensor:
        """The base model's logits at positions `keep` (one forward without gradients, in eval mode: no
        dropout, and PEFT selects an adapter per row only there)."""
        training = self.model.training
        self.model.eval()
        try:
            with torch.no_grad():
                inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
                          "logits_to_keep": keep}
                if self.reference is not None:
                    return self.model(**inputs, adapter_names=[self.reference] * len(batch["input_ids"])).logits
                with self.model.disable_adapter():
                    return self.model(**inputs).logits
        finally:
            self.model.train(training)

    def loss_sum(self, logits: torch.Tensor, targets: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
        """Sum of CE + kl_weight x KL(base || tuned) over the positions whose target is a label (logits and base:
        positions x vocabulary; targets: positions, IGNORE where a row predicts nothing); the sums are kept
        for `step_record`. One float32 log-softmax of the tuned logits serves both terms (F.cross_entropy is
        nll_loss of log_softmax: the same CE)."""
        labelled = targets != IGNORE
        if not bool(labelled.all()):
            logits, targets, base = logits[labelled], targets[labelled], base[labelled]
        tuned = F.log_softmax(logits.float(), dim=-1)
        ce = F.nll_loss(tuned, targets, reduction="sum")
        kl = F.kl_div(tuned, F.log_softmax(base.float(), dim=-1), reduction="sum", log_target=True)
        self.ce += ce.item()
        self.kl += kl.item()
        return ce + self.weight * kl

    def step_record(self, label_tokens: int, d) -> dict:
        """`ce` and `kl` per label token of the global batch (summed over ranks); the sums start again."""
        ce, kl = distributed.all_reduce_sum(d, [self.ce, self.kl])
        self.ce, self.kl = 0.0, 0.0
        return {"ce": ce / label_tokens, "kl": kl / label_tokens}


# --- corda --------------------------------------------------------------------------------

@dataclass
class Prepared:
    """What the training methods add to a run: the PEFT model, the KL term, CorDA's initial adapter."""

    peft_model: torch.nn.Module
    kl: Optional[KL] = None
    corda_initial: Optional[Path] = None  # checkpoints are saved converted with it (keeptune.train.checkpoint)
    corda_seconds: float = 0.0  # spent on CorDA's covariance and decomposition
    info: dict = field(default_factory=dict)  # for keeptune.json


def prepare(model, tokenizer, config, preservation: Optional[Sequence[str]], main: bool) -> Prepared:
    """`model` wrapped in PEFT LoRA (CorDA-initialised with `corda`, on `preservation`'s prompts) and the KL term
    of `kl`, as `config` (keeptune.train.config.Config) says."""
    from keeptune.model.lora import apply_lora

    methods, lora = config.retention.methods, config.lora
    if "corda" not in methods:
        peft_model = apply_lora(model, lora)
        kl = KL(peft_model, config.retention.kl_weight) if "kl" in methods else None
        return Prepared(peft_model, kl)
    peft_model, seconds = corda_model(model, tokenizer, lora, config.model.source, preservation, Path(config.out),
                                      main, "kl" in methods)
    info = {"corda": {"method": "kpm", "trained_rank": lora.rank, "prompts": len(preservation),
                      PROMPTS_KEY: prompts_digest(preservation),
                      "saved_as": f"LoRA of rank {2 * lora.rank}, alpha {2 * lora.alpha}, on the original base"}}
    kl = KL(peft_model, config.retention.kl_weight, REFERENCE) if "kl" in methods else None
    return Prepared(peft_model, kl, Path(config.out) / CORDA_DIR / INITIAL, seconds, info)


# Prompts: a list of strings, or a function (model, tokenizer) -> list of strings (run after the model loads:
# the offline default is written by the base model).
Prompts = Union[Sequence[str], Callable[[Any, Any], Sequence[str]]]
# The task `keeptune train` checks preservation data against (it has no gate of its own): the default
# experiment's retention task, squad-seed on its packaged article.
TRAIN_GATED_TASK = "squad-seed"


def corda_prompts(config, d, preservation: Optional[Prompts], model, tokenizer) -> Optional[list[str]]:
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


def default_prompts(config, preservation: Optional[Prompts]) -> Optional[Prompts]:
    """`preservation`, or with `corda` and none given, `keeptune train`'s (a source that is a file or a task spec
    is read and checked now, before the model loads)."""
    if preservation is not None or "corda" not in config.retention.methods:
        return preservation
    return train_preservation(config)


def train_preservation(config) -> Callable[[Any, Any], list[str]]:
    """`keeptune train`'s preservation prompts: keeptune.retention.preservation's, of retention.preservation, checked
    against squad-seed's packaged article (the offline default is cached in RUN/corda/preservation)."""
    from keeptune.evaluate.spec import SpecTask, load_spec, load_task_samples, resolve_data_path
    from keeptune.retention.preservation import plan_preservation, preservation_prompts

    compiled = load_spec(TRAIN_GATED_TASK)
    samples = load_task_samples(compiled, resolve_data_path(compiled.spec))
    plan_preservation(config.retention, [SpecTask(compiled, samples)])  # ConfigError on a leak, before any load

    def prompts(model, tokenizer) -> list[str]:
        from keeptune.model.load import model_name

        return preservation_prompts(config.retention, [SpecTask(compiled, samples, tokenizer)],
                                    Path(config.out) / CORDA_DIR / "preservation", model, tokenizer,
                                    {"model": model_name(config.model.source)})
    return prompts


def prompts_digest(prompts: Sequence[str]) -> str:
    return hashlib.sha256(json.dumps(list(prompts), ensure_ascii=False).encode("utf-8")).hexdigest()


def prompt_runner(model, tokenizer, prompts: Sequence[str]):
    """A `run_model` for CorDA: each prompt through `model`, one at a time (PEFT's hook takes batch 1), encoded
    as evaluation encodes a plain prompt (no special tokens), cut to the model's context."""
    limit = getattr(model.config, "max_position_embeddings", None)
    device = next(model.parameters()).device

    def run_model() -> None:
        model.eval()
        with torch.no_grad():
            for prompt in prompts:
                ids = tokenizer(prompt, add_special_tokens=False).input_ids[:limit]
                if ids:
                    model(input_ids=torch.tensor([ids], device=device), logits_to_keep=1)
    return run_model


def corda_model(model, tokenizer, lora, source: Optional[str], prompts: Sequence[str], out: Path, main: bool,
                kl: bool):
    """`model` wrapped in a CorDA-initialised PEFT LoRA (in place), RUN/corda/ written by rank 0; with `kl`, the
    frozen initial adapter added as `corda_reference`. Returns (PEFT model, seconds spent)."""
    from peft import get_peft_model_state_dict, set_peft_model_state_dict

    from keeptune.core.outputs import replace_dir, staging_dir
    from keeptune.model.lora import apply_corda, resolve_targets

    if not prompts:
        raise ConfigError("field 'retention.preservation': corda found no preservation prompt to build its "
                          "covariance from")
    started = time.perf_counter()
    folder = Path(out) / CORDA_DIR
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
