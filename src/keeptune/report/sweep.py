"""`keeptune sweep`'s report: SWEEP/sweep.md, a self-contained SWEEP/sweep.html, SWEEP/plots/*.png and
SWEEP/best.yaml, rebuilt from the study alone (its trials' parameters, states and user attributes).

`write_sweep_report(study, sweep)` runs after every trial (by the worker that finished it) and at the end of
`keeptune sweep`; re-running `keeptune sweep SWEEP.yaml` on a finished study runs no trial and rebuilds it.
Sections: the summary (counts, the best feasible trial against trial 0), the trials table, score by trial, the
accuracy-retention plot with the Pareto front and the gate, Optuna's parameter importances, and the best trial's
full experiment config (best.yaml, which `keeptune run SWEEP/best.yaml` runs as it is).

Optuna is imported lazily, like in keeptune.sweep.study.
"""
from __future__ import annotations

import io
import json
import math
import os
import warnings
from pathlib import Path
from typing import Any, Optional

from matplotlib.figure import Figure

from keeptune.core.config import to_yaml
from keeptune.core.io import atomic_write_text
from keeptune.experiment.config import ExperimentConfig
from keeptune.report import fmt
from keeptune.report.document import Block, Code, Heading, Image, Items, Table, Text, to_html, to_markdown
from keeptune.report.plots import _figure, _legend, _number
from keeptune.sweep.study import Sweep, decoded, params_text, trial_config
from keeptune.train.config import load_config

BEST = "best.yaml"
# Optuna's importances need a few finished trials to compare; below this many the report says so instead.
MIN_IMPORTANCE_TRIALS = 3


# --- the trials as plain records ----------------------------------------------------------------

def retried_as(trials) -> dict[int, int]:
    """Trial number -> the number of its retry (a killed trial queued again, or a stale one of an RDB)."""
    again = {}
    for t in trials:
        origin = t.user_attrs.get("retry_of", t.system_attrs.get("failed_trial"))
        if origin is not None:
            again[origin] = t.number
    return again


def kind_of(t) -> str:
    """complete (feasible), infeasible, pruned, failed, killed, running or waiting."""
    from optuna.trial import TrialState

    if t.state == TrialState.COMPLETE:
        return "complete" if t.user_attrs.get("feasible") else "infeasible"
    if t.state == TrialState.FAIL:
        return "killed" if t.user_attrs.get("interrupted") else "failed"
    return t.state.name.lower()


def state_text(t, again: dict[int, int]) -> str:
    """The table's state: complete / infeasible (gate short by X) / pruned: REASON / failed: ERROR / killed,
    retried as #M."""
    kind, a = kind_of(t), t.user_attrs
    if kind == "infeasible":
        return f"infeasible (gate short by {t.constraints.get('gate', 0):.3f})"
    if kind == "pruned":
        return f"pruned: {a.get('pruned_reason')}"
    if kind == "killed":
        return a["interrupted"] + (f", retried as #{again[t.number]}" if t.number in again else "")
    if kind == "failed":
        return f"failed: {a.get('error', 'see the worker output')}"
    return kind


def records(study, sweep: Sweep) -> list[dict]:
    """One plain dict per trial (what the table and the plots read)."""
    trials = study.get_trials(deepcopy=False)
    again = retried_as(trials)
    rows = []
    for t in trials:
        a = t.user_attrs
        rows.append({"number": t.number, "kind": kind_of(t), "state": state_text(t, again),
                     "params": decoded(t.params, sweep), "score": a.get("score"),
                     "value": t.value if t.values is not None and len(t.values) == 1 else None,
                     "accuracy": a.get("accuracy"), "retention": a.get("retention"), "step": a.get("step"),
                     "wall_seconds": a.get("wall_seconds"), "pruned_step": a.get("pruned_step"),
                     "run_dir": a.get("run_dir"), "retry_of": a.get("retry_of")})
    return rows


def pareto_front(rows: list[dict]) -> list[int]:
    """Numbers of the feasible trials no other feasible trial beats on both accuracy and retention."""
    feasible = [r for r in rows if r["kind"] == "complete" and r["accuracy"] is not None
                and r["retention"] is not None]

    def beats(a: dict, b: dict) -> bool:
        return (a["accuracy"] >= b["accuracy"] and a["retention"] >= b["retention"]
                and (a["accuracy"] > b["accuracy"] or a["retention"] > b["retention"]))

    return [r["number"] for r in feasible if not any(beats(o, r) for o in feasible)]


def best_trial(study):
    """The feasible complete trial of the highest score (the earliest on a tie), or None."""
    from optuna.trial import TrialState

    feasible = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.user_attrs.get("feasible") and t.user_attrs.get("score") is not None]
    return max(feasible, key=lambda t: (t.user_attrs["score"], -t.number)) if feasible else None


def start_row(rows: list[dict], sweep: Sweep) -> Optional[dict]:
    """The record of trial 0 when the sweep queued a `start` recipe (its last retry if it was killed), else None."""
    if not sweep.config.start:
        return None
    again = {r["retry_of"]: r["number"] for r in rows if r["retry_of"] is not None}
    number = 0
    while number in again:
        number = again[number]
    return next((r for r in rows if r["number"] == number), None)


# --- importances --------------------------------------------------------------------------------

def importances(study, sweep: Sweep) -> tuple[Optional[dict[str, float]], str]:
    """Optuna's parameter importances (`optuna.importance.get_param_importances`, normalised to sum 1) and a
    sentence on how they were computed, or (None, why not) with too few trials, one field, or no spread.

    objective score: importance for reaching a high score under the gate, feasible trials first (the target
    ranks every infeasible trial below every feasible one, by its gap to the gate); objective pareto: importance
    for reaching the Pareto front of the feasible trials."""
    import optuna
    from optuna.trial import TrialState

    names = [p.key for p in sweep.params]
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(names) < 2:
        return None, (f"One field is searched ({names[0]}): parameter importances need two or more to rank "
                      "(the table and the plots show how it acts).")
    if len(complete) < MIN_IMPORTANCE_TRIALS:
        return None, (f"Too few finished trials for parameter importances: {len(complete)} complete, "
                      f"{MIN_IMPORTANCE_TRIALS} needed (pruned, failed and running trials do not count).")
    target, subject = None, study
    if sweep.config.objective == "score":
        def target(t) -> float:  # lower is better (PED-ANOVA): -score; infeasible: 1 + its gap to the gate
            return -t.user_attrs["score"] if t.user_attrs.get("feasible") else 1.0 + t.constraints.get("gate", 1.0)
        how = (f"over the {len(complete)} complete trials, for reaching a high score under the gate (infeasible "
               "trials rank below every feasible one)")
    else:
        feasible = [t for t in complete if t.user_attrs.get("feasible")]
        if len(feasible) < MIN_IMPORTANCE_TRIALS:
            return None, (f"Too few feasible trials for parameter importances: {len(feasible)}, "
                          f"{MIN_IMPORTANCE_TRIALS} needed.")
        subject = optuna.create_study(directions=study.directions)  # in memory: the feasible trials only
        subject.add_trials(feasible)
        how = f"over the {len(feasible)} feasible trials, for reaching the Pareto front"
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # few-trial and experimental-argument warnings: the sentence says it
            raw = optuna.importance.get_param_importances(subject, target=target, normalize=False)
    except (ValueError, RuntimeError, TypeError) as err:
        return None, f"Optuna could not compute parameter importances: {type(err).__name__}: {err}"
    total = sum(raw.values())
    if not total > 0:
        return None, (f"Parameter importances are all 0 {how}: these trials do not tell the fields apart "
                      "(more trials would).")
    shares = dict(sorted(((k, v / total) for k, v in raw.items()), key=lambda kv: -kv[1]))
    return shares, (f"Optuna's default evaluator (optuna.importance.get_param_importances) {how}, as shares of "
                    "the total. With few trials they are a hint, not a measurement.")


# --- best.yaml ------------------------------------------------------------------------------------

def best_config(sweep: Sweep, trial) -> ExperimentConfig:
    """The best trial's experiment config: the base, the overrides and its parameters, its name and run dir."""
    return trial_config(sweep, decoded(trial.params, sweep))


def best_yaml(sweep: Sweep, trial) -> str:
    config = best_config(sweep, trial)
    a = trial.user_attrs
    here = sweep.out / BEST
    return (f"# keeptune sweep {sweep.name}: trial #{trial.number}, the best feasible trial: score {a['score']:.6f} "
            f"at step {a['step']}.\n"
            f"# Parameters: {params_text(decoded(trial.params, sweep))}\n"
            f"# Its full experiment config. `keeptune run {here}` runs it as it is, in the trial's run\n"
            f"# directory {config.out} (every step found done). To train the recipe anew elsewhere:\n"
            f"#   keeptune run {here} name=NEW out=null\n"
            + to_yaml(config))


# --- the document -----------------------------------------------------------------------------------

def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False)
    return str(value)


def trials_table(rows: list[dict], sweep: Sweep) -> Table:
    keys = [p.key for p in sweep.params]
    headers = ["#", *keys, "state", "score", "accuracy", "retention", "step", "wall s", "pruned at", "run"]
    table = []
    for r in rows:
        run = r["run_dir"]
        if run and Path(run).is_relative_to(sweep.out):
            run = Path(run).relative_to(sweep.out).as_posix()
        table.append([str(r["number"]), *(_cell(r["params"].get(k)) for k in keys), r["state"],
                      fmt.score(r["score"]) if r["score"] is not None else "",
                      fmt.percent(r["accuracy"]) if r["accuracy"] is not None else "",
                      fmt.percent(r["retention"]) if r["retention"] is not None else "",
                      _cell(r["step"]), f"{r['wall_seconds']:.0f}" if r["wall_seconds"] is not None else "",
                      _cell(r["pruned_step"]), run or ""])
    return Table(headers, table, left=2 + len(keys))


def summary_items(rows: list[dict], sweep: Sweep, best, wall_seconds: Optional[float]) -> list[str]:
    kinds = [r["kind"] for r in rows]
    counted = len(rows) - len({r["retry_of"] for r in rows if r["retry_of"] is not None})
    items = [f"Trials: {len(rows)} ({counted} of the budget of {sweep.config.trials}; a killed trial and its retry "
             f"count once): {kinds.count('complete')} feasible, {kinds.count('infeasible')} infeasible, "
             f"{kinds.count('pruned')} pruned, {kinds.count('failed')} failed, {kinds.count('killed')} killed, "
             f"{kinds.count('running')} running, {kinds.count('waiting')} waiting."]
    if wall_seconds is not None:
        items.append(f"Wall time of this invocation of keeptune sweep: {fmt.duration(wall_seconds)}.")
    if best is None:
        items.append("No feasible trial: no trial has a checkpoint that passes the gate.")
        return items
    a = best.user_attrs
    items.append(f"Best feasible trial: #{best.number}, score {a['score']:.6f} (accuracy {fmt.percent(a['accuracy'])}"
                 f", retention {fmt.percent(a['retention'])}, step {a['step']}): "
                 f"{params_text(decoded(best.params, sweep))}. Its run: {a['run_dir']}; its config: "
                 f"{sweep.out / BEST}.")
    first = start_row(rows, sweep)
    if first is not None and first["kind"] == "complete":
        run_as = f" (run as #{first['number']})" if first["number"] else ""
        items.append(f"Trial 0, the first `start` recipe{run_as}: score {first['score']:.6f}; the best is "
                     f"{a['score'] - first['score']:+.6f} against it.")
    elif first is not None:
        items.append(f"Trial 0, the first `start` recipe: {first['state']}.")
    return items


# --- the figures (drawn like the run report's, keeptune.report.plots) ---------------------------------
# A record has `number`, `kind` (complete, infeasible, pruned, failed, killed, running, waiting), `score` (its
# best passing checkpoint's, or None), `value` (what the trial told Optuna: an infeasible trial's would-be score),
# `accuracy` and `retention` (of the chosen checkpoint, retention = lowest gated scalar / baseline).

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


def write_sweep_report(study, sweep: Sweep, wall_seconds: Optional[float] = None) -> str:
    """Write SWEEP/sweep.md, SWEEP/sweep.html, SWEEP/plots/*.png and (once a trial is feasible) SWEEP/best.yaml;
    returns sweep.md's text."""
    rows = records(study, sweep)
    best = best_trial(study)
    front = pareto_front(rows)
    config = best_config(sweep, best) if best else load_config(sweep.base, sweep.overrides, root=ExperimentConfig)
    gates = sorted({item.fraction if item.fraction is not None else config.gate for item in config.original})
    first = start_row(rows, sweep)
    reference = ("trial 0 (start)", first["score"]) if first is not None and first["kind"] == "complete" else None
    shares, how = importances(study, sweep)
    folder = sweep.out / "plots"
    folder.mkdir(parents=True, exist_ok=True)
    images = {}
    for name, title, figure in (("scores", "Score by trial", sweep_scores(rows, reference)),
                                ("pareto", "Accuracy against retention", sweep_pareto(rows, front, gates)),
                                ("importances", "Parameter importances", sweep_importances(shares or {}))):
        if figure is not None:
            write_png(figure, folder / f"{name}.png")
            images[name] = Image(title, Path("plots") / f"{name}.png")
        else:
            (folder / f"{name}.png").unlink(missing_ok=True)
    s = sweep.config
    blocks: list[Block] = [
        Heading(f"Sweep {sweep.name}", 1),
        Text(f"Sweep file: {sweep.path}; objective: {s.objective}; sampler: {s.sampler.name} (seed {s.sampler.seed}); "
             f"budget: {s.trials} trials; directory: {sweep.out}. Every trial is a keeptune run directory "
             f"({sweep.out / 'trials'}; keeptune runs {sweep.out / 'trials'} lists them)."),
        Heading("Summary"), Items(summary_items(rows, sweep, best, wall_seconds)),
        Heading("Trials"),
        Text("Score, accuracy and retention are those of the trial's chosen checkpoint: its best passing one, or "
             "(infeasible) the one closest to the gate; retention = the lowest gated scalar / its baseline. "
             "wall s: the trial run's last invocation; pruned at: the training step where the tracker stopped it."),
        trials_table(rows, sweep),
        Heading("Score by trial"), images.get("scores") or Text("No trial yet."),
        Heading("Accuracy against retention"),
        Text("Every trial's chosen checkpoint; the Pareto front of the feasible trials (none better on both axes) "
             f"is ringed; dashed: the gate ({', '.join(f'{g:g}' for g in gates)} x baseline)."),
        images.get("pareto") or Text("No trial has been evaluated yet."),
        Items([f"#{r['number']}: accuracy {fmt.percent(r['accuracy'])}, retention {fmt.percent(r['retention'])}, "
               f"score {fmt.score(r['score'])} ({params_text(r['params'])})"
               for r in sorted((r for r in rows if r["number"] in front), key=lambda r: -r["accuracy"])]
              or ["Pareto front: no feasible trial yet."]),
        Heading("Parameter importances"), Text(how),
    ]
    if shares:
        blocks += [Table(["field", "importance"], [[k, f"{v:.3f}"] for k, v in shares.items()]), images["importances"]]
    blocks.append(Heading("The best trial's config"))
    if best is not None:
        text = best_yaml(sweep, best)
        atomic_write_text(sweep.out / BEST, text)
        blocks.append(Text(f"{sweep.out / BEST}: trial #{best.number}'s full experiment config; keeptune run "
                           f"{sweep.out / BEST} runs it as it is (add name=NEW out=null to train it anew)."))
        html_blocks = blocks + [Code(text, lang="yaml", summary=f"{BEST} (trial #{best.number})")]
    else:
        blocks.append(Text("No feasible trial yet, so no best.yaml."))
        html_blocks = blocks
    markdown = to_markdown(blocks)
    atomic_write_text(sweep.out / "sweep.md", markdown)
    atomic_write_text(sweep.out / "sweep.html", to_html(html_blocks, f"Sweep {sweep.name}", sweep.out))
    return markdown
