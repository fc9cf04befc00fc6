"""LoRA through PEFT, with the seed's target names (MindFormers' wq, wk, wv, wo, w1, w2, w3).

Targets accept Hugging Face module names (`q_proj`, `v_proj`, ...), the
MindFormers names of the seed (`wq`, `wk`, `wv`, `wo`, `w1`, `w2`, `w3`) and
regular expressions such as the seed's `.*wq|.*wv`, which are matched against
both the Hugging Face and the MindFormers spelling of every module name.
`resolve_targets` turns any of them into the exact list of module names PEFT
gets, so what is trained is never a guess.
"""
from __future__ import annotations

import os
import re
import sys
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, TextIO

import torch
from safetensors.torch import load_file, save_file

from keeptune.core.errors import TargetError

# Weight of the parameter term in the contest score: (1 - ratio) * 0.3 (keeptune.core.gate).
PARAMETER_SCORE_WEIGHT = 0.3

# MindFormers (seed) module name -> Hugging Face Llama module name.
MINDFORMERS_TO_HF = {"wq": "q_proj", "wk": "k_proj", "wv": "v_proj", "wo": "o_proj",
                     "w1": "gate_proj", "w2": "down_proj", "w3": "up_proj"}
HF_TO_MINDFORMERS = {hf: mf for mf, hf in MINDFORMERS_TO_HF.items()}
# Where MindFormers puts each projection: model.layers.N.attention.wq, model.layers.N.feed_forward.w1.
MINDFORMERS_BLOCK = {"q_proj": "attention", "k_proj": "attention", "v_proj": "attention", "o_proj": "attention",
                     "gate_proj": "feed_forward", "down_proj": "feed_forward", "up_proj": "feed_forward"}


@dataclass(frozen=True)
class LoraSettings:
    """LoRA adapter settings; defaults are the seed's baseline."""

    targets: Sequence[str] = field(default_factory=lambda: ("q_proj", "v_proj"))
    """Module names (HF or MindFormers) or regular expressions, e.g. `.*wq|.*wv`."""
    rank: int = 8
    """Rank r of the update B @ A."""
    alpha: int = 16
    """Scaling numerator: the update is multiplied by alpha / rank."""
    dropout: float = 0.05
    """Dropout on the LoRA branch's input during training."""
    init: Literal["default", "mica"] = "default"
    """default: PEFT's (A random, B zero); mica: PEFT's MiCA (A zero; B W's minor singular vectors, frozen)."""


def mindformers_name(hf_name: str) -> str:
    """`model.layers.3.self_attn.q_proj` -> `model.layers.3.attention.wq` (other names unchanged)."""
    match = re.fullmatch(r"(.*layers\.\d+)\.(?:self_attn|mlp)\.(\w+)", hf_name)
    if not match or match.group(2) not in HF_TO_MINDFORMERS:
        return hf_name
    leaf = match.group(2)
    return f"{match.group(1)}.{MINDFORMERS_BLOCK[leaf]}.{HF_TO_MINDFORMERS[leaf]}"


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """Full names of the Linear layers LoRA can target (the output head excluded)."""
    return [name for name, module in model.named_modules()
            if isinstance(module, torch.nn.Linear) and not name.endswith("lm_head")]


def target_specs(targets: Sequence[str] | str) -> list[str]:
    """The target specifications of a list or a comma-separated string, stripped, empty ones dropped."""
    return [t.strip() for t in (targets.split(",") if isinstance(targets, str) else targets) if t.strip()]


def check_target_syntax(targets: Sequence[str] | str) -> None:
    """TargetError when there is no target or a regular expression does not compile (no model needed)."""
    specs = target_specs(targets)
    if not specs:
        raise TargetError("no LoRA target given; e.g. q_proj,v_proj or the seed's .*wq|.*wv")
    for spec in specs:
        if not re.fullmatch(r"\w+", spec):
            try:
                re.compile(spec)
            except re.error as err:
                raise TargetError(f"LoRA target {spec!r} is not a valid regular expression ({err})") from None


def resolve_targets(model: torch.nn.Module, targets: Sequence[str] | str) -> list[str]:
    """Full module names selected by `targets`; TargetError listing what exists if one matches nothing.

    A plain name (`q_proj` or `wq`) selects every module whose last component
    has that name; anything else is a regular expression that must match a
    whole module name, in its Hugging Face or MindFormers spelling.
    """
    check_target_syntax(targets)
    specs = target_specs(targets)
    candidates = linear_module_names(model)
    chosen: set[str] = set()
    for spec in specs:
        if re.fullmatch(r"\w+", spec):
            leaf = MINDFORMERS_TO_HF.get(spec, spec)
            hits = [n for n in candidates if n.rsplit(".", 1)[-1] == leaf]
        else:
            pattern = re.compile(spec)
            hits = [n for n in candidates if pattern.fullmatch(n) or pattern.fullmatch(mindformers_name(n))]
        if not hits:
            leaves = sorted({n.rsplit(".", 1)[-1] for n in candidates})
            raise TargetError(
                f"LoRA target {spec!r} matches no module. Linear modules are named "
                f"{', '.join(leaves)} (MindFormers names: {', '.join(sorted(MINDFORMERS_TO_HF))}); "
                f"for example {candidates[0] if candidates else 'none'}")
        chosen.update(hits)
    return [n for n in candidates if n in chosen]


def lora_config(model: torch.nn.Module, settings: LoraSettings, corda: bool = False):
    """PEFT's LoraConfig of `settings` on `model`'s resolved targets; with `corda`, CorDA's knowledge-preserved
    initialisation (init_lora_weights="corda", CordaConfig(corda_method="kpm")); with settings.init "mica", PEFT's
    MiCA (init_lora_weights="mica"). ValueError for both: each is an initialisation of the same adapter."""
    from peft import LoraConfig
    from peft.tuners.lora.config import CordaConfig

    if corda and settings.init != "default":
        raise ValueError(f"CorDA and lora.init={settings.init} both initialise the adapter: choose one")
    init = {"init_lora_weights": "corda", "corda_config": CordaConfig(corda_method=CORDA_METHOD)} if corda else {}
    if settings.init == "mica":
        require_peft("peft.tuners.lora.variants", "MiCALinearVariant", "lora.init=mica")
        init = {"init_lora_weights": "mica"}
    return LoraConfig(r=settings.rank, lora_alpha=settings.alpha, lora_dropout=settings.dropout,
                      target_modules=resolve_targets(model, settings.targets), bias="none", task_type="CAUSAL_LM",
                      **init)


def apply_lora(model: torch.nn.Module, settings: LoraSettings, config=None, meta: bool = False):
    """Wrap `model` in a PEFT LoRA model on the resolved targets (or PEFT LoraConfig `config`); only LoRA
    weights train. `meta`: `model` is on the meta device (parameter accounting): the adapter is made there too
    (PEFT's low_cpu_mem_usage), so an initialisation that reads the base weights (MiCA's SVD) is skipped while
    what trains is still PEFT's own choice."""
    from peft import get_peft_model

    config = config or lora_config(model, settings)
    with warnings.catch_warnings():  # PEFT calls a transformers 5 deprecated alias; nothing for a user to do
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*", category=FutureWarning)
        return get_peft_model(model, config, low_cpu_mem_usage=meta)


def require_peft(module: str, name: str, what: str) -> None:
    """ValueError naming `what` when the installed PEFT lacks `module`.`name` (an older PEFT would not refuse an
    initialisation it does not know: it would train plain LoRA under its name). keeptune was built on PEFT 0.21.2."""
    import importlib

    import peft

    try:
        found = hasattr(importlib.import_module(module), name)
    except ImportError:
        found = False
    if not found:
        raise ValueError(f"{what} needs a PEFT that ships {module}.{name} (0.21.2 does); this one is {peft.__version__}")


def is_mica(peft_model) -> bool:
    """Whether a PEFT model's default adapter was initialised by MiCA (its B matrices are frozen)."""
    config = getattr(peft_model, "peft_config", {}).get("default")
    return str(getattr(config, "init_lora_weights", "")).lower() == "mica"


# --- CorDA ---------------------------------------------------------------------------------

# CorDA's knowledge-preserved mode: the adapter starts on the directions of W C (C: the covariance of the
# preservation prompts' activations) with the smallest singular values, which those prompts use least.
CORDA_METHOD = "kpm"
CORDA_FIELDS = ("S_WC", "U_WC", "V_WC")


def apply_corda(model: torch.nn.Module, settings: LoraSettings, run_model: Callable[[], None],
                cache: Path | None = None, key: str = "", write_cache: bool = True):
    """`model` wrapped in PEFT LoRA initialised by CorDA (knowledge-preserved mode), in place.

    PEFT's `preprocess_corda` hooks every target's input while `run_model()` runs the preservation
    prompts through `model` (batch 1: its hook squeezes the batch away), builds each target's input
    covariance C and decomposes W C; `get_peft_model` then starts A, B on the r smallest singular
    directions (B A scaled by alpha / r equals W's part along them) and rewrites the base weight to
    the residual W - (alpha / r) B A, so the model computes W x before training, to float error.

    `cache` (a safetensors file, PEFT's "SVD cache" of the decomposition, written only by
    `write_cache`) is read instead of running the prompts when its metadata holds `key`; PEFT's own
    cache_file is a torch pickle, which keeptune never reads."""
    from peft.tuners.lora.corda import CordaEigens, preprocess_corda, target_modules

    config = lora_config(model, settings, corda=True)
    device = next(model.parameters()).device
    if cache is not None and cache_key(cache) == key:
        tensors = load_file(cache, device=str(device))
        for name, module in target_modules(model, config):
            module.eigens = CordaEigens(**{f: tensors[f"{name}.{f}"] for f in CORDA_FIELDS})
    else:
        preprocess_corda(model, config, run_model=run_model)
        if cache is not None and write_cache:
            tensors = {f"{name}.{f}": getattr(module.eigens, f).detach().cpu().contiguous()
                       for name, module in target_modules(model, config) for f in CORDA_FIELDS}
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = cache.with_name(f".{cache.name}.tmp")
            save_file(tensors, tmp, metadata={"key": key})
            os.replace(tmp, cache)  # a kill leaves the old cache or none, never half of one
    return apply_lora(model, settings, config)


def cache_key(cache: Path) -> str | None:
    """The key in a CorDA cache file's metadata; None when there is no readable cache."""
    from safetensors import safe_open

    try:
        with safe_open(str(cache), framework="pt") as handle:
            return (handle.metadata() or {}).get("key")
    except (OSError, ValueError, RuntimeError):  # absent, torn or not safetensors: build it again
        return None


def is_corda(peft_model) -> bool:
    """Whether a PEFT model's default adapter was initialised by CorDA (its base weights are CorDA's residual)."""
    config = getattr(peft_model, "peft_config", {}).get("default")
    return str(getattr(config, "init_lora_weights", "")).lower() == "corda"


@dataclass(frozen=True)
class ParameterCount:
    """Trainable parameters against the base model's, as the score counts them (keeptune.core.gate)."""

    trainable: int
    """Parameters with requires_grad (the LoRA A/B matrices of a PEFT model)."""
    total: int
    """Parameters of the base model, adapters excluded, tied weights counted once."""
    ratio: float
    """trainable / total, exact."""
    score_term: float
    """(1 - ratio) * 0.3, the parameter part of the score."""


def adapter_parameter_ids(model: torch.nn.Module) -> set[int]:
    """ids of the parameters PEFT added (LoRA A/B, embeddings, magnitudes): not part of the base model."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    ids: set[int] = set()
    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            for attr in module.adapter_layer_names:
                ids.update(id(p) for p in getattr(module, attr).parameters())
    return ids


def count_parameters(model: torch.nn.Module) -> ParameterCount:
    """Exact trainable / total accounting of a (PEFT) model; works on the meta device.

    `named_parameters` yields a tied (shared) weight once, so tied embeddings
    count once; adapter weights are excluded from the total.
    """
    adapters = adapter_parameter_ids(model)
    params = [p for _, p in model.named_parameters()]
    trainable = sum(p.numel() for p in params if p.requires_grad)
    total = sum(p.numel() for p in params if id(p) not in adapters)
    ratio = trainable / total
    return ParameterCount(trainable, total, ratio, (1 - ratio) * PARAMETER_SCORE_WEIGHT)


def mindformers_lora_name(peft_param_name: str) -> str:
    """The seed's name of a PEFT LoRA parameter (other names are returned unchanged).

    `base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight`
    -> `model.layers.0.attention.wq.mindpet_delta_lora_a`.
    """
    match = re.fullmatch(r"(?:base_model\.model\.)?(.+)\.lora_([AB])\.[^.]+\.weight", peft_param_name)
    if not match:
        return peft_param_name
    return f"{mindformers_name(match.group(1))}.mindpet_delta_lora_{match.group(2).lower()}"


def trainable_parameters(model: torch.nn.Module, names: str = "hf") -> Iterator[tuple[str, torch.Size]]:
    """(name, shape) of every trainable parameter; `names` is "hf" (PEFT names) or "mindformers"."""
    if names not in ("hf", "mindformers"):
        raise ValueError(f"names must be 'hf' or 'mindformers', not {names!r}")
    for name, param in model.named_parameters():
        if param.requires_grad:
            yield (mindformers_lora_name(name) if names == "mindformers" else name), param.shape


def format_count(count: ParameterCount) -> list[str]:
    """Trainable, total, the exact ratio (11 significant digits and its repr) and the score term."""
    return [f"trainable parameters: {count.trainable}",
            f"total parameters: {count.total}",
            f"ratio: {count.ratio:.11g} (exact: {count.ratio!r})",
            f"score parameter term (1 - ratio) * {PARAMETER_SCORE_WEIGHT}: {count.score_term!r}"]


def print_parameter_groups(model: torch.nn.Module, weight_decay: float = 0.0, names: str = "hf",
                           file: TextIO | None = None) -> None:
    """Print the optimizer's parameter group as the seed did, then the parameter accounting.

    One group "decay" with its weight decay holds every trainable parameter
    (name and shape; A is rank x in, B is out x rank), followed by trainable
    parameters, total parameters and the exact ratio. `file` defaults to the
    current sys.stdout (looked up at call time, so redirection and capture work).
    """
    file = file or sys.stdout
    params = list(trainable_parameters(model, names))
    print(f'param group "decay": weight_decay {weight_decay}, {len(params)} parameters', file=file)
    for name, shape in params:
        print(f"  {name} {tuple(shape)}", file=file)
    for line in format_count(count_parameters(model)):
        print(line, file=file)
