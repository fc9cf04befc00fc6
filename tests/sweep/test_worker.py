"""keeptune.sweep.worker's recovery in an RDB study (an SQLite file here; tests/sweep/test_postgres.py runs
workers against PostgreSQL): which running trials count as dead, the label each gets, and one retry per dead
trial however many workers look; and the storage's settings (heartbeat seconds, the driver, errors)."""
from __future__ import annotations

import time

import pytest

from keeptune.core.errors import ConfigError
from keeptune.sweep.study import heartbeat, open_storage, open_study, rdb_of, with_driver
from keeptune.sweep.worker import recover
from tests.sweep.studies import DISTRIBUTIONS, make_sweep

optuna = pytest.importorskip("optuna")
from optuna.trial import TrialState  # noqa: E402


def running(study, worker: str, beat: bool = True):
    """A RUNNING trial of `worker` (HOST:PID), with one heartbeat recorded now."""
    trial = study.ask(DISTRIBUTIONS)
    trial.set_user_attr("worker", worker)
    if beat:
        rdb_of(study._storage).record_heartbeat(trial._trial_id)
    return trial.number


@pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed to be used with Study.optimize",
                            "ignore::optuna.exceptions.ExperimentalWarning")
def test_dead_trials_of_any_machine_are_failed_labelled_and_retried_once(tmp_path, monkeypatch):
    monkeypatch.setenv("KEEPTUNE_HEARTBEAT_INTERVAL", "1")
    monkeypatch.setenv("KEEPTUNE_GRACE_PERIOD", "2")
    monkeypatch.setenv("KEEPTUNE_HOST", "here")
    url = f"sqlite:///{tmp_path / 'study.db'}"
    sweep = make_sweep(tmp_path)
    study = open_study(sweep, url)
    silent = running(study, "elsewhere:1")  # its machine went away: no heartbeat from now on
    other = make_sweep(tmp_path, params=sweep.params)
    other.name = "other"  # a second study in the same database: Optuna's own stale-trial check handles it
    other_study = open_study(other, url)
    other_silent = running(other_study, "elsewhere:3")
    time.sleep(3.2)  # beyond the grace period of 2 s (SQLite's clock counts whole seconds)
    alive = running(study, "elsewhere:2")  # a fresh heartbeat: its worker is alive
    dead_here = running(study, "here:999", beat=False)  # this machine's worker, whose SWEEP/running lock is free
    recover(study, sweep)
    trials = {t.number: t for t in study.get_trials()}
    assert trials[silent].state == TrialState.FAIL and trials[dead_here].state == TrialState.FAIL
    assert trials[silent].user_attrs["interrupted"] == "killed (no heartbeat for 2 s)"
    assert trials[dead_here].user_attrs["interrupted"] == "killed"
    assert trials[alive].state == TrialState.RUNNING
    retries = {t.user_attrs["retry_of"]: t for t in trials.values() if "retry_of" in t.user_attrs}
    assert sorted(retries) == sorted([silent, dead_here])
    assert all(t.state == TrialState.WAITING for t in retries.values())
    for _ in retries:  # each retry runs with its trial's parameters
        asked = study.ask(DISTRIBUTIONS)
        assert asked.params == trials[asked.user_attrs["retry_of"]].params
    # Workers of two other machines look again: nothing more is failed or queued.
    for host in ("there", "yonder"):
        monkeypatch.setenv("KEEPTUNE_HOST", host)
        recover(open_study(sweep, url), sweep)
    assert len(study.get_trials()) == len(trials)  # the two retries, now running, and nothing more
    # Optuna's own check (a worker's study.optimize runs it) fails a stale trial and queues one retry through
    # the storage's callback; keeptune's recovery then adds none.
    optuna.storages.fail_stale_trials(other_study)
    recover(other_study, other)
    failed, retry = other_study.get_trials()
    assert failed.number == other_silent and failed.state == TrialState.FAIL
    assert retry.state == TrialState.WAITING and retry.user_attrs["retry_of"] == other_silent


def test_heartbeat_seconds_come_from_the_environment_and_are_checked(monkeypatch):
    assert heartbeat() == (60, 180)
    monkeypatch.setenv("KEEPTUNE_HEARTBEAT_INTERVAL", "2")
    monkeypatch.setenv("KEEPTUNE_GRACE_PERIOD", "7")
    assert heartbeat() == (2, 7)
    monkeypatch.setenv("KEEPTUNE_GRACE_PERIOD", "2")
    with pytest.raises(ConfigError, match=r"KEEPTUNE_GRACE_PERIOD is 2: it must exceed the heartbeat interval \(2 s\)"):
        heartbeat()
    monkeypatch.setenv("KEEPTUNE_HEARTBEAT_INTERVAL", "0.5")
    with pytest.raises(ConfigError, match=r"KEEPTUNE_HEARTBEAT_INTERVAL is '0.5': a whole number of seconds"):
        heartbeat()


def test_storage_urls_name_their_driver_and_bad_ones_fail_in_one_line(tmp_path):
    assert with_driver("postgresql://u@db.example/k") == "postgresql+psycopg://u@db.example/k"
    assert with_driver("postgresql+psycopg2://u@h/k") == "postgresql+psycopg2://u@h/k"  # named: kept
    assert with_driver("sqlite:///s.db") == "sqlite:///s.db"
    sweep = make_sweep(tmp_path)
    with pytest.raises(ConfigError, match=r"^storage mysql://u:\*\*\*@h/k: its driver MySQLdb is not installed"):
        open_storage(sweep, "mysql://u:secret@h/k")
    missing = tmp_path / "no" / "such" / "folder" / "s.db"
    with pytest.raises(ConfigError, match=r"^storage sqlite:///.*s\.db: \(sqlite3\.OperationalError\) unable to open"):
        open_storage(sweep, f"sqlite:///{missing}")
