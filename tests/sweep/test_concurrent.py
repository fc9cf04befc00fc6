"""Two `keeptune sweep` commands started at once on one study folder share it as two workers (issue 28, not yet
probed): one creates the study (SWEEP/.lock held while the study is opened), the other waits and loads it; the
budget is spent once, the `start` trial is queued once, no trial runs twice, and both end with the report."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO
from tests.sweep.test_sweep import logged_steps, study_of
from tests.sweep.tinysweep import LOW, write_sweep

optuna = pytest.importorskip("optuna")


def test_two_sweeps_started_at_once_on_one_folder_share_the_study(setup, tmp_path):
    tmp, overrides = setup
    out = tmp_path / "sweep"
    space = {"train.lr": {"type": "log_uniform", "low": LOW, "high": 1e-5}}
    path = write_sweep(tmp_path / "both.yaml", overrides, space, trials=2, out=str(out), start=[{"train.lr": 2e-6}],
                       pruning={"gate": False, "median": False})
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "keeptune", "sweep", str(path)]
    first, second = (subprocess.Popen(command, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True) for _ in range(2))
    results = [process.communicate(timeout=400) for process in (first, second)]
    for process, (stdout, stderr) in zip((first, second), results):
        assert process.returncode == 0, stderr[-3000:]
        assert "Traceback" not in stderr
    trials = study_of(out, "both").get_trials()
    assert len(trials) == 2 and all(t.state == optuna.trial.TrialState.COMPLETE for t in trials)
    assert [t.params["train.lr"] for t in trials].count(2e-6) == 1  # the start trial was queued once
    runs = {Path(t.user_attrs["run_dir"]) for t in trials}
    assert len(runs) == 2
    for run in runs:
        assert logged_steps(run) == [1, 2, 3, 4]  # each trained once, by one worker
    assert sum(stdout.count("== sweep both: trial") for stdout, _ in results) == 2
    assert (out / "sweep.md").is_file() and (out / "sweep.html").is_file()
