"""`keeptune report` and `keeptune runs`: one typed function per command."""
from __future__ import annotations

import sys
from pathlib import Path

from keeptune.report.registry import write_registry


def report(run: Path) -> None:
    """Write an experiment's report: RUN/report.md and a self-contained RUN/report.html.

    Rebuilt from RUN/results.json and RUN/train/log.jsonl (the plots go to
    RUN/plots/): summary, settings, parameter accounting, baseline, every
    checkpoint with its gate verdict and score, the new task's breakdown per
    group, plots and the command that reproduces the run. Tasks and metrics are
    those recorded in results.json. Prints the paths of both files.

    Args:
        run: the experiment directory (the one holding results.json).
    """
    from keeptune.report.render import build_report  # matplotlib loads only for this command

    for path in build_report(run):
        print(path)


def runs(folder: Path = Path("runs")) -> None:
    """List every experiment below a folder, best score first, and write FOLDER/RUNS.md.

    Every results.json below FOLDER (at any depth) is one run: name, model,
    data recipe, prompt, targets, trainable parameters, best step, each
    retention task's gated metrics, the new task's accuracy, score and gate. A
    results.json that cannot be read is reported and skipped.

    Args:
        folder: where to look for runs.
    """
    path, text, skipped = write_registry(folder, plain=True)
    print(text, end="")
    for _, reason in skipped:
        print(f"keeptune: skipped {reason}", file=sys.stderr)
    print(f"\nwrote {path}")
