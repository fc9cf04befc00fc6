"""The experiment's two rules, in one place: the retention gate and the score.

Gate (the seed's, generalised to any number of retention tasks): a model state
passes a retention task when each of the task's gated scalars passes the task's
rule; it passes the gate when it passes every retention task. Two rules:

- `point` (the seed's, the default): the scalar is at least `fraction` x the
  base model's on the same samples. The seed's gate is one task, squad-seed,
  with emf1.F1 and emf1.Em at 0.9.
- `confident`: the one-sided lower bound at `confidence` of the scalar's paired
  retention (state / base, bootstrapped over the same resampled samples for
  both: keeptune.core.stats.retention) is at least `fraction`
  (keeptune.core.stats.confident_pass). A scalar whose base value is 0 passes
  trivially under either rule (tuned >= fraction x 0); its record says so.

A scalar that is better lower (a perplexity, bits per byte: `lower_is_better`) is kept when it rises by no more
than a factor 1 / fraction: its retention is base / tuned, so "retention >= fraction" reads the same for both
kinds and 0.95 means a 5.3% rise (an experiment's `max_rise: 0.05` sets fraction = 1 / 1.05).

Score (the contest's): (1 - ratio) * 0.3 + accuracy * 0.7, for a state that
passes the gate; ratio = trainable / all parameters, accuracy = the new task's
accuracy scalar (a fraction).

Best (the seed's choice, over every evaluated state): the passing entry with the
highest score. An entry is a checkpoint, or with retention method `scale` a
(checkpoint, scale) pair: the same checkpoint with its adapter's update scaled
(keeptune.retention.scale), or with `intruders` a (checkpoint, lambda) pair: its
adapter with PEFT's intruder dimensions kept at the share lambda
(keeptune.retention.intruders); every one is judged by the same gate and score.
On equal scores the state closest to the adapter as trained wins (a variant is
chosen only when it is strictly better): the larger scale, then the larger
lambda, then the later step. An entry without a `scale` (a plain run's, or an
older results.json) is at scale 1, one without `intruders` at lambda 1. The
runner-up is the next passing entry in the same order.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Optional

from keeptune.core import stats

POINT, CONFIDENT = "point", "confident"
RULES = (POINT, CONFIDENT)
GATE_RULE = "a checkpoint passes when every retention task keeps each gated scalar >= fraction x the base model's"
CONFIDENT_RULE = ("a checkpoint passes when every retention task passes its rule: point, each gated scalar >= "
                  "fraction x the base model's; confident, the one-sided lower bound of each gated scalar's paired "
                  "retention (checkpoint / base, bootstrapped over the same samples) at the task's confidence >= "
                  "fraction; a scalar whose base value is 0 passes trivially under either")
SCORE_RULE = "score = (1 - ratio) * 0.3 + accuracy * 0.7, for a checkpoint that passes the gate"


@dataclass(frozen=True)
class TaskGate:
    """One retention task's gate: its gated scalars, the fraction of the base model's each must keep, the rule
    (`point` or `confident`) and the confidence of the paired retention (the level of its interval; with rule
    `confident`, of the lower bound the gate demands)."""

    task: str
    metrics: tuple[str, ...]
    fraction: float
    rule: str = POINT
    confidence: float = stats.LEVEL
    lower_is_better: tuple[str, ...] = ()  # gated scalars kept when they do not rise past baseline / fraction
    held_out: bool = False  # measured (each scalar's paired change against the base model), never judged

    def thresholds(self, baseline: dict[str, float]) -> dict[str, float]:
        """The value each gated scalar must reach: at least fraction x baseline, or for a scalar better lower at most
        baseline / fraction."""
        return {m: baseline[m] / self.fraction if m in self.lower_is_better else self.fraction * baseline[m]
                for m in self.metrics}

    def point_passes(self, metric: str, scores: dict[str, float], baseline: dict[str, float]) -> bool:
        if metric in self.lower_is_better:  # tuned <= base / fraction, i.e. base / tuned >= fraction
            return scores[metric] * self.fraction <= baseline[metric]
        return scores[metric] >= self.fraction * baseline[metric]

    def passes(self, scores: dict[str, float], baseline: dict[str, float],
               paired: Optional[dict[str, stats.Retention]] = None) -> bool:
        """Whether every gated scalar passes the rule; rule `confident` needs `paired`, each gated scalar's
        paired retention estimated at level `confidence`."""
        if self.rule == POINT:
            return all(self.point_passes(m, scores, baseline) for m in self.metrics)
        if paired is None:
            raise ValueError(f"the confident gate of {self.task} needs the paired retention of its gated scalars")
        return all(stats.confident_pass(paired[m], self.fraction, self.confidence) for m in self.metrics)

    def retention(self, scores: dict[str, float], baseline: dict[str, float]) -> dict[str, Optional[float]]:
        """State / baseline for each gated scalar (None where the baseline is 0); baseline / state for a scalar
        better lower (None where the state is 0)."""
        def ratio(m: str) -> Optional[float]:
            above, below = (baseline[m], scores[m]) if m in self.lower_is_better else (scores[m], baseline[m])
            return above / below if below else None
        return {m: ratio(m) for m in self.metrics}

    def describe(self, baseline: dict[str, float]) -> dict:
        if self.held_out:  # no threshold, no rule: nothing is decided
            return {"metrics": list(self.metrics), "fraction": self.fraction, "confidence": self.confidence,
                    "lower_is_better": list(self.lower_is_better)}
        return {"metrics": list(self.metrics), "fraction": self.fraction, "thresholds": self.thresholds(baseline),
                "rule": self.rule, "confidence": self.confidence, "lower_is_better": list(self.lower_is_better)}

    def as_point(self) -> TaskGate:
        """The same gate under the point rule (what tracking's small subsets are judged by)."""
        return dataclasses.replace(self, rule=POINT)


def gate_rule(gates: list[TaskGate]) -> str:
    """The gate's rule in words: the seed's sentence when every task uses the point rule."""
    return GATE_RULE if all(g.rule == POINT for g in gates) else CONFIDENT_RULE


def judge(gates: list[TaskGate], scores: dict[str, dict], baseline: dict[str, dict],
          paired: Optional[dict[str, dict[str, stats.Retention]]] = None) -> dict:
    """{"gate": {task: passed}, "passes_gate": all passed, "retention": {task: {scalar: ratio}}} of one state, and
    with `paired` ({task: {scalar: Retention}}, each at its gate's confidence) "retention_uncertainty":
    {task: `uncertainty_record`}: the numbers behind each decision.

    A held-out task (`TaskGate.held_out`) decides nothing: its ratios are under "held_out" and, with `paired`,
    its records (`measured_record`) under "held_out_uncertainty".

    `scores` and `baseline` map a task name to its scalars."""
    gated, held = [g for g in gates if not g.held_out], [g for g in gates if g.held_out]
    per_task = {g.task: g.passes(scores[g.task], baseline[g.task], (paired or {}).get(g.task)) for g in gated}
    verdict = {"retention": {g.task: g.retention(scores[g.task], baseline[g.task]) for g in gated},
               "gate": per_task, "passes_gate": all(per_task.values())}
    if held:
        verdict["held_out"] = {g.task: g.retention(scores[g.task], baseline[g.task]) for g in held}
    if paired is not None:
        verdict["retention_uncertainty"] = {
            g.task: uncertainty_record(g, scores[g.task], baseline[g.task], paired[g.task], per_task[g.task])
            for g in gated}
        if held:
            verdict["held_out_uncertainty"] = {g.task: measured_record(g, paired[g.task]) for g in held}
    return verdict


def _finite(value: Optional[float]) -> Optional[float]:
    """A number for JSON: an infinite or missing one is None."""
    return value if value is not None and math.isfinite(value) else None


def uncertainty_record(gate: TaskGate, scores: dict[str, float], baseline: dict[str, float],
                       paired: dict[str, stats.Retention], passed: bool) -> dict:
    """One task's decision with its numbers: {rule, confidence, fraction, passed, scalars: {scalar: {ratio, low,
    high, method, lower, p_at_least, base, tuned, base_zero, note, point_passes, confident_passes}}}. ratio, low,
    high, lower: the paired retention, its two-sided interval and its one-sided lower bound at `confidence` (an
    infinite bound is None); p_at_least: the share of bootstrap replicates whose ratio is >= fraction; base,
    tuned: the per-sample means the ratio divides; point_passes and confident_passes: the scalar's verdict under
    each rule (the task's `rule` decides)."""
    scalars = {m: {**_paired_numbers(paired[m]), "point_passes": gate.point_passes(m, scores, baseline),
                   "confident_passes": stats.confident_pass(paired[m], gate.fraction, gate.confidence)}
               for m in gate.metrics}
    return {"rule": gate.rule, "confidence": gate.confidence, "fraction": gate.fraction, "passed": passed,
            "scalars": scalars}


def measured_record(gate: TaskGate, paired: dict[str, stats.Retention]) -> dict:
    """A held-out task's numbers, as `uncertainty_record` without a verdict: {confidence, fraction, scalars:
    {scalar: {ratio, low, high, method, lower, p_at_least, base, tuned, base_zero, note}}}; p_at_least says what a
    gate at `fraction` would have seen, and decides nothing."""
    def numbers(r: stats.Retention) -> dict:
        out = _paired_numbers(r)
        if r.base_zero:  # stats' note speaks of a gate; nothing gates this one
            out["note"] = "baseline 0: the ratio is undefined; this scalar cannot show a loss"
        return out
    return {"confidence": gate.confidence, "fraction": gate.fraction,
            "scalars": {m: numbers(paired[m]) for m in gate.metrics}}


def _paired_numbers(r: stats.Retention) -> dict:
    return {"ratio": _finite(r.ratio), "low": _finite(r.interval.low) if r.interval else None,
            "high": _finite(r.interval.high) if r.interval else None,
            "method": r.interval.method if r.interval else None, "lower": _finite(r.lower),
            "p_at_least": r.p_at_least, "base": r.base, "tuned": r.tuned, "base_zero": r.base_zero, "note": r.note}


def score(accuracy: float, ratio: float) -> float:
    """The contest's score: (1 - ratio) * 0.3 + accuracy * 0.7."""
    return (1 - ratio) * 0.3 + accuracy * 0.7


def lowest_retention(retention: dict[str, dict[str, Optional[float]]]) -> float:
    """The lowest state / baseline over every gated scalar of `judge`'s "retention" (1.0 when every baseline is 0):
    how close a state is to the gate, one number (the report's frontier plots it against accuracy)."""
    ratios = [r for task in retention.values() for r in task.values() if r is not None]
    return min(ratios) if ratios else 1.0


def ranked(entries: list[dict]) -> list[dict]:
    """The passing entries, best first: the highest score, on a tie the larger scale, then the larger intruders
    lambda (the state closest to as trained), then the later step."""
    passing = [e for e in entries if e["passes_gate"]]
    return sorted(passing, key=lambda e: (e["score"], e.get("scale", 1.0), e.get("intruders", 1.0), e["step"]),
                  reverse=True)


def best(entries: list[dict]) -> Optional[dict]:
    """The passing entry with the highest score; on a tie the larger scale, then the larger intruders lambda, then
    the later step; None when none passes."""
    order = ranked(entries)
    return order[0] if order else None


def runner_up(entries: list[dict]) -> Optional[dict]:
    """The next-best passing entry after `best` (None with fewer than two passing)."""
    order = ranked(entries)
    return order[1] if len(order) > 1 else None


def compared_ratios(judged: dict) -> dict[str, dict[str, Optional[float]]]:
    """What each task's rule compares with its fraction, per gated scalar: the point ratio state / baseline, or
    under rule `confident` the lower bound of the paired retention (None where the baseline is 0). A judged state
    without `retention_uncertainty` (tracking, an older results.json) gives the point ratios."""
    detail = judged.get("retention_uncertainty") or {}
    out = {}
    for task, ratios in judged["retention"].items():
        record = detail.get(task)
        if record is not None and record.get("rule") == CONFIDENT:
            out[task] = {m: s["lower"] for m, s in record["scalars"].items()}
        else:
            out[task] = ratios
    return out


def gate_distance(judged: dict, fractions: dict[str, float]) -> float:
    """How far a judged state (`judge`'s mapping, or a results.json entry) is below the gate: the largest
    (fraction - what its rule compares) over the gated scalars (`compared_ratios`), 0 when it passes. A failing
    state whose every gap is unmeasurable (baselines of 0) is 1e-9, still > 0: Optuna reads this as the sweep's
    constraint, <= 0 feasible. `fractions` maps each retention task to its gate fraction."""
    if judged["passes_gate"]:
        return 0.0
    gaps = [fractions[task] - r for task, ratios in compared_ratios(judged).items() for r in ratios.values()
            if r is not None]
    return max([g for g in gaps if g > 0] or [1e-9])


def shortfall(judged: dict) -> tuple[list[str], Optional[float]]:
    """The retention tasks a judged state fails, and the lowest value its rule compares over their gated scalars
    (`compared_ratios`; None when none has one): what the sweep's pruning says when a tracked state falls below
    the gate."""
    failed = [task for task, passed in judged["gate"].items() if not passed]
    compared = compared_ratios(judged)
    lowest = min((r for task in failed for r in compared[task].values() if r is not None), default=None)
    return failed, lowest
