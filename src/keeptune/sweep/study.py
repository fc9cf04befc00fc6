"""The sweep's Optuna study: its storage and sampler, a trial's suggested values, and what a finished run tells it.

Optuna samples the space (TPE by default, seeded). The objective is the score of the trial's best checkpoint
that passes the gate. A trial with no passing checkpoint is *infeasible*: it gets Optuna's constraint `gate` > 0
(how far its closest checkpoint fell below the gate, as a fraction of the baseline: keeptune.core.gate's
gate_distance), so the sampler learns where the gate fails instead of reading a misleading zero.
`objective: pareto` searches the new task's accuracy against retention (the lowest gated scalar / baseline).

Pruning: the in-training tracker shows each tracked record to the trial; a trial whose tracked subset fails the
gate, or whose tracked accuracy lags the median of the other trials at the same step, stops training and is
recorded as pruned, with the step and the reason.

The study lives in SWEEP/study.journal (Optuna's JournalStorage: an append-only file, safe for several
processes on one machine and against kill -9) or in an RDB given by `--storage URL` (many machines). In an RDB each
running trial records Optuna's heartbeat every 60 s; one silent for 180 s (its worker died, on whatever machine)
is failed and queued again (KEEPTUNE_HEARTBEAT_INTERVAL and KEEPTUNE_GRACE_PERIOD set other seconds).

Optuna is imported inside the functions that use it: it is heavy, and the rest of keeptune works without it.
"""
from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import time
import warnings
from pathlib import Path
from typing import Any, Optional

from keeptune.core import gate as rules
from keeptune.core.errors import ConfigError
from keeptune.sweep.config import Param, Sweep, active


# --- parameters as Optuna stores them ---------------------------------------------------------

def encode(choice: Any) -> str:
    """A list or mapping choice as the JSON text Optuna stores."""
    return json.dumps(choice, sort_keys=True, ensure_ascii=False)


def grid_space(sweep: Sweep) -> dict[str, list]:
    """The grid sampler's space: each field's choices as Optuna stores them (a list or mapping as JSON text)."""
    return {p.key: [encode(c) for c in p.choices] if p.encoded else list(p.choices) for p in sweep.params}


def encoded_params(sweep: Sweep, values: dict) -> dict:
    """Values as Optuna's parameters (JSON text for list and mapping choices), e.g. a `start` mapping."""
    encoded = {p.key for p in sweep.params if p.encoded}
    return {k: encode(v) if k in encoded else v for k, v in values.items()}


def decoded(params: dict, sweep: Sweep) -> dict:
    """Optuna's stored parameters with list and mapping choices decoded from their JSON text."""
    encoded = {p.key for p in sweep.params if p.encoded}
    return {k: json.loads(v) if k in encoded else v for k, v in params.items()}


# --- storage, sampler, study ------------------------------------------------------------------

def open_storage(sweep: Sweep, url: Optional[str]):
    """The study's storage: a journal file (default SWEEP/study.journal) or an RDB URL with heartbeats, whose
    stale trials (a dead worker on another machine) are queued again with the same parameters."""
    url = url or sweep.config.storage
    if url and "://" in url:
        return _rdb_storage(url)
    from optuna.storages.journal import JournalFileBackend, JournalStorage  # optuna: heavy, optional

    journal = Path(url) if url else sweep.out / "study.journal"
    journal.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(journal)))


# Optuna's heartbeat in an RDB: a running trial records a beat every HEARTBEAT_INTERVAL seconds; one without a beat
# for GRACE_PERIOD seconds is stale (its worker died) and is failed and queued again.
HEARTBEAT_INTERVAL, GRACE_PERIOD = 60, 180


def heartbeat() -> tuple[int, int]:
    """(interval, grace period) in seconds: 60 and 180, or $KEEPTUNE_HEARTBEAT_INTERVAL and $KEEPTUNE_GRACE_PERIOD."""
    interval = _seconds("KEEPTUNE_HEARTBEAT_INTERVAL", HEARTBEAT_INTERVAL)
    grace = _seconds("KEEPTUNE_GRACE_PERIOD", GRACE_PERIOD)
    if grace <= interval:
        raise ConfigError(f"KEEPTUNE_GRACE_PERIOD is {grace}: it must exceed the heartbeat interval ({interval} s), "
                          "or a running trial looks dead between two beats")
    return interval, grace


def _seconds(variable: str, default: int) -> int:
    text = os.environ.get(variable, "").strip()
    if not text:
        return default
    if not text.isdigit() or int(text) < 1:
        raise ConfigError(f"{variable} is {text!r}: a whole number of seconds, 1 or more")
    return int(text)


def _rdb_storage(url: str):
    import sqlalchemy  # optuna's dependency: heavy, optional
    from optuna.storages import RDBStorage  # optuna: heavy, optional

    interval, grace = heartbeat()
    for attempt in range(3):
        try:
            with _quiet():
                return RDBStorage(with_driver(url), heartbeat_interval=interval, grace_period=grace,
                                  heartbeat_stale_trial_callback=queue_retry)
        except ImportError as err:  # Optuna's, raised from SQLAlchemy's, which names the module
            missing = getattr(err.__cause__, "name", None) or err.name
            raise ConfigError(f"storage {_shown(url)}: its driver {missing} is not installed (for PostgreSQL: "
                              "pip install 'keeptune[postgres]')") from None
        except (sqlalchemy.exc.IntegrityError, sqlalchemy.exc.ProgrammingError) as err:
            # Workers started together on an empty database race to create Optuna's tables: the losers' CREATE
            # fails, and their next attempt finds the tables made.
            if attempt == 2:
                raise ConfigError(f"storage {_shown(url)}: {str(err).splitlines()[0]}") from None
            time.sleep(1 + attempt)
        except sqlalchemy.exc.SQLAlchemyError as err:
            raise ConfigError(f"storage {_shown(url)}: {str(err).splitlines()[0]}") from None


def with_driver(url: str) -> str:
    """postgresql://... with psycopg (3) named as its driver, the one `keeptune[postgres]` installs: SQLAlchemy
    2.1 picks it for a URL that names none, 2.0 picks psycopg2. Other URLs as they are."""
    scheme, _, rest = url.partition("://")
    return f"postgresql+psycopg://{rest}" if scheme == "postgresql" else url


def _shown(url: str) -> str:
    """The URL with its password hidden."""
    from sqlalchemy.engine import make_url  # optuna's dependency: heavy, optional

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - not a URL SQLAlchemy reads: shown without what follows the scheme
        return url.partition("://")[0] + "://..."


def queue_retry(study, trial) -> None:
    """Queue a dead trial again with its parameters, as its retry (`retry_of`: its number). Optuna's heartbeat
    calls it for each trial it failed as stale; keeptune's recovery (sweep.worker.recover) for each it failed."""
    study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})


def rdb_of(storage):
    """The RDBStorage under a study's storage (Optuna wraps it in a cache: `study._storage._backend`), or None
    for a journal."""
    from optuna.storages import RDBStorage  # optuna: heavy, optional

    backend = getattr(storage, "_backend", storage)
    return backend if isinstance(backend, RDBStorage) else None


@contextlib.contextmanager
def _quiet():
    """Optuna's ExperimentalWarning silenced (heartbeats and some samplers' options are experimental)."""
    import optuna  # heavy, optional

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def make_sampler(sweep: Sweep, offset: int = 0):
    """The configured sampler, seeded with seed + offset: a worker reseeds it with the number of trials before
    each one, so that trial N is drawn with seed + N whichever worker draws it (parallel workers do not repeat
    each other's first draws, and a resumed sweep does not repeat its first trials)."""
    import optuna  # heavy, optional

    sampler = sweep.config.sampler
    classes = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
               "nsga2": optuna.samplers.NSGAIISampler, "gp": optuna.samplers.GPSampler}
    seed = None if sampler.seed is None else sampler.seed + offset
    try:
        with _quiet():
            if sampler.name == "grid":  # trial N runs combination N of one shuffle: the seed alone, no offset
                return optuna.samplers.GridSampler(grid_space(sweep), seed=sampler.seed, **sampler.options)
            return classes[sampler.name](seed=seed, **sampler.options)
    except TypeError as err:
        raise ConfigError(f"{sweep.path}: sampler.options for {sampler.name}: {err}") from None


def _pruner(sweep: Sweep):
    import optuna  # heavy, optional

    pruning = sweep.config.pruning
    if pruning.median and sweep.config.objective == "score":
        return optuna.pruners.MedianPruner(n_startup_trials=pruning.startup_trials,
                                           n_warmup_steps=pruning.warmup_steps)
    return optuna.pruners.NopPruner()


def open_study(sweep: Sweep, url: Optional[str] = None):
    """Create the study, or load it; a study of other settings in the same storage and name is refused."""
    import optuna  # heavy, optional

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    directions = ["maximize"] if sweep.config.objective == "score" else ["maximize", "maximize"]
    storage = open_storage(sweep, url)
    if not (url or sweep.config.storage):  # the sweep folder's own journal: one study, or trials of two interleave
        others = sorted(set(optuna.get_all_study_names(storage)) - {sweep.name})
        if others:
            raise ConfigError(f"{sweep.out}: this folder holds the study {others[0]!r} of another sweep (this one is "
                              f"{sweep.name!r}, named after its file or `name:`); give this sweep another out=")
    study = optuna.create_study(study_name=sweep.name, storage=storage, sampler=make_sampler(sweep),
                                pruner=_pruner(sweep), directions=directions, load_if_exists=True)
    made_of = study.user_attrs.get("fingerprint")
    if made_of is None:
        for values in queued_first(sweep):
            study.enqueue_trial(encoded_params(sweep, values), skip_if_exists=True)
        study.set_user_attr("fingerprint", sweep.fingerprint())
        study.set_user_attr("fingerprint_parts", sweep.fingerprint_parts())
        study.set_user_attr("objective", sweep.config.objective)
    elif made_of != sweep.fingerprint():
        parts = study.user_attrs.get("fingerprint_parts")  # absent in a study made before keeptune stored them
        what = ("another base, overrides, space or objective (a base file's bytes count, comments included)"
                if parts is None else f"other settings (changed: {'; '.join(sweep.changed(parts))})")
        raise ConfigError(f"{sweep.out}: the study {sweep.name!r} there was made with {what}; give this sweep "
                          "another out= (or name=), or restore its settings")
    return study


def queued_first(sweep: Sweep) -> list[dict]:
    """The trials queued when the study is created: `start`; for a grid with a start, every other combination
    after it, in an order the sampler's seed shuffles. Optuna's GridSampler gives a queued trial no grid id, so it
    would visit a started combination again; a grid whose every trial is queued runs each once, `start` first."""
    start = [dict(values) for values in sweep.config.start]
    if sweep.config.sampler.name != "grid" or not start:
        return start
    keys = [p.key for p in sweep.params]
    rest = [dict(zip(keys, values)) for values in itertools.product(*(p.choices for p in sweep.params))]
    rest = [values for values in rest if values not in start]
    random.Random(sweep.config.sampler.seed).shuffle(rest)
    return start + rest


def retried_as(trials) -> dict[int, int]:
    """Trial number -> the number of its retry (a killed or interrupted trial queued again, or a stale one of an
    RDB)."""
    again = {}
    for t in trials:
        origin = t.user_attrs.get("retry_of", t.system_attrs.get("failed_trial"))
        if origin is not None:
            again[origin] = t.number
    return again


# --- one trial --------------------------------------------------------------------------------

def suggest(trial, params: list[Param]) -> dict[str, Any]:
    """The trial's values of the active fields (conditional ones only when their `when` holds)."""
    values: dict[str, Any] = {}
    for p in params:
        if active(p, values):
            values[p.key] = _suggest_one(trial, p)
    return values


def _suggest_one(trial, p: Param) -> Any:
    if p.kind == "log_uniform":
        return trial.suggest_float(p.key, p.low, p.high, log=True)
    if p.kind == "uniform":
        return trial.suggest_float(p.key, p.low, p.high)
    if p.kind == "int":
        return trial.suggest_int(p.key, p.low, p.high, step=p.step)
    if p.encoded:
        return json.loads(trial.suggest_categorical(p.key, [encode(c) for c in p.choices]))
    return trial.suggest_categorical(p.key, list(p.choices))


def gate_fractions(results: dict) -> dict[str, float]:
    """Each retention task's gate fraction, from a run's results.json."""
    return {t["name"]: t["gate"]["fraction"] for t in results["tasks"] if t["role"] == "retention"}


def trial_outcome(results: dict, objective: str) -> dict:
    """What a finished run gives the study: values, the gate constraint and the numbers of its table row."""
    entries, best = results["checkpoints"], results["best"]
    fractions = gate_fractions(results)
    if best is not None:
        chosen, constraint = best, 0.0
    elif entries:  # infeasible: the checkpoint closest to the gate
        chosen = min(entries, key=lambda e: (rules.gate_distance(e, fractions), -e["accuracy"]))
        constraint = rules.gate_distance(chosen, fractions)
    else:
        chosen, constraint = None, 1.0
    accuracy = chosen["accuracy"] if chosen else 0.0
    retention = rules.lowest_retention(chosen["retention"]) if chosen else 0.0
    values = [rules.score(accuracy, results["params"]["ratio"])] if objective == "score" else [accuracy, retention]
    return {"values": values, "constraint": constraint, "feasible": best is not None,
            "score": best["score"] if best else None, "accuracy": accuracy, "retention": retention,
            "step": chosen["step"] if chosen else None, "wall_seconds": results.get("wall_seconds")}


class Pruning:
    """The tracker's hook for one trial: reports tracked accuracy to Optuna and asks to stop when the tracked
    subset fails the gate or the median rule prunes."""

    def __init__(self, sweep: Sweep, trial, new_task: str, accuracy: str):
        self.config, self.trial, self.new_task, self.accuracy = sweep.config, trial, new_task, accuracy
        self.pruned: Optional[dict] = None

    def __call__(self, step: int, track: dict) -> Optional[str]:
        pruning = self.config.pruning
        accuracy = track["tasks"][self.new_task]["scores"][self.accuracy]
        median = pruning.median and self.config.objective == "score"
        if median:
            self.trial.report(accuracy, step)
        if step < pruning.warmup_steps:
            return None
        reason = None
        if pruning.gate and not track["passes_gate"]:
            reason = _below_gate(track)
        elif median and self.trial.should_prune():
            reason = f"tracked accuracy {accuracy:.3f} below the median of the other trials at step {step}"
        if reason:
            self.pruned = {"step": step, "reason": reason}
        return reason


def _below_gate(track: dict) -> str:
    failed, lowest = rules.shortfall(track)
    return (f"tracked retention of {', '.join(failed)} below the gate"
            + (f" ({lowest:.3f} of the baseline)" if lowest is not None else ""))
