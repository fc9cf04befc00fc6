"""The scalars of an lm-evaluation-harness task as a keeptune metric: per-document values from the task's own
`process_results`, aggregated by the task's own aggregation functions (lm_eval.api.metrics, so a figure is
lm-eval's to the last digit), and resampled for the bootstrap as lm-eval's aggregation computes them.

A record (one document) holds ``record["scores"][NAME][METRIC]``: a number (acc, acc_norm: 0 or 1) or, for the
perplexities, the pair lm-eval's process_results gives, [log-likelihood, words or bytes]. The aggregations
keeptune can resample, and so gate and put intervals on:

    mean                 the mean of the values                      acc, acc_norm, exact_match, ...   (a fraction)
    perplexity           exp(-mean(log-likelihood))                  lambada's perplexity
    weighted_perplexity  exp(-sum(log-likelihood) / sum(count))      word_perplexity, byte_perplexity
    bits_per_byte        -sum(log-likelihood) / sum(bytes) / ln 2    bits_per_byte

A task metric aggregated otherwise (f1, mcc, bleu, ...) is refused when the task is loaded, naming it.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import numpy as np

from keeptune.evaluate.metrics.registry import Aggregate, Metric, MetricError, Resample, mean_of

NAME = "lmeval"
AGGREGATIONS = ("mean", "perplexity", "weighted_perplexity", "bits_per_byte")


def _perplexity(ll: np.ndarray) -> float:
    return float(np.exp(-np.mean(ll)))


def _weighted_perplexity(ll: np.ndarray, count: np.ndarray) -> float:
    return float(np.exp(-np.sum(ll) / np.sum(count)))


def _bits_per_byte(ll: np.ndarray, count: np.ndarray) -> float:
    return float(-np.sum(ll) / np.sum(count) / math.log(2))


# The numpy form of each corpus aggregation, for the bootstrap (tests check each against lm-eval's own).
STATISTICS = {"perplexity": _perplexity, "weighted_perplexity": _weighted_perplexity, "bits_per_byte": _bits_per_byte}


class LmEvalMetric(Metric):
    """An lm-eval task's metrics. `metrics`: [[name, aggregation, higher_is_better], ...] as the task defines them
    (eval.json records the list, so a folder's scalars can be resampled without lm-eval's task at hand)."""

    type, options = "lm_eval", ("metrics",)

    def __init__(self, name: str = NAME, metrics: Any = ()):
        super().__init__(name)
        try:
            self.metrics = [(str(m), str(a), bool(h)) for m, a, h in metrics]
        except (TypeError, ValueError):
            raise MetricError(f"metrics is {metrics!r}; give [[name, aggregation, higher_is_better], ...]") from None
        if not self.metrics:
            raise MetricError("an lm_eval metric needs one or more metrics")
        for metric, aggregation, _ in self.metrics:
            if aggregation not in AGGREGATIONS:
                raise MetricError(f"the task's metric {metric!r} is aggregated by {aggregation!r}; keeptune can "
                                  f"gate and resample {', '.join(AGGREGATIONS)}")
            if "." in metric:
                raise MetricError(f"metric name {metric!r} has a '.'")

    def entry(self) -> dict:
        """What eval.json records to rebuild this metric (`keeptune.evaluate.metrics.registry.make_metric`)."""
        return {"type": self.type, "name": self.name, "metrics": [list(m) for m in self.metrics]}

    def scalars(self) -> list[str]:
        return [m for m, _, _ in self.metrics]

    def aggregation(self, scalar: str) -> str:
        return next(a for m, a, _ in self.metrics if m == scalar)

    def lower_is_better(self) -> list[str]:
        return [m for m, _, higher in self.metrics if not higher]

    def scalar_units(self, scalar: str) -> str:
        # acc and the like are fractions (shown in percent); a perplexity or bits per byte is a plain number.
        return "fraction" if self.aggregation(scalar) == "mean" else "value"

    def aggregate(self, records: list[dict]) -> Aggregate:
        from lm_eval.api.registry import get_aggregation  # lm-eval's own function, in dataset order

        scores = {}
        for metric, aggregation, _ in self.metrics:
            items = [_item(r["scores"][self.name][metric]) for r in records]
            scores[metric] = float(get_aggregation(aggregation)(items)) if items else 0.0
        return Aggregate(scores, {"documents": len(records)})

    def resample(self, scalar: str, records: list[dict]) -> Resample:
        aggregation = self.aggregation(scalar)
        if aggregation == "mean":
            return mean_of(records, lambda r: r["scores"][self.name][scalar])
        values = [r["scores"][self.name][scalar] for r in records]
        if aggregation == "perplexity":
            return Resample(([float(v) for v in values],), STATISTICS[aggregation])
        return Resample(([float(v[0]) for v in values], [float(v[1]) for v in values]), STATISTICS[aggregation])

    def summary(self, aggregate: Aggregate, total: int) -> list[str]:
        shown = [f"{m} {_shown(aggregate.scores[m], self.scalar_units(m))}" for m in self.scalars()]
        return [f"{self.name}: " + ", ".join(shown) + f" ({total} documents)"]


def _item(value: Any) -> Any:
    """A record's value as lm-eval's aggregation takes it: a pair is a tuple."""
    return tuple(value) if isinstance(value, list) else value


def _shown(value: float, units: str) -> str:
    return f"{100 * value:.2f}%" if units == "fraction" else f"{value:.4f}"


def json_value(value: Any) -> Optional[Any]:
    """A process_results value for a JSON record: numbers as floats, pairs as lists, numpy scalars unwrapped."""
    if isinstance(value, (tuple, list)):
        return [json_value(v) for v in value]
    if isinstance(value, (bool, np.bool_)):
        return float(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        return float(value)
    raise MetricError(f"a per-document value {value!r} ({type(value).__name__}) is neither a number nor a pair")
