"""The experiment report and the runs registry (issue 5, items 4 and 5).

- `build_report(run)` (in `render`): RUN/report.md, RUN/report.html and
  RUN/plots/*.png from RUN/results.json and RUN/train/log.jsonl;
- `write_registry(folder)` (in `registry`): FOLDER/RUNS.md, one row per run below FOLDER;
- `commands`: `keeptune report RUN` and `keeptune runs`.

`build_report` is loaded on first use, so that the command line does not import
matplotlib for every command.
"""
from __future__ import annotations

from typing import Any

__all__ = ["build_report"]


def __getattr__(name: str) -> Any:
    if name == "build_report":
        from keeptune.report.render import build_report

        return build_report
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
