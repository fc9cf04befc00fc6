"""Reading one experiment directory RUN: RUN/results.json (checked) and RUN/train/log.jsonl.

About 470 lines on purpose: it is the schema of results.json (written out below) and its checks, field by
field, each naming the field when it is wrong; split, a reader would lose the one place the contract is.

results.json is written by the experiment runner; it is the contract between
the runner and the report. The report knows no task by name: every task, its
metrics, their units, its gate and its role come from the ``tasks`` list of the
file, so a new task or a new metric needs no change here. The schema::

    {
      "name": str, "command": str, "wall_seconds": float | null,
      "cpu_seconds": float,            # this process's CPU time, all its threads (absent before 2026-12-08)
      "settings": {str: any},          # flat key -> value, shown as a two-column table
      "config": {...},                 # the full resolved config (shown folded)
      "params": {"trainable": int, "total": int, "ratio": float},   # "score_term" optional
      "score_rule": str,               # e.g. "score = (1 - ratio) * 0.3 + accuracy * 0.7, ..."
      "gate_rule": str,                # e.g. "a checkpoint passes when every retention task passes its gate"
      "tasks": [                       # the retention and held-out tasks, then exactly one task with role "new"
        {"name": "squad-seed", "role": "retention", "description": str,
         "metrics": ["emf1.F1", "emf1.Em", ...],          # scalar scores to show, in order
         "units": {"emf1.F1": "points", ...},              # "points": 0..100, "fraction": 0..1
         "gate": {"metrics": ["emf1.F1", "emf1.Em"], "fraction": 0.9,
                  "thresholds": {"emf1.F1": 12.459, "emf1.Em": 0.0},   # fraction x base model's score
                  "rule": "point", "confidence": 0.95}},   # optional (point, 0.95 when absent): see below
        {"name": "arc-heldout", "role": "held_out", "description": str, "metrics": [...], "units": {...},
         "measured": {"metrics": ["lmeval.acc"], "fraction": 0.9,    # the scalars with a paired change; fraction:
                      "confidence": 0.95, "lower_is_better": []}},   # only P(>= fraction)'s, never a verdict
        {"name": "math", "role": "new", "description": str,
         "metrics": ["judge.accuracy@0.01", ...], "units": {...},
         "accuracy": "judge.accuracy@0.01",                # the metric that enters the score
         "breakdown": "judge.accuracy@0.01"}               # or null: whose per-group table is shown
      ],
      "baseline": {"tasks": {TASK: EVAL}},
      "checkpoints": [CHECKPOINT, ...],                    # in step order (each step's scales together)
      "best": null | CHECKPOINT + {"merged": str | null},  # its adapter: RUN/best/adapter, the scale folded in
      "tracking": [{"step": int, "tasks": {TASK: {"scores": {metric: float}}},
                    "retention": {TASK: {metric: float | null}}, "passes_gate": bool,
                    "subset": {TASK: int}}],
      "timing": [{"phase": str, "task": str | null, "seconds": float,   # optional: where the time went,
                  "steps": int, "evaluations": int}],                  # in order; steps/evaluations optional
      "best_vs_runner_up": null | COMPARISON   # optional: the best against the next passing state on the new
    }                                          # task's accuracy scalar (null: fewer than two pass)
    EVAL = {"total_count": int, "scores": {metric: float},     # every scalar of the task
            "breakdown": {group: [correct, total]} | null,     # for the task's "breakdown" metric
            "intervals": {metric: INTERVAL | null}}            # optional: each scalar's bootstrap interval
    INTERVAL = {"low": float | null, "high": float | null, "level": float, "method": str, "resampled": str}
    CHECKPOINT = {"step": int, "loss": float | null, "adapter": str, "tasks": {TASK: EVAL},
                  "scale": float,          # optional (1 when absent): the factor the adapter's update was
                                           # scaled by (retention method `scale`); 1 = as trained
                  "methods": [str],        # optional ([] when absent): the retention methods of this state
                  "retention": {TASK: {gate metric: checkpoint / baseline, null when the baseline is 0}},
                  "gate": {TASK: bool}, "passes_gate": bool,    # every retention task passed
                  "accuracy": float,                            # the new task's accuracy metric
                  "score": float | null,                        # null when it fails the gate
                  "retention_uncertainty": {TASK: DECISION},    # optional: the numbers behind each task's verdict
                  "held_out": {TASK: {measured metric: ratio | null}},  # optional: held-out tasks, as "retention"
                  "held_out_uncertainty": {TASK: MEASURED}}     # optional: their paired change, decides nothing
    DECISION = {"rule": "point" | "confident", "confidence": float, "fraction": float, "passed": bool,
                "scalars": {gate metric: {"ratio": float | null, "low": float | null, "high": float | null,
                                          "method": str | null, "lower": float | null, "p_at_least": float | null,
                                          "base": float, "tuned": float, "base_zero": bool, "note": str | null,
                                          "point_passes": bool, "confident_passes": bool}}}
    MEASURED = DECISION without "rule", "passed" and each scalar's "point_passes", "confident_passes"
    COMPARISON = {"task": str, "scalar": str, "best": {"step", "scale"}, "runner_up": {"step", "scale"},
                  "difference": float, "low", "high": float | null, "level": float | null, "method": str | null,
                  "p_value": float, "test": str, "verdict": str, "n": int, "mean_a": float, "mean_b": float,
                  "discordant": [int, int] | null}

A DECISION (keeptune.core.gate.uncertainty_record) is the paired retention of each gated scalar (the
checkpoint's per-sample mean over the base model's, bootstrapped over the same resampled samples): the
ratio, its two-sided interval, its one-sided lower bound at `confidence`, the share of replicates at or
above the fraction, the verdict of each rule; `rule` decided. A base of 0 has no ratio (`base_zero`,
`note`). Every optional part is absent from a results.json written before it existed (`keeptune report`
fills it in from the run's folders when they are there: keeptune.experiment.results.complete_uncertainty).

A held-out task (role "held_out") is evaluated like a retention task at the baseline and every checkpoint, on
data the gate never sees: its measured scalars get the same paired change against the base model, under
"held_out" and "held_out_uncertainty" (keyed apart from "retention", "gate" and "retention_uncertainty", which
hold the gated tasks only), and it never decides a verdict nor the best checkpoint. Tracking rows hold no
held-out task.

The run's retention methods are those of ``config.retention.methods`` (plain LoRA when
absent). Tasks are keyed by name everywhere. A metric missing from an entry's
``scores`` (an old or partial entry) is shown as ``n/a``; a unit other than
``points`` and ``fraction`` is shown as the plain number. The checks below cover
every field the report reads and name the file and the field path when one is
absent or of the wrong kind, e.g. ``RUN/results.json: checkpoints[2].tasks.squad-seed lacks 'scores'``.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from keeptune.core import gate as rules
from keeptune.core.errors import DataError
from keeptune.core.io import read_jsonl_prefix
from keeptune.report import fmt

RESULTS = "results.json"
LOG = Path("train") / "log.jsonl"
RETENTION, NEW, HELD_OUT = "retention", "new", "held_out"
ROLES = (RETENTION, NEW, HELD_OUT)

_TOP = {"name": str, "command": str, "settings": dict, "params": dict, "score_rule": str, "gate_rule": str,
        "tasks": list, "baseline": dict, "checkpoints": list}
_PARAMS = ("trainable", "total", "ratio")
_CHECKPOINT = ("step", "tasks", "retention", "gate", "passes_gate", "accuracy", "score")
_TRACKING = ("step", "tasks", "retention", "passes_gate")


@dataclass(frozen=True)
class Task:
    """One task of the run, as its spec in results.json describes it."""

    name: str
    role: str  # RETENTION, HELD_OUT or NEW
    description: str = ""
    metrics: tuple[str, ...] = ()
    units: Mapping[str, str] = field(default_factory=dict)
    gate_metrics: tuple[str, ...] = ()  # retention tasks: the metrics the gate checks
    gate_fraction: float | None = None  # held-out tasks: only the fraction of P(>= fraction), never a verdict
    thresholds: Mapping[str, float] = field(default_factory=dict)
    accuracy: str | None = None  # the new task: the metric that enters the score
    breakdown: str | None = None  # the new task: the metric whose per-group table is shown
    rule: str = rules.POINT  # retention tasks: the gate's rule
    confidence: float = 0.95  # retention and held-out tasks: the level of the paired retention (and confident bound)
    lower_is_better: tuple[str, ...] = ()  # gated metrics kept while they rise by at most 1 / fraction (perplexity)
    measured: tuple[str, ...] = ()  # held-out tasks: the metrics with a paired change against the base model

    @classmethod
    def from_spec(cls, spec: dict) -> Task:
        gate, measured = spec.get("gate") or {}, spec.get("measured") or {}
        paired = gate or measured  # a held-out task's change is read at its own fraction and confidence, as a gate's
        return cls(name=spec["name"], role=spec["role"], description=spec.get("description") or "",
                   metrics=tuple(spec["metrics"]), units=dict(spec.get("units") or {}),
                   gate_metrics=tuple(gate.get("metrics") or ()), gate_fraction=paired.get("fraction"),
                   thresholds=dict(gate.get("thresholds") or {}),
                   accuracy=spec.get("accuracy"), breakdown=spec.get("breakdown"),
                   rule=gate.get("rule", rules.POINT), confidence=paired.get("confidence", 0.95),
                   lower_is_better=tuple(paired.get("lower_is_better") or ()),
                   measured=tuple(measured.get("metrics") or ()))

    @property
    def paired_metrics(self) -> tuple[str, ...]:
        """The metrics with a paired change against the base model: the gated ones, or a held-out task's measured."""
        return self.measured if self.role == HELD_OUT else self.gate_metrics

    def unit(self, metric: str) -> str | None:
        return self.units.get(metric)

    def show(self, metric: str, value: float | None) -> str:
        """`value` of `metric` written in the metric's unit (see `fmt.metric`)."""
        return fmt.metric(value, self.unit(metric))

    def show_interval(self, metric: str, value: float | None, interval: dict | None) -> str:
        """`value` with its interval, compactly (see `fmt.with_interval`)."""
        return fmt.with_interval(value, self.unit(metric), interval)

    def bound(self, metric: str) -> str:
        """What the gate asks of one metric: ``>= 0.9 x baseline``, or for a metric better lower
        ``<= baseline / 0.8 (a rise of at most 25%)``."""
        if metric in self.lower_is_better:
            return f"<= baseline / {self.gate_fraction:g} (a rise of at most {100 / self.gate_fraction - 100:.3g}%)"
        return f">= {self.gate_fraction:g} x baseline"

    def gate_text(self) -> str:
        """The task's gate in words: ``emf1.F1, emf1.Em >= 0.9 x baseline`` and, under rule confident,
        ``(confident: the 95% lower bound of the paired retention)``."""
        groups: dict[str, list[str]] = {}
        for metric in self.gate_metrics:
            groups.setdefault(self.bound(metric), []).append(metric)
        text = "; ".join(f"{', '.join(metrics)} {bound}" for bound, metrics in groups.items())
        if self.rule == rules.CONFIDENT:
            text += f" (rule confident: the {self.confidence * 100:g}% lower bound of the paired retention)"
        return text


def load_results(path: Path) -> dict:
    """The checked content of a results.json file (or of RUN/results.json when `path` is a folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such file (an experiment directory holds results.json)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read ({err})") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    check_results(data, path)
    return data


def check_results(data: Any, path: Path) -> None:
    """DataError naming `path` and the field when `data` lacks something the report reads."""
    _require(data, (), "the file", path)
    if "tasks" not in data:
        again = f"`{data['command']}`" if isinstance(data.get("command"), str) else "`keeptune run`"
        raise DataError(f"{path}: written by an older keeptune (no 'tasks' list); re-run {again} to "
                        "regenerate it (the run's cache makes that cheap)")
    for key, kind in _TOP.items():
        if not isinstance(data.get(key), kind):
            raise DataError(f"{path}: field {key!r} missing or not a {kind.__name__}")
    _require(data["params"], _PARAMS, "params", path)
    for key in _PARAMS:
        _number(data["params"][key], f"params.{key}", path)
    specs = _check_tasks(data["tasks"], path)
    _require(data["baseline"], ("tasks",), "baseline", path)
    _check_evals(data["baseline"]["tasks"], specs, "baseline.tasks", path)
    for i, checkpoint in enumerate(data["checkpoints"]):
        _check_checkpoint(checkpoint, specs, f"checkpoints[{i}]", path)
    if data.get("best") is not None:
        _check_checkpoint(data["best"], specs, "best", path)
    if data.get("best_vs_runner_up") is not None:
        _check_comparison(data["best_vs_runner_up"], "best_vs_runner_up", path)
    timing = data.get("timing") or []
    if not isinstance(timing, list):
        raise DataError(f"{path}: timing is not a list")
    for i, row in enumerate(timing):
        _require(row, ("phase", "seconds"), f"timing[{i}]", path)
        _number(row["seconds"], f"timing[{i}].seconds", path)
    tracking = data.get("tracking") or []
    if not isinstance(tracking, list):
        raise DataError(f"{path}: tracking is not a list")
    for i, row in enumerate(tracking):
        where = f"tracking[{i}]"
        _require(row, _TRACKING, where, path)
        _number(row["step"], f"{where}.step", path)
        _require(row["tasks"], (), f"{where}.tasks", path)
        for name, entry in row["tasks"].items():
            _require(entry, ("scores",), f"{where}.tasks.{name}", path)
            _check_scores(entry["scores"], f"{where}.tasks.{name}.scores", path)
        _require(row["retention"], (), f"{where}.retention", path)
        for name, values in row["retention"].items():
            _check_scores(values, f"{where}.retention.{name}", path)


def _check_tasks(specs: list, path: Path) -> list[Task]:
    names: list[str] = []
    for i, spec in enumerate(specs):
        where = f"tasks[{i}]"
        _require(spec, ("name", "role", "metrics"), where, path)
        if not isinstance(spec["name"], str) or spec["name"] in names:
            raise DataError(f"{path}: {where}.name is not a string or repeats an earlier task's name")
        names.append(spec["name"])
        if spec["role"] not in ROLES:
            raise DataError(f"{path}: {where}.role is {spec['role']!r}, not one of {', '.join(map(repr, ROLES))}")
        _strings(spec["metrics"], f"{where}.metrics", path)
        if spec.get("units") is not None:
            _require(spec["units"], (), f"{where}.units", path)
        if spec["role"] == RETENTION:
            _require(spec, ("gate",), where, path)
            _require(spec["gate"], ("metrics", "fraction", "thresholds"), f"{where}.gate", path)
            _strings(spec["gate"]["metrics"], f"{where}.gate.metrics", path)
            _number(spec["gate"]["fraction"], f"{where}.gate.fraction", path)
            _require(spec["gate"]["thresholds"], spec["gate"]["metrics"], f"{where}.gate.thresholds", path)
            _check_scores(spec["gate"]["thresholds"], f"{where}.gate.thresholds", path)
            if spec["gate"].get("rule", rules.POINT) not in rules.RULES:
                raise DataError(f"{path}: {where}.gate.rule is {spec['gate']['rule']!r}, not one of "
                                f"{', '.join(rules.RULES)}")
            if "confidence" in spec["gate"]:
                _number(spec["gate"]["confidence"], f"{where}.gate.confidence", path)
        elif spec["role"] == HELD_OUT:
            _check_measured(spec, where, path)
        else:
            _require(spec, ("accuracy",), where, path)
            for key in ("accuracy", "breakdown"):
                if spec.get(key) is not None and not isinstance(spec[key], str):
                    raise DataError(f"{path}: {where}.{key} is not a metric name")
    if sum(spec["role"] == NEW for spec in specs) != 1:
        raise DataError(f"{path}: tasks has {sum(spec['role'] == NEW for spec in specs)} tasks with role "
                        f"{NEW!r}, not exactly one")
    return [Task.from_spec(spec) for spec in specs]


def _check_measured(spec: dict, where: str, path: Path) -> None:
    """A held-out task's `measured`: its metrics, the fraction of P(>= fraction), its confidence and the metrics
    better lower (both optional)."""
    _require(spec, ("measured",), where, path)
    measured, where = spec["measured"], f"{where}.measured"
    _require(measured, ("metrics", "fraction"), where, path)
    _strings(measured["metrics"], f"{where}.metrics", path)
    _number(measured["fraction"], f"{where}.fraction", path)
    if "confidence" in measured:
        _number(measured["confidence"], f"{where}.confidence", path)
    if measured.get("lower_is_better") is not None:
        _strings(measured["lower_is_better"], f"{where}.lower_is_better", path)


def _check_checkpoint(entry: Any, specs: list[Task], where: str, path: Path) -> None:
    _require(entry, _CHECKPOINT, where, path)
    _number(entry["step"], f"{where}.step", path)
    _check_evals(entry["tasks"], specs, f"{where}.tasks", path)
    _require(entry["retention"], (), f"{where}.retention", path)
    for name, values in entry["retention"].items():
        _check_scores(values, f"{where}.retention.{name}", path)
    _require(entry["gate"], (), f"{where}.gate", path)
    if not isinstance(entry["passes_gate"], bool):
        raise DataError(f"{path}: {where}.passes_gate is not true or false")
    for key in ("accuracy", "score", "loss", "scale"):
        if entry.get(key) is not None:
            _number(entry[key], f"{where}.{key}", path)
    if entry.get("methods") is not None:
        _strings(entry["methods"], f"{where}.methods", path, "method names")
    for name, decision in (entry.get("retention_uncertainty") or {}).items():
        _check_decision(decision, f"{where}.retention_uncertainty.{name}", path)
    if entry.get("held_out") is not None:
        _require(entry["held_out"], (), f"{where}.held_out", path)
        for name, values in entry["held_out"].items():
            _check_scores(values, f"{where}.held_out.{name}", path)
    if entry.get("held_out_uncertainty") is not None:
        _require(entry["held_out_uncertainty"], (), f"{where}.held_out_uncertainty", path)
        for name, record in entry["held_out_uncertainty"].items():
            _check_paired(record, _MEASURED, _MEASURED_SCALAR, f"{where}.held_out_uncertainty.{name}", path)


_MEASURED = ("confidence", "fraction", "scalars")
_DECISION = ("rule", "passed", *_MEASURED)
_MEASURED_SCALAR = {"ratio": "number", "low": "number", "high": "number", "lower": "number", "p_at_least": "number",
                    "base_zero": "bool"}
_DECISION_SCALAR = {**_MEASURED_SCALAR, "point_passes": "bool", "confident_passes": "bool"}
_COMPARISON = ("task", "scalar", "best", "runner_up", "difference", "p_value", "test", "verdict", "n")


def _check_decision(decision: Any, where: str, path: Path) -> None:
    """A task's DECISION: its rule, numbers and verdicts (numbers may be null: no ratio, an infinite bound)."""
    _require(decision, _DECISION, where, path)
    if decision["rule"] not in rules.RULES:
        raise DataError(f"{path}: {where}.rule is {decision['rule']!r}, not one of {', '.join(rules.RULES)}")
    if not isinstance(decision["passed"], bool):
        raise DataError(f"{path}: {where}.passed is not true or false")
    _check_paired(decision, _DECISION, _DECISION_SCALAR, where, path)


def _check_paired(record: Any, keys: tuple[str, ...], scalar: dict[str, str], where: str, path: Path) -> None:
    """A DECISION's or a MEASURED record's keys, confidence, fraction and per-scalar numbers (a number may be null:
    no ratio, an infinite bound) and flags."""
    _require(record, keys, where, path)
    for key in ("confidence", "fraction"):
        _number(record[key], f"{where}.{key}", path)
    _require(record["scalars"], (), f"{where}.scalars", path)
    for metric, numbers in record["scalars"].items():
        at = f"{where}.scalars.{metric}"
        _require(numbers, scalar, at, path)
        for key, kind in scalar.items():
            if kind == "bool" and not isinstance(numbers[key], bool):
                raise DataError(f"{path}: {at}.{key} is not true or false")
            if kind == "number" and numbers[key] is not None:
                _number(numbers[key], f"{at}.{key}", path)


def _check_comparison(comparison: Any, where: str, path: Path) -> None:
    """best_vs_runner_up: the two states, the difference, its p-value and the verdict."""
    _require(comparison, _COMPARISON, where, path)
    for key in ("best", "runner_up"):
        _require(comparison[key], ("step",), f"{where}.{key}", path)
    for key in ("difference", "p_value", "n"):
        _number(comparison[key], f"{where}.{key}", path)
    for key in ("low", "high"):
        if comparison.get(key) is not None:
            _number(comparison[key], f"{where}.{key}", path)
    if not isinstance(comparison["verdict"], str):
        raise DataError(f"{path}: {where}.verdict is not a text")


def _check_evals(evals: Any, specs: list[Task], where: str, path: Path) -> None:
    _require(evals, [spec.name for spec in specs], where, path)
    for spec in specs:
        entry, at = evals[spec.name], f"{where}.{spec.name}"
        _require(entry, ("scores",), at, path)
        _check_scores(entry["scores"], f"{at}.scores", path)
        if entry.get("total_count") is not None:
            _number(entry["total_count"], f"{at}.total_count", path)
        for metric, interval in (entry.get("intervals") or {}).items():
            if interval is not None:
                _require(interval, ("low", "high", "level", "method"), f"{at}.intervals.{metric}", path)
                for key in ("low", "high", "level"):
                    if interval[key] is not None:
                        _number(interval[key], f"{at}.intervals.{metric}.{key}", path)
        breakdown = entry.get("breakdown")
        if breakdown is not None:
            _require(breakdown, (), f"{at}.breakdown", path)
            for group, pair in breakdown.items():
                if not (isinstance(pair, list) and len(pair) == 2 and all(_is_number(x) for x in pair)):
                    raise DataError(f"{path}: {at}.breakdown.{group} is not a [correct, total] pair")


def _check_scores(scores: Any, where: str, path: Path) -> None:
    """A {metric: number or null} object."""
    _require(scores, (), where, path)
    for metric, value in scores.items():
        if value is not None:
            _number(value, f"{where}.{metric}", path)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _number(value: Any, where: str, path: Path) -> None:
    if not _is_number(value):
        raise DataError(f"{path}: {where} is not a number")


def _strings(value: Any, where: str, path: Path, what: str = "metric names") -> None:
    if not (isinstance(value, list) and all(isinstance(item, str) for item in value)):
        raise DataError(f"{path}: {where} is not a list of {what}")


def _require(value: Any, keys: Iterable[str], where: str, path: Path) -> None:
    if not isinstance(value, dict):
        raise DataError(f"{path}: {where} is not a JSON object")
    missing = [key for key in keys if key not in value]
    if missing:
        raise DataError(f"{path}: {where} lacks {', '.join(map(repr, missing))}")


def read_log(run: Path) -> list[dict]:
    """The records of RUN/train/log.jsonl (empty when there is none); a torn last line is left out."""
    path = Path(run) / LOG
    if not path.is_file():
        return []
    records, _ = read_jsonl_prefix(path)
    return [record for record in records if isinstance(record, dict)]


# --- reading checked results -----------------------------------------------------------

def tasks(results: dict) -> list[Task]:
    """Every task of the run, in the order of results.json (retention and held-out tasks, then the new task)."""
    return [Task.from_spec(spec) for spec in results["tasks"]]


def retention_tasks(results: dict) -> list[Task]:
    """The gated tasks (role retention): never a held-out one."""
    return [task for task in tasks(results) if task.role == RETENTION]


def held_out_tasks(results: dict) -> list[Task]:
    """The held-out tasks: measured like retention tasks on data the gate never sees, deciding nothing."""
    return [task for task in tasks(results) if task.role == HELD_OUT]


def new_task(results: dict) -> Task:
    return next(task for task in tasks(results) if task.role == NEW)


def evaluation(entry: dict, task: Task) -> dict:
    """The EVAL of `task` in a baseline or checkpoint entry (an empty one when absent)."""
    return entry.get("tasks", {}).get(task.name) or {}


def score(entry: dict, task: Task, metric: str) -> float | None:
    """`metric` of `task` in a baseline, checkpoint or tracking entry; None when it is absent."""
    value = (evaluation(entry, task).get("scores") or {}).get(metric)
    return value if _is_number(value) and math.isfinite(value) else None


def interval(entry: dict, task: Task, metric: str) -> dict | None:
    """The INTERVAL of `metric` of `task` in a baseline or checkpoint entry; None when absent."""
    value = (evaluation(entry, task).get("intervals") or {}).get(metric)
    return value if isinstance(value, dict) else None


def _kept_key(task: Task, key: str) -> str:
    """Where a checkpoint keeps `task`'s retention (`key` "retention") or its paired numbers (`key`
    "retention_uncertainty"): a held-out task's under "held_out" and "held_out_uncertainty", apart from the gate's."""
    return key.replace("retention", "held_out") if task.role == HELD_OUT else key


def decision(entry: dict, task: Task) -> dict | None:
    """A checkpoint's DECISION for a retention task (its rule, the paired retention of each gated scalar), or a
    held-out task's MEASURED record (the same numbers, no verdict); None when absent."""
    value = (entry.get(_kept_key(task, "retention_uncertainty")) or {}).get(task.name)
    return value if isinstance(value, dict) else None


def paired(entry: dict, task: Task, metric: str) -> dict | None:
    """The paired retention numbers of one gated (or held-out measured) scalar at a checkpoint; None when absent."""
    value = ((decision(entry, task) or {}).get("scalars") or {}).get(metric)
    return value if isinstance(value, dict) else None


def closest_paired(entry: dict) -> dict | None:
    """The paired retention of the gated scalar whose point retention is lowest (the frontier's x), or None."""
    ratios = [(r, name, metric) for name, values in (entry.get("retention") or {}).items() if isinstance(values, dict)
              for metric, r in values.items() if _is_number(r)]
    if not ratios:
        return None
    _, name, metric = min(ratios)
    value = (((entry.get("retention_uncertainty") or {}).get(name) or {}).get("scalars") or {}).get(metric)
    return value if isinstance(value, dict) else None


def retention(entry: dict, task: Task, metric: str) -> float | None:
    """checkpoint / baseline of a gated (or held-out measured) metric; None when absent (or the baseline is 0)."""
    value = ((entry.get(_kept_key(task, "retention")) or {}).get(task.name) or {}).get(metric)
    return value if _is_number(value) else None


def task_gate(entry: dict, task: Task) -> bool | None:
    """Whether `task`'s gate passed at a checkpoint; None when the entry does not say."""
    value = entry.get("gate", {}).get(task.name)
    return value if isinstance(value, bool) else None


def breakdown(entry: dict, task: Task) -> dict[str, list[int]]:
    return evaluation(entry, task).get("breakdown") or {}


def entry_scale(entry: dict) -> float:
    """The factor a checkpoint entry's adapter update was scaled by; 1 (as trained) when the entry does not say."""
    value = entry.get("scale")
    return float(value) if _is_number(value) else 1.0


def variant(entry: dict) -> str:
    """Which post-training state of its checkpoint an entry is, in words: "" (as trained), "scale 0.5" (retention
    method scale) or "intruders 0.75" (the intruder-dimension reduction, each intruder kept at that share)."""
    share = entry.get("intruders")
    if _is_number(share):
        return f"intruders {show_scale(float(share))}"
    return "" if entry_scale(entry) == 1 else f"scale {show_scale(entry_scale(entry))}"


def show_scale(value: float) -> str:
    """A scale as it is written everywhere: ``0.5``, ``1``."""
    return format(value, "g")


def method_label(methods: Iterable[str] | None) -> str:
    """How a run or a state was made, in one word: ``lora``, ``lora+kl+scale``."""
    return "+".join(["lora", *(methods or ())])


def entry_methods(entry: dict) -> list[str]:
    methods = entry.get("methods")
    return list(methods) if isinstance(methods, list) else []


def run_methods(results: dict) -> list[str]:
    """The run's retention methods (config.retention.methods; none in a run made before they existed)."""
    methods = ((results.get("config") or {}).get("retention") or {}).get("methods")
    return [m for m in methods if isinstance(m, str)] if isinstance(methods, list) else []


def same_state(a: dict | None, b: dict | None) -> bool:
    """Whether two entries are the same (checkpoint, scale)."""
    return a is not None and b is not None and a["step"] == b["step"] and entry_scale(a) == entry_scale(b)


def lowest_retention(entry: dict) -> float:
    """The gate's one-number retention of an entry: its lowest gated scalar / baseline (the gate's own rule)."""
    kept = entry.get("retention", {})
    return rules.lowest_retention({task: values for task, values in kept.items() if isinstance(values, dict)})
