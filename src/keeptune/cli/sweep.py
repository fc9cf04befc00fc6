"""`keeptune sweep`: one typed function, the workers it starts, and the report it writes.

The sweep layer (keeptune.sweep) runs the study and gives its trials as plain data; the report layer
(keeptune.report.sweep) renders them. This command joins the two: each worker rewrites the report after every
trial (and each trial's run report after its run), and the command rewrites it once more at the end.
"""
from __future__ import annotations

import functools
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

import torch

from keeptune.core.config import parse_words
from keeptune.core.errors import ConfigError
from keeptune.core.outputs import locked, note_progress
from keeptune.sweep.config import Sweep, SweepConfig, load_sweep
from keeptune.sweep.records import BEST, report_data
from keeptune.sweep.study import open_study
from keeptune.sweep.worker import work

SWEEP_USAGE = """\
examples:
  keeptune sweep configs/sweeps/default.yaml                     # TPE over lr, rank, epochs, data mix
  keeptune sweep configs/sweeps/default.yaml trials=40 --workers 4  # 4 processes on this machine (one per GPU)
  keeptune sweep s.yaml --storage postgresql://user@host/db       # on each machine: one study, many workers
  keeptune sweep s.yaml train.max_steps=50                       # an experiment field: fixed for every trial
Re-running the same command resumes: finished trials are kept, a killed trial resumes from its run directory.
"""


def sweep(path: Path, words: list[str] = (), workers: int = 1, storage: Optional[str] = None,
          worker: bool = False) -> Path:
    """Search experiment settings for the best recipe under the retention gate (Optuna).

    Each trial is a `keeptune run` directory under SWEEP/trials; prints the table and writes the report
    (SWEEP/sweep.md, sweep.html, best.yaml); re-run on a finished study, it only rebuilds the report. Returns SWEEP."""
    started = time.perf_counter()
    try:
        import optuna  # noqa: F401 - the engine, heavy and optional: only this command needs it
    except ImportError:
        raise ConfigError("keeptune sweep needs Optuna: pip install 'optuna>=5.0'") from None
    spec = load_sweep(path, list(words))
    with locked(spec.out, "", wait=True):  # two sweeps started at once into one folder: one creates the study,
        open_study(spec, storage)          # the other waits and loads it; then their workers share it
    note_progress(resume="run the same command again: finished trials are kept, the interrupted one resumes")
    if worker or workers <= 1:
        work(spec, storage, on_run=_run_report, on_trial=functools.partial(write_report, sweep=spec))
    else:
        run_workers(path, list(words), workers, storage)
    if worker:
        return spec.out
    text = write_report(open_study(spec, storage), spec, time.perf_counter() - started, strict=True)
    print(text, end="")
    print(f"wrote {spec.out / 'sweep.md'} and {spec.out / 'sweep.html'}"
          + (f"; the best trial's config: {spec.out / BEST}" if (spec.out / BEST).is_file() else ""))
    return spec.out


def write_report(study, sweep: Sweep, wall_seconds: Optional[float] = None, strict: bool = False) -> str:
    """Rewrite SWEEP/sweep.md, sweep.html, plots/ and best.yaml from the study; returns sweep.md's text.
    A worker's rewrite after a trial only warns when it fails (`strict`: the final one raises)."""
    from keeptune.report.sweep import write_sweep_report  # matplotlib: loaded only when a sweep reports

    try:
        return write_sweep_report(report_data(study, sweep), wall_seconds)
    except Exception as err:  # noqa: BLE001 - a worker goes on with the next trial; the final report raises
        if strict:
            raise
        print(f"keeptune sweep: the report could not be written: {type(err).__name__}: {err}", file=sys.stderr)
        return ""


def _run_report(run: Path) -> None:
    """A trial's RUN/report.md and report.html, as `keeptune run` writes them."""
    from keeptune.report import build_report  # matplotlib: loaded only when a sweep reports

    build_report(run)


def run_workers(path: Path, words: list[str], workers: int, storage: Optional[str]) -> None:
    """N worker processes sharing the study: each pinned to one GPU when there are GPUs, else a share of the
    CPU threads."""
    gpus = _gpu_count()
    threads = max(1, (os.cpu_count() or 1) // workers)
    processes = []
    for i in range(workers):
        env = dict(os.environ)
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(i % gpus)
        else:
            env["OMP_NUM_THREADS"] = str(threads)
        command = [sys.executable, "-m", "keeptune", "sweep", str(path), *words, "--worker",
                   *(["--storage", storage] if storage else [])]
        processes.append(subprocess.Popen(command, env=env))
    failed = [p.args for p in processes if p.wait() != 0]
    if failed:
        print(f"keeptune sweep: {len(failed)} of {workers} workers failed", file=sys.stderr)


def _gpu_count() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip()])
    try:
        return torch.cuda.device_count()
    except Exception:  # noqa: BLE001 - no usable CUDA: CPU workers
        return 0


def main(argv: list[str]) -> None:
    """`keeptune sweep SWEEP.yaml [key=value ...] [--workers N] [--storage URL]`."""
    rest, workers, storage, worker = [], 1, None, False
    args = iter(argv)
    for arg in args:
        name, sep, value = arg.partition("=")
        if name in ("--workers", "--storage"):
            value = value if sep else next(args, None)
            if value is None:
                raise ConfigError(f"{name} needs a value")
            if name == "--workers":
                if not value.isdigit() or int(value) < 1:
                    raise ConfigError(f"--workers is {value!r}; a number >= 1")
                workers = int(value)
            else:
                storage = value
        elif arg == "--worker":
            worker = True
        else:
            rest.append(arg)
    usage = SWEEP_USAGE + ("\noptions:\n  --workers N      worker processes on this machine sharing the study "
                           "(default 1)\n  --storage URL    an Optuna RDB URL (many machines) or a journal file\n")
    config, words, _ = parse_words(rest, "keeptune sweep", sweep.__doc__.split("\n\n")[0], usage, SweepConfig,
                                   resume=False)
    if config is None:
        raise ConfigError("keeptune sweep needs a sweep file: keeptune sweep SWEEP.yaml (see docs/sweep.md)")
    sweep(Path(config), words, workers, storage, worker)
