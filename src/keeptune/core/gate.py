"""The experiment's two rules, in one place: the retention gate and the score.

Gate (the seed's, generalised to any number of retention tasks): a model state
passes a retention task when each of the task's gated scalars is at least
`fraction` x the base model's on the same samples; it passes the gate when it
passes every retention task. The seed's gate is one task, squad-seed, with
emf1.F1 and emf1.Em at 0.9.

Score (the contest's): (1 - ratio) * 0.3 + accuracy * 0.7, for a state that
passes the gate; ratio = trainable / all parameters, accuracy = the new task's
accuracy scalar (a fraction).

Best (the seed's choice, over every evaluated state): the passing entry with the
highest score. An entry is a checkpoint, or with retention method `scale` a
(checkpoint, scale) pair: the same checkpoint with its adapter's update scaled
(keeptune.retention.scale); every one is judged by the same gate and score. On
equal scores the larger scale wins (the adapter closest to as trained: a scaled
state is chosen only when it is strictly better), then the later step. An entry
without a `scale` (a plain run's, or an older results.json) is at scale 1.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

GATE_RULE = "a checkpoint passes when every retention task keeps each gated scalar >= fraction x the base model's"
SCORE_RULE = "score = (1 - ratio) * 0.3 + accuracy * 0.7, for a checkpoint that passes the gate"


@dataclass(frozen=True)
class TaskGate:
    task: str
    metrics: tuple[str, ...]
    fraction: float

    def thresholds(self, baseline: dict[str, float]) -> dict[str, float]:
        return {m: self.fraction * baseline[m] for m in self.metrics}

    def passes(self, scores: dict[str, float], baseline: dict[str, float]) -> bool:
        return all(scores[m] >= self.fraction * baseline[m] for m in self.metrics)

    def retention(self, scores: dict[str, float], baseline: dict[str, float]) -> dict[str, Optional[float]]:
        """State / baseline for each gated scalar (None where the baseline is 0)."""
        return {m: (scores[m] / baseline[m] if baseline[m] else None) for m in self.metrics}

    def describe(self, baseline: dict[str, float]) -> dict:
        return {"metrics": list(self.metrics), "fraction": self.fraction, "thresholds": self.thresholds(baseline)}


def judge(gates: list[TaskGate], scores: dict[str, dict], baseline: dict[str, dict]) -> dict:
    """{"gate": {task: passed}, "passes_gate": all passed, "retention": {task: {scalar: ratio}}} of one state.

    `scores` and `baseline` map a task name to its scalars."""
    per_task = {g.task: g.passes(scores[g.task], baseline[g.task]) for g in gates}
    return {"retention": {g.task: g.retention(scores[g.task], baseline[g.task]) for g in gates},
            "gate": per_task, "passes_gate": all(per_task.values())}


def score(accuracy: float, ratio: float) -> float:
    """The contest's score: (1 - ratio) * 0.3 + accuracy * 0.7."""
    return (1 - ratio) * 0.3 + accuracy * 0.7


def lowest_retention(retention: dict[str, dict[str, Optional[float]]]) -> float:
    """The lowest state / baseline over every gated scalar of `judge`'s "retention" (1.0 when every baseline is 0):
    how close a state is to the gate, one number (the report's frontier plots it against accuracy)."""
    ratios = [r for task in retention.values() for r in task.values() if r is not None]
    return min(ratios) if ratios else 1.0


def best(entries: list[dict]) -> Optional[dict]:
    """The passing entry with the highest score; on a tie the larger scale, then the later step; None when none
    passes."""
    passing = [e for e in entries if e["passes_gate"]]
    return max(passing, key=lambda e: (e["score"], e.get("scale", 1.0), e["step"])) if passing else None


def gate_distance(judged: dict, fractions: dict[str, float]) -> float:
    """How far a judged state (`judge`'s mapping, or a results.json entry) is below the gate: the largest
    (fraction - state / baseline) over the gated scalars, 0 when it passes. A failing state whose every gap is
    unmeasurable (baselines of 0) is 1e-9, still > 0: Optuna reads this as the sweep's constraint, <= 0 feasible.
    `fractions` maps each retention task to its gate fraction."""
    if judged["passes_gate"]:
        return 0.0
    gaps = [fractions[task] - r for task, ratios in judged["retention"].items() for r in ratios.values()
            if r is not None]
    return max([g for g in gaps if g > 0] or [1e-9])


def shortfall(judged: dict) -> tuple[list[str], Optional[float]]:
    """The retention tasks a judged state fails, and the lowest state / baseline over their gated scalars (None
    when none has a ratio): what the sweep's pruning says when a tracked state falls below the gate."""
    failed = [task for task, passed in judged["gate"].items() if not passed]
    lowest = min((r for task in failed for r in judged["retention"][task].values() if r is not None), default=None)
    return failed, lowest
