"""The report's figures, drawn with matplotlib's Agg canvas (no display, no pyplot state).

Each function returns a Figure, or None when the run has nothing to draw
(no training log, no checkpoint, no tracking). Accuracies are drawn in percent.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from keeptune.report.results import accuracy, eps_keys, gate, score_eps

PLOT_NAMES = ("loss_lr", "squad", "math", "per_template", "tracking")


def make_plots(results: dict, log: list[dict], folder: Path, dpi: int = 110) -> list[tuple[str, Path]]:
    """Draw every plot the run has data for into FOLDER/NAME.png; returns (title, path) pairs.

    A plot the run has no data for is removed from FOLDER, so the folder never
    shows a figure of an earlier state of the run.
    """
    folder.mkdir(parents=True, exist_ok=True)
    checkpoint_steps = [c["step"] for c in results["checkpoints"]]
    eps = score_eps(results)
    figures = {
        "loss_lr": loss_and_lr(log, checkpoint_steps),
        "squad": squad_scores(results),
        "math": math_accuracy(results),
        "per_template": per_template(results, eps),
        "tracking": tracking(results),
    }
    made = []
    for name in PLOT_NAMES:
        path = folder / f"{name}.png"
        figure = figures[name]
        if figure is None:
            path.unlink(missing_ok=True)
            continue
        figure.savefig(path, dpi=dpi)
        made.append((figure.get_suptitle(), path))
    return made


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
    ax.legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.01, 1.0))


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _series(records: list[dict], key: str) -> tuple[list[float], list[float]]:
    rows = [r for r in records if _number(r.get("step")) and _number(r.get(key))]
    return [r["step"] for r in rows], [r[key] for r in rows]


def loss_and_lr(log: list[dict], checkpoint_steps: list[int]) -> Figure | None:
    """(a) Training loss and learning rate per optimizer step; checkpoints dotted."""
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


def _gate_lines(ax: Any, results: dict, base: dict | None = None, name: str = "baseline") -> None:
    """Baseline F1/EM (dotted) and the gate, gate x baseline (dashed); `base` defaults to the full baseline."""
    base, share = base or results["baseline"]["squad"], gate(results)
    for color, key, label in (("C0", "F1", "F1"), ("C1", "Em", "EM")):
        ax.axhline(base[key], color=color, ls=":", lw=1, label=f"{name} {label} {base[key]:.2f}")
        ax.axhline(share * base[key], color=color, ls="--", lw=1,
                   label=f"gate {share:g} x {name} {label} {share * base[key]:.2f}")


def squad_scores(results: dict) -> Figure | None:
    """(b) SQuAD F1 and EM of every checkpoint against the baseline and the gate."""
    checkpoints = results["checkpoints"]
    if not checkpoints:
        return None
    figure, (ax,) = _figure("Original task (SQuAD): F1 and EM per checkpoint")
    steps = [c["step"] for c in checkpoints]
    for color, key, label in (("C0", "F1", "F1"), ("C1", "Em", "EM")):
        ax.plot(steps, [c["squad"][key] for c in checkpoints], marker="o", color=color, label=f"checkpoint {label}")
    _gate_lines(ax, results)
    ax.set_xlabel("step")
    ax.set_ylabel("score (%)")
    _legend(ax)
    return figure


def math_accuracy(results: dict) -> Figure | None:
    """(c) New-task accuracy at every EPS, seed judge (solid) and strict (dashed); step 0 is the base model."""
    checkpoints = results["checkpoints"]
    if not checkpoints:
        return None
    figure, (ax,) = _figure("New task (math): accuracy per checkpoint")
    entries = [results["baseline"], *checkpoints]
    steps = [0] + [c["step"] for c in checkpoints]
    for i, eps in enumerate(eps_keys(results)):
        for judge, style, label in (("accuracy", "-", "seed judge"), ("accuracy_strict", "--", "strict")):
            values = [100 * (accuracy(e, eps, judge) or 0.0) for e in entries]
            ax.plot(steps, values, ls=style, marker="o", color=f"C{i}", label=f"{label}, EPS {eps}")
    ax.set_xlabel("step (0 = base model)")
    ax.set_ylabel("accuracy (%)")
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


def template_names(entries: list[dict]) -> list[str]:
    """Templates of the entries' per-template tables, in order of first appearance."""
    names: dict[str, None] = {}
    for entry in entries:
        names.update(dict.fromkeys(entry["math"]["per_template"]))
    return list(names)


def per_template(results: dict, eps: str) -> Figure | None:
    """(d) Per-template accuracy at the score EPS: baseline against the compared checkpoint."""
    other, label = compared_checkpoint(results)
    if other is None:
        return None
    entries = [results["baseline"], other]
    names = template_names(entries)
    if not names:
        return None
    figure, (ax,) = _figure(f"Per-template accuracy (seed judge, EPS {eps})", height=max(2.5, 0.45 * len(names) + 1))
    ax.grid(False)
    for offset, entry, color, name in ((-0.2, entries[0], "0.6", "baseline"), (0.2, entries[1], "C2", label)):
        values = []
        for template in names:
            correct, total = entry["math"]["per_template"].get(template, {}).get(eps, [0, 0])
            values.append(100 * correct / total if total else 0.0)
        ax.barh([i + offset for i in range(len(names))], values, height=0.4, color=color, label=name)
    ax.set_yticks(range(len(names)), names)
    ax.invert_yaxis()
    ax.set_xlabel("accuracy (%)")
    ax.legend(fontsize="small", loc="best")
    return figure


def tracking(results: dict) -> Figure | None:
    """Scores measured during training: SQuAD F1/EM with the gate, and math accuracy."""
    rows = results.get("tracking") or []
    if not rows:
        return None
    figure, (ax_squad, ax_math) = _figure("Tracking during training", rows=2, height=2.8)
    for color, key, label in (("C0", "squad_F1", "F1"), ("C1", "squad_Em", "EM")):
        ax_squad.plot(*_series(rows, key), marker=".", color=color, label=label)
    if "baseline_F1" in rows[0]:  # the tracked subset is gated against its own baseline
        _gate_lines(ax_squad, results, {"F1": rows[0]["baseline_F1"], "Em": rows[0]["baseline_Em"]},
                    "subset baseline")
    else:
        _gate_lines(ax_squad, results)
    ax_squad.set_ylabel("SQuAD score (%), tracked subset")
    _legend(ax_squad)
    steps, values = _series(rows, "math_accuracy")
    ax_math.plot(steps, [100 * v for v in values], marker=".", color="C2")
    ax_math.set_ylabel("math accuracy (%)")
    ax_math.set_xlabel("optimizer step")
    return figure
