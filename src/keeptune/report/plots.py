"""The report's figures, drawn with matplotlib's Agg canvas (no display, no pyplot state).

Each function returns a Figure, or None when the run has nothing to draw (no
training log, no checkpoint, no tracking, no breakdown). The figures follow the
task specs of results.json: one per retention task (its gated metrics, the
baseline and the gate threshold), one for the new task (its metrics, step 0 =
the base model), the new task's breakdown per group, and the tracking panels.
Metrics in unit ``fraction`` are drawn in percent.
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from keeptune.report import fmt
from keeptune.report.results import Task, breakdown, new_task, retention, retention_tasks, score, tasks


def make_plots(results: dict, log: list[dict], folder: Path, dpi: int = 110) -> list[tuple[str, Path]]:
    """Draw every plot the run has data for into FOLDER/NAME.png; returns (title, path) pairs.

    Every other PNG in FOLDER (a plot the run has no data for now, or one of a
    task the run no longer has) is removed, so the folder never shows a figure
    of an earlier state of the run.
    """
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint_steps = [c["step"] for c in results["checkpoints"]]
    names = file_names(results)
    figures: list[tuple[str, Figure | None]] = [("loss_lr", loss_and_lr(log, checkpoint_steps))]
    figures += [(names[task.name], retention_scores(results, task)) for task in retention_tasks(results)]
    new = new_task(results)
    figures += [(names[new.name], new_task_scores(results)), ("breakdown", breakdown_bars(results)),
                ("tracking", tracking(results))]
    made = []
    for name, figure in figures:
        if figure is None:
            continue
        path = folder / f"{name}.png"
        figure.savefig(path, dpi=dpi)
        made.append((figure.get_suptitle(), path))
    for stale in set(folder.glob("*.png")) - {path for _, path in made}:
        stale.unlink(missing_ok=True)
    return made


def file_names(results: dict) -> dict[str, str]:
    """A file name (no suffix) per task: ``task_`` and the name with unsafe characters as ``_``, unique."""
    names: dict[str, str] = {}
    for task in tasks(results):
        name = "task_" + re.sub(r"[^A-Za-z0-9._-]+", "_", task.name).strip("._")
        while name in names.values():
            name += "_"
        names[task.name] = name
    return names


def _figure(title: str, rows: int = 1, height: float = 3.6) -> tuple[Figure, list[Any]]:
    figure = Figure(figsize=(8, height * rows), layout="constrained")
    FigureCanvasAgg(figure)
    figure.suptitle(title)
    axes = figure.subplots(rows, 1, sharex=True, squeeze=False)[:, 0]
    for ax in axes:
        ax.grid(True, alpha=0.3)
    return figure, list(axes)


def _legend(ax: Any) -> None:
    """The legend beside the axes, where it hides no line."""
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _series(records: list[dict], key: str) -> tuple[list[float], list[float]]:
    rows = [r for r in records if _number(r.get("step")) and _number(r.get(key))]
    return [r["step"] for r in rows], [r[key] for r in rows]


def _points(steps: list[float], values: list[float | None]) -> tuple[list[float], list[float]]:
    """The (step, value) pairs whose value is present."""
    pairs = [(s, v) for s, v in zip(steps, values) if v is not None]
    return [s for s, _ in pairs], [v for _, v in pairs]


def _unit_label(task: Task, metrics: tuple[str, ...] | list[str]) -> str:
    units = {task.unit(metric) for metric in metrics}
    if units == {fmt.FRACTION}:
        return "percent"
    if units == {fmt.POINTS}:
        return "points (0..100)"
    return "value (fractions in percent)"


def loss_and_lr(log: list[dict], checkpoint_steps: list[int]) -> Figure | None:
    """Training loss and learning rate per optimizer step; checkpoints dotted."""
    steps, losses = _series(log, "loss")
    if not steps:
        return None
    figure, (ax_loss, ax_lr) = _figure("Training loss and learning rate", rows=2, height=2.6)
    ax_loss.plot(steps, losses, lw=1, color="C0")
    ax_loss.set_ylabel("loss")
    lr_steps, rates = _series(log, "lr")
    ax_lr.plot(lr_steps, rates, lw=1, color="C1")
    ax_lr.set_ylabel("learning rate")
    ax_lr.set_xlabel("optimizer step (dotted: checkpoints)")
    for step in checkpoint_steps:
        for ax in (ax_loss, ax_lr):
            ax.axvline(step, color="0.6", ls=":", lw=1)
    return figure


def retention_scores(results: dict, task: Task) -> Figure | None:
    """A retention task's gated metrics per checkpoint against its baseline (dotted) and gate (dashed)."""
    checkpoints = results["checkpoints"]
    if not checkpoints or not task.gate_metrics:
        return None
    figure, (ax,) = _figure(f"Retention task {task.name}: gated metrics per checkpoint")
    steps = [c["step"] for c in checkpoints]
    for i, metric in enumerate(task.gate_metrics):
        unit, color = task.unit(metric), f"C{i}"
        xs, ys = _points(steps, [fmt.shown(score(c, task, metric), unit) for c in checkpoints])
        ax.plot(xs, ys, marker="o", color=color, label=f"checkpoint {metric}")
        base = score(results["baseline"], task, metric)
        if base is not None:
            ax.axhline(fmt.shown(base, unit), color=color, ls=":", lw=1,
                       label=f"baseline {metric} {task.show(metric, base)}")
        threshold = task.thresholds.get(metric)
        if threshold is not None:
            ax.axhline(fmt.shown(threshold, unit), color=color, ls="--", lw=1,
                       label=f"gate {task.gate_fraction:g} x baseline {metric} {task.show(metric, threshold)}")
    ax.set_xlabel("step")
    ax.set_ylabel(_unit_label(task, task.gate_metrics))
    _legend(ax)
    return figure


def new_task_scores(results: dict) -> Figure | None:
    """The new task's metrics per checkpoint; the accuracy metric (the score's) bold; step 0 is the base model."""
    checkpoints, task = results["checkpoints"], new_task(results)
    if not checkpoints:
        return None
    figure, (ax,) = _figure(f"New task {task.name}: metrics per checkpoint (step 0 = base model)")
    entries = [results["baseline"], *checkpoints]
    steps = [0] + [c["step"] for c in checkpoints]
    for i, metric in enumerate(task.metrics):
        xs, ys = _points(steps, [fmt.shown(score(e, task, metric), task.unit(metric)) for e in entries])
        main = metric == task.accuracy
        ax.plot(xs, ys, marker="o", color=f"C{i % 10}", lw=2.5 if main else 1, ls="-" if main else "--",
                label=f"{metric} (score)" if main else metric)
    ax.set_xlabel("step (0 = base model)")
    ax.set_ylabel(_unit_label(task, task.metrics))
    _legend(ax)
    return figure


def compared_checkpoint(results: dict) -> tuple[dict | None, str]:
    """The checkpoint set against the baseline: the best, else (none passes) the last one."""
    if results.get("best") is not None:
        return results["best"], f"best (step {results['best']['step']})"
    if results["checkpoints"]:
        last = results["checkpoints"][-1]
        return last, f"last (step {last['step']}, fails the gate)"
    return None, ""


def group_names(entries: list[dict], task: Task) -> list[str]:
    """Groups of the entries' breakdowns of `task`, in order of first appearance."""
    names: dict[str, None] = {}
    for entry in entries:
        names.update(dict.fromkeys(breakdown(entry, task)))
    return list(names)


def breakdown_bars(results: dict) -> Figure | None:
    """The new task's breakdown metric per group: baseline against the compared checkpoint."""
    task = new_task(results)
    other, label = compared_checkpoint(results)
    if task.breakdown is None or other is None:
        return None
    entries = [results["baseline"], other]
    names = group_names(entries, task)
    if not names:
        return None
    figure, (ax,) = _figure(f"New task {task.name}: {task.breakdown} per group",
                            height=max(2.5, 0.45 * len(names) + 1))
    ax.grid(False)
    for offset, entry, color, name in ((-0.2, entries[0], "0.6", "baseline"), (0.2, entries[1], "C2", label)):
        values = []
        for group in names:
            correct, total = breakdown(entry, task).get(group, [0, 0])
            values.append(100 * correct / total if total else 0.0)
        ax.barh([i + offset for i in range(len(names))], values, height=0.4, color=color, label=name)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("correct (%)")
    ax.legend(fontsize="small", loc="best")
    return figure


def tracking(results: dict) -> Figure | None:
    """Scores measured during training: one panel per tracked task, then retention with the gates.

    A retention task's panel draws its gated metrics, the new task's its
    metrics; the last panel draws every tracked retention (percent of the
    subset's baseline), each task's gate fraction (dashed) and the step's gate
    verdict (green dot: passes, red cross: fails).
    """
    rows = results.get("tracking") or []
    if not rows:
        return None
    panels = []
    for task in tasks(results):
        shown = task.gate_metrics if task.gate_metrics else task.metrics
        metrics = [m for m in shown if any(score(row, task, m) is not None for row in rows)]
        if metrics:
            panels.append((task, metrics))
    kept = [(task, metric) for task in retention_tasks(results) for metric in task.gate_metrics
            if any(retention(row, task, metric) is not None for row in rows)]
    figure, axes = _figure("Tracking during training", rows=len(panels) + 1, height=2.6)
    steps = [row["step"] for row in rows]
    for ax, (task, metrics) in zip(axes, panels):
        for i, metric in enumerate(metrics):
            xs, ys = _points(steps, [fmt.shown(score(row, task, metric), task.unit(metric)) for row in rows])
            ax.plot(xs, ys, marker=".", color=f"C{i % 10}", label=metric)
        ax.set_ylabel(f"{task.name}\n{_unit_label(task, metrics)}", fontsize="small")
        _legend(ax)
    ax = axes[-1]
    for i, (task, metric) in enumerate(kept):
        xs, ys = _points(steps, [None if (v := retention(row, task, metric)) is None else 100 * v for row in rows])
        ax.plot(xs, ys, marker=".", color=f"C{i % 10}", label=f"{task.name} {metric}")
    for task in retention_tasks(results):
        if task.gate_fraction is not None:
            ax.axhline(100 * task.gate_fraction, color="0.4", ls="--", lw=1,
                       label=f"gate {task.name} {task.gate_fraction:g} x baseline")
    marks = ax.get_xaxis_transform()  # x in steps, y in axes fraction
    passed = [row["step"] for row in rows if row.get("passes_gate") is True]
    failed = [row["step"] for row in rows if row.get("passes_gate") is False]
    if passed:
        ax.scatter(passed, [0.05] * len(passed), transform=marks, marker="o", color="tab:green", label="gate passes")
    if failed:
        ax.scatter(failed, [0.05] * len(failed), transform=marks, marker="x", color="tab:red", label="gate fails")
    ax.set_ylabel("retention (%)\nof subset baseline", fontsize="small")
    ax.set_xlabel("optimizer step")
    _legend(ax)
    return figure
