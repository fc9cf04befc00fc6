"""The states the experiment evaluates of every checkpoint: its adapter as trained, and the post-training
variants of retention methods `scale` (keeptune.retention.scale) and `intruders` (keeptune.retention.intruders).

Each variant is made from the loaded checkpoint after training, evaluated in its own folder inside the
checkpoint's (keyed on the checkpoint's weights and the variant's settings), judged by the same gate and score,
and becomes one results.json entry: `fields` are what tells the entry apart (`scale`, and `intruders` for a
reduced state), `methods` the methods that made it, and the adapter `applied` yields is the state's adapter,
the one the export copies (a scaled state's is the checkpoint's, its factor folded in at export).
"""
from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from keeptune.model.adapter import write_adapter
from keeptune.retention import intruders, scale
from keeptune.train.config import RetentionConfig


@dataclass(frozen=True)
class Variant:
    """The adapter as trained (method None), or one post-training variant of it: `value` is scale's factor or
    intruders' lambda."""

    method: str | None = None
    value: float = 1.0
    settings: tuple[tuple[str, float], ...] = ()  # intruders: lambda, top_k, epsilon

    @property
    def folder(self) -> str | None:
        """The variant's evaluation folder inside its checkpoint's (None: the checkpoint's own, as trained)."""
        if self.method == scale.SCALE:
            return scale.folder(self.value)
        return intruders.folder(self.value) if self.method == intruders.INTRUDERS else None

    def evaluations(self, checkpoint_folder: Path) -> Path:
        return checkpoint_folder / self.folder if self.folder else checkpoint_folder

    def state(self) -> str:
        """What the evaluation cache is keyed on beside the checkpoint's name and digest (the plain run's and
        scale's keys as they were: their caches stay valid)."""
        if self.method == intruders.INTRUDERS:
            return " intruders " + " ".join(f"{k} {v!r}" for k, v in self.settings)
        return f" scale {self.value!r}" if self.method else ""

    def phase(self) -> str:
        """The timing table's suffix: `` scale 0.5``, `` intruders 0.75``."""
        return f" {self.method} {self.value:g}" if self.method else ""

    def fields(self) -> dict:
        """What results.json's entry gets to tell this state apart: its `scale` (1 for every state but scale's) and,
        for a reduced state, `intruders` (its lambda)."""
        if self.method == intruders.INTRUDERS:
            return {"scale": 1.0, "intruders": self.value}
        return {"scale": self.value}

    def methods(self, methods: Sequence[str]) -> list[str]:
        """The methods that made this state: the training methods, and this variant's."""
        if self.method == intruders.INTRUDERS:
            return intruders.state_methods(methods)
        return scale.state_methods(methods, self.value)

    @contextlib.contextmanager
    def applied(self, peft_model, checkpoint: Path, evaluations: Path, write: bool) -> Iterator[tuple[Path, dict]]:
        """`peft_model` holding `checkpoint`'s weights, made this state inside the block; yields the state's adapter
        folder and what the entry records about the making (a reduced state: how many layers had intruders). A
        reduced state's adapter is written (`write`: by the process that writes) to its evaluation folder."""
        if self.method != intruders.INTRUDERS:
            with scale.scaled(peft_model, self.value):
                yield checkpoint, {}
            return
        made = dict(self.settings)
        with intruders.reduced(peft_model, self.value, int(made["top_k"]), made["epsilon"]) as layers:
            adapter = intruders.adapter_path(evaluations)
            if write:
                write_adapter(checkpoint, adapter, intruders.reduced_weights(peft_model),
                              {"intruders": {**made, "layers_with_intruders": layers, "from": str(checkpoint)}})
            yield adapter, {"intruder_layers": layers}


def variants(retention: RetentionConfig) -> list[Variant]:
    """Every state of a checkpoint the experiment evaluates: as trained first, then `scale`'s factors, then
    `intruders`' lambdas (only the methods retention.methods names)."""
    states = [Variant(scale.SCALE if factor != 1 else None, factor) for factor in scale.factors(retention)]
    return states + [Variant(intruders.INTRUDERS, share, tuple(intruders.settings(retention, share).items()))
                     for share in intruders.lambdas(retention)]


def entry_folder(entry: dict) -> str | None:
    """The evaluation folder of a results.json entry inside its checkpoint's (None: the checkpoint's own)."""
    if entry.get(intruders.INTRUDERS) is not None:
        return intruders.folder(entry[intruders.INTRUDERS])
    factor = entry.get("scale", 1.0)
    return None if factor == 1 else scale.folder(factor)


def check(retention: RetentionConfig, task_names: Sequence[str]) -> None:
    """ConfigError for a post-training method that cannot mean what it says (each method's own check)."""
    scale.check(retention, task_names)
    intruders.check(retention, task_names)

