"""The uncertainty of an experiment's figures, from the per-sample scores its evaluations left in each
evaluation folder (OUT/predictions.jsonl, OUT/eval.json, OUT/metrics.json):

- each scalar's own interval, from metrics.json's `intervals` (keeptune.evaluate.intervals);
- the paired retention of each gated scalar of a state against the base model (keeptune.core.stats.retention),
  which the gate's rules read (keeptune.core.gate);
- the paired comparison of two states on one scalar (keeptune.core.stats.compare): the runner's best against its
  runner-up, `keeptune compare`, the sweep's best trial against its runner-up.

Pairing: predictions.jsonl is written in completion order, so two evaluations are paired by sample id, and the
paired rows are put in sample-id order: the same two folders give the same numbers however they were generated.
Two folders whose sample ids differ are refused. Every bootstrap is seeded (keeptune.evaluate.intervals.SEED).
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from keeptune.core import gate as rules
from keeptune.core import stats
from keeptune.core.errors import DataError
from keeptune.core.io import read_jsonl_prefix, read_text
from keeptune.evaluate import intervals
from keeptune.evaluate.metrics.registry import Metric, MetricError, Resample, make_metric
from keeptune.retention import scale as scaling
from keeptune.retention import variants
from keeptune.train.checkpoint import step_dir

PREDICTIONS, METRICS, EVAL = "predictions.jsonl", "metrics.json", "eval.json"


# --- evaluation folders ----------------------------------------------------------------------------

def state_folder(run: Path, step: int, scale: float = 1.0) -> Path:
    """Where a run evaluated a (checkpoint, scale): RUN/checkpoints/step-N, or its scale-S folder."""
    folder = step_dir(run, step)
    return folder if scale == 1 else folder / scaling.folder(scale)


def entry_state_folder(run: Path, entry: dict) -> Path:
    """Where a run evaluated the state a results.json entry names: its checkpoint's folder, or the folder of its
    post-training variant (a scale factor, an intruder reduction: keeptune.retention.variants)."""
    inner = variants.entry_folder(entry)
    return step_dir(run, entry["step"]) / inner if inner else step_dir(run, entry["step"])


def read_json(path: Path) -> dict:
    """A JSON object file, or DataError naming it."""
    if not Path(path).is_file():
        raise DataError(f"{path}: no such file")
    try:
        value = json.loads(read_text(path))
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    if not isinstance(value, dict):
        raise DataError(f"{path}: not a JSON object")
    return value


def records_by_id(folder: Path) -> dict[str, dict]:
    """The scored records of an evaluation folder by sample id (a line torn by a kill is left out)."""
    path = Path(folder) / PREDICTIONS
    if not path.is_file():
        raise DataError(f"{folder}: no {PREDICTIONS} (an evaluation folder holds one)")
    return {r["id"]: r for r in read_jsonl_prefix(path)[0]}


def paired_records(a_folder: Path, b_folder: Path) -> tuple[list[dict], list[dict]]:
    """The records of two evaluations of the same samples, paired by sample id, in sample-id order."""
    a, b = records_by_id(a_folder), records_by_id(b_folder)
    if a.keys() != b.keys():
        only_a, only_b = sorted(a.keys() - b.keys()), sorted(b.keys() - a.keys())
        raise DataError(f"{a_folder} and {b_folder} hold different samples ({len(only_a)} only in the first, "
                        f"e.g. {only_a[:1]}; {len(only_b)} only in the second, e.g. {only_b[:1]})")
    ids = sorted(a)
    return [a[i] for i in ids], [b[i] for i in ids]


def folder_metrics(folder: Path) -> list[Metric]:
    """The metrics an evaluation folder was scored with, from its eval.json."""
    path = Path(folder) / EVAL
    entries = read_json(path).get("metrics")
    try:
        return [make_metric(entry, recorded=True) for entry in json.loads(entries)]
    except (TypeError, json.JSONDecodeError, MetricError) as err:
        raise DataError(f"{path}: field 'metrics' does not name the task's metrics ({err})") from None


def scalar_resample(metrics: Sequence[Metric], scalar: str, records: list[dict]) -> Resample:
    """What the bootstrap redraws for METRIC.SCALAR over `records`."""
    name, _, part = scalar.partition(".")
    for metric in metrics:
        if metric.name == name and part in metric.scalars():
            return metric.resample(part, records)
    raise DataError(f"no metric gives the scalar {scalar!r} ({', '.join(m.name for m in metrics)})")


def with_intervals(evaluations: dict[str, dict], folder: Path) -> dict[str, dict]:
    """`keeptune.evaluate.run.evaluate_tasks`'s {task: EVAL}, each with its scalars' intervals from
    FOLDER/TASK/metrics.json (`intervals`: {scalar: {low, high, level, method, resampled}}); an evaluation
    written before intervals existed gets them from its predictions (records in sample-id order)."""
    return {task: {**entry, "intervals": scalar_intervals(Path(folder) / task)} for task, entry in evaluations.items()}


def scalar_intervals(folder: Path) -> dict[str, Optional[dict]]:
    """An evaluation folder's intervals: metrics.json's, or computed from its predictions when it has none."""
    recorded = read_json(folder / METRICS).get("intervals")
    if isinstance(recorded, dict):
        return recorded
    records = [r for _, r in sorted(records_by_id(folder).items())]
    return intervals.uncertainty(folder_metrics(folder), records)["intervals"]


# --- paired retention --------------------------------------------------------------------------------

def _index_statistic(resample: Resample, columns: list[np.ndarray]):
    """A corpus statistic over rows named by index: statistic(rows, axis) recomputes the corpus metric on the rows
    of `columns` each index vector names (so `stats.retention`, which resamples one column per model, resamples
    a corpus metric's columns together)."""
    def statistic(rows: np.ndarray, axis: int = -1) -> np.ndarray:
        picked = np.moveaxis(np.asarray(rows), axis, -1).astype(int)
        flat = picked.reshape(-1, picked.shape[-1])
        values = [resample.statistic(*(c[r] for c in columns)) for r in flat]
        return np.asarray(values, dtype=float).reshape(picked.shape[:-1])
    return statistic


def retention_of(base: Resample, tuned: Resample, fraction: float, level: float) -> stats.Retention:
    """The paired retention tuned / base of one scalar (`stats.retention`, seeded). A corpus metric is resampled
    as itself: its base and tuned columns are stacked, and each replicate's indices pick both models' rows."""
    seed = intervals.SEED
    if base.is_mean:
        return stats.retention(base.columns[0], tuned.columns[0], fraction, level, seed)
    n = len(base.columns[0])
    stacked = [np.concatenate([np.asarray(b, float), np.asarray(t, float)])
               for b, t in zip(base.columns, tuned.columns)]
    return stats.retention(np.arange(n), np.arange(n) + n, fraction, level, seed,
                           statistic=_index_statistic(base, stacked))


def state_retention(gates: Sequence[rules.TaskGate], baseline: Path, state: Path,
                    metrics: Optional[dict[str, Sequence[Metric]]] = None) -> dict[str, dict[str, stats.Retention]]:
    """{task: {gated scalar: Retention}} of one evaluated state (evaluations in STATE/TASK) against the base
    model's (BASELINE/TASK), each at its gate's fraction and confidence. `metrics`: each task's metrics (read from
    the folders' eval.json when not given)."""
    out = {}
    for gate in gates:
        base_records, tuned_records = paired_records(baseline / gate.task, state / gate.task)
        task_metrics = (metrics or {}).get(gate.task) or folder_metrics(baseline / gate.task)
        out[gate.task] = {}
        for scalar in gate.metrics:
            base = scalar_resample(task_metrics, scalar, base_records)
            tuned = scalar_resample(task_metrics, scalar, tuned_records)
            if scalar in gate.lower_is_better:  # kept = base / tuned (keeptune.core.gate), so the roles swap
                kept = retention_of(tuned, base, gate.fraction, gate.confidence)
                out[gate.task][scalar] = dataclasses.replace(kept, base=kept.tuned, tuned=kept.base)
            else:
                out[gate.task][scalar] = retention_of(base, tuned, gate.fraction, gate.confidence)
    return out


# --- comparisons -------------------------------------------------------------------------------------

def compare_scalar(metrics: Sequence[Metric], scalar: str, a_records: list[dict], b_records: list[dict],
                   level: float = stats.LEVEL) -> Optional[stats.Comparison]:
    """A against B on one scalar over paired records (`stats.compare`: exact McNemar for 0/1 per-sample scores,
    a paired permutation test otherwise); None for a corpus metric (not a mean of per-sample values)."""
    a, b = scalar_resample(metrics, scalar, a_records), scalar_resample(metrics, scalar, b_records)
    if not a.is_mean:
        return None
    return stats.compare(a.columns[0], b.columns[0], level=level, seed=intervals.SEED)


def comparison_json(comparison: stats.Comparison) -> dict:
    """A Comparison as results.json holds it: difference = mean(A) - mean(B) in the scalar's units, its paired
    interval (low, high, level, method), p_value, test, verdict, n, mean_a, mean_b, discordant ([A only, B only]
    for McNemar, else null)."""
    interval = comparison.interval
    return {"difference": comparison.difference, "low": interval.low if interval else None,
            "high": interval.high if interval else None, "level": interval.level if interval else None,
            "method": interval.method if interval else None, "p_value": comparison.p_value, "test": comparison.test,
            "verdict": comparison.verdict, "n": comparison.n, "mean_a": comparison.mean_a, "mean_b": comparison.mean_b,
            "discordant": list(comparison.discordant) if comparison.discordant is not None else None}


def samples_digest(folder: Path) -> Optional[str]:
    """The samples hash an evaluation recorded in its eval.json (None when it recorded none)."""
    return read_json(Path(folder) / EVAL).get("samples_sha256")


def compare_folders(a_folder: Path, b_folder: Path, scalar: str, level: float = stats.LEVEL) -> dict:
    """Two evaluations of one task compared on one scalar: `comparison_json`, with `scalar`. DataError when they
    were evaluated on different samples (their eval.json's samples_sha256) or are not comparable."""
    digests = samples_digest(a_folder), samples_digest(b_folder)
    if digests[0] != digests[1]:
        raise DataError(f"{a_folder} and {b_folder} were evaluated on different samples (samples_sha256 "
                        f"{str(digests[0])[:12]} against {str(digests[1])[:12]}); a paired comparison needs the same "
                        "samples")
    a_records, b_records = paired_records(a_folder, b_folder)
    comparison = compare_scalar(folder_metrics(a_folder), scalar, a_records, b_records, level)
    if comparison is None:
        raise DataError(f"{a_folder}: {scalar} is a corpus metric: no paired test of its per-sample values")
    return {"scalar": scalar, **comparison_json(comparison)}


def best_against_runner_up(run: Path, entries: list[dict], task: str, scalar: str,
                           level: float = stats.LEVEL) -> Optional[dict]:
    """The best passing state against the runner-up (`keeptune.core.gate.runner_up`) on the new task's accuracy
    scalar: {task, best: {step, scale}, runner_up: {step, scale}, **compare_folders}; None with fewer than two
    passing states."""
    best, second = rules.best(entries), rules.runner_up(entries)
    if second is None:
        return None
    folders = [entry_state_folder(run, e) / task for e in (best, second)]
    return {"task": task, "best": {"step": best["step"], "scale": best.get("scale", 1.0)},
            "runner_up": {"step": second["step"], "scale": second.get("scale", 1.0)},
            **compare_folders(*folders, scalar, level)}
