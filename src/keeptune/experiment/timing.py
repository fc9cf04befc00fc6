"""Where an experiment's time goes: seconds per phase, results.json's ``timing``.

    timing = Timing()
    with timing.phase("baseline", task="squad-seed"):
        ...
    timing.rows -> [{"phase": "baseline", "task": "squad-seed", "seconds": 41.2}, ...]

Rows are in the order the phases ran, in this invocation of `keeptune run` (a
resumed run shows what its continuation spent: cached work takes about nothing).
"""
from __future__ import annotations

import contextlib
import time


class Timing:
    def __init__(self):
        self.rows: list[dict] = []

    @contextlib.contextmanager
    def phase(self, name: str, task: str | None = None, **extra):
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started, task, **extra)

    def add(self, name: str, seconds: float, task: str | None = None, **extra) -> None:
        self.rows.append({"phase": name, "task": task, "seconds": seconds, **extra})
