"""`keeptune sweep`'s report: SWEEP/sweep.md, a self-contained SWEEP/sweep.html, SWEEP/plots/*.png and
SWEEP/best.yaml, rendered from plain data: the mapping keeptune.sweep.records.report_data makes of the study (the
sweep's settings, one row per trial, the best trial's row, the gate fractions, the parameter importances and the
text of best.yaml). This module reads no study and imports nothing of keeptune.sweep.

`keeptune sweep` writes it after every trial (by the worker that finished it) and at the end; re-running
`keeptune sweep SWEEP.yaml` on a finished study runs no trial and rebuilds it. Sections: the summary (counts, the
best feasible trial against trial 0), the trials table, score by trial, the accuracy-retention plot with the
Pareto front and the gate, Optuna's parameter importances, and the best trial's full experiment config
(best.yaml, which `keeptune run SWEEP/best.yaml` runs as it is).
"""
from __future__ import annotations

import io
import json
import math
import os
from pathlib import Path
from typing import Any, Optional

from matplotlib.figure import Figure

from keeptune.core.io import atomic_write_text
from keeptune.report import fmt
from keeptune.report.document import Block, Code, Heading, Image, Items, Table, Text, to_html, to_markdown
from keeptune.report.plots import _figure, _legend, _number


# --- the rows -------------------------------------------------------------------------------------
# A row (one trial) has `number`, `kind` (complete, infeasible, pruned, failed, killed, running, waiting),
# `state` (the table's text), `params` and `params_text`, `score` (its best passing checkpoint's, or None),
# `value` (what the trial told Optuna: an infeasible trial's would-be score), `accuracy` and `retention` (of the
# chosen checkpoint, retention = lowest gated scalar / baseline), `step`, `wall_seconds`, `pruned_step`,
# `run_dir` and `retry_of`.

def pareto_front(rows: list[dict]) -> list[int]:
    """Numbers of the feasible trials no other feasible trial beats on both accuracy and retention."""
    feasible = [r for r in rows if r["kind"] == "complete" and r["accuracy"] is not None
                and r["retention"] is not None]
    return [r["number"] for r in feasible if not any(_beats(o, r) for o in feasible)]


def _beats(a: dict, b: dict) -> bool:
    return (a["accuracy"] >= b["accuracy"] and a["retention"] >= b["retention"]
            and (a["accuracy"] > b["accuracy"] or a["retention"] > b["retention"]))


def start_row(rows: list[dict], start: bool) -> Optional[dict]:
    """The row of trial 0 when the sweep queued a `start` recipe (its last retry if it was killed), else None."""
    if not start:
        return None
    again = {r["retry_of"]: r["number"] for r in rows if r["retry_of"] is not None}
    number = 0
    while number in again:
        number = again[number]
    return next((r for r in rows if r["number"] == number), None)


# --- the document -----------------------------------------------------------------------------------

def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def trials_table(rows: list[dict], fields: list[str], out: Path) -> Table:
    """One line per trial: its number, one column per searched field, state, score, accuracy, retention, step,
    wall seconds, the step it was pruned at and its run directory (relative to the sweep directory)."""
    headers = ["#", *fields, "state", "score", "accuracy", "retention", "step", "wall s", "pruned at", "run"]
    table = []
    for r in rows:
        run = r["run_dir"]
        if run and Path(run).is_relative_to(out):
            run = Path(run).relative_to(out).as_posix()
        table.append([str(r["number"]), *(_cell(r["params"].get(k)) for k in fields), r["state"],
                      fmt.score(r["score"]) if r["score"] is not None else "",
                      fmt.percent(r["accuracy"]) if r["accuracy"] is not None else "",
                      fmt.percent(r["retention"]) if r["retention"] is not None else "",
                      _cell(r["step"]), f"{r['wall_seconds']:.0f}" if r["wall_seconds"] is not None else "",
                      _cell(r["pruned_step"]), run or ""])
    return Table(headers, table, left=2 + len(fields))


def summary_items(data: dict, wall_seconds: Optional[float]) -> list[str]:
    rows, best = data["rows"], data["best"]
    kinds = [r["kind"] for r in rows]
    counted = len(rows) - len({r["retry_of"] for r in rows if r["retry_of"] is not None})
    items = [f"Trials: {len(rows)} ({counted} of the budget of {data['budget']}; a killed trial and its retry "
             f"count once): {kinds.count('complete')} feasible, {kinds.count('infeasible')} infeasible, "
             f"{kinds.count('pruned')} pruned, {kinds.count('failed')} failed, {kinds.count('killed')} killed, "
             f"{kinds.count('running')} running, {kinds.count('waiting')} waiting."]
    if wall_seconds is not None:
        items.append(f"Wall time of this invocation of keeptune sweep: {fmt.duration(wall_seconds)}.")
    if best is None:
        items.append("No feasible trial: no trial has a checkpoint that passes the gate.")
        return items
    items.append(f"Best feasible trial: #{best['number']}, score {best['score']:.6f} "
                 f"(accuracy {fmt.percent(best['accuracy'])}, retention {fmt.percent(best['retention'])}, "
                 f"step {best['step']}): {best['params_text']}. Its run: {best['run_dir']}; its config: "
                 f"{data['best_path']}.")
    items += _against_start(start_row(rows, data["start"]), best)
    items += _against_runner_up(data.get("versus_runner_up"))
    return items


def _against_runner_up(versus: Optional[dict]) -> list[str]:
    """The best trial against the runner-up on the new task's accuracy: the paired test's verdict (none with fewer
    than two feasible trials)."""
    if versus is None:
        return []
    head = f"Against the runner-up, trial #{versus['runner_up']}"
    c = versus["comparison"]
    if c is None:
        return [f"{head}: {versus['note']}."]
    unit = versus.get("units")
    gap = fmt.shown(c["difference"], unit)
    return [f"{head}: {c['task']} {c['scalar']} {fmt.metric(c['mean_a'], unit)} against {fmt.metric(c['mean_b'], unit)}"
            f" at their best checkpoints, difference {gap:+.2f}{' points' if unit == fmt.FRACTION else ''} "
            f"{fmt.bounds(c['low'], c['high'], unit)}, {c['test']} p = {c['p_value']:.3g}: {c['verdict']}."]


def _against_start(first: Optional[dict], best: dict) -> list[str]:
    """The best trial against trial 0, the first `start` recipe (none without one)."""
    if first is None:
        return []
    if first["kind"] != "complete":
        return [f"Trial 0, the first `start` recipe: {first['state']}."]
    run_as = f" (run as #{first['number']})" if first["number"] else ""
    return [f"Trial 0, the first `start` recipe{run_as}: score {first['score']:.6f}; the best is "
            f"{best['score'] - first['score']:+.6f} against it."]


# --- the figures (drawn like the run report's, keeptune.report.plots; each reads the rows above) -------

def sweep_scores(trials: list[dict], reference: tuple[str, float] | None = None) -> Figure | None:
    """Score by trial: feasible trials (dots) with the best so far, infeasible trials at their would-be score
    (red crosses), pruned trials at the score of the checkpoints they had (grey triangles); the trials without a
    number to draw (failed, killed, pruned before a passing checkpoint) as marks on the bottom edge."""
    if not trials:
        return None
    figure, (ax,) = _figure("Score by trial (higher is better)")
    figure.set_size_inches(10, 4.2)  # wider than a run report's figures: the legend sits beside the axes
    groups = (("complete", "o", "C0", "feasible: score"), ("infeasible", "x", "tab:red", "infeasible: would-be score"),
              ("pruned", "v", "0.5", "pruned: score of its checkpoints"))
    for kind, marker, color, label in groups:
        ys = [(t["number"], t["score"] if kind != "infeasible" else t["value"]) for t in trials if t["kind"] == kind]
        ys = [(n, y) for n, y in ys if _number(y)]
        if ys:
            ax.scatter([n for n, _ in ys], [y for _, y in ys], marker=marker, color=color, label=label, zorder=3)
    feasible = sorted((t["number"], t["score"]) for t in trials if t["kind"] == "complete" and _number(t["score"]))
    if feasible:
        best, xs, ys = -math.inf, [], []
        for number, value in feasible:
            best = max(best, value)
            xs.append(number)
            ys.append(best)
        ax.step(xs, ys, where="post", color="C0", lw=1, alpha=0.6, label="best so far")
    if reference is not None and _number(reference[1]):
        ax.axhline(reference[1], color="0.4", ls=":", lw=1, label=f"{reference[0]} {reference[1]:.4f}")
    marks = ax.get_xaxis_transform()  # x in trials, y in axes fraction
    missing = [t["number"] for t in trials
               if not _number(t["value"] if t["kind"] == "infeasible" else t["score"])]
    if missing:
        ax.scatter(missing, [0.03] * len(missing), transform=marks, marker="|", color="k", s=80,
                   label="no score (failed, killed, running, pruned before passing)")
    ax.set_xlabel("trial")
    ax.set_ylabel("score")
    ax.xaxis.get_major_locator().set_params(integer=True)
    _legend(ax)
    return figure


def sweep_pareto(trials: list[dict], front: list[int], gates: list[float]) -> Figure | None:
    """New-task accuracy against retention (percent of the baseline) of every trial's chosen checkpoint; the
    Pareto front of the feasible trials joined and ringed; each gate fraction dashed."""
    drawn = [t for t in trials if t["kind"] in ("complete", "infeasible", "pruned") and _number(t["accuracy"])
             and _number(t["retention"])]
    if not drawn:
        return None
    figure, (ax,) = _figure("Accuracy against retention, one point per trial")
    figure.set_size_inches(10, 5.0)
    for kind, marker, color, label in (("complete", "o", "C0", "feasible"), ("infeasible", "x", "tab:red",
                                                                             "infeasible (closest checkpoint)"),
                                       ("pruned", "v", "0.5", "pruned")):
        points = [t for t in drawn if t["kind"] == kind]
        if points:
            ax.scatter([100 * t["accuracy"] for t in points], [100 * t["retention"] for t in points], marker=marker,
                       color=color, label=label, zorder=3)
    labels: dict[tuple[float, float], list[str]] = {}  # trials within 1% of a labelled point share its label
    for t in drawn:
        x, y = 100 * t["accuracy"], 100 * t["retention"]
        near = next((p for p in labels if abs(p[0] - x) <= 1 and abs(p[1] - y) <= 1), (x, y))
        labels.setdefault(near, []).append(f"#{t['number']}")
    for point, names in labels.items():
        ax.annotate(", ".join(names), point, textcoords="offset points", xytext=(4, 4), fontsize="x-small")
    on_front = sorted((t for t in drawn if t["number"] in front), key=lambda t: t["accuracy"])
    if on_front:
        ax.plot([100 * t["accuracy"] for t in on_front], [100 * t["retention"] for t in on_front], color="C2",
                lw=1.5, zorder=2)
        ax.scatter([100 * t["accuracy"] for t in on_front], [100 * t["retention"] for t in on_front], s=160,
                   facecolors="none", edgecolors="C2", lw=1.5, label="Pareto front (feasible)", zorder=4)
    for fraction in gates:
        ax.axhline(100 * fraction, color="tab:red", ls="--", lw=1, label=f"gate {fraction:g} x baseline")
    ax.set_xlabel("new-task accuracy (%)")
    ax.set_ylabel("retention (%): lowest gated scalar / baseline")
    _legend(ax)
    return figure


def sweep_importances(importances: dict[str, float]) -> Figure | None:
    """Optuna's parameter importances (normalised to sum to 1), the most important on top."""
    if not importances:
        return None
    names = list(importances)
    figure, (ax,) = _figure("Parameter importances (Optuna)", height=max(2.0, 0.5 * len(names) + 1))
    ax.grid(False)
    ax.barh(range(len(names)), [importances[n] for n in names], color="C0")
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("importance (share of the total)")
    return figure


def write_png(figure, path: Path, dpi: int = 110) -> None:
    """Save a figure in one step (two workers may rewrite the report at once)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_bytes(buffer.getvalue())
    os.replace(temporary, path)


def write_plots(rows: list[dict], data: dict, reference: Optional[tuple[str, float]]) -> dict[str, Image]:
    """SWEEP/plots/{scores,pareto,importances}.png, each removed when there is nothing to draw; returns the
    images drawn, by name."""
    folder = data["out"] / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    images = {}
    for name, title, figure in (("scores", "Score by trial", sweep_scores(rows, reference)),
                                ("pareto", "Accuracy against retention",
                                 sweep_pareto(rows, pareto_front(rows), data["gates"])),
                                ("importances", "Parameter importances", sweep_importances(data["importances"] or {}))):
        if figure is not None:
            write_png(figure, folder / f"{name}.png")
            images[name] = Image(title, Path("plots") / f"{name}.png")
        else:
            (folder / f"{name}.png").unlink(missing_ok=True)
    return images


def write_sweep_report(data: dict, wall_seconds: Optional[float] = None) -> str:
    """Write SWEEP/sweep.md, SWEEP/sweep.html, SWEEP/plots/*.png and (once a trial is feasible) SWEEP/best.yaml
    from `data` (keeptune.sweep.records.report_data's mapping); returns sweep.md's text."""
    rows, best, out = data["rows"], data["best"], data["out"]
    first = start_row(rows, data["start"])
    reference = ("trial 0 (start)", first["score"]) if first is not None and first["kind"] == "complete" else None
    images = write_plots(rows, data, reference)
    blocks = _blocks(data, images, wall_seconds)
    if best is not None:
        best_path, text = data["best_path"], data["best_yaml"]
        atomic_write_text(best_path, text)
        blocks.append(Text(f"{best_path}: trial #{best['number']}'s full experiment config; keeptune run "
                           f"{best_path} runs it as it is (add name=NEW out=null to train it anew)."))
        html_blocks = blocks + [Code(text, lang="yaml", summary=f"{best_path.name} (trial #{best['number']})")]
    else:
        blocks.append(Text("No feasible trial yet, so no best.yaml."))
        html_blocks = blocks
    markdown = to_markdown(blocks)
    atomic_write_text(out / "sweep.md", markdown)
    atomic_write_text(out / "sweep.html", to_html(html_blocks, f"Sweep {data['name']}", out))
    return markdown


def _blocks(data: dict, images: dict[str, Image], wall_seconds: Optional[float]) -> list[Block]:
    """The document up to the best trial's config: the header, summary, trials, plots and importances."""
    rows, out, gates, front = data["rows"], data["out"], data["gates"], pareto_front(data["rows"])
    blocks: list[Block] = [
        Heading(f"Sweep {data['name']}", 1),
        Text(f"Sweep file: {data['path']}; objective: {data['objective']}; sampler: {data['sampler']} "
             f"(seed {data['seed']}); budget: {data['budget']} trials; directory: {out}. Every trial is a keeptune "
             f"run directory ({out / 'trials'}; keeptune runs {out / 'trials'} lists them)."),
        Heading("Summary"), Items(summary_items(data, wall_seconds)),
        Heading("Trials"),
        Text("Score, accuracy and retention are those of the trial's chosen checkpoint: its best passing one, or "
             "(infeasible) the one closest to the gate; retention = the lowest gated scalar / its baseline. "
             "wall s: the trial run's last invocation; pruned at: the training step where the tracker stopped it."),
        trials_table(rows, data["fields"], out),
        Heading("Score by trial"), images.get("scores") or Text("No trial yet."),
        Heading("Accuracy against retention"),
        Text("Every trial's chosen checkpoint; the Pareto front of the feasible trials (none better on both axes) "
             f"is ringed; dashed: the gate ({', '.join(f'{g:g}' for g in gates)} x baseline)."),
        images.get("pareto") or Text("No trial has been evaluated yet."),
        Items([f"#{r['number']}: accuracy {fmt.percent(r['accuracy'])}, retention {fmt.percent(r['retention'])}, "
               f"score {fmt.score(r['score'])} ({r['params_text']})"
               for r in sorted((r for r in rows if r["number"] in front), key=lambda r: -r["accuracy"])]
              or ["Pareto front: no feasible trial yet."]),
        Heading("Parameter importances"), Text(data["importances_how"]),
    ]
    shares = data["importances"]
    if shares:
        blocks += [Table(["field", "importance"], [[k, f"{v:.3f}"] for k, v in shares.items()]), images["importances"]]
    blocks.append(Heading("The best trial's config"))
    return blocks
