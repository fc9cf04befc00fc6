"""The runs registry: one lab-notebook row per experiment below a folder, written to FOLDER/RUNS.md.

Every ``results.json`` below the folder (at any depth) is one run. Rows are
sorted by score, best first; runs where no checkpoint passes the gate come
last, by name. A results.json that cannot be read is listed as skipped.
"""
from __future__ import annotations

from pathlib import Path

from keeptune.io import DataError, atomic_write_text
from keeptune.report import fmt
from keeptune.report.document import Block, Heading, Items, Table, Text, to_markdown
from keeptune.report.results import RESULTS, accuracy, load_results, score_eps

REGISTRY = "RUNS.md"
HEADERS = ["run", "name", "model", "data recipe", "prompt", "targets", "trainable", "best step",
           "F1", "EM", "accuracy (score EPS)", "score", "gate"]
TEXT_COLUMNS = 6  # run .. targets are text; trainable .. score are numbers


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


def run_row(run: Path, results: dict, folder: Path) -> list[str]:
    settings, best = results["settings"], results.get("best")
    described = (fmt.setting(settings.get(key)) for key in ("model", "data_recipe", "prompt", "targets"))
    text = [run.relative_to(folder).as_posix(), results["name"], *described, fmt.count(results["params"]["trainable"])]
    if best is None:
        return text + [fmt.MISSING] * 5 + ["fail"]
    eps = score_eps(results)
    return text + [str(best["step"]), fmt.points(best["squad"]["F1"]), fmt.points(best["squad"]["Em"]),
                   f"{fmt.percent(accuracy(best, eps))} @ {eps}", fmt.score(best["score"]), "pass"]


def registry_blocks(folder: Path, runs: list[tuple[Path, dict]], skipped: list[tuple[Path, str]]) -> list[Block]:
    blocks: list[Block] = [
        Heading(f"Runs below {folder}", 1),
        Text(f"{len(runs)} runs, sorted by score (best first); runs where no checkpoint passes the gate come last. "
             "F1 and EM of the best checkpoint (percent, seed EmF1); accuracy: seed judge at the run's score EPS."),
        Table(HEADERS, [run_row(run, results, folder) for run, results in sort_runs(runs)], left=TEXT_COLUMNS),
    ]
    if skipped:
        blocks += [Heading("Skipped"), Items([message for _, message in skipped])]
    return blocks


def write_registry(folder: Path) -> tuple[Path, str, list[tuple[Path, str]]]:
    """Write FOLDER/RUNS.md; returns its path, its Markdown text and the skipped files with the reason."""
    folder = Path(folder)
    if not folder.is_dir():
        raise DataError(f"{folder}: no such folder")
    runs, skipped = find_runs(folder)
    text = to_markdown(registry_blocks(folder, runs, skipped))
    path = folder / REGISTRY
    atomic_write_text(path, text)
    return path, text, skipped
