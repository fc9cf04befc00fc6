"""`build_report(run)`: RUN/report.md, RUN/report.html and RUN/plots/*.png from the run's files.

Sections: summary, tasks, settings, parameter accounting, baseline, checkpoints,
gate decisions and held-out tasks (when the paired retention is recorded; a
held-out task is measured like a retention task and decides nothing), the new
task's breakdown per group, where the time went, plots, the command to reproduce, the full
config. Every task, metric and unit comes from the task specs in results.json
(see `keeptune.report.results`); numbers are written as `keeptune.report.fmt`
documents.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from keeptune.core import gate as rules
from keeptune.core.io import atomic_write_json, atomic_write_text
from keeptune.experiment.results import complete_uncertainty
from keeptune.report import fmt
from keeptune.report.document import Block, Code, Heading, Image, Items, Table, Text, to_html, to_markdown
from keeptune.report.plots import group_names, make_plots
from keeptune.report.registry import task_versions
from keeptune.report.results import (
    HELD_OUT,
    NEW,
    RESULTS,
    Task,
    breakdown,
    decision,
    entry_methods,
    entry_scale,
    evaluation,
    held_out_tasks,
    interval,
    load_results,
    method_label,
    new_task,
    paired,
    read_log,
    retention,
    retention_tasks,
    run_methods,
    same_state,
    score,
    show_scale,
    task_gate,
    tasks,
    variant,
)


def build_report(run: Path, dpi: int = 110, record_time: bool = False) -> tuple[Path, Path]:
    """Write RUN/report.md, RUN/report.html (self-contained) and RUN/plots/*.png; returns both report paths.

    `record_time` (what `keeptune run` asks): the report's own seconds (reading, plotting) become the
    `report` row of results.json's timing before the documents are written, so they show it too. A results.json
    written before intervals existed gets them, and the paired retention of every state, from the run's
    evaluation folders (keeptune.experiment.results.complete_uncertainty), and is rewritten with them.

    Raises:
        DataError: RUN/results.json is missing or lacks a field the report needs.
    """
    started = time.perf_counter()
    run = Path(run)
    results = load_results(run)
    completed = complete_uncertainty(results, run)
    plots = make_plots(results, read_log(run), run / "plots", dpi=dpi)
    if completed and not record_time:
        atomic_write_json(run / RESULTS, results)
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
    if any(c.get("retention_uncertainty") for c in results["checkpoints"]):
        blocks += [Heading("Gate decisions"), Text(DECISIONS_LEGEND), decisions_table(results)]
        blocks += [Items(decision_notes(results))] if decision_notes(results) else []
    if any(c.get("held_out_uncertainty") for c in results["checkpoints"]):
        blocks += [Heading("Held-out tasks (never gated)"), Text(HELD_OUT_LEGEND), held_out_table(results)]
        blocks += [Items(held_out_notes(results))] if held_out_notes(results) else []
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
        scaled = "" if not variant(best) else (
            f" at scale {show_scale(entry_scale(best))} (its adapter's update x {show_scale(entry_scale(best))}, "
            "folded into the exported adapter's weights)" if variant(best).startswith("scale") else
            f" with its {variant(best)} (PEFT's intruder-dimension reduction, each intruder kept at that share; the "
            "reduced adapter is the exported one)")
        accuracy = new.show_interval(new.accuracy, best["accuracy"], interval(best, new, new.accuracy))
        lines = [
            (f"Best checkpoint: step {best['step']}{scaled}, score {fmt.score(best['score'])} ({new.name} "
             f"{new.accuracy} {accuracy}, ratio {fmt.ratio(results['params']['ratio'])})."),
            *(f"Retention task {task.name} kept: {kept(best, task)}." for task in retention_tasks(results)),
            *(f"Held-out task {task.name} (measured, never gated): {kept(best, task)}."
              for task in held_out_tasks(results)),
            *([f"{versus_runner_up(results)}."] if versus_runner_up(results) else []),
            f"Adapter: {best.get('adapter') or fmt.MISSING}; merged model: {best.get('merged') or fmt.MISSING}.",
        ]
    return lines + [
        f"Method: {method_label(run_methods(results))}.",
        f"Gate: {results['gate_rule'].rstrip('.')}.",
        *(f"Gate of {task.name}: {rule_text(task)}." for task in retention_tasks(results)),
        f"Score: {results['score_rule'].rstrip('.')}.",
        f"Wall time: {fmt.duration(results.get('wall_seconds'))}"
        + (f"; CPU time {fmt.duration(results['cpu_seconds'])}." if "cpu_seconds" in results else "."),
    ]


def kept(entry: dict, task: Task) -> str:
    """A retention task's gated metrics (a held-out task's measured ones) at a checkpoint with their retention:
    ``F1 44.00 (110.00% of baseline)``; with the uncertainty recorded, each value's interval and the paired
    retention's interval and probability of keeping the fraction: ``F1 44.00 [38.1, 50.2] (110.00% of baseline,
    paired 95% interval [95.1, 126.0], P(>= 90%) 0.99)``; a base of 0 says why it passes trivially."""
    parts = []
    for metric in task.paired_metrics:
        share, numbers = retention(entry, task, metric), paired(entry, task, metric)
        of = "baseline 0" if share is None else f"{fmt.percent(share)} of baseline"
        if numbers is not None and numbers["base_zero"]:
            of = numbers.get("note") or of  # why the ratio is undefined, in the words of its role (gated or held out)
        elif numbers is not None and numbers["ratio"] is not None:
            of += (f", paired {task.confidence * 100:g}% interval "
                   f"{fmt.bounds(numbers['low'], numbers['high'], fmt.FRACTION)}, "
                   f"P(>= {task.gate_fraction * 100:g}%) {numbers['p_at_least']:.2f}")
        value = task.show_interval(metric, score(entry, task, metric), interval(entry, task, metric))
        parts.append(f"{metric} {value} ({of})")
    return ", ".join(parts)


def rule_text(task: Task) -> str:
    """A retention task's rule in words."""
    level = f"{task.confidence * 100:g}%"
    if task.rule == rules.CONFIDENT:
        return (f"rule confident: the one-sided {level} lower bound of each gated scalar's paired retention >= "
                f"{task.gate_fraction:g}")
    bounds = "; ".join(f"{m} {task.bound(m)}" for m in task.lower_is_better)
    better_lower = f"; better lower: {bounds}" if bounds else ""
    return (f"rule point: each gated scalar >= {task.gate_fraction:g} x baseline{better_lower} (the paired "
            f"retention's {level} interval is shown beside it, not used)")


def versus_runner_up(results: dict) -> str | None:
    """Whether the best state is distinguishable from the runner-up on the new task's accuracy, in one sentence
    (None when results.json has no such comparison: fewer than two states pass, or it was written before)."""
    c = results.get("best_vs_runner_up")
    if not c:
        return None
    new = new_task(results)
    unit = new.unit(c["scalar"])
    second = c["runner_up"]
    at = f"step {second['step']}" + ("" if second.get("scale", 1) == 1 else f" scale {show_scale(second['scale'])}")
    discordant = ""
    if c.get("discordant"):
        discordant = f", {c['discordant'][0]} against {c['discordant'][1]} discordant samples"
    return (f"Against the runner-up ({at}): {c['task']} {c['scalar']} {new.show(c['scalar'], c['mean_a'])} against "
            f"{new.show(c['scalar'], c['mean_b'])}, difference {difference(c['difference'], unit)} "
            f"{fmt.bounds(c.get('low'), c.get('high'), unit)}, {c['test']} p = {c['p_value']:.3g}{discordant}: "
            f"{c['verdict']}")


def difference(value: float, unit: str | None) -> str:
    """A difference of two values of a metric, signed: ``+1.67 points`` for fractions (percentage points)."""
    return f"{fmt.shown(value, unit):+.2f}" + (" points" if unit == fmt.FRACTION else "")


def tasks_table(results: dict) -> Table:
    """Each task's role, description and spec version (`keeptune.report.registry.task_versions`)."""
    rows = []
    versions = task_versions(results)
    for task in tasks(results):
        if task.role == NEW:
            role = f"new (score: {task.accuracy})"
        elif task.role == HELD_OUT:
            role = f"held out (measured, never gated: {', '.join(task.measured) or 'no scalar'})"
        else:
            role = f"retention (gate: {task.gate_text()})"
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
    """One row per (task, metric), the value with its interval; a gated metric's threshold follows it; then the
    task's sample count."""
    base, rows = results["baseline"], []
    for task in tasks(results):
        for metric in task.metrics:
            rows.append([task.name, metric, task.show_interval(metric, score(base, task, metric),
                                                              interval(base, task, metric))])
            if metric in task.gate_metrics:
                rows.append([task.name, f"{metric} gate ({task.bound(metric).removeprefix('>= ')})",
                             task.show(metric, task.thresholds.get(metric))])
        for metric in task.gate_metrics:  # a gated metric the task does not list among its metrics
            if metric not in task.metrics:
                rows.append([task.name, f"{metric} gate ({task.bound(metric).removeprefix('>= ')})",
                             task.show(metric, task.thresholds.get(metric))])
        rows.append([task.name, "samples", fmt.count(evaluation(base, task).get("total_count"))])
    return Table(["task", "metric", "value"], rows, left=2)


def checkpoint_legend(results: dict) -> str:
    units = "; ".join(f"{task.name}: {', '.join(sorted(set(task.units.values()))) or 'plain numbers'}"
                      for task in tasks(results))
    return (f"Units ({units}): points are 0..100, fractions are shown in percent. "
            "Method: lora and the retention methods that made the state; scale: the factor the adapter's update "
            "is multiplied by (1: as trained; retention method scale evaluates each checkpoint at more). "
            "Each gated value and the accuracy are followed by their bootstrap confidence interval over the "
            "samples, each retention "
            "(= checkpoint / baseline) by its paired interval (the same resampled samples for both; see Gate "
            "decisions). Score: see the summary's score rule; gate: PASS when every retention task passes its gate."
            + (HELD_OUT_NOTE if held_out_tasks(results) else ""))


HELD_OUT_NOTE = (" Held-out tasks (marked held out) are measured on data the gate never sees, with their retention "
                 "against the base model and its paired interval as a gated task's, and decide nothing: neither the "
                 "gate nor the best checkpoint.")


def checkpoint_columns(results: dict) -> list[str]:
    kept_tasks, new = retention_tasks(results), new_task(results)
    headers = ["step", "method", "scale", "loss"]
    for task in kept_tasks:
        for metric in task.gate_metrics:
            headers += [f"{task.name} {metric}", f"{task.name} retention {metric}"]
        if len(kept_tasks) > 1:
            headers.append(f"{task.name} gate")
    for task in held_out_tasks(results):
        for metric in task.measured:
            headers += [f"{task.name} {metric} (held out)", f"{task.name} retention {metric} (held out)"]
    return headers + [f"{new.name} {metric}" for metric in new.metrics] + ["score", "gate"]


def checkpoint_table(results: dict) -> Table:
    kept_tasks, new = retention_tasks(results), new_task(results)
    best = results.get("best")
    rows = []
    for c in results["checkpoints"]:
        row = [str(c["step"]), method_label(entry_methods(c)), show_scale(entry_scale(c)), fmt.loss(c.get("loss"))]
        for task in kept_tasks:
            for metric in task.gate_metrics:
                row += [task.show_interval(metric, score(c, task, metric), interval(c, task, metric)),
                        retained(results, c, task, metric)]
            if len(kept_tasks) > 1:
                row.append(verdict(task_gate(c, task)))
        for task in held_out_tasks(results):  # no verdict: a held-out task decides nothing
            for metric in task.measured:
                row += [task.show_interval(metric, score(c, task, metric), interval(c, task, metric)),
                        retained(results, c, task, metric)]
        row += [new.show_interval(metric, score(c, new, metric), interval(c, new, metric)) if metric == new.accuracy
                else new.show(metric, score(c, new, metric)) for metric in new.metrics]
        row += [fmt.score(c["score"]), verdict(c["passes_gate"]) + (" (best)" if same_state(c, best) else "")]
        rows.append(row)
    return Table(checkpoint_columns(results), rows, left=2)  # step and method left, the numbers right


def retained(results: dict, entry: dict, task: Task, metric: str) -> str:
    """A checkpoint's retention of a gated (or held-out measured) metric in percent, with its paired interval when
    recorded; ``baseline 0`` when the baseline scored 0."""
    share = retention(entry, task, metric)
    if share is None and score(results["baseline"], task, metric) == 0:
        return "baseline 0"
    numbers = paired(entry, task, metric)
    if numbers is None or numbers["ratio"] is None:
        return fmt.percent(share)
    return fmt.retention_with_interval(share, numbers["low"], numbers["high"])


DECISIONS_LEGEND = (
    "Each gated scalar of each evaluated state: its paired retention (the state's per-sample mean over the base "
    "model's on the same samples; the bootstrap draws the same resampled samples for both, so the interval "
    "measures the change, not the spread of the samples), the two-sided interval and the one-sided lower bound "
    "at the task's confidence, P(>= fraction): the share of bootstrap replicates whose retention is at least the "
    "gate's fraction, and the verdict of each rule. The task's rule decides (marked *). A baseline of 0 has no "
    "ratio (n/a): the gate passes trivially under either rule and the scalar cannot show a loss (notes below).")


def decisions_table(results: dict) -> Table:
    """One row per (state, retention task, gated scalar): rule, retention, interval, lower bound, P(>= fraction),
    the point and confident verdicts."""
    rows = []
    for c in results["checkpoints"]:
        for task in retention_tasks(results):
            record = decision(c, task)
            if record is None:
                continue
            for metric in task.gate_metrics:
                n = record["scalars"].get(metric)
                if n is None:
                    continue
                level = f"{record['confidence'] * 100:g}%"
                marks = {rule: verdict(n[f"{rule}_passes"]) + (" *" if rule == record["rule"] else "")
                         for rule in rules.RULES}
                rows.append([state_name(c), task.name, metric, f"{record['rule']} ({level})", *paired_cells(n),
                             marks[rules.POINT], marks[rules.CONFIDENT]])
    return Table(["state", "task", "scalar", "rule (confidence)", "retention [interval]", "lower bound",
                  "P(>= fraction)", "point", "confident"], rows, left=4)


def paired_cells(n: dict) -> list[str]:
    """A scalar's paired retention with its interval, its one-sided lower bound and P(>= fraction)."""
    return [fmt.retention_with_interval(n["ratio"], n["low"], n["high"]), fmt.percent(n["lower"]),
            fmt.MISSING if n["p_at_least"] is None else f"{n['p_at_least']:.2f}"]


HELD_OUT_LEGEND = (
    "Each measured scalar of each held-out task at each evaluated state, on data the gate never sees: its paired "
    "retention against the base model (computed as a gated scalar's, see Gate decisions), the two-sided interval "
    "and the one-sided lower bound at the task's confidence, and P(>= fraction): the share of bootstrap replicates "
    "at or above the fraction, what a gate at that fraction would have seen. No verdict: a held-out task decides "
    "neither the gate nor the best checkpoint.")


def held_out_table(results: dict) -> Table:
    """One row per (state, held-out task, measured scalar): confidence, retention [interval], lower bound,
    P(>= fraction); no verdict."""
    rows = []
    for c in results["checkpoints"]:
        for task in held_out_tasks(results):
            record = decision(c, task)
            for metric in task.measured:
                n = ((record or {}).get("scalars") or {}).get(metric)
                if n is not None:
                    rows.append([state_name(c), task.name, metric, f"{record['confidence'] * 100:g}%",
                                 f"{record['fraction']:g}", *paired_cells(n)])
    return Table(["state", "task", "scalar", "confidence", "fraction", "retention [interval]", "lower bound",
                  "P(>= fraction)"], rows, left=3)


def held_out_notes(results: dict) -> list[str]:
    """One line per held-out scalar whose baseline is 0: it has no retention at any state."""
    return [f"{task.name} {metric}: the baseline is 0, so its retention is undefined at every state (it cannot show "
            "a loss)." for task, metric in base_zero(results, held_out_tasks(results))]


def decision_notes(results: dict) -> list[str]:
    """One line per gated scalar whose baseline is 0: its gate passes trivially at every state."""
    return [f"{task.name} {metric}: the baseline is 0, so the ratio is undefined and the gate (>= "
            f"{task.gate_fraction:g} x 0) passes trivially under either rule at every state: this scalar cannot "
            "show a loss." for task, metric in base_zero(results, retention_tasks(results))]


def base_zero(results: dict, chosen: list[Task]) -> list[tuple[Task, str]]:
    """The (task, scalar) pairs of `chosen` whose paired record says the baseline is 0 at some state, in order."""
    pairs: dict[tuple[str, str], tuple[Task, str]] = {}
    for c in results["checkpoints"]:
        for task in chosen:
            for metric, n in ((decision(c, task) or {}).get("scalars") or {}).items():
                if n.get("base_zero"):
                    pairs.setdefault((task.name, metric), (task, metric))
    return list(pairs.values())


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
