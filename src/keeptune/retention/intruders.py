"""Retention method `intruders` (docs/retention.md): PEFT's intruder-dimension reduction, applied after training
to every checkpoint's adapter, one more state per lambda, each judged by the gate.

Shuttleworth et al. ("LoRA vs Full Fine-tuning: An Illusion of Equivalence", 2410.21228) find that LoRA's
update brings in "intruder dimensions": top singular vectors of W + dW nearly orthogonal to every singular
vector of W, and tie them to forgetting. PEFT's `peft.tuners.lora.intruders.reduce_intruder_dimension` finds,
in every adapted layer, the top_k singular directions u s v of W + dW whose largest |cosine| with W's left
singular vectors is below epsilon, computes W + dW + (lambda - 1) sum u s v (each intruder kept at the share
lambda), and writes the difference from W, truncated by SVD to the adapter's rank r and divided by its scaling,
into a new adapter of the same LoRA configuration. keeptune calls it on the loaded checkpoint (adapter
"default"), evaluates the new adapter, saves its weights as a plain PEFT adapter, and deletes it again.

Training does not change, as with `scale`: the as-trained evaluations are the plain run's, and lambda's are in
RUN/checkpoints/step-N/intruders-L/TASK, keyed on the checkpoint's weights, lambda, top_k and epsilon; the
reduced adapter is RUN/checkpoints/step-N/intruders-L/adapter, what the results.json entry names and what the
export copies when that state is the best.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from pathlib import Path

from keeptune.core.errors import ConfigError
from keeptune.train.config import RetentionConfig

INTRUDERS = "intruders"
FOLDER_PREFIX = "intruders-"
ADAPTER = "adapter"  # the reduced adapter's folder inside the state's evaluation folder
REDUCED = "intruders_reduced"  # the PEFT adapter name the reduced weights live under while they are evaluated


def lambdas(retention: RetentionConfig) -> tuple[float, ...]:
    """The shares each checkpoint's intruders are kept at, in order, without repeats or 1 (the adapter as trained,
    evaluated anyway); () when `intruders` is off."""
    if INTRUDERS not in retention.methods:
        return ()
    return tuple(x for x in dict.fromkeys(float(x) for x in retention.intruder_lambdas) if x != 1.0)


def folder(share: float) -> str:
    """The evaluation folder of lambda `share` inside a checkpoint's: ``intruders-0.5`` (repr: distinct lambdas
    never share a folder)."""
    return f"{FOLDER_PREFIX}{float(share)!r}"


def settings(retention: RetentionConfig, share: float) -> dict:
    """What a reduced state is made with: PEFT's mitigation_lambda, top_k and threshold_epsilon."""
    return {"lambda": float(share), "top_k": retention.intruder_top_k, "epsilon": float(retention.intruder_epsilon)}


@contextlib.contextmanager
def reduced(peft_model, share: float, top_k: int, epsilon: float) -> Iterator[int]:
    """`peft_model` (a PEFT LoRA model, its adapter "default") answering with PEFT's intruder-reduced copy of that
    adapter inside the block; yields how many adapted layers had intruders (the others are copied unchanged).
    On leaving, "default" is active again and the copy is deleted."""
    import torch
    from peft.tuners.lora import LoraLayer

    from keeptune.model.lora import require_peft

    require_peft("peft.tuners.lora.intruders", "reduce_intruder_dimension", "retention method intruders")
    from peft.tuners.lora.intruders import reduce_intruder_dimension  # peft takes ~2 s to import: only here

    with torch.no_grad():
        reduce_intruder_dimension(peft_model, "default", REDUCED, top_k=top_k, threshold_epsilon=epsilon,
                                  mitigation_lambda=share, logging_sink=None)
    try:
        layers = [m for m in peft_model.modules() if isinstance(m, LoraLayer) and REDUCED in m.lora_A]
        yield sum(not (torch.equal(m.lora_A[REDUCED].weight, m.lora_A["default"].weight) and
                       torch.equal(m.lora_B[REDUCED].weight, m.lora_B["default"].weight)) for m in layers)
    finally:
        peft_model.set_adapter("default")
        peft_model.delete_adapter(REDUCED)


def reduced_weights(peft_model) -> dict:
    """The reduced adapter's PEFT state dict (inside `reduced`), keyed as the adapter "default" saves: a plain
    LoRA of the checkpoint's configuration."""
    from peft import get_peft_model_state_dict

    return {key: value.detach().cpu() for key, value in
            get_peft_model_state_dict(peft_model, adapter_name=REDUCED).items()}


def state_methods(methods: Sequence[str]) -> list[str]:
    """The methods that made a reduced state: the training methods, then `intruders`."""
    from keeptune.retention.config import POST_TRAINING_METHODS

    return [m for m in methods if m not in POST_TRAINING_METHODS] + [INTRUDERS]


def check(retention: RetentionConfig, task_names: Sequence[str]) -> None:
    """ConfigError for a task name that would share a folder with the reduced states' evaluations or adapters,
    before any work (`intruders` with `corda` is refused with the config: keeptune.train.config.validate)."""
    if INTRUDERS not in retention.methods:
        return
    clash = [name for name in task_names if name.startswith(FOLDER_PREFIX)]
    if clash:
        raise ConfigError(f"field 'original': task name {clash[0]!r} starts with {FOLDER_PREFIX!r}, which names "
                          "the intruder-reduced evaluations' folders; give the task another `name:`")
    if ADAPTER in task_names:
        raise ConfigError(f"field 'original': task name {ADAPTER!r} names the reduced adapter's folder beside the "
                          "intruder-reduced evaluations; give the task another `name:`")


def adapter_path(evaluations: Path) -> Path:
    """Where a reduced state's adapter is saved: in its evaluation folder."""
    return Path(evaluations) / ADAPTER
