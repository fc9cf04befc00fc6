"""The metrics a task spec can name, each per-sample scoring apart from corpus
aggregation (as lm-evaluation-harness does), over the pure functions of this
package.

A metric in a spec is a type name (``emf1``) or a mapping with ``type``, an
optional ``name`` (default: the type) and the type's options. Its scalars are
addressed as ``NAME.SCALAR`` by the gate, the score and reports:

    emf1         the seed's EmF1 against the reference (MindFormers' EmF1Metric)     F1, Em (points)
    squad_v1     the official SQuAD v1.1 EM/F1, max over all references               f1, exact_match (points)
    exact_match  normalized exact match (SQuAD's normalization), max over references  accuracy (fraction)
    math_judge   the arithmetic judge at each EPS: seed (np.isclose) and strict       accuracy@EPS, strict@EPS (fraction)
                 (|ref - pred| <= EPS); per-template [correct, total] breakdowns

A record (one scored sample) carries ``prediction``, ``label`` (the reference)
and ``references``; each metric adds its per-sample values under
``record["scores"][NAME]``; `aggregate` reads only records, so a resumed
evaluation aggregates exactly as an uninterrupted one. `resample` says how the
bootstrap redraws each scalar (keeptune.evaluate.intervals): every scalar of the
metrics here is the mean of one per-sample value (x 100 for points); a metric
whose corpus value is not such a mean gives its per-sample columns and the
statistic that computes the scalar from them.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Optional

from keeptune.data.math.templates import classify
from keeptune.evaluate.metrics import emf1, math_judge, squad_v1


class MetricError(ValueError):
    """A metric entry that names no metric, or gives options it does not take (the spec reader adds where)."""


@dataclass
class Aggregate:
    scores: dict[str, float]  # scalar -> value
    details: dict = field(default_factory=dict)  # what metrics.json keeps beside the scalars
    breakdowns: dict[str, dict[str, list[int]]] = field(default_factory=dict)  # scalar -> group -> [correct, total]


@dataclass(frozen=True)
class Resample:
    """What the bootstrap redraws for one scalar: per-sample `columns` (each one value per record, records in
    order, in the scalar's units) and, for a corpus metric that is not their mean, the `statistic` that
    computes the scalar from them (1-D arrays in, a float out). statistic None: the scalar is the mean of the
    single column."""

    columns: tuple[list[float], ...]
    statistic: Optional[Callable[..., float]] = None

    @property
    def is_mean(self) -> bool:
        return self.statistic is None


def mean_of(records: list[dict], value: Callable[[dict], float], factor: float = 1.0) -> Resample:
    """A scalar that is factor x the mean of `value(record)` over the records."""
    return Resample(([factor * float(value(r)) for r in records],))


class Metric:
    type: ClassVar[str]
    units: ClassVar[str] = "fraction"  # "points": already 0..100; "fraction": 0..1
    options: ClassVar[tuple[str, ...]] = ()
    needs_references: ClassVar[bool] = False

    def __init__(self, name: str):
        self.name = name

    def scalars(self) -> list[str]:
        raise NotImplementedError

    def fields(self) -> tuple[str, ...]:
        """Sample fields the metric reads besides the reference(s)."""
        return ()

    def score(self, record: dict, fields: dict) -> dict:
        raise NotImplementedError

    def aggregate(self, records: list[dict]) -> Aggregate:
        raise NotImplementedError

    def resample(self, scalar: str, records: list[dict]) -> Resample:
        """How the bootstrap redraws `scalar` from the records' per-sample scores."""
        raise NotImplementedError

    def scalar_units(self, scalar: str) -> str:
        """The units of one scalar: the metric's, unless its scalars differ (an lm-eval task's)."""
        return self.units

    def summary(self, aggregate: Aggregate, total: int) -> list[str]:
        return [f"{self.name}: " + ", ".join(f"{k} {v}" for k, v in aggregate.scores.items())]


class EmF1(Metric):
    type, units = "emf1", "points"

    def scalars(self) -> list[str]:
        return ["F1", "Em"]

    def score(self, record: dict, fields: dict) -> dict:
        prediction, label = record["prediction"] or "", record["label"]
        return {"f1": emf1.f1_score(prediction, label), "em": emf1.exact_match(prediction, label)}

    def aggregate(self, records: list[dict]) -> Aggregate:
        # The seed's corpus score: a plain left-to-right sum in dataset order, so its float rounding
        # is the seed's too.
        scores = emf1.emf1([r["prediction"] or "" for r in records], [r["label"] for r in records])
        return Aggregate({"F1": scores["F1"], "Em": scores["Em"]}, dict(scores))

    def resample(self, scalar: str, records: list[dict]) -> Resample:
        # F1 and Em are 100 x the mean of the per-sample f1 and em (0..1).
        key = {"F1": "f1", "Em": "em"}[scalar]
        return mean_of(records, lambda r: r["scores"][self.name][key], 100.0)

    def summary(self, aggregate: Aggregate, total: int) -> list[str]:
        return [emf1.result_line(aggregate.details)]


class SquadV1(Metric):
    type, units, needs_references = "squad_v1", "points", True

    def scalars(self) -> list[str]:
        return ["f1", "exact_match"]

    def score(self, record: dict, fields: dict) -> dict:
        prediction, answers = record["prediction"] or "", record["references"]
        return {"f1": squad_v1.metric_max_over_ground_truths(squad_v1.f1_score, prediction, answers),
                "em": float(squad_v1.metric_max_over_ground_truths(squad_v1.exact_match_score, prediction, answers))}

    def aggregate(self, records: list[dict]) -> Aggregate:
        scores = squad_v1.squad_v1([r["prediction"] or "" for r in records], [r["references"] for r in records])
        return Aggregate({"f1": scores["f1"], "exact_match": scores["exact_match"]}, dict(scores))

    def resample(self, scalar: str, records: list[dict]) -> Resample:
        # The official f1 and exact_match are 100 x the mean of each question's best score over its answers.
        key = {"f1": "f1", "exact_match": "em"}[scalar]
        return mean_of(records, lambda r: r["scores"][self.name][key], 100.0)

    def summary(self, aggregate: Aggregate, total: int) -> list[str]:
        s = aggregate.scores
        return [f"SQuAD v1.1 official: exact_match {s['exact_match']}, f1 {s['f1']}"]


class ExactMatch(Metric):
    type = "exact_match"

    def scalars(self) -> list[str]:
        return ["accuracy"]

    def score(self, record: dict, fields: dict) -> dict:
        golds = record.get("references") or [record["label"]]
        return {"correct": any(squad_v1.exact_match_score(record["prediction"] or "", g) for g in golds)}

    def aggregate(self, records: list[dict]) -> Aggregate:
        correct = sum(r["scores"][self.name]["correct"] for r in records)
        return Aggregate({"accuracy": correct / len(records) if records else 0.0}, {"correct": correct})

    def resample(self, scalar: str, records: list[dict]) -> Resample:
        return mean_of(records, lambda r: r["scores"][self.name]["correct"])

    def summary(self, aggregate: Aggregate, total: int) -> list[str]:
        return [f"{self.name} (normalized exact match): {100 * aggregate.scores['accuracy']:.2f}% "
                f"({aggregate.details['correct']} of {total})"]


class MathJudge(Metric):
    """The prediction is an extracted answer (the ``math_extract`` step); the reference a solution line."""

    type, options = "math_judge", ("problem_field", "eps")

    def __init__(self, name: str, problem_field: str = "problem", eps: Any = math_judge.EPSILONS):
        super().__init__(name)
        if not isinstance(problem_field, str):
            raise MetricError(f"problem_field is {problem_field!r}; give a field name")
        try:
            self.eps = tuple(float(e) for e in (eps if isinstance(eps, (list, tuple)) else [eps]))
        except (TypeError, ValueError):
            raise MetricError(f"eps is {eps!r}; give a list of numbers such as [1e-8, 1e-4, 1e-2]") from None
        if not self.eps or any(not (e >= 0) for e in self.eps):
            raise MetricError(f"eps is {eps!r}; give one or more numbers >= 0")
        self.problem_field = problem_field

    def keys(self) -> list[str]:
        return [math_judge.eps_key(e) for e in self.eps]

    def scalars(self) -> list[str]:
        return [f"accuracy@{k}" for k in self.keys()] + [f"strict@{k}" for k in self.keys()]

    def fields(self) -> tuple[str, ...]:
        return (self.problem_field,)

    def score(self, record: dict, fields: dict) -> dict:
        template = classify(str(fields.get(self.problem_field, "")))
        reference = math_judge.extract(record["label"], template, "final")
        return {"template": template, "reference": reference,
                **math_judge.compare(reference, record["prediction"], template, self.eps)}

    def aggregate(self, records: list[dict]) -> Aggregate:
        summary = math_judge.aggregate(r["scores"][self.name] for r in records)
        scores, breakdowns = {}, {}
        for judge, prefix in (("seed", "accuracy"), ("strict", "strict")):
            for key in self.keys():
                scores[f"{prefix}@{key}"] = summary["accuracy"][judge].get(key, 0.0)
                breakdowns[f"{prefix}@{key}"] = {t: cells[judge][key] for t, cells in summary["per_template"].items()}
        details = {"accuracy": summary["accuracy"]["seed"], "accuracy_strict": summary["accuracy"]["strict"],
                   "per_template": {t: c["seed"] for t, c in summary["per_template"].items()},
                   "per_template_strict": {t: c["strict"] for t, c in summary["per_template"].items()}}
        return Aggregate(scores, details, breakdowns)

    def resample(self, scalar: str, records: list[dict]) -> Resample:
        # accuracy@EPS (strict@EPS) is the share of records the seed (strict) judge finds correct at EPS.
        prefix, key = scalar.split("@", 1)
        judge = {"accuracy": "seed", "strict": "strict"}[prefix]
        return mean_of(records, lambda r: r["scores"][self.name][judge][key])

    def summary(self, aggregate: Aggregate, total: int) -> list[str]:
        keys, s = self.keys(), aggregate.scores
        lines = [f"{self.name}: accuracy over {total} problems; seed judge = np.isclose(ref, pred, atol=EPS), "
                 "strict = |ref - pred| <= EPS",
                 f"{'':14s}" + "".join(f"{'EPS ' + k:>22s}" for k in keys)]
        for label, prefix in (("seed", "accuracy"), ("strict", "strict")):
            lines.append(f"{label:14s}" + "".join(f"{100 * s[f'{prefix}@{k}']:21.2f}%" for k in keys))
        lines.append("per template [correct, total], seed judge:")
        for template in aggregate.breakdowns[f"accuracy@{keys[0]}"]:
            cells = [aggregate.breakdowns[f"accuracy@{k}"][template] for k in keys]
            lines.append(f"  {template:12s}" + "".join(f"{str(c):>22s}" for c in cells))
        return lines


# The metrics a task spec names. An evaluation folder's eval.json may also record an lm-eval task's metric
# (keeptune.evaluate.metrics.lm_eval), which scores documents through lm-eval, not a spec's predictions.
TYPES: dict[str, type[Metric]] = {cls.type: cls for cls in (EmF1, SquadV1, ExactMatch, MathJudge)}


def recorded_types() -> dict[str, type[Metric]]:
    from keeptune.evaluate.metrics.lm_eval import LmEvalMetric  # it subclasses Metric, defined above

    return {**TYPES, LmEvalMetric.type: LmEvalMetric}


def make_metric(entry: Any, recorded: bool = False) -> Metric:
    """A metric from its spec entry: a type name, or a mapping {type, name?, options...}; `recorded`: from an
    evaluation folder's eval.json, where an lm-eval task's metric may be too."""
    if isinstance(entry, str):
        entry = {"type": entry}
    if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
        raise MetricError(f"a metric is a type name or a mapping with 'type', not {entry!r}")
    kind, types = entry["type"], recorded_types() if recorded else TYPES
    if kind not in types:
        raise MetricError(f"unknown metric type {kind!r}; the metrics: {', '.join(types)}")
    cls = types[kind]
    name = entry.get("name", kind)
    if not isinstance(name, str) or not name or "." in name:
        raise MetricError(f"metric name {name!r} must be a non-empty string without '.'")
    options = {k: v for k, v in entry.items() if k not in ("type", "name")}
    unknown = sorted(set(options) - set(cls.options))
    if unknown:
        allowed = ", ".join(cls.options) or "none"
        raise MetricError(f"metric {kind!r} has no option {', '.join(map(repr, unknown))}; its options: {allowed}")
    return cls(name, **options)


def units(metric: Metric) -> dict[str, str]:
    return {f"{metric.name}.{s}": metric.scalar_units(s) for s in metric.scalars()}

