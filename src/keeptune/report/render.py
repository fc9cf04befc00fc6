"""`build_report(run)`: RUN/report.md, RUN/report.html and RUN/plots/*.png from the run's files.

Sections: summary, tasks, settings, parameter accounting, baseline, checkpoints,
the new task's breakdown per group, plots, the command to reproduce, the full
config. Every task, metric and unit comes from the task specs in results.json
(see `keeptune.report.results`); numbers are written as `keeptune.report.fmt`
documents.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from keeptune.core.io import atomic_write_json, atomic_write_text
from keeptune.report import fmt
from keeptune.report.document import Block, Code, Heading, Image, Items, Table, Text, to_html, to_markdown
from keeptune.report.plots import group_names, make_plots
from keeptune.report.registry import task_versions
from keeptune.report.results import (
    NEW,
    RESULTS,
    Task,
    breakdown,
    entry_methods,
    entry_scale,
    evaluation,
    load_results,
    method_label,
    new_task,
    read_log,
    retention,
    retention_tasks,
    run_methods,
    same_state,
    score,
    show_scale,
    task_gate,
    tasks,
)


def build_report(run: Path, dpi: int = 110, record_time: bool = False) -> tuple[Path, Path]:
    """Write RUN/report.md, RUN/report.html (self-contained) and RUN/plots/*.png; returns both report paths.

    `record_time` (what `keeptune run` asks): the report's own seconds (reading, plotting) become the
    `report` row of results.json's timing before the documents are written, so they show it too.

    Raises:
        DataError: RUN/results.json is missing or lacks a field the report needs.
    """
    started = time.perf_counter()
    run = Path(run)
    results = load_results(run)
    plots = make_plots(results, read_log(run), run / "plots", dpi=dpi)
    if record_time:
        timing = [row for row in results.get("timing") or [] if row["phase"] != "report"]
        results["timing"] = timing + [{"phase": "report", "task": None, "seconds": time.perf_counter() - started}]
        atomic_write_json(run / RESULTS, results)
    blocks = report_blocks(results, [(title, path.relative_to(run)) for title, path in plots])
    md_path, html_path = run / "report.md", run / "report.html"
    atomic_write_text(md_path, to_markdown(blocks))
    atomic_write_text(html_path, to_html(blocks, title(results), run))
    return md_path, html_path


def title(results: dict) -> str:
    return f"Experiment report: {results['name']}"


def report_blocks(results: dict, plots: list[tuple[str, Path]]) -> list[Block]:
    """Every section of the report; `plots` are (title, path relative to the run) pairs."""
    new = new_task(results)
    blocks: list[Block] = [
        Heading(title(results), 1),
        Heading("Summary"), Items(summary(results)),
        Heading("Tasks"), tasks_table(results),
        Heading("Settings"), settings_table(results),
        Heading("Parameters"), params_table(results),
        Heading("Baseline (base model)"), baseline_table(results),
        Heading("Checkpoints"), Text(checkpoint_legend(results)), checkpoint_table(results),
    ]
    if new.breakdown is not None:
        blocks += [Heading(breakdown_heading(new)), breakdown_table(results)]
    if results.get("timing"):
        blocks += [Heading("Where the time went"), Text(TIMING_LEGEND), timing_table(results)]
    return blocks + [
        Heading("Plots"), *([Image(t, p) for t, p in plots] or [Text("No data to plot.")]),
        Heading("Reproduce"), Code(results["command"], lang="sh"),
        Heading("Configuration"), Code(json.dumps(results.get("config", {}), indent=2, ensure_ascii=False),
                                       lang="json", summary="full resolved experiment config (JSON)"),
    ]


def summary(results: dict) -> list[str]:
    best, new = results.get("best"), new_task(results)
    if best is None:
        lines = [f"No checkpoint passes the gate ({len(results['checkpoints'])} evaluated)."]
    else:
        scaled = "" if entry_scale(best) == 1 else (
            f" at scale {show_scale(entry_scale(best))} (its adapter's update x {show_scale(entry_scale(best))}, "
            "folded into the exported adapter's weights)")
        lines = [
            (f"Best checkpoint: step {best['step']}{scaled}, score {fmt.score(best['score'])} ({new.name} "
             f"{new.accuracy} {new.show(new.accuracy, best['accuracy'])}, "
             f"ratio {fmt.ratio(results['params']['ratio'])})."),
            *(f"Retention task {task.name} kept: {kept(best, task)}." for task in retention_tasks(results)),
            f"Adapter: {best.get('adapter') or fmt.MISSING}; merged model: {best.get('merged') or fmt.MISSING}.",
        ]
    return lines + [
        f"Method: {method_label(run_methods(results))}.",
        f"Gate: {results['gate_rule'].rstrip('.')}.",
        f"Score: {results['score_rule'].rstrip('.')}.",
        f"Wall time: {fmt.duration(results.get('wall_seconds'))}.",
    ]


def kept(entry: dict, task: Task) -> str:
    """A retention task's gated metrics at a checkpoint with their retention: ``F1 44.00 (110.00% of baseline)``."""
    parts = []
    for metric in task.gate_metrics:
        share = retention(entry, task, metric)
        of = "baseline 0" if share is None else f"{fmt.percent(share)} of baseline"
        parts.append(f"{metric} {task.show(metric, score(entry, task, metric))} ({of})")
    return ", ".join(parts)


def tasks_table(results: dict) -> Table:
    """Each task's role, description and spec version (`keeptune.report.registry.task_versions`)."""
    rows = []
    versions = task_versions(results)
    for task in tasks(results):
        if task.role == NEW:
            role = f"new (score: {task.accuracy})"
        else:
            role = f"retention (gate: {', '.join(task.gate_metrics)} >= {task.gate_fraction:g} x baseline)"
        rows.append([task.name, role, task.description, versions[task.name]])
    return Table(["task", "role", "description", "version"], rows, left=3)


def settings_table(results: dict) -> Table:
    return Table(["setting", "value"], [[key, fmt.setting(value)] for key, value in results["settings"].items()],
                 left=2)


def params_table(results: dict) -> Table:
    params = results["params"]
    term = params.get("score_term", (1 - params["ratio"]) * 0.3)
    return Table(["quantity", "value"], [
        ["trainable parameters", fmt.count(params["trainable"])],
        ["all parameters", fmt.count(params["total"])],
        ["ratio = trainable / all (exact)", repr(params["ratio"])],
        ["score term (1 - ratio) * 0.3", repr(term)],
    ])


def baseline_table(results: dict) -> Table:
    """One row per (task, metric); a gated metric's threshold follows it; then the task's sample count."""
    base, rows = results["baseline"], []
    for task in tasks(results):
        for metric in task.metrics:
            rows.append([task.name, metric, task.show(metric, score(base, task, metric))])
            if metric in task.gate_metrics:
                rows.append([task.name, f"{metric} gate ({task.gate_fraction:g} x baseline)",
                             task.show(metric, task.thresholds.get(metric))])
        for metric in task.gate_metrics:  # a gated metric the task does not list among its metrics
            if metric not in task.metrics:
                rows.append([task.name, f"{metric} gate ({task.gate_fraction:g} x baseline)",
                             task.show(metric, task.thresholds.get(metric))])
        rows.append([task.name, "samples", fmt.count(evaluation(base, task).get("total_count"))])
    return Table(["task", "metric", "value"], rows, left=2)


def checkpoint_legend(results: dict) -> str:
    units = "; ".join(f"{task.name}: {', '.join(sorted(set(task.units.values()))) or 'plain numbers'}"
                      for task in tasks(results))
    return (f"Units ({units}): points are 0..100, fractions are shown in percent. "
            "Method: lora and the retention methods that made the state; scale: the factor the adapter's update "
            "is multiplied by (1: as trained; retention method scale evaluates each checkpoint at more). "
            "Retention = checkpoint / baseline. Score: see the summary's score rule; "
            "gate: PASS when every retention task passes its gate.")


def checkpoint_columns(results: dict) -> list[str]:
    kept_tasks, new = retention_tasks(results), new_task(results)
    headers = ["step", "method", "scale", "loss"]
    for task in kept_tasks:
        for metric in task.gate_metrics:
            headers += [f"{task.name} {metric}", f"{task.name} retention {metric}"]
        if len(kept_tasks) > 1:
            headers.append(f"{task.name} gate")
    return headers + [f"{new.name} {metric}" for metric in new.metrics] + ["score", "gate"]


def checkpoint_table(results: dict) -> Table:
    kept_tasks, new = retention_tasks(results), new_task(results)
    best = results.get("best")
    rows = []
    for c in results["checkpoints"]:
        row = [str(c["step"]), method_label(entry_methods(c)), show_scale(entry_scale(c)), fmt.loss(c.get("loss"))]
        for task in kept_tasks:
            for metric in task.gate_metrics:
                row += [task.show(metric, score(c, task, metric)), retained(results, c, task, metric)]
            if len(kept_tasks) > 1:
                row.append(verdict(task_gate(c, task)))
        row += [new.show(metric, score(c, new, metric)) for metric in new.metrics]
        row += [fmt.score(c["score"]), verdict(c["passes_gate"]) + (" (best)" if same_state(c, best) else "")]
        rows.append(row)
    return Table(checkpoint_columns(results), rows, left=2)  # step and method left, the numbers right


def retained(results: dict, entry: dict, task: Task, metric: str) -> str:
    """A checkpoint's retention of a gated metric in percent; ``baseline 0`` when the baseline scored 0."""
    share = retention(entry, task, metric)
    if share is None and score(results["baseline"], task, metric) == 0:
        return "baseline 0"
    return fmt.percent(share)


def verdict(passed: bool | None) -> str:
    return fmt.MISSING if passed is None else "PASS" if passed else "FAIL"


TIMING_LEGEND = ("Seconds of this invocation of `keeptune run`, in the order the phases ran (work a resumed run "
                 "found done costs about nothing). Training excludes the tracking evaluations made during it; "
                 "`other` is the rest of the wall time (planning, checks, results).")


def timing_table(results: dict) -> Table:
    """Phase, task, seconds, share of the wall time, and a per-unit figure where there is one."""
    rows, wall = results["timing"], results.get("wall_seconds")
    report = sum(r["seconds"] for r in rows if r["phase"] == "report")  # timed after wall_seconds was taken
    total = (wall if wall is not None else sum(r["seconds"] for r in rows) - report) + report
    table = []
    for row in rows:
        detail = ""
        if row.get("steps"):
            detail = f"{row['steps']} steps, {row['seconds'] / row['steps']:.2f} s/step"
        elif row.get("evaluations"):
            detail = f"{row['evaluations']} evaluations, {row['seconds'] / row['evaluations']:.1f} s each"
        table.append([row["phase"], row.get("task") or "", f"{row['seconds']:.1f}",
                      fmt.percent(row["seconds"] / total) if total else fmt.MISSING, detail])
    if wall is not None:
        other = total - sum(r["seconds"] for r in rows)
        table.append(["other", "", f"{other:.1f}", fmt.percent(other / total) if total else fmt.MISSING, ""])
        table.append(["total", "", f"{total:.1f}", fmt.percent(1.0), fmt.duration(total)])
    return Table(["phase", "task", "seconds", "share", "detail"], table, left=2)


def breakdown_heading(task: Task) -> str:
    return f"Breakdown: {task.name} {task.breakdown} per group"


def breakdown_table(results: dict) -> Table:
    """Rows: groups; columns: the baseline and each checkpoint; cells ``correct/total (percent)``."""
    new, checkpoints = new_task(results), results["checkpoints"]
    entries = [results["baseline"], *checkpoints]
    headers = ["group", "baseline", *(state_name(c) for c in checkpoints)]
    rows = [[name, *(fmt.cell(breakdown(e, new).get(name)) for e in entries)]
            for name in group_names(entries, new)]
    return Table(headers, rows)


def state_name(entry: dict) -> str:
    """``step 300``, or ``step 300 scale 0.5`` for a scaled evaluation."""
    scale = entry_scale(entry)
    return f"step {entry['step']}" + ("" if scale == 1 else f" scale {show_scale(scale)}")
