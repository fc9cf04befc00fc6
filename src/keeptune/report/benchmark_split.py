"""`keeptune benchmark`: a run of post-training retention methods read as the methods it holds (issue 29).

`scale` and `intruders` change no training step: a run whose retention.methods are [scale], [intruders] or
[scale, intruders] (nothing else, lora.init not mica) trains exactly as plain LoRA of its seed would, then
evaluates every checkpoint as trained and at each scale factor and intruder lambda. So one such run holds up to
three methods, each a run of the benchmark with the run's folder, recipe and seed (a `part`):

- plain: the entries as trained;
- scale: the entries as trained and the scale factors' (when scale is among its methods);
- intruders: the entries as trained and the lambdas' (when intruders is among its methods);

each with its best recomputed by keeptune.core.gate.best over its own entries, the rule the runner chose the
run's best by, so that it is the state a run of that method alone would have chosen. A run combining them with
a training method (kl+scale) stays one method: its checkpoints are not plain LoRA's.

A part's plain and a plain run (or another part's plain) of the same recipe, retention settings aside, and seed
are the same training twice. Their as-trained results (the baseline, and every checkpoint's entry but what names
the run: its adapter and methods) must then be identical, as they are on CPU; one is kept for the comparisons,
the first part's (its run's methods are compared within its own folder), and the others are left out of them
and of the curve with a note. Otherwise they are refused, naming both.
"""
from __future__ import annotations

import dataclasses
import json
from typing import TYPE_CHECKING

from keeptune.core import gate as rules
from keeptune.core.errors import DataError
from keeptune.report.results import entry_scale
from keeptune.retention.config import POST_TRAINING_METHODS

if TYPE_CHECKING:  # the module that defines Run imports this one
    from keeptune.report.benchmark import Run

PLAIN = "plain"
# The states each part holds, in words (benchmark.json's runs[].states).
STATES = {PLAIN: "as trained", **{m: f"as trained + {m}" for m in POST_TRAINING_METHODS}}
NAMING = ("adapter", "methods", "scale", "intruders")  # what names an as-trained entry's run, not what it measured


def part_of(entry: dict) -> str:
    """Which method made a results.json entry's state: "intruders" (a lambda), "scale" (a factor other than 1),
    or "plain" (as trained)."""
    if entry.get("intruders") is not None:
        return "intruders"
    return PLAIN if entry_scale(entry) == 1 else "scale"


def splits(run: Run) -> bool:
    """Whether a run's methods are post-training ones only (scale, intruders): plain LoRA's training."""
    methods = run.method.split("+")
    return run.method != PLAIN and all(m in POST_TRAINING_METHODS for m in methods)


def split(run: Run) -> list[Run]:
    """The run itself, or for a run of post-training methods only its parts: plain, then scale and intruders as
    its methods name them, each with its own entries and its best by keeptune.core.gate.best over them."""
    if not splits(run):
        return [run]
    parts = []
    for method in (PLAIN, *(m for m in POST_TRAINING_METHODS if m in run.method.split("+"))):
        entries = [e for e in run.results["checkpoints"] if part_of(e) in (PLAIN, method)]
        results = {**run.results, "checkpoints": entries, "best": rules.best(entries)}
        parts.append(dataclasses.replace(run, method=method, results=results, part=STATES[method]))
    return parts


def shown(run: Run) -> list[dict]:
    """The entries the curve shows under a run: all of a whole run's; of a part, its own method's only (plain's
    the as-trained ones, scale's its factors'), so that a run's as-trained entries are listed once."""
    if not run.part:
        return run.results["checkpoints"]
    return [e for e in run.results["checkpoints"] if part_of(e) == run.method]


def as_trained(run: Run) -> dict[str, str]:
    """What a plain training measured, each piece as canonical JSON (NaN equal to NaN): the baseline, the steps
    evaluated, and each as-trained entry without what names its run."""
    entries = sorted((e for e in run.results["checkpoints"] if part_of(e) == PLAIN), key=lambda e: e["step"])
    pieces = {"the baseline": run.results.get("baseline"), "the steps evaluated": [e["step"] for e in entries]}
    pieces |= {f"step {e['step']}": {k: v for k, v in e.items() if k not in NAMING} for e in entries}
    return {k: json.dumps(v, sort_keys=True) for k, v in pieces.items()}


def differs(a: Run, b: Run) -> str | None:
    """Where two plain trainings' as-trained results differ first ("step 20", "the baseline"), or None."""
    x, y = as_trained(a), as_trained(b)
    return next((k for k in x if x[k] != y.get(k)), None)


def keep_one_plain(runs: list[Run]) -> tuple[list[Run], list[str]]:
    """`runs` with every plain run of the same recipe (retention settings aside) and seed as a part's plain left
    out of the comparisons and the curve (left_out says why), and the notes saying so; DataError naming both when their
    as-trained results differ."""
    groups: dict[tuple, list[int]] = {}
    for i, run in enumerate(runs):
        if run.method == PLAIN:
            groups.setdefault((run.matches, json.dumps(run.seed)), []).append(i)
    out, notes = list(runs), []
    for members in groups.values():
        parts = [i for i in members if runs[i].part]
        if not parts:
            continue  # plain runs alone: load_runs' own rule
        kept = runs[parts[0]]
        for i in (i for i in members if i != parts[0]):
            other, where = runs[i], differs(runs[i], kept)
            if where is not None:
                raise DataError(f"{other.path} and {kept.path} are both plain LoRA of recipe '{kept.matches}' and "
                                f"seed {kept.seed} ({_what(kept)}{'; ' + _what(other) if other.part else ''}), "
                                f"and their as-trained results differ at {where}: give one of them")
            why = f"its as-trained results are identical to those of {kept.path}, one training, shown from there"
            out[i] = dataclasses.replace(other, left_out=why)
            notes.append(f"{other.path}: plain LoRA {other.recipe + ' ' if other.recipe else ''}seed {other.seed} "
                         f"left out: {why}")
    return out, notes


def _what(part: Run) -> str:
    methods = ", ".join(map(str, part.settings.get("retention.methods") or []))
    return f"{part.path}'s checkpoints as trained, a run of {methods}"
