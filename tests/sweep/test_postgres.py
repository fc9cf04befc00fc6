"""`keeptune sweep --storage postgresql://...` against a real PostgreSQL server: three workers as on three
machines (own process group, own sweep folder, cache and home, own KEEPTUNE_HOST) share one study; one is killed
with SIGKILL mid-trial, Optuna's heartbeat shows its trial dead, and a surviving worker runs the retry.

The server comes from `bash scripts/postgres.sh start`, whose URL goes in KEEPTUNE_TEST_POSTGRES (.ci/run does
both); without it the test skips. It prints the study's trial table before and after the kill."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from keeptune.cli import main
from tests.conftest import REPO
from tests.sweep.test_sweep import logged_steps, trial_rows
from tests.sweep.tinysweep import LOW, write_sweep

optuna = pytest.importorskip("optuna")

URL = os.environ.get("KEEPTUNE_TEST_POSTGRES")
pytestmark = pytest.mark.skipif(not URL, reason="needs a PostgreSQL server: "
                                "export KEEPTUNE_TEST_POSTGRES=$(bash scripts/postgres.sh start)")
INTERVAL, GRACE = 1, 5  # seconds of Optuna's heartbeat in this test (60 and 180 by default)

STALL = """
import sys, time
from pathlib import Path
from keeptune.train import checkpoint

save = checkpoint.save

def stalling_save(run, step, *args, **kwargs):  # the first checkpoint of this worker's first trial, then a stall
    path = save(run, step, *args, **kwargs)
    Path(sys.argv[1]).write_text(str(path))
    time.sleep(600)

checkpoint.save = stalling_save
from keeptune.cli import main
sys.exit(main(sys.argv[2:]))
"""


def machine_env(folder: Path, host: str) -> dict:
    """The environment of a worker on a machine of its own: its host name, cache and home."""
    (folder / "home").mkdir(parents=True)
    return {**os.environ, "KEEPTUNE_HOST": host, "KEEPTUNE_CACHE": str(folder / "cache"), "HOME": str(folder / "home"),
            "XDG_CACHE_HOME": str(folder / "home" / ".cache"), "OMP_NUM_THREADS": "1",
            "KEEPTUNE_HEARTBEAT_INTERVAL": str(INTERVAL), "KEEPTUNE_GRACE_PERIOD": str(GRACE)}


def table(study, sweep) -> str:
    """The study as a text table: number, the worker's machine, the state as the report writes it, lr, retry of."""
    from keeptune.sweep.records import trial_rows as rows_of

    machines = {t.number: t.user_attrs.get("worker", "").split(":")[0] for t in study.get_trials(deepcopy=False)}
    lines = [f"{'#':>2}  {'machine':<9}  {'state':<46}  {'train.lr':<9}  retry of"]
    for r in rows_of(study, sweep):
        retry_of = "" if r["retry_of"] is None else r["retry_of"]
        lines.append(f"{r['number']:>2}  {machines[r['number']]:<9}  {r['state']:<46}  "
                     f"{r['params'].get('train.lr', float('nan')):<9.3g}  {retry_of}")
    return "\n".join(lines)


def test_three_machines_share_a_postgres_study_and_a_killed_workers_trial_is_retried(setup, tmp_path, capsys):
    from keeptune.sweep.config import load_sweep
    from keeptune.sweep.study import open_storage, open_study

    tmp, overrides = setup
    name = f"pg-{os.getpid()}-{time.time_ns()}"  # a study of its own: the database may hold others
    path = write_sweep(tmp_path / "pg.yaml", overrides, {"train.lr": {"type": "log_uniform", "low": LOW,
                                                                      "high": 1e-5}},
                       trials=4, name=name, pruning={"gate": False, "median": False})
    (tmp_path / "stall.py").write_text(STALL, encoding="utf-8")
    marker = tmp_path / "stalled"
    machines = [tmp_path / f"machine-{i}" for i in range(3)]
    workers = []
    for i, machine in enumerate(machines):
        start = [str(tmp_path / "stall.py"), str(marker)] if i == 0 else ["-m", "keeptune"]
        command = [sys.executable, *start, "sweep", str(path), f"out={machine / 'sweep'}", "--storage", URL]
        env = machine_env(machine, f"machine-{i}")
        with open(tmp_path / f"machine-{i}.log", "w") as log:
            workers.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT,
                                            start_new_session=True))  # a process group of its own
    logs = lambda: "\n".join(f"--- machine-{i}\n" + (tmp_path / f"machine-{i}.log").read_text()[-2000:]  # noqa: E731
                             for i in range(3))
    sweep = load_sweep(path, [f"out={tmp_path / 'laptop' / 'sweep'}"])  # the study seen from a fourth machine
    try:
        deadline = time.monotonic() + 240
        while not marker.exists() and workers[0].poll() is None and time.monotonic() < deadline:
            time.sleep(0.5)
        assert marker.exists(), "machine-0 never reached its first checkpoint\n" + logs()
        before = table(optuna.load_study(study_name=name, storage=open_storage(sweep, URL)), sweep)
        os.killpg(workers[0].pid, signal.SIGKILL)  # mid-trial: after the checkpoint of step 2 (of 4)
        workers[0].wait()
        for worker in workers[1:]:
            assert worker.wait(timeout=300) == 0, logs()
    finally:
        for worker in workers:
            if worker.poll() is None:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
    study = open_study(sweep, URL)
    after = table(study, sweep)
    with capsys.disabled():
        print(f"\n{name}: the trials when machine-0 was killed (SIGKILL, mid-trial)\n{before}\n"
              f"... and when the two surviving workers had finished\n{after}")

    trials = study.get_trials()
    assert [t.number for t in trials] == list(range(5))  # 4 of the budget and one retry: none lost, none twice
    (killed,) = [t for t in trials if t.state == optuna.trial.TrialState.FAIL]
    assert killed.user_attrs["worker"].startswith("machine-0:")
    assert killed.user_attrs["interrupted"] == f"killed (no heartbeat for {GRACE} s)"
    assert Path(marker.read_text()).parents[2] == Path(killed.user_attrs["run_dir"])  # the run it was killed in
    (retry,) = [t for t in trials if t.user_attrs.get("retry_of") == killed.number]
    drawn = [t.params["train.lr"] for t in trials if t is not retry]
    assert len(set(drawn)) == 4  # trial N drawn with seed + N: machines asking at once drew different values
    assert retry.params == killed.params and retry.number > killed.number
    assert retry.user_attrs["worker"].split(":")[0] in ("machine-1", "machine-2")
    others = [t for t in trials if t is not killed]
    assert all(t.state == optuna.trial.TrialState.COMPLETE for t in others)
    assert all(not t.user_attrs["worker"].startswith("machine-0:") for t in others)
    for t in others:  # each run trained every step once, in its own machine's sweep folder
        run = Path(t.user_attrs["run_dir"])
        assert run.parent.parent == machines[int(t.user_attrs["worker"].split(":")[0][-1])] / "sweep"
        assert logged_steps(run) == [1, 2, 3, 4]
        assert json.loads((run / "results.json").read_text())["best"]["score"] == t.value
    said = f"trial {killed.number}: its worker ({killed.user_attrs['worker']}) died; it is queued again"
    assert [said in (tmp_path / f"machine-{i}.log").read_text() for i in (1, 2)].count(True) == 1  # by one survivor

    # The report, rebuilt from the database alone on a fourth machine: every trial, the killed one with its retry.
    assert main(["sweep", str(path), f"out={sweep.out}", "--storage", URL]) == 0
    report = (sweep.out / "sweep.md").read_text()
    rows = {int(row[0]): row[2] for row in trial_rows(report)}  # columns: #, train.lr, state, ...
    assert sorted(rows) == list(range(5))
    assert rows[killed.number] == f"killed (no heartbeat for {GRACE} s), retried as #{retry.number}"
    assert all(rows[t.number] == "complete" for t in others)
    assert "Trials: 5 (4 of the budget of 4; a killed trial and its retry count once): 4 feasible" in report
    optuna.delete_study(study_name=name, storage=open_storage(sweep, URL))
