"""Retention method `scale` (docs/retention.md): weight-space interpolation between the base model and the
tuned one, WiSE-FT for a LoRA adapter.

An adapted layer computes W x + (alpha / r) B A x. Scaling the adapter's update by s gives
W x + s (alpha / r) B A x, the weights W + s dW: the point s of the straight line from the base
weights (s = 0) to the tuned ones (s = 1). With `scale` in retention.methods every checkpoint is
evaluated at s = 1 (as trained) and at each factor of retention.scales, on the one loaded model,
through PEFT's own `rescale_adapter_scale` (it multiplies every LoraLayer's `scaling` and restores
it on exit). Each (checkpoint, scale) is an entry of results.json judged by the same gate and score
(keeptune.core.gate.best picks among them); the chosen one is exported with s folded into
its weights (keeptune.model.adapter.export_adapter: lora_B x s, since (alpha / r) (s B) A = s dW).

Training does not change: a checkpoint is the same with or without `scale`, and its scale-1
evaluation is the plain run's (RUN/checkpoints/step-N/TASK); scale s is cached in
RUN/checkpoints/step-N/scale-S/TASK, keyed on the adapter's weights and s.
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from keeptune.core.errors import ConfigError
from keeptune.retention.config import POST_TRAINING_METHODS
from keeptune.train.config import RetentionConfig

SCALE = "scale"
FOLDER_PREFIX = "scale-"


def factors(retention: RetentionConfig) -> tuple[float, ...]:
    """The scales every checkpoint is evaluated at: 1 (as trained) first, then retention.scales in order, without
    1 or repeats, when `scale` is on; (1.0,) when it is off."""
    if SCALE not in retention.methods:
        return (1.0,)
    return (1.0, *(s for s in dict.fromkeys(float(s) for s in retention.scales) if s != 1.0))


def folder(factor: float) -> str:
    """The evaluation folder of scale `factor` inside a checkpoint's: ``scale-0.5`` (repr: distinct factors never
    share a folder)."""
    return f"{FOLDER_PREFIX}{float(factor)!r}"


@contextlib.contextmanager
def scaled(model, factor: float) -> Iterator[None]:
    """`model` (a PEFT LoRA model) with every adapter's update multiplied by `factor` inside the block; as trained
    when `factor` is 1."""
    if factor == 1:
        yield
        return
    from peft.helpers import rescale_adapter_scale  # peft takes about 2 s to import: only when a scale is not 1

    with rescale_adapter_scale(model, float(factor)):
        yield


def state_methods(methods: Sequence[str], factor: float) -> list[str]:
    """The methods that made one evaluated state: the training methods, and `scale` when `factor` is not 1."""
    return [m for m in methods if m not in POST_TRAINING_METHODS] + ([SCALE] if factor != 1 else [])


def check(retention: RetentionConfig, task_names: Sequence[str]) -> None:
    """ConfigError for a use of `scale` that cannot mean what it says, before any work."""
    if SCALE not in retention.methods:
        return
    if "corda" in retention.methods:
        raise ConfigError("field 'retention.methods': scale does not combine with corda: CorDA rewrites the base "
                          "weights and starts from a non-zero adapter, so scaling the adapter does not interpolate "
                          "toward the base model (scale 0 would not be the base); drop one of them")
    clash = [name for name in task_names if name.startswith(FOLDER_PREFIX)]
    if clash:
        raise ConfigError(f"field 'original': task name {clash[0]!r} starts with {FOLDER_PREFIX!r}, which names "
                          "the scaled evaluations' folders; give the task another `name:`")
