"""`keeptune benchmark`'s document (benchmark.md) and frontier plots, drawn from benchmark.json's plain data
(keeptune.report.benchmark computes every number; nothing is computed here but the layout).

Every table says how to read its signs: a held-out scalar's change against the base model is the share kept,
tuned / base (base / tuned for a scalar better lower, a perplexity), so above 100% is better for every scalar;
a difference between a method and plain LoRA is in the scalar's own units (fractions in percentage points), and
for a scalar better lower a negative difference favours the method.
"""
from __future__ import annotations

import re
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from keeptune.report import fmt
from keeptune.report.benchmark_split import PLAIN
from keeptune.report.compare import _difference
from keeptune.report.document import Heading, Image, Items, Table, Text, to_markdown
from keeptune.report.plots import _figure, _number
from keeptune.report.sweep import write_png

MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINES = ("-", "--", ":", "-.")  # one per recipe: a curve sweep's learning rates are one method and one seed


# --- cells -------------------------------------------------------------------------------------------------

def _p(row: dict) -> str:
    return fmt.MISSING if row.get("p_value") is None else f"{row['p_value']:.3g}"


def _test(row: dict) -> str:
    if row.get("discordant") is not None:
        return f"McNemar {row['discordant'][0]} vs {row['discordant'][1]}"
    return {"paired permutation": "permutation"}.get(row.get("test"), row.get("test") or fmt.MISSING)


def _scalar(task: str, scalar: str, lower: bool) -> str:
    return f"{task} {scalar}" + (" (lower is better)" if lower else "")


def _where(state: dict) -> str:
    """`step 150` or `step 150 scale 0.5`: a state's checkpoint and variant."""
    return f"step {state['step']}" + (f" {state['variant']}" if state["variant"] else "")


def _state(state: dict, units: str | None) -> str:
    where = _where(state)
    flag = "" if state.get("passes_gate", True) else ", none passes: most accurate"
    return f"{where} ({fmt.metric(state['accuracy'], units)}{flag})"


def _kept(change: dict) -> str:
    return fmt.retention_with_interval(change["ratio"], change["low"], change["high"])


def _seed(value: Any) -> str:
    return fmt.MISSING if value is None else str(value)


def _best(row: dict) -> str:
    """" (best)" for the best of the row's own method; " (best of scale, intruders)" for a state shown under one
    method of a run and chosen by others (an as-trained checkpoint that no scale factor beats)."""
    best_of = row["best_of"]
    if not best_of:
        return ""
    return " (best)" if best_of == [row["method"]] else f" (best of {', '.join(best_of)})"


# --- the document --------------------------------------------------------------------------------------------

def document(data: dict, images: list[Path]) -> str:
    """benchmark.md: the method, the curve, the matched comparisons, the pooled ones and the plots."""
    level, new = data["level"], data["new_task"]
    scalars = [(t["task"], s, s in t["lower_is_better"]) for t in data["held_out"] for s in t["scalars"]]
    blocks = [Heading("Forgetting benchmark", 1), Text(
        f"Level {level * 100:g}%. Held-out tasks: {', '.join(t['task'] for t in data['held_out'])} (never gated: "
        f"they chose no checkpoint). New task: {new['task']} ({new['scalar']}). Each method's state (its gate-chosen "
        "best; where none passes, its most accurate state) is compared with plain LoRA of the same recipe and seed "
        "at the checkpoint as trained whose new-task accuracy is nearest (ties: the later step), on the same "
        "samples paired by sample id: method - plain with its paired bootstrap interval; p from exact McNemar for "
        "0/1 per-sample scores, a paired permutation test otherwise; a corpus statistic (a perplexity) has no "
        "per-sample test: its difference has a paired bootstrap interval and is distinguishable only when that "
        f"interval excludes 0. \"not distinguishable at {level * 100:g}%\": the test (or the interval) cannot tell "
        "the two apart."),
        Heading("Runs"), Table(["method", "recipe", "seed", "states", "run"],
                               [[r["method"], r["recipe"], _seed(r["seed"]), r["states"] or "all", r["run"]]
                                for r in data["runs"]], 4)]
    if any(r["states"] for r in data["runs"]):
        blocks.append(Text(
            "A run of post-training methods only (scale, intruders) trains as plain LoRA does: it is read as the "
            "methods it holds, each with its own states and its best recomputed over them by the gate's rule: plain "
            "LoRA its checkpoints as trained, scale those and its factors, intruders those and its lambdas."))
    spent = data["cost"]
    blocks.append(Text(f"{spent['runs']} runs: wall time {fmt.duration(spent['wall_seconds'])} in all, CPU time "
                       f"{fmt.duration(spent['cpu_seconds'])} ({spent['cpu_runs']} of the {spent['runs']} runs record "
                       "it), each run's last invocation (a resumed run's earlier ones are not recorded)."))
    if data["notes"]:
        blocks.append(Items(data["notes"]))
    blocks += curve_blocks(data, scalars)
    blocks += matched_blocks(data)
    blocks += pooled_blocks(data)
    if images:
        blocks += [Heading("Frontier"), Text(
            "x: new-task accuracy with its interval; y: the held-out scalar kept against the base model (1 = the "
            "base model; above is better) with its paired interval; each run's checkpoints as trained joined in step "
            "order, post-training variants hollow, the gate-chosen best ringed.")]
        blocks += [Image(image.stem, image) for image in images]
    return to_markdown(blocks)


def curve_blocks(data: dict, scalars: list[tuple[str, str, bool]]) -> list:
    new = data["new_task"]
    confidences = ", ".join(f"{t['task']} {t['confidence'] * 100:g}%" for t in data["held_out"])
    headers = ["method", "recipe", "seed", "step", "variant", f"{new['task']} {new['scalar']}", "gate",
               *(f"{_scalar(*key)} kept" for key in scalars)]
    rows = []
    for row in data["curve"]:
        accuracy = fmt.with_interval(row["accuracy"], new["units"],
                                     {"low": row["accuracy_low"], "high": row["accuracy_high"]}
                                     if row["accuracy_low"] is not None else None)
        gate = ("PASS" if row["passes_gate"] else "FAIL") + _best(row)
        rows.append([row["method"], row["recipe"], _seed(row["seed"]), str(row["step"]), row["variant"] or "-",
                     accuracy, gate, *(_kept(row["held_out"][task][scalar]) for task, scalar, _ in scalars)])
    return [Heading("Learning-forgetting curve"), Text(
        "Every evaluated state, each once: a run of post-training methods lists its checkpoints as trained under "
        "plain, its scale factors under scale and its intruder lambdas under intruders (a state is the best of each "
        "method the gate column names). kept: tuned / base on the held-out samples (base / tuned for a scalar better "
        "lower), so above 100% is better for every scalar, with the paired bootstrap interval the run recorded (at its "
        f"held-out tasks' confidence: {confidences}) where it recorded one."), Table(headers, rows, 5)]


def matched_blocks(data: dict) -> list:
    new, done = data["new_task"], [c for c in data["comparisons"] if c.get("note") is None]
    pairs = [[c["method"], c["recipe"], _seed(c["seed"]), _state(c["state"], new["units"]),
              _state(c["plain_state"], new["units"]), _difference(c["new_task"]), _test(c["new_task"]),
              _p(c["new_task"]), c["new_task"]["verdict"]] for c in done]
    held = [[c["method"], c["recipe"], _seed(c["seed"]), _scalar(r["task"], r["scalar"], r["lower_is_better"]),
             _difference(r), _test(r), _p(r), r["verdict"]] for c in done for r in c["held_out"]]
    missing = [f"{c['method']} {c['recipe']} seed {_seed(c['seed'])}: {c['note']}"
               for c in data["comparisons"] if c.get("note") is not None]
    heading = Heading("Against plain LoRA at matched new-task accuracy")
    if not done:
        why = "No run but plain LoRA's: nothing to compare." if not missing else "No method has its plain run:"
        return [heading, Text(why), *([Items(missing)] if missing else [])]
    blocks = [heading, Text(
        f"How well each pair is matched: {new['task']} {new['scalar']}, method - plain (percentage points for a "
        "fraction)."), Table(["method", "recipe", "seed", "method's state", "plain state", "method - plain",
                              "test", "p", "verdict"], pairs, 5), Text(
        "Held-out scalars, method - plain in the scalar's units (percentage points for a fraction); for a scalar "
        "better lower, negative favours the method."),
        Table(["method", "recipe", "seed", "held-out scalar", "method - plain", "test", "p", "verdict"], held, 4)]
    return blocks + ([Text("Not compared:"), Items(missing)] if missing else [])


def pooled_blocks(data: dict) -> list:
    if not data["pooled"]:
        return []
    rows = []
    for r in data["pooled"]:
        if r.get("range") is not None:
            low, high = (format(fmt.shown(v, r["units"]), ".3g") for v in r["range"])
            difference = f"{fmt.shown(r['difference'], r['units']):+.3g} (mean; per-seed range {low} to {high})"
        else:
            difference = _difference(r)
        rows.append([r["method"], r["recipe"], ", ".join(map(_seed, r["seeds"])),
                     _scalar(r["task"], r["scalar"], r["lower_is_better"]), difference, _test(r), _p(r), r["verdict"]])
    return [Heading("Pooled over seeds"), Text(
        "Per method and recipe: each held-out sample's score averaged over the seeds' matched states, the method's "
        "and plain LoRA's, then the same paired test on the averages (averaged 0/1 scores are no longer 0/1: a "
        "permutation test). A corpus statistic cannot be averaged per sample: the mean of its per-seed differences "
        "and their range, untested (see each seed's row above)."),
        Table(["method", "recipe", "seeds", "held-out scalar", "method - plain", "test", "p", "verdict"], rows, 4)]


# --- the frontier plots ----------------------------------------------------------------------------------------

def _bars(values: list[float], lows: list[float | None], highs: list[float | None]) -> list[list[float]]:
    """matplotlib's asymmetric error bars; a missing (or infinite) bound draws none on its side."""
    return [[max(v - lo, 0) if lo is not None else 0 for v, lo in zip(values, lows)],
            [max(hi - v, 0) if hi is not None else 0 for v, hi in zip(values, highs)]]


def _colour(methods: list[str], method: str) -> str:
    """Plain LoRA, every method's reference, in black; the methods in matplotlib's cycle."""
    others = [m for m in methods if m != PLAIN]
    return "black" if method == PLAIN else f"C{others.index(method) % 10}"


def off_axis(values: list[float], fence: float = 3.0) -> set[int]:
    """The indices of values beyond Tukey's far-out fences, Q1 - 3 IQR and Q3 + 3 IQR: a broken model's states
    (kept 0%, a perplexity in the billions), which would squash every other state into a line. None with fewer
    than 4 values or no spread."""
    if len(values) < 4:
        return set()
    q1, q3 = np.percentile(values, [25, 75])
    spread = fence * (q3 - q1)
    if spread <= 0:
        return set()
    return {i for i, v in enumerate(values) if v < q1 - spread or v > q3 + spread}


def frontier(data: dict, task: str, scalar: str, lower: bool) -> Figure | None:
    """New-task accuracy (x) against one held-out scalar kept (y), every run's states: colour by method, marker by
    seed, line by recipe, as-trained checkpoints joined in step order, variants hollow, the best ringed; None with
    nothing to draw. A state far off the others (`off_axis`) is drawn as an arrow on the axis's edge and listed
    under the plot with its value."""
    unit = data["new_task"]["units"]
    drawn = [r for r in data["curve"] if _number(r["held_out"][task][scalar]["ratio"])]
    if not drawn:
        return None
    far = off_axis([r["held_out"][task][scalar]["ratio"] for r in drawn])
    outside, drawn = [r for i, r in enumerate(drawn) if i in far], [r for i, r in enumerate(drawn) if i not in far]
    methods = sorted({r["method"] for r in data["curve"]}, key=lambda m: (m != PLAIN, m))  # plain first: black
    seeds = sorted({_seed(r["seed"]) for r in data["curve"]})
    recipes = sorted({r["recipe"] for r in data["curve"]})
    figure, (ax,) = _figure(f"{task} {scalar}{' (lower is better)' if lower else ''} against "
                            f"{data['new_task']['task']} accuracy")
    for run in dict.fromkeys((r["run"], r["method"]) for r in drawn):  # a run's parts: a colour each
        rows = [r for r in drawn if (r["run"], r["method"]) == run]
        colour = _colour(methods, rows[0]["method"])
        marker = MARKERS[seeds.index(_seed(rows[0]["seed"])) % len(MARKERS)]
        line = LINES[recipes.index(rows[0]["recipe"]) % len(LINES)]
        for variants in (False, True):
            part = [r for r in rows if bool(r["variant"]) == variants]
            if not part:
                continue
            x = [fmt.shown(r["accuracy"], unit) for r in part]
            y = [r["held_out"][task][scalar]["ratio"] for r in part]
            xerr = _bars(x, [fmt.shown(r["accuracy_low"], unit) for r in part],
                         [fmt.shown(r["accuracy_high"], unit) for r in part])
            yerr = _bars(y, [r["held_out"][task][scalar]["low"] for r in part],
                         [r["held_out"][task][scalar]["high"] for r in part])
            ax.errorbar(x, y, xerr=xerr, yerr=yerr, color=colour, marker=marker, linestyle="none" if variants else line,
                        markerfacecolor="none" if variants else colour, capsize=2, alpha=0.85)
        for r in (r for r in rows if r["best"]):
            ax.plot(fmt.shown(r["accuracy"], unit), r["held_out"][task][scalar]["ratio"], marker="o", markersize=14,
                    markerfacecolor="none", markeredgecolor="black", linestyle="none")
    ax.axhline(1.0, color="grey", linestyle=(0, (1, 4)), linewidth=1)
    if outside:
        _off_axis_arrows(ax, figure, outside, methods, task, scalar, unit)
    handles = [Line2D([], [], color=_colour(methods, m), label=m) for m in methods]
    handles += [Line2D([], [], color="grey", marker=MARKERS[i % len(MARKERS)], linestyle="none", label=f"seed {s}")
                for i, s in enumerate(seeds)]
    if len(recipes) > 1:
        handles += [Line2D([], [], color="black", linestyle=LINES[i % len(LINES)], label=r or "-")
                    for i, r in enumerate(recipes)]
    handles.append(Line2D([], [], color="grey", linestyle=(0, (1, 4)), label="base model"))
    ax.legend(handles=handles, fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_xlabel(f"{data['new_task']['task']} {data['new_task']['scalar']}" + (" (%)" if unit == fmt.FRACTION else ""))
    ax.set_ylabel("kept against the base model" + (" (base / tuned)" if lower else " (tuned / base)"))
    return figure


def _off_axis_arrows(ax: Any, figure: Figure, rows: list[dict], methods: list[str], task: str, scalar: str,
                     unit: str | None) -> None:
    """Each state off the axis as an arrow on the edge it lies beyond, in its method's colour, and a line per
    state under the plot: method, seed, state, its value kept."""
    y0, y1 = ax.get_ylim()
    notes = []
    for r in rows:
        ratio = r["held_out"][task][scalar]["ratio"]
        ax.plot(fmt.shown(r["accuracy"], unit), y0 if ratio < y0 else y1, marker="v" if ratio < y0 else "^",
                markersize=9, color=_colour(methods, r["method"]), linestyle="none", clip_on=False)
        notes.append(f"{r['method']} seed {_seed(r['seed'])} {_where(r)}: {fmt.percent(ratio)}")
    ax.set_ylim(y0, y1)
    figure.supxlabel(textwrap.fill("off the axis: " + "; ".join(notes), 130), fontsize="x-small", x=0.01,
                     ha="left")  # the constrained layout makes room for it


def file_name(task: str, scalar: str) -> str:
    return "frontier-" + re.sub(r"[^A-Za-z0-9._-]+", "_", f"{task}-{scalar}").strip("._") + ".png"


def write_frontiers(data: dict, out: Path) -> list[Path]:
    """OUT/frontier-TASK-SCALAR.png for each held-out scalar with something to draw; an older frontier PNG of this
    folder that was not drawn now is removed. Returns the names written (relative to OUT)."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for spec in data["held_out"]:
        for scalar in spec["scalars"]:
            figure = frontier(data, spec["task"], scalar, scalar in spec["lower_is_better"])
            if figure is not None:
                write_png(figure, out / file_name(spec["task"], scalar))
                written.append(Path(file_name(spec["task"], scalar)))
    for stale in set(out.glob("frontier-*.png")) - {out / name for name in written}:
        stale.unlink(missing_ok=True)
    return written
