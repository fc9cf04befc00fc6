"""The report's figures, drawn with matplotlib's Agg canvas (no display, no pyplot state).

Each function returns a Figure, or None when the run has nothing to draw (no
training log, no checkpoint, no tracking, no breakdown). The figures follow the
task specs of results.json: one per retention task (its gated metrics, the
baseline and the gate threshold), one per held-out task (its measured metrics
and the baseline; no gate: it decides nothing), one for the new task (its
metrics, step 0 = the base model), the new task's breakdown per group, the
tracking panels, and the retention-accuracy frontier of every evaluated
(checkpoint, scale), whose retention is the gate's (held-out tasks stay off
it). The per-step figures draw the checkpoints as trained (scale 1); the frontier draws
the scaled evaluations of retention method `scale` too. Metrics in unit
``fraction`` are drawn in percent. Where results.json records them, each value
is drawn with its bootstrap confidence interval: error bars on the checkpoints,
a band around the baseline, and on the frontier the paired retention interval
(horizontal) and the accuracy interval (vertical).
"""
from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from keeptune.report import fmt
from keeptune.report.results import (
    HELD_OUT,
    Task,
    breakdown,
    closest_paired,
    held_out_tasks,
    interval,
    lowest_retention,
    new_task,
    retention,
    retention_tasks,
    same_state,
    score,
    tasks,
    variant,
)


def make_plots(results: dict, log: list[dict], folder: Path, dpi: int = 110) -> list[tuple[str, Path]]:
    """Draw every plot the run has data for into FOLDER/NAME.png; returns (title, path) pairs.

    Every other PNG in FOLDER (a plot the run has no data for now, or one of a
    task the run no longer has) is removed, so the folder never shows a figure
    of an earlier state of the run.
    """
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint_steps = [c["step"] for c in as_trained(results)]
    names = file_names(results)
    figures: list[tuple[str, Figure | None]] = [("loss_lr", loss_and_lr(log, checkpoint_steps))]
    figures += [(names[task.name], retention_scores(results, task))
                for task in [*retention_tasks(results), *held_out_tasks(results)]]
    new = new_task(results)
    figures += [(names[new.name], new_task_scores(results)), ("breakdown", breakdown_bars(results)),
                ("tracking", tracking(results)), ("frontier", frontier(results))]
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


def as_trained(results: dict) -> list[dict]:
    """The checkpoint entries of the adapters as trained (no scale, no intruder reduction), in step order."""
    return [c for c in results["checkpoints"] if not variant(c)]


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


def _errors(values: list[float], intervals: list[dict | None], unit: str | None) -> list[list[float]] | None:
    """Matplotlib's asymmetric error bars [below, above] of drawn values from their INTERVALs (0 where an interval
    or a bound is missing, or does not reach past the value); None when no value has an interval."""
    if not any(intervals):
        return None
    below, above = [], []
    for value, entry in zip(values, intervals):
        low = fmt.shown((entry or {}).get("low"), unit)
        high = fmt.shown((entry or {}).get("high"), unit)
        below.append(max(0.0, value - low) if low is not None else 0.0)
        above.append(max(0.0, high - value) if high is not None else 0.0)
    return [below, above]


def _with_bars(ax: Any, entries: list[dict], steps: list[float], task: Task, metric: str, **style) -> None:
    """A metric of `task` per entry, drawn at `steps` with its intervals as error bars where recorded."""
    pairs = [(x, e) for x, e in zip(steps, entries) if score(e, task, metric) is not None]
    unit = task.unit(metric)
    xs = [x for x, _ in pairs]
    ys = [fmt.shown(score(e, task, metric), unit) for _, e in pairs]
    errors = _errors(ys, [interval(e, task, metric) for _, e in pairs], unit)
    ax.errorbar(xs, ys, yerr=errors, capsize=3 if errors else 0, **style)


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
    """A retention task's gated metrics (a held-out task's measured ones) per checkpoint (error bars: their
    intervals) against its baseline (dotted, its interval a band) and gate (dashed; a held-out task has none)."""
    checkpoints = as_trained(results)
    if not checkpoints or not task.paired_metrics:
        return None
    held_out = task.role == HELD_OUT
    figure, (ax,) = _figure(f"Held-out task {task.name} (never gated): measured metrics per checkpoint" if held_out
                            else f"Retention task {task.name}: gated metrics per checkpoint")
    steps = [c["step"] for c in checkpoints]
    for i, metric in enumerate(task.paired_metrics):
        unit, color = task.unit(metric), f"C{i}"
        _with_bars(ax, checkpoints, steps, task, metric, marker="o", color=color,
                   label=f"checkpoint {metric}" + (" (held out)" if held_out else ""))
        base = score(results["baseline"], task, metric)
        if base is not None:
            ax.axhline(fmt.shown(base, unit), color=color, ls=":", lw=1,
                       label=f"baseline {metric} {task.show(metric, base)}")
            band = interval(results["baseline"], task, metric)
            if band and band.get("low") is not None and band.get("high") is not None and band["high"] > band["low"]:
                ax.axhspan(fmt.shown(band["low"], unit), fmt.shown(band["high"], unit), color=color, alpha=0.1,
                           label=f"baseline {metric} {band['level'] * 100:g}% interval")
        threshold = task.thresholds.get(metric)
        if threshold is not None:
            ax.axhline(fmt.shown(threshold, unit), color=color, ls="--", lw=1,
                       label=f"gate {metric} {task.bound(metric)}: {task.show(metric, threshold)}")
    ax.set_xlabel("step")
    ax.set_ylabel(_unit_label(task, task.paired_metrics))
    _legend(ax)
    return figure


def new_task_scores(results: dict) -> Figure | None:
    """The new task's metrics per checkpoint; the accuracy metric (the score's) bold, with its intervals as error
    bars; step 0 is the base model."""
    checkpoints, task = as_trained(results), new_task(results)
    if not checkpoints:
        return None
    figure, (ax,) = _figure(f"New task {task.name}: metrics per checkpoint (step 0 = base model)")
    entries = [results["baseline"], *checkpoints]
    steps = [0] + [c["step"] for c in checkpoints]
    for i, metric in enumerate(task.metrics):
        if metric == task.accuracy:
            _with_bars(ax, entries, steps, task, metric, marker="o", color=f"C{i % 10}", lw=2.5,
                       label=f"{metric} (score)")
            continue
        xs, ys = _points(steps, [fmt.shown(score(e, task, metric), task.unit(metric)) for e in entries])
        ax.plot(xs, ys, marker="o", color=f"C{i % 10}", lw=1, ls="--", label=metric)
    ax.set_xlabel("step (0 = base model)")
    ax.set_ylabel(_unit_label(task, task.metrics))
    _legend(ax)
    return figure


def compared_checkpoint(results: dict) -> tuple[dict | None, str]:
    """The checkpoint set against the baseline: the best, else (none passes) the last one."""
    best = results.get("best")
    if best is not None:
        scaled = f", {variant(best)}" if variant(best) else ""
        return best, f"best (step {best['step']}{scaled})"
    if as_trained(results):
        last = as_trained(results)[-1]  # the last checkpoint as trained, not one of its scaled evaluations
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
    verdict (green dot: passes, red cross: fails), and on its right axis the
    drift from the base model (KL per token, black), where it was measured.
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
    drift = [(row["step"], row["drift"]["kl"]) for row in rows if (row.get("drift") or {}).get("kl") is not None]
    if not drift:
        _legend(ax)
        return figure
    right = ax.twinx()  # beside measured retention: does the cheap signal move with it?
    right.plot([s for s, _ in drift], [k for _, k in drift], color="black", ls=":", marker="+",
               label="drift: KL(base || tuned) per token (right axis)")
    right.set_ylabel("drift (nats/token)", fontsize="small")
    handles, labels = ax.get_legend_handles_labels()
    more, more_labels = right.get_legend_handles_labels()
    ax.legend(handles + more, labels + more_labels, fontsize="small", loc="upper left",
              bbox_to_anchor=(1.17, 1.0))  # clear of the right axis labels
    return figure


def _frontier_bars(ax: Any, points: list[tuple[float, float, dict]], task: Task, color: str) -> None:
    """The frontier's error bars: the paired retention interval of each point's lowest gated scalar (x) and its
    accuracy interval (y), where recorded."""
    unit = task.unit(task.accuracy)
    xs, ys = [x for x, _, _ in points], [y for _, y, _ in points]
    x_intervals = []
    for _, _, c in points:
        numbers = closest_paired(c)
        x_intervals.append(None if not numbers or numbers.get("ratio") is None else numbers)
    xerr = _errors(xs, x_intervals, fmt.FRACTION)
    yerr = _errors(ys, [interval(c, task, task.accuracy) for _, _, c in points], unit)
    if xerr or yerr:
        ax.errorbar(xs, ys, xerr=xerr, yerr=yerr, fmt="none", ecolor=color, elinewidth=0.8, alpha=0.45, capsize=2)


def frontier(results: dict) -> Figure | None:
    """Every evaluated (checkpoint, scale) as a point: retention (the gate's: the lowest gated scalar / baseline, in
    percent) against the new task's accuracy; one colour and line per scale (in step order, each point labelled
    with its step), filled circles pass the gate and crosses fail it, the gate's fraction dashed, the base model a
    grey square at 100%, the chosen (best) entry a star. Where recorded, error bars: horizontally the paired
    interval of that lowest scalar's retention, vertically the accuracy's interval."""
    checkpoints, task = results["checkpoints"], new_task(results)
    if not checkpoints:
        return None
    unit = task.unit(task.accuracy)
    figure, (ax,) = _figure("Retention-accuracy frontier: every evaluated (checkpoint, scale)", height=4.4)
    kinds = sorted({variant(c) for c in checkpoints}, key=lambda v: (v != "", v))  # as trained first
    labels = []  # (x, y, step, colour): drawn last, once the axes' limits are known
    for i, kind in enumerate(kinds):
        entries = sorted((c for c in checkpoints if variant(c) == kind), key=lambda c: c["step"])
        points = [(100 * lowest_retention(c), fmt.shown(c.get("accuracy"), unit), c) for c in entries
                  if _number(c.get("accuracy"))]
        if not points:
            continue
        color = f"C{i % 10}"
        label = kind or "as trained"
        ax.plot([x for x, _, _ in points], [y for _, y, _ in points], color=color, lw=0.8, alpha=0.5)
        _frontier_bars(ax, points, task, color)
        for passes, marker in ((True, "o"), (False, "x")):
            chosen = [(x, y) for x, y, c in points if c["passes_gate"] is passes]
            if chosen:
                ax.scatter(*zip(*chosen), color=color, marker=marker, zorder=3,
                           label=f"{label}: {'passes' if passes else 'fails'} the gate")
        labels += [(x, y, c["step"], color) for x, y, c in points]
    base = score(results["baseline"], task, task.accuracy)
    if base is not None:
        ax.scatter([100.0], [fmt.shown(base, unit)], marker="s", color="0.5", zorder=3, label="base model")
    for fraction in sorted({t.gate_fraction for t in retention_tasks(results) if t.gate_fraction is not None}):
        names = ", ".join(t.name for t in retention_tasks(results) if t.gate_fraction == fraction)
        ax.axvline(100 * fraction, color="0.3", ls="--", lw=1, label=f"gate {fraction:g} x baseline ({names})")
    best = next((c for c in checkpoints if same_state(c, results.get("best"))), None)
    if best is not None and _number(best.get("accuracy")):
        ax.scatter([100 * lowest_retention(best)], [fmt.shown(best["accuracy"], unit)], marker="*", s=260,
                   facecolor="none", edgecolor="black", lw=1.5, zorder=4,
                   label=f"chosen: step {best['step']}" + (f", {variant(best)}" if variant(best) else ""))
    # A step label within ~5% of the axes (about a label's width) of one already placed goes a line lower.
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    for k, (x, y, step, color) in enumerate(labels):
        crowd = sum(abs(x - px) < 0.05 * (x1 - x0) and abs(y - py) < 0.04 * (y1 - y0) for px, py, _, _ in labels[:k])
        ax.annotate(str(step), (x, y), textcoords="offset points", xytext=(4, 3 - 8 * crowd), fontsize="x-small",
                    color=color)
    ax.set_xlabel("retention (%): lowest gated scalar / baseline")
    ax.set_ylabel(f"{task.name} {task.accuracy}" + (" (%)" if unit == fmt.FRACTION else ""))
    _legend(ax)
    return figure
