"""`keeptune compare A B`: two evaluated model states on the same samples, per task and scalar, with a paired test
that says when a difference is noise.

A and B are each one of:

- an evaluation folder (metrics.json, predictions.jsonl, eval.json: what `keeptune eval` writes, or RUN/baseline/TASK);
- a folder of evaluations, one per task (RUN/checkpoints/step-000200, its scale-S folder, RUN/baseline);
- a run (RUN/results.json): its best checkpoint;
- with `--steps S1,S2` and A a run alone: two of its states, each a step (`200`), a step at a scale (`200:0.5`) or
  `base` (the base model).

Every task both states evaluated is compared on every scalar of its metrics.json, records paired by sample id
(keeptune.experiment.uncertainty): the difference A - B with its paired bootstrap interval, the p-value of a paired
test (exact McNemar for 0/1 per-sample scores, a paired permutation test otherwise; keeptune.core.stats.compare)
and one verdict, "A is better", "B is better" or "not distinguishable at 95%". Two evaluations of a task whose
samples differ (the samples_sha256 of their eval.json) are refused: the test pairs each sample with itself.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from keeptune.core import stats
from keeptune.core.errors import DataError
from keeptune.experiment import uncertainty
from keeptune.report import fmt
from keeptune.report.results import RESULTS, load_results

UNITS = {"points": fmt.POINTS, "fraction": fmt.FRACTION}


@dataclass(frozen=True)
class State:
    """One evaluated model state: a label and its evaluation folder per task."""

    label: str
    tasks: dict[str, Path]


# --- what A and B name ---------------------------------------------------------------------------------

def is_evaluation(folder: Path) -> bool:
    return (folder / uncertainty.PREDICTIONS).is_file() and (folder / uncertainty.EVAL).is_file()


def evaluation_state(folder: Path, label: str) -> State:
    """A folder that is one evaluation, or holds one per task (its subfolders)."""
    if is_evaluation(folder):
        task = uncertainty.read_json(folder / uncertainty.EVAL).get("task") or folder.name
        return State(label, {task: folder})
    tasks = {sub.name: sub for sub in sorted(folder.iterdir()) if sub.is_dir() and is_evaluation(sub)}
    if not tasks:
        raise DataError(f"{folder}: neither an evaluation folder (predictions.jsonl, eval.json) nor a folder of "
                        "them (a run's checkpoints/step-N), nor a run (results.json)")
    return State(label, tasks)


def run_state(run: Path, step: str) -> State:
    """A state of a run: `base`, a step, or STEP:SCALE."""
    if step == "base":
        return evaluation_state(run / "baseline", f"{run} base model")
    number, _, scale = step.partition(":")
    try:
        at, factor = int(number), float(scale) if scale else 1.0
    except ValueError:
        raise DataError(f"--steps: {step!r} is not a step (200), a step at a scale (200:0.5) or base") from None
    folder = uncertainty.state_folder(run, at, factor)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such evaluation of {run} (step {at}{f', scale {factor:g}' if scale else ''})")
    return evaluation_state(folder, f"{run} step {at}" + (f" scale {factor:g}" if scale else ""))


def best_state(run: Path) -> State:
    """A run's best checkpoint (its results.json's `best`)."""
    best = load_results(run).get("best")
    if best is None:
        raise DataError(f"{run / RESULTS}: no checkpoint passes the gate, so the run has no best to compare; "
                        "name two of its states with --steps")
    step = f"{best['step']}" + ("" if best.get("scale", 1.0) == 1 else f":{best['scale']!r}")
    state = run_state(run, step)
    return State(f"{run} (best: step {step})", state.tasks)


def resolve(a: Path, b: Optional[Path], steps: Optional[str]) -> tuple[State, State]:
    """The two states A and B name (see the module's docstring)."""
    a = Path(a)
    if not a.exists():
        raise DataError(f"{a}: no such folder")
    if steps is not None:
        if b is not None:
            raise DataError("--steps names two states of one run: give the run alone (keeptune compare RUN "
                            "--steps 200,250)")
        if not (a / RESULTS).is_file():
            raise DataError(f"{a}: --steps needs a run folder (one holding results.json)")
        names = [s.strip() for s in steps.split(",")]
        if len(names) != 2 or not all(names):
            raise DataError(f"--steps is {steps!r}; name two states, e.g. --steps 200,250 (or base,200)")
        return run_state(a, names[0]), run_state(a, names[1])
    if b is None:
        raise DataError("give two states to compare (keeptune compare A B), or a run and --steps S1,S2")
    return _state(a), _state(Path(b))


def _state(path: Path) -> State:
    if not path.exists():
        raise DataError(f"{path}: no such folder")
    if (path / RESULTS).is_file() and not is_evaluation(path):
        return best_state(path)
    return evaluation_state(path, str(path))


# --- the comparison --------------------------------------------------------------------------------------

def common_tasks(a: State, b: State) -> list[str]:
    """The tasks both states evaluated, each checked to be on the same samples."""
    tasks = [t for t in a.tasks if t in b.tasks]
    if not tasks:
        raise DataError(f"{a.label} ({', '.join(a.tasks)}) and {b.label} ({', '.join(b.tasks)}) share no task")
    for task in tasks:
        digests = uncertainty.samples_digest(a.tasks[task]), uncertainty.samples_digest(b.tasks[task])
        if digests[0] is None or digests[0] != digests[1]:
            raise DataError(f"{task}: {a.tasks[task]} and {b.tasks[task]} were not evaluated on the same samples "
                            f"(samples_sha256 {str(digests[0])[:12]} against {str(digests[1])[:12]} in their "
                            "eval.json); a paired comparison needs the same samples")
    return tasks


def task_rows(task: str, a_folder: Path, b_folder: Path, level: float) -> list[dict]:
    """One row per scalar of the task's metrics.json: task, scalar, units, n and `comparison_json`'s numbers
    (verdict "corpus metric: not tested" for a scalar that is not a mean of per-sample values)."""
    metrics = uncertainty.folder_metrics(a_folder)
    units = {f"{m.name}.{s}": m.units for m in metrics for s in m.scalars()}
    a_records, b_records = uncertainty.paired_records(a_folder, b_folder)
    rows = []
    for scalar in uncertainty.read_json(a_folder / uncertainty.METRICS).get("scores", {}):
        if scalar not in units:
            continue
        comparison = uncertainty.compare_scalar(metrics, scalar, a_records, b_records, level)
        numbers = uncertainty.comparison_json(comparison) if comparison else {"verdict": "corpus metric: not tested"}
        rows.append({"task": task, "scalar": scalar, "units": units[scalar], "n": len(a_records), **numbers})
    return rows


def compare_states(a: State, b: State, level: float = stats.LEVEL) -> list[dict]:
    """Every scalar of every task both states evaluated, A against B."""
    return [row for task in common_tasks(a, b) for row in task_rows(task, a.tasks[task], b.tasks[task], level)]


# --- printing ----------------------------------------------------------------------------------------------

def _test(row: dict) -> str:
    if "test" not in row:
        return ""
    if row.get("discordant") is not None:
        return f"McNemar {row['discordant'][0]} vs {row['discordant'][1]}"
    return "permutation"


def _difference(row: dict) -> str:
    unit = UNITS.get(row["units"])
    return f"{fmt.shown(row['difference'], unit):+.2f} {fmt.bounds(row['low'], row['high'], unit)}"


def table(a: State, b: State, rows: list[dict], level: float) -> str:
    """The comparison as aligned text: who A and B are, how to read it, one line per task and scalar."""
    headers = ["task", "scalar", "n", "A", "B", "A - B [interval]", "test", "p", "verdict"]
    cells = []
    for row in rows:
        unit = UNITS.get(row["units"])
        tested = "p_value" in row
        numbers = [fmt.metric(row["mean_a"], unit), fmt.metric(row["mean_b"], unit), _difference(row), _test(row),
                   f"{row['p_value']:.3g}"] if tested else [""] * 5
        cells.append([row["task"], row["scalar"], str(row["n"]), *numbers, row["verdict"]])
    widths = [max(len(line[i]) for line in [headers, *cells]) for i in range(len(headers))]
    lines = [f"A: {a.label}", f"B: {b.label}",
             f"Paired by sample id; A - B with its {level * 100:g}% paired bootstrap interval (fractions in percent, "
             "their differences in percentage points); p: two-sided, exact McNemar on the discordant samples "
             "(A right and B wrong vs A wrong and B right) for 0/1 scores, else a paired permutation test.", ""]
    for line in [headers, *cells]:
        lines.append("  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip())
    return "\n".join(lines) + "\n"


def compare(a: Path, b: Optional[Path] = None, steps: Optional[str] = None, confidence: float = stats.LEVEL,
            as_json: bool = False) -> list[dict]:
    """Compare two evaluated model states on the same samples: per task and scalar, the paired difference with
    its interval, a p-value and whether the difference is distinguishable from noise.

    Prints a table (or with `as_json` one JSON object: a, b, level, rows); returns the rows.

    Args:
        a: an evaluation folder, a folder of them (RUN/checkpoints/step-N), or a run (its best checkpoint).
        b: the same kinds; left out with --steps.
        steps: two states of the run A: STEP, STEP:SCALE or base, e.g. 200,250.
        confidence: the level of the intervals and of the verdict (0.95: p < 0.05).
        as_json: print JSON instead of the table.
    """
    if not 0 < confidence < 1:
        raise DataError(f"--confidence is {confidence}; it must be between 0 and 1 (0.95 for 95%)")
    first, second = resolve(a, b, steps)
    rows = compare_states(first, second, confidence)
    if as_json:
        print(json.dumps({"a": first.label, "b": second.label, "level": confidence, "rows": rows}, indent=2))
    else:
        print(table(first, second, rows, confidence), end="")
    return rows
