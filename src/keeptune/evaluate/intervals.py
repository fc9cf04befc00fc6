"""Every scalar of an evaluation with its uncertainty: bootstrap confidence intervals and, for the
gated scalars, the sample sizes a retention gate needs. An aggregation step of its own, beside the
metrics' point estimates (which it never changes), computed from the scored records (the
per-sample values in predictions.jsonl), so an evaluation resumed from an older folder gets them
from its predictions.

What metrics.json gains (`uncertainty`):

    "intervals": {"emf1.F1": {"low": 9.6, "high": 18.5, "level": 0.95, "method": "BCa",
                              "resampled": "mean"}, ...}
    "bootstrap": {"level": 0.95, "seed": 0, "resamples": 2000}
    "sample_size": {...}                   (only when asked for: see `sample_sizes`)

`intervals` has one entry per key of `scores`, in the scalar's units (points or a fraction, as
the score). low/high: the two-sided interval at `level` (an infinite bound is null); method:
"BCa", "percentile" (where BCa is undefined) or "degenerate" (every sample scores the same:
low == high, the sample shows no spread); resampled: "mean" (the scalar is the mean of one
per-sample value, resampled by `keeptune.core.stats.interval`) or "corpus" (the corpus metric
itself is recomputed on each resample of sample indices, `keeptune.core.stats.corpus_interval`).
An entry is null when there are no samples. Every scalar and every model evaluated on the same
samples is resampled with the same seed, so with the same number of samples they are drawn on
the same resampled indices.
"""
from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Optional

import numpy as np

from keeptune.core import stats
from keeptune.core.stats import Interval
from keeptune.evaluate.metrics.registry import Metric, Resample

SEED = 0
POWER = 0.8
DROPS = (0.05, 0.10)  # the relative drops whose sample sizes are reported


def resamples(metrics: Sequence[Metric], records: list[dict]) -> dict[str, Resample]:
    """METRIC.SCALAR -> what the bootstrap redraws for it, for every scalar of `metrics`."""
    return {f"{m.name}.{s}": m.resample(s, records) for m in metrics for s in m.scalars()}


def interval_of(resample: Resample, level: float = stats.LEVEL, seed: int = SEED,
                n_resamples: int = stats.N_RESAMPLES) -> Optional[Interval]:
    """The bootstrap interval of one scalar: of the mean of its column, or of its corpus statistic."""
    if resample.is_mean:
        return stats.interval(resample.columns[0], level, seed, n_resamples=n_resamples)
    return stats.corpus_interval(resample.columns, resample.statistic, level, seed, n_resamples=n_resamples)


def scalar_intervals(metrics: Sequence[Metric], records: list[dict], level: float = stats.LEVEL,
                     seed: int = SEED, n_resamples: int = stats.N_RESAMPLES) -> dict[str, Optional[Interval]]:
    """METRIC.SCALAR -> its bootstrap interval over the records (None without records)."""
    return {scalar: interval_of(r, level, seed, n_resamples) for scalar, r in resamples(metrics, records).items()}


# ---- JSON ---------------------------------------------------------------------------------------

def _bound(value: float) -> Optional[float]:
    return value if math.isfinite(value) else None


def interval_json(interval: Optional[Interval], resampled: str) -> Optional[dict]:
    """An Interval as metrics.json holds it (an infinite bound as null); None stays None."""
    if interval is None:
        return None
    return {"low": _bound(interval.low), "high": _bound(interval.high), "level": interval.level,
            "method": interval.method, "resampled": resampled}


def interval_from_json(entry: Optional[dict]) -> Optional[Interval]:
    """The Interval of a metrics.json entry: a null low is -inf, a null high +inf."""
    if entry is None:
        return None
    low, high = entry["low"], entry["high"]
    return Interval(-math.inf if low is None else low, math.inf if high is None else high,
                    entry["level"], entry["method"])


# ---- how many samples a gate needs --------------------------------------------------------------

def _size_note(values: np.ndarray) -> Optional[str]:
    """Why no sample size is estimated from these per-sample values, or None."""
    if len(values) < 2:
        return "fewer than 2 samples: not estimated"
    if np.mean(values) <= 0:
        return "the mean is 0: no drop can be detected, and a gate on it passes trivially"
    if np.all(values == values[0]):
        return "every sample scores the same: no spread to estimate from"
    return None


def sample_size(resample: Resample, confidence: float, power: float = POWER,
                drops: Iterable[float] = DROPS) -> dict:
    """From one scalar's per-sample values (the model evaluated standing as the base): the smallest relative
    drop a gate on these n samples detects (`keeptune.core.stats.detectable_drop`: one-sided paired test at
    `confidence`, `power`, correlation 0, which is conservative) and the samples needed for each of `drops`
    (`samples_needed`). Keys: detectable_drop (a fraction; null where not estimated), samples_needed
    ({"0.05": n, ...}), note (why not estimated, else null)."""
    drops = tuple(drops)
    values = np.asarray(resample.columns[0], dtype=float)
    note = _size_note(values) if resample.is_mean else (
        "a corpus metric, not a mean of per-sample values: not estimated")
    if note is not None:
        return {"detectable_drop": None, "samples_needed": {str(d): None for d in drops}, "note": note}
    return {"detectable_drop": stats.detectable_drop(values, len(values), power, confidence),
            "samples_needed": {str(d): stats.samples_needed(values, d, power, confidence) for d in drops},
            "note": None}


def sample_sizes(metrics: Sequence[Metric], records: list[dict], scalars: Sequence[str], confidence: float,
                 power: float = POWER, drops: Iterable[float] = DROPS) -> dict:
    """`sample_size` of each of `scalars` (the gated ones), with the settings it assumed: metrics.json's
    `sample_size`: {n, confidence, power, correlation, drops, scalars: {METRIC.SCALAR: sample_size(...)}}."""
    drops, redraws = tuple(drops), resamples(metrics, records)
    return {"n": len(records), "confidence": confidence, "power": power, "correlation": 0.0, "drops": list(drops),
            "scalars": {s: sample_size(redraws[s], confidence, power, drops) for s in scalars}}


# ---- what metrics.json gains, and what is printed ------------------------------------------------

def uncertainty(metrics: Sequence[Metric], records: list[dict], level: float = stats.LEVEL,
                gated: Optional[Sequence[str]] = None, seed: int = SEED,
                n_resamples: int = stats.N_RESAMPLES) -> dict:
    """metrics.json's `intervals` and `bootstrap`, and its `sample_size` of the `gated` scalars when given."""
    redraws = resamples(metrics, records)
    out = {"intervals": {s: interval_json(interval_of(r, level, seed, n_resamples), "mean" if r.is_mean else "corpus")
                         for s, r in redraws.items()},
           "bootstrap": {"level": level, "seed": seed, "resamples": n_resamples}}
    if gated is not None:
        out["sample_size"] = sample_sizes(metrics, records, gated, level)
    return out


def _percent(level: float) -> str:
    return f"{level * 100:g}%"


def interval_line(scalar: str, value: float, entry: Optional[dict], units: str, n: int) -> str:
    """One scalar compactly: `emf1.F1 13.84 [9.61, 18.53] (95% BCa, 54 samples)`; a fraction in percent."""
    interval = interval_from_json(entry)
    if interval is None:
        return f"{scalar} {value}: no interval (no samples)"
    factor, unit = (100.0, "%") if units == "fraction" else (1.0, "")
    shown = interval.scaled(factor)
    text = f"{scalar} {value * factor:.2f}{unit} [{shown.low:.2f}, {shown.high:.2f}]"
    if interval.method == "degenerate":
        return f"{text} ({_percent(interval.level)}: all {n} samples score the same, no spread to resample)"
    return f"{text} ({_percent(interval.level)} {interval.method}, {n} samples)"


def sample_size_lines(sizes: dict) -> list[str]:
    """The sample-size figures of metrics.json's `sample_size`, one line per gated scalar."""
    lines = [f"sample size: with this model as the base, a gate on {sizes['n']} samples (one-sided "
             f"{_percent(sizes['confidence'])}, power {_percent(sizes['power'])}, uncorrelated scores: conservative)"]
    for scalar, size in sizes["scalars"].items():
        if size["note"]:
            lines.append(f"  {scalar}: {size['note']}")
            continue
        needed = ", ".join(f"a {float(d) * 100:g}% drop needs {n:,}" for d, n in size["samples_needed"].items())
        lines.append(f"  {scalar}: detects a drop of {size['detectable_drop'] * 100:.1f}% or more; {needed} samples")
    return lines
