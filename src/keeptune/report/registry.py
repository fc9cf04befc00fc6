"""The runs registry: one lab-notebook row per experiment below a folder, written to FOLDER/RUNS.md.

Every ``results.json`` below the folder (at any depth) is one run. Rows are
sorted by score, best first; runs where no checkpoint passes the gate come
last, by name. The method column names how each run trained and chose (``lora``,
``lora+kl+scale``: config.retention.methods), so runs of one recipe compare
side by side; the best step says its scale when the best is a scaled one. The
columns of the retention tasks are those of the runs' own task specs (their
union, in order of first appearance in the sorted rows). Scores of two versions
of a task spec do not compare: where the runs evaluated a task with different
versions (``tasks[].version`` of results.json; 1 when absent, as every spec was
before specs had versions), a cell whose version is not the one most runs used
(the best-ranked run's on a tie) says ``(vN)``, and a note below the table names
the versions. Each gated metric and the accuracy are followed by their bootstrap
confidence interval where results.json records one (``F1 21.59 [16.8, 26.4]``). A
results.json that cannot be read (or was written by an older keeptune) is listed
as skipped.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from keeptune.core.errors import DataError
from keeptune.core.io import atomic_write_text
from keeptune.report import fmt
from keeptune.report.document import Block, Heading, Items, Table, Text, to_markdown, to_text
from keeptune.report.results import (
    RESULTS,
    Task,
    interval,
    load_results,
    method_label,
    new_task,
    retention_tasks,
    run_methods,
    score,
    variant,
)

REGISTRY = "RUNS.md"
TEXT_HEADERS = ["run", "name", "method", "model", "data recipe", "prompt", "targets"]
DESCRIBED = ("model", "data_recipe", "prompt", "targets")  # the settings in the text columns after the name


def find_runs(folder: Path) -> tuple[list[tuple[Path, dict]], list[tuple[Path, str]]]:
    """(run folder, results) for every readable results.json below `folder`, and (file, why) for the others."""
    runs, skipped = [], []
    for path in sorted(folder.rglob(RESULTS)):
        try:
            runs.append((path.parent, load_results(path)))
        except DataError as err:
            skipped.append((path, str(err)))
    return runs, skipped


def sort_runs(runs: list[tuple[Path, dict]]) -> list[tuple[Path, dict]]:
    """Passing runs by score (highest first), then the runs without a passing checkpoint, by name."""
    def key(item: tuple[Path, dict]) -> tuple:
        best = item[1].get("best")
        if best is None or best.get("score") is None:
            return (1, 0.0, item[1]["name"], str(item[0]))
        return (0, -best["score"], item[1]["name"], str(item[0]))

    return sorted(runs, key=key)


def retention_columns(runs: list[tuple[Path, dict]]) -> list[str]:
    """The retention tasks' names of all `runs`, in order of first appearance: one column each."""
    names: dict[str, None] = {}
    for _, results in runs:
        names.update(dict.fromkeys(task.name for task in retention_tasks(results)))
    return list(names)


def task_versions(results: dict) -> dict[str, str]:
    """Each task's spec version in one run (1 when results.json names none: written before specs had versions)."""
    return {spec["name"]: str(spec.get("version", 1)) for spec in results["tasks"]}


def differing_versions(runs: list[tuple[Path, dict]]) -> dict[str, Counter]:
    """Per task the runs evaluated with more than one spec version: how many runs used each version (in
    order of first appearance, runs in the order given)."""
    counts: dict[str, Counter] = {}
    for _, results in runs:
        for name, version in task_versions(results).items():
            counts.setdefault(name, Counter())[version] += 1
    return {name: count for name, count in counts.items() if len(count) > 1}


def marked(cell: str, task: str, versions: dict[str, str], differing: dict[str, Counter]) -> str:
    """`cell`, followed by ``(vN)`` when the run's version of `task` is not the one most runs used (the
    best-ranked run's on a tie)."""
    if task not in differing or versions[task] == differing[task].most_common(1)[0][0]:
        return cell
    return f"{cell} (v{versions[task]})"


def versions_note(differing: dict[str, Counter]) -> str:
    """Each task whose versions differ, its versions with their runs, the most used first."""
    tasks = []
    for name, count in differing.items():
        runs = ", ".join(f"{version} ({n} run{'s' * (n != 1)})" for version, n in count.most_common())
        tasks.append(f"{name} {runs}")
    return (f"Task versions differ: {'; '.join(tasks)}. A cell marked (vN) comes from version N of its task's "
            "spec, not the version most runs used; scores of different versions do not compare.")


def headers(columns: list[str]) -> list[str]:
    return [*TEXT_HEADERS, "trainable", "best step", *columns, "accuracy (new task)", "score", "gate"]


def gated(best: dict, task: Task) -> str:
    """A retention task's gated metrics at the best checkpoint, with their intervals where recorded:
    ``F1 21.65 [16.8, 26.4], Em 5.56 [1.9, 11.1]``."""
    return ", ".join(f"{metric} {task.show_interval(metric, score(best, task, metric), interval(best, task, metric))}"
                     for metric in task.gate_metrics)


def run_row(run: Path, results: dict, folder: Path, columns: list[str],
            differing: dict[str, Counter]) -> list[str]:
    settings, best = results["settings"], results.get("best")
    described = (fmt.setting(settings.get(key)) for key in DESCRIBED)
    text = [run.relative_to(folder).as_posix(), results["name"], method_label(run_methods(results)), *described,
            fmt.count(results["params"]["trainable"])]
    if best is None:
        return text + [fmt.MISSING] * (len(columns) + 3) + ["fail"]
    kept = {task.name: task for task in retention_tasks(results)}
    new, versions = new_task(results), task_versions(results)
    return text + [
        str(best["step"]) + (f" ({variant(best)})" if variant(best) else ""),
        *(marked(gated(best, kept[name]), name, versions, differing) if name in kept else fmt.MISSING
          for name in columns),
        marked(f"{new.name}: {new.accuracy} "
               f"{new.show_interval(new.accuracy, best['accuracy'], interval(best, new, new.accuracy))}",
               new.name, versions, differing),
        fmt.score(best["score"]), "pass",
    ]


def registry_blocks(folder: Path, runs: list[tuple[Path, dict]], skipped: list[tuple[Path, str]]) -> list[Block]:
    runs = sort_runs(runs)
    columns, differing = retention_columns(runs), differing_versions(runs)
    blocks: list[Block] = [
        Heading(f"Runs below {folder}", 1),
        Text(f"{len(runs)} runs, sorted by score (best first); runs where no checkpoint passes the gate come last. "
             "One column per retention task: its gated metrics at the best checkpoint (n/a: the run has no such "
             "task); accuracy: the new task's metric that enters the score."),
        Table(headers(columns), [run_row(run, results, folder, columns, differing) for run, results in runs],
              left=len(TEXT_HEADERS)),
    ]
    if differing:
        blocks.append(Text(versions_note(differing)))
    if skipped:
        blocks += [Heading("Skipped"), Items([message for _, message in skipped])]
    return blocks


def write_registry(folder: Path, plain: bool = False) -> tuple[Path, str, list[tuple[Path, str]]]:
    """Write FOLDER/RUNS.md; returns its path, its Markdown text (`plain`: the same table unescaped, for a
    terminal) and the skipped files with the reason."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    runs, skipped = find_runs(folder)
    blocks = registry_blocks(folder, runs, skipped)
    path = folder / REGISTRY
    atomic_write_text(path, to_markdown(blocks))
    return path, to_text(blocks) if plain else to_markdown(blocks), skipped
