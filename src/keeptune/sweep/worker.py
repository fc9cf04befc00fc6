"""A sweep worker: runs trials of the shared study until the budget is spent.

Every trial is an ordinary `keeptune run` directory, SWEEP/trials/trial-HASH, so its cache, report and resume
work as for `keeptune run`. A new trial's directory starts with a copy of the base model's generations (baseline
evaluations, preservation data) an earlier trial finished (share_base_model_work); the engine's resume check
uses each only where its samples and settings match.

Re-running the same command resumes: a trial whose worker died is failed, marked `killed`, and its parameters
are queued again (recover); the retry finds its run directory and resumes training from its last checkpoint.
Several workers on one machine share the study through SWEEP/.ask.lock and SWEEP/running/*.lock; workers on
several machines share an RDB study, where Optuna's heartbeat tells which trials' workers died.

The worker writes no report itself (the report layer sits above it): `keeptune sweep` passes `on_run`, called
with each trial's run directory once it is done, and `on_trial`, called with the study after every trial.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import shlex
import shutil
import socket
from pathlib import Path
from typing import Any, Callable, Optional

from keeptune.experiment.plan import plan_experiment
from keeptune.experiment.runner import run_dir, run_experiment
from keeptune.sweep.config import Param, Sweep, params_text, resolve, trial_config, trial_words
from keeptune.sweep.study import (Pruning, make_sampler, open_study, queue_retry, rdb_of, retried_as, suggest,
                                  trial_outcome)

# What a trial records of its outcome (user attributes), read back by the report's records.
OUTCOME_ATTRS = ("score", "accuracy", "retention", "step", "wall_seconds", "feasible")


def worker_host() -> str:
    """This machine's name in the study (a trial's `worker` is HOST:PID): $KEEPTUNE_HOST, else the host name.
    Machines that share an RDB study need distinct names (containers may share one: set KEEPTUNE_HOST)."""
    return os.environ.get("KEEPTUNE_HOST") or socket.gethostname()


# --- locks ----------------------------------------------------------------------------------------

class AskLock:
    """SWEEP/.ask.lock: held from the budget check through the trial's start, so that on one machine no two
    workers overshoot the budget and a trial being started is never mistaken for a killed one."""

    def __init__(self, folder: Path):
        self.path, self.handle = folder / ".ask.lock", None

    def acquire(self) -> None:
        self.handle = open(self.path, "w")
        fcntl.flock(self.handle, fcntl.LOCK_EX)

    def release(self) -> None:
        if self.handle is not None:
            self.handle.close()
            self.handle = None


def _trial_lock(sweep: Sweep, number: int, take: bool):
    """SWEEP/running/N.lock, held by the worker running trial N; free (or absent) when that worker died."""
    folder = sweep.out / "running"
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / f"{number}.lock", "a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    if take:
        return handle
    handle.close()
    return True


@contextlib.contextmanager
def _run_lock(sweep: Sweep, name: str):
    """SWEEP/running/NAME.lock, waited for: two trials that drew the same parameters share one run directory;
    the second waits for the first and then finds every step cached."""
    folder = sweep.out / "running"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"{name}.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        yield


# --- recovery and the budget ---------------------------------------------------------------------

def recover(study, sweep: Sweep) -> None:
    """Fail the RUNNING trials whose worker died (kill -9, a lost machine) and queue each again with its
    parameters: the retry resumes its run directory where it finds it (this machine, or a shared filesystem).

    A worker died when its SWEEP/running/N.lock is free: any trial's in a journal (one machine), this machine's
    trials' in an RDB (`worker` HOST:PID, worker_host). In an RDB a trial whose Optuna heartbeat is older than the
    grace period died too, on whatever machine: it is marked `killed (no heartbeat for N s)`. Only the worker
    whose update failed the trial queues its retry (the RDB locks the trial's row), so workers on several
    machines never queue two. An interrupted trial (Ctrl-C) is queued again by its own machine's next worker."""
    from optuna.trial import TrialState  # optuna: heavy, optional

    rdb, host = rdb_of(study._storage), worker_host()
    stale = set(rdb._get_stale_trial_ids(study._study_id)) if rdb else set()  # Optuna's own query
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        here = not rdb or t.user_attrs.get("worker", "").startswith(host + ":")
        if t._trial_id in stale:
            how = f"killed (no heartbeat for {rdb.grace_period} s)"
        elif here and _trial_lock(sweep, t.number, take=False):
            how = "killed"
        else:
            continue
        if _fail(study, t, how):
            queue_retry(study, t)
            print(f"trial {t.number}: its worker ({t.user_attrs.get('worker')}) died; it is queued again")
    trials = study.get_trials(deepcopy=False)
    retried = set(retried_as(trials))
    for t in trials:  # a retry never queued (the worker died in between), or an interrupted trial
        a = t.user_attrs
        orphan = t.state == TrialState.FAIL and a.get("interrupted") and t.number not in retried
        if orphan and (not rdb or (a["interrupted"] == "interrupted" and a.get("worker", "").startswith(host + ":"))):
            queue_retry(study, t)


def _fail(study, trial, how: str) -> bool:
    """Mark a dead trial `interrupted: how` and fail it; False when another worker failed it first."""
    from optuna.exceptions import UpdateFinishedTrialError  # optuna: heavy, optional
    from optuna.trial import TrialState

    try:
        study._storage.set_trial_user_attr(trial._trial_id, "interrupted", how)
        return study._storage.set_trial_state_values(trial._trial_id, TrialState.FAIL)
    except UpdateFinishedTrialError:
        return False


def _budget_spent(trials, budget: int) -> bool:
    """No trial queued and `budget` trials drawn (a retry and the trial it retries count once)."""
    from optuna.trial import TrialState  # optuna: heavy, optional

    retried = set(retried_as(trials))
    waiting = any(t.state == TrialState.WAITING for t in trials)
    counted = sum(1 for t in trials if t.number not in retried)
    return not waiting and counted >= budget


# --- the base model's work a trial can reuse ---------------------------------------------------------

# A run's folders of the base model's generations, the same for every trial of a sweep that searches no `model.`
# field: the baseline evaluations, the self-written preservation data (retention.preservation: null: passages,
# then questions, about 20 minutes of the embedded model's generation for 256 samples on 2 CPU cores) and replay's
# base-model answers to it. Each holds one folder per generation, finished when its metrics.json is written.
BASE_MODEL_WORK = ("baseline", "preservation", "replay/answers")


def share_base_model_work(run: Path, sweep: Sweep) -> list[str]:
    """Start a new trial's run directory with the base model's generations of earlier trials; returns them
    (``baseline/squad-seed``, ``preservation/passages``, ...).

    Every trial evaluates the same base model on the same tasks before it trains (a minute of a demo trial's
    six), and every trial of corda or replay has the base model write the same preservation data, so a trial whose
    directory does not exist yet gets a copy of each finished folder of BASE_MODEL_WORK (its eval.json and
    predictions.jsonl) from a sibling trial. The evaluation engine's resume check decides whether a copy is used:
    one made for other samples or prompts (their sha256), another model name or other generation settings is
    generated again, as after any change of settings. Nothing is shared when the space searches a `model.` field:
    the engine knows the model by its name, not its dtype or device."""
    if run.exists() or any(p.key.startswith("model.") for p in sweep.params):
        return []
    found: dict[str, Path] = {}
    for part in BASE_MODEL_WORK:
        for metrics in sorted(run.parent.glob(f"*/{part}/*/metrics.json")):
            found.setdefault(f"{part}/{metrics.parent.name}", metrics.parent)
    if not found:
        return []
    staging = run.parent / f".{run.name}.tmp"  # built aside, renamed into place: a kill leaves no half copy
    shutil.rmtree(staging, ignore_errors=True)
    for shared, folder in found.items():
        (staging / shared).mkdir(parents=True)
        for name in ("eval.json", "predictions.jsonl"):
            shutil.copyfile(folder / name, staging / shared / name)
    os.replace(staging, run)
    print(f"the base model's generations of {', '.join(found)} from "
          f"{', '.join(sorted({f.parents[s.count('/')].name for s, f in found.items()}))}, checked as on resume")
    return list(found)


# --- the objective -------------------------------------------------------------------------------------

class Objective:
    """Optuna's objective for one worker: runs a trial as a `keeptune run` directory and tells the study its
    values, its gate constraint and (as user attributes) the numbers of its table row."""

    def __init__(self, sweep: Sweep, lock: AskLock, on_run: Optional[Callable[[Path], Any]] = None):
        self.sweep, self.lock, self.on_run = sweep, lock, on_run
        self.worker = f"{worker_host()}:{os.getpid()}"
        plan = plan_experiment(trial_config(sweep, resolve(sweep.params, Param.first)))
        self.new_task, self.accuracy = plan.new.spec.name, plan.accuracy
        self.held: list = []  # this worker's SWEEP/running/N.lock handles, closed after each trial

    def __call__(self, trial):
        values = self._start(trial)
        config = trial_config(self.sweep, values)
        trial.set_user_attr("run_dir", str(run_dir(config)))
        print(f"== sweep {self.sweep.name}: trial {trial.number} ({self.worker}): {params_text(values)} "
              f"-> {config.out}")
        hook = Pruning(self.sweep, trial, self.new_task, self.accuracy)
        results = self._run(trial, config, values, hook)
        return self._tell(trial, results, hook)

    def _start(self, trial) -> dict[str, Any]:
        """Take the trial's lock, draw its values, and let the next worker ask."""
        self.held.append(_trial_lock(self.sweep, trial.number, take=True))
        trial.set_user_attr("worker", self.worker)
        # Seeded again with the trial's number, known now: machines that asked at the same moment (each saw the
        # same count of trials) still draw trial N with seed + N, not the same values twice.
        trial.study.sampler = make_sampler(self.sweep, trial.number)
        values = suggest(trial, self.sweep.params)
        self.lock.release()
        return values

    def _run(self, trial, config, values: dict, hook: Pruning) -> dict:
        sweep = self.sweep
        command = shlex.join(["keeptune", "run", *([str(sweep.base)] if sweep.base else []),
                              *trial_words(sweep, values), f"name={config.name}", f"out={config.out}"])
        try:
            with _run_lock(sweep, config.name):  # a trial of the same parameters elsewhere: wait, then reuse it
                share_base_model_work(run_dir(config), sweep)
                results = run_experiment(config, command, on_track=hook)
                if self.on_run is not None:
                    self.on_run(run_dir(config))
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", "interrupted")
            raise
        except Exception as err:
            trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:500])
            raise
        return results

    def _tell(self, trial, results: dict, hook: Pruning):
        import optuna  # heavy, optional

        outcome = trial_outcome(results, self.sweep.config.objective)
        for key in OUTCOME_ATTRS:
            trial.set_user_attr(key, outcome[key])
        trial.set_constraint("gate", outcome["constraint"])
        if hook.pruned:
            trial.set_user_attr("pruned_step", hook.pruned["step"])
            trial.set_user_attr("pruned_reason", hook.pruned["reason"])
            raise optuna.TrialPruned(f"step {hook.pruned['step']}: {hook.pruned['reason']}")
        return outcome["values"][0] if len(outcome["values"]) == 1 else outcome["values"]

    def release(self) -> None:
        while self.held:
            handle = self.held.pop()
            if handle:
                handle.close()


def work(sweep: Sweep, storage: Optional[str] = None, on_run: Optional[Callable[[Path], Any]] = None,
         on_trial: Optional[Callable[[Any], Any]] = None) -> None:
    """One worker: run trials of the shared study until the budget is spent. `on_run(run_dir)` follows each
    trial's run (inside its run lock); `on_trial(study)` follows each trial (`keeptune sweep` rewrites the
    report there, so that it shows the sweep so far)."""
    study = open_study(sweep, storage)
    lock = AskLock(sweep.out)
    objective = Objective(sweep, lock, on_run)
    while True:
        lock.acquire()
        try:
            recover(study, sweep)
            trials = study.get_trials(deepcopy=False)
            if _budget_spent(trials, sweep.config.trials):
                return
            study.sampler = make_sampler(sweep, len(trials))
            study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
            lock.release()
            if on_trial is not None:
                on_trial(study)
        finally:
            lock.release()
            objective.release()
