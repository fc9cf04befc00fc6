"""`keeptune sweep`: the best recipe under the retention gate, found by search.

A sweep file names a base experiment, fixed overrides and a search space over
any experiment field (the `key=value` names of `keeptune run`). Optuna samples
the space (TPE by default, seeded); every trial is an ordinary `keeptune run`
directory, SWEEP/trials/trial-HASH, named by a hash of the trial's parameters,
so its cache, report and resume work as for `keeptune run`.
A new trial's directory starts with a copy of the baseline evaluations an earlier trial finished
(share_baseline); the engine's resume check uses each only where its samples and settings match.

The objective is the score of the trial's best checkpoint that passes the gate.
A trial with no passing checkpoint is *infeasible*: it gets Optuna's constraint
`gate` > 0 (how far its closest checkpoint fell below the gate, as a fraction of
the baseline), so the sampler learns where the gate fails instead of reading a
misleading zero. `objective: pareto` searches the new task's accuracy against
retention (the lowest gated scalar / baseline) and reports the Pareto front.

Pruning: the in-training tracker shows each tracked record to the trial; a trial
whose tracked subset fails the gate, or whose tracked accuracy lags the median
of the other trials at the same step, stops training and is recorded as pruned,
with the step and the reason.

The study lives in SWEEP/study.journal (Optuna's JournalStorage: an append-only
file, safe for several processes on one machine and against kill -9) or in an
RDB given by `--storage URL` (many machines). Re-running the same command
resumes: a trial whose worker died is failed, marked `killed`, and its
parameters are queued again; the retry finds its run directory and resumes
training from its last checkpoint. `--workers N` starts N worker processes on
this machine that share the study (one per GPU when there are GPUs).

The report (SWEEP/sweep.md, sweep.html, plots/, best.yaml: keeptune.report.sweep) is rewritten after every
trial and at the end; re-running the command on a finished study only rebuilds it.

Optuna is imported lazily: the rest of keeptune works without it.
"""
from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from keeptune.core import gate as rules
from keeptune.core.config import build, read_yaml, set_word
from keeptune.core.errors import ConfigError
from keeptune.experiment.config import ExperimentConfig
from keeptune.train.config import load_config

KINDS = ("log_uniform", "uniform", "int", "categorical")
SAMPLERS = ("tpe", "random", "nsga2", "gp")
# Experiment fields a sweep sets itself, per trial.
RESERVED = ("name", "out", "overwrite")


@dataclass(frozen=True)
class SamplerConfig:
    """Optuna's sampler."""

    name: Literal["tpe", "random", "nsga2", "gp"] = "tpe"
    """tpe (TPESampler, constraint-aware), random, nsga2 (NSGAIISampler) or gp (GPSampler, needs scipy)."""
    seed: Optional[int] = 0
    """The sampler's seed; null: unseeded."""
    options: dict = field(default_factory=dict)
    """More keyword arguments of the sampler's class, e.g. {n_startup_trials: 5} for tpe."""


@dataclass(frozen=True)
class PruningConfig:
    """Stopping trials early from the in-training tracker (needs tracking.every > 0)."""

    gate: bool = True
    """Prune a trial as soon as its tracked subset falls below the gate."""
    median: bool = True
    """Prune a trial whose tracked accuracy is below the median of the earlier trials at the same step
    (Optuna's MedianPruner; single objective only)."""
    warmup_steps: int = 0
    """No pruning before this training step."""
    startup_trials: int = 2
    """The median rule waits until this many trials have finished."""


@dataclass(frozen=True)
class SweepConfig:
    """A search over experiment settings under the retention gate."""

    name: Optional[str] = None
    """The study's name (in the storage); null: the sweep file's name without .yaml."""
    base: Optional[str] = None
    """The base experiment config (a `keeptune run` YAML, relative to the sweep file); null: the defaults."""
    overrides: dict = field(default_factory=dict)
    """Fixed experiment settings of every trial: {field: value} or a list of `field=value` words."""
    space: dict = field(default_factory=dict)
    """The search space: experiment field -> {type: log_uniform|uniform, low, high}, {type: int, low, high, step},
    or {type: categorical, choices: [...]}; `when: {field: value}` makes a field conditional on another's choice."""
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    """Optuna's sampler and its seed."""
    objective: Literal["score", "pareto"] = "score"
    """score: maximise the best passing checkpoint's score; pareto: new-task accuracy against retention."""
    trials: int = 20
    """Trials in all (a killed trial's retry does not count twice); re-run with more to extend a sweep."""
    pruning: PruningConfig = field(default_factory=PruningConfig)
    """Early stopping from the tracker."""
    storage: Optional[str] = None
    """Optuna storage: null: SWEEP/study.journal; a file path: a journal file; an RDB URL
    (postgresql://..., mysql://..., sqlite:///...) for workers on many machines."""
    out: Optional[str] = None
    """The sweep directory; null: runs/sweeps/NAME."""
    start: list = field(default_factory=list)
    """Trials queued first, each a mapping {field: value} over the space's fields (e.g. the hand-tuned default,
    so that the sweep measures it under the same budget); queued once, when the study is created."""


@dataclass(frozen=True)
class Param:
    """One searched field."""

    key: str
    kind: str
    low: Any = None
    high: Any = None
    step: int = 1
    choices: tuple = ()
    when: dict = field(default_factory=dict)
    where: str = ""

    @property
    def encoded(self) -> bool:
        """Categorical choices that Optuna cannot store (lists, mappings) travel as JSON text."""
        return self.kind == "categorical" and not all(c is None or isinstance(c, (bool, int, float, str))
                                                      for c in self.choices)

    def first(self) -> Any:
        return self.choices[0] if self.kind == "categorical" else self.low

    def last(self) -> Any:
        return self.choices[-1] if self.kind == "categorical" else self.high


@dataclass
class Sweep:
    """A validated sweep: its settings, the experiment words every trial shares and the space."""

    config: SweepConfig
    path: Path
    name: str
    base: Optional[Path]
    overrides: list[str]
    params: list[Param]
    out: Path

    def fingerprint(self) -> str:
        """What a study is of: the same directory refuses another base, overrides, space or objective."""
        text = json.dumps({"base": _digest(self.base), "overrides": self.overrides, "objective": self.config.objective,
                           "space": [dataclasses.asdict(p) | {"where": None} for p in self.params]},
                          sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


def _digest(path: Optional[Path]) -> Optional[str]:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path else None


# --- reading and validating -------------------------------------------------------------

def load_sweep(path: Path | str, words: list[str] = ()) -> Sweep:
    """Read a sweep file and `key=value` words, and check every field before any trial starts: each searched
    field is built into an experiment config at its lowest/first and highest/last value, the whole space at its
    lowest and its highest, and the lowest trial's experiment is planned (tasks, gates, LoRA targets).
    Errors name FILE:LINE and the field."""
    path = Path(path)
    tree, where = read_yaml(path)
    sweep_fields = {f.name for f in dataclasses.fields(SweepConfig)}
    extra: list[str] = []
    for word in words:
        key, sep, text = word.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"word {word!r} is not key=value (e.g. trials=10 or train.max_steps=50)")
        key = key.strip()
        head = key.split(".")[0]
        if head == "space":
            raise ConfigError(f"word {word!r}: change the search space in the sweep file")
        if head == "overrides" or head not in sweep_fields:  # an experiment field: fixed for every trial
            extra.append(f"{key.removeprefix('overrides.')}={text}")
            continue
        set_word(tree, where, key, text, f"word {word!r}")
    space, overrides = tree.pop("space", None), tree.pop("overrides", None)
    config = build(SweepConfig, tree, where, "", str(path))
    if config.trials < 1:
        raise ConfigError(f"{where.get('trials', path)}: field 'trials' is {config.trials}; it must be at least 1")
    if config.pruning.warmup_steps < 0 or config.pruning.startup_trials < 0:
        raise ConfigError(f"{where.get('pruning', path)}: pruning.warmup_steps and startup_trials must be >= 0")
    base = None
    if config.base is not None:
        base = Path(config.base).expanduser()
        if not base.is_absolute() and not str(where.get("base", "")).startswith("word"):
            base = path.parent / base
        if not base.is_file():
            raise ConfigError(f"{where.get('base', path)}: field 'base': {base} is not a file")
    words_fixed = _override_words(overrides, where, path) + extra
    params = _parse_space(space, where, path)
    name = config.name or path.name.removesuffix(".yaml").removesuffix(".yml")
    out = Path(config.out) if config.out else Path("runs") / "sweeps" / name
    sweep = Sweep(config, path, name, base, words_fixed, params, out)
    _check_start(sweep, where)
    _check_against_experiment(sweep, where)
    return sweep


def _check_start(sweep: Sweep, where: dict) -> None:
    by_key = {p.key: p for p in sweep.params}
    for i, values in enumerate(sweep.config.start):
        at = where.get(f"start[{i}]", where.get("start", str(sweep.path)))
        if not isinstance(values, dict):
            raise ConfigError(f"{at}: start[{i}] is a mapping {{field: value}}, not {values!r}")
        for key, value in values.items():
            p = by_key.get(key)
            if p is None:
                raise ConfigError(f"{at}: start[{i}]: {key!r} is not a field of the space ({', '.join(by_key)})")
            inside = value in p.choices if p.kind == "categorical" else (
                isinstance(value, (int, float)) and p.low <= value <= p.high)
            if not inside:
                raise ConfigError(f"{at}: start[{i}]: {key}={value!r} is outside the space")
        try:
            trial_config(sweep, values)
        except ConfigError as err:
            raise ConfigError(f"{at}: start[{i}]: {err}") from None


def _start_params(sweep: Sweep, values: dict) -> dict:
    """A `start` mapping as Optuna's parameters (JSON text for list and mapping choices)."""
    encoded = {p.key for p in sweep.params if p.encoded}
    return {k: _encode(v) if k in encoded else v for k, v in values.items()}


def _override_words(overrides: Any, where: dict, path: Path) -> list[str]:
    if overrides is None:
        return []
    if isinstance(overrides, dict):
        items = [(k, v) for k, v in overrides.items()]
        words = [f"{k}={_yaml_value(v)}" for k, v in items]
    elif isinstance(overrides, list) and all(isinstance(w, str) and "=" in w for w in overrides):
        words = list(overrides)
    else:
        raise ConfigError(f"{where.get('overrides', path)}: field 'overrides' is a mapping {{field: value}} or a "
                          f"list of field=value words, not {overrides!r}")
    for word in words:
        key = word.partition("=")[0].strip()
        if key.split(".")[0] in RESERVED:
            raise ConfigError(f"{where.get('overrides.' + key, where.get('overrides', path))}: field {key!r}: the "
                              "sweep sets it for every trial (its run directory is SWEEP/trials/trial-HASH)")
    return words


def _yaml_value(value: Any) -> str:
    """A value as the text of a `key=value` word (JSON is YAML)."""
    return json.dumps(value, ensure_ascii=False)


def _parse_space(space: Any, where: dict, path: Path) -> list[Param]:
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{where.get('space', path)}: field 'space' must map one or more experiment fields "
                          "(e.g. train.lr) to a distribution")
    params = []
    for key, spec in space.items():
        at = where.get(f"space.{key}", str(path))
        what = f"{at}: space field {key!r}"
        if str(key).split(".")[0] in RESERVED:
            raise ConfigError(f"{what}: the sweep sets it for every trial")
        if not isinstance(spec, dict) or "type" not in spec:
            raise ConfigError(f"{what}: give a mapping with a `type` ({', '.join(KINDS)})")
        unknown = set(spec) - {"type", "low", "high", "step", "choices", "when"}
        if unknown:
            raise ConfigError(f"{what}: unknown keys {sorted(unknown)}; a distribution has type, low, high, step, "
                              "choices, when")
        kind = spec["type"]
        if kind not in KINDS:
            raise ConfigError(f"{what}: type {kind!r}; choose one of {', '.join(KINDS)}")
        when = spec.get("when") or {}
        if not isinstance(when, dict):
            raise ConfigError(f"{what}: `when` is a mapping {{field: value}}, not {when!r}")
        if kind == "categorical":
            choices = spec.get("choices")
            if not isinstance(choices, list) or not choices:
                raise ConfigError(f"{what}: a categorical needs `choices: [...]` (one or more values)")
            if set(spec) & {"low", "high", "step"}:
                raise ConfigError(f"{what}: a categorical has `choices`, not low/high/step")
            params.append(Param(str(key), kind, choices=tuple(choices), when=when, where=at))
            continue
        if "choices" in spec:
            raise ConfigError(f"{what}: `choices` belongs to type categorical")
        low, high = spec.get("low"), spec.get("high")
        number = int if kind == "int" else (int, float)
        if not isinstance(low, number) or not isinstance(high, number) or isinstance(low, bool) \
                or isinstance(high, bool):
            raise ConfigError(f"{what}: type {kind} needs numbers low and high"
                              + (" (integers)" if kind == "int" else "") + f", got low={low!r} high={high!r}")
        if not low < high if kind != "int" else not low <= high:
            raise ConfigError(f"{what}: low ({low}) must be below high ({high})")
        if kind == "log_uniform" and low <= 0:
            raise ConfigError(f"{what}: a log_uniform needs low > 0, got {low}")
        step = spec.get("step", 1)
        if kind != "int" and "step" in spec:
            raise ConfigError(f"{what}: `step` belongs to type int")
        if not isinstance(step, int) or isinstance(step, bool) or step < 1:
            raise ConfigError(f"{what}: step must be an integer >= 1, got {step!r}")
        params.append(Param(str(key), kind, float(low) if kind != "int" else low,
                            float(high) if kind != "int" else high, step, when=when, where=at))
    by_key = {p.key: p for p in params}
    for p in params:
        for other, value in p.when.items():
            what = f"{p.where}: space field {p.key!r}: when {other}"
            if other not in by_key or by_key[other].kind != "categorical":
                raise ConfigError(f"{what}: `when` names a categorical field of the space "
                                  f"({', '.join(k for k, q in by_key.items() if q.kind == 'categorical') or 'none'})")
            if value not in by_key[other].choices:
                raise ConfigError(f"{what}={value!r}: not one of its choices {list(by_key[other].choices)}")
    return _ordered(params)


def _ordered(params: list[Param]) -> list[Param]:
    """The space with every field after the fields its `when` names; a cycle is an error."""
    done: list[Param] = []
    pending = list(params)
    while pending:
        ready = [p for p in pending if all(k in {d.key for d in done} for k in p.when)]
        if not ready:
            raise ConfigError(f"{pending[0].where}: space field {pending[0].key!r}: its `when` conditions form a "
                              "cycle")
        done += ready
        pending = [p for p in pending if p not in ready]
    return done


def trial_words(sweep: Sweep, values: dict[str, Any]) -> list[str]:
    return [*sweep.overrides, *(f"{k}={_yaml_value(v)}" for k, v in values.items())]


def trial_name(values: dict[str, Any]) -> str:
    """trial-HASH: the same parameters, the same run directory (a retried trial finds its checkpoints)."""
    return "trial-" + hashlib.sha256(json.dumps(values, sort_keys=True, default=str).encode()).hexdigest()[:10]


def trial_config(sweep: Sweep, values: dict[str, Any]) -> ExperimentConfig:
    name = trial_name(values)
    return load_config(sweep.base, [*trial_words(sweep, values), f"name={name}",
                                    f"out={sweep.out / 'trials' / name}"], root=ExperimentConfig)


def _check_against_experiment(sweep: Sweep, where: dict) -> None:
    from keeptune.experiment.runner import plan_experiment

    for i, word in enumerate(sweep.overrides):  # each fixed override alone, then together
        key = word.partition("=")[0].strip()
        at = where.get(f"overrides.{key}") or where.get(f"overrides[{i}]") or f"word {word!r}"
        try:
            load_config(sweep.base, [word], root=ExperimentConfig)
        except ConfigError as err:
            raise ConfigError(f"{at}: overrides field {key!r}: {err}") from None
    try:
        load_config(sweep.base, sweep.overrides, root=ExperimentConfig)
    except ConfigError as err:
        raise ConfigError(f"{where.get('overrides', sweep.path)}: overrides: {err}") from None
    fixed = {w.partition("=")[0].strip() for w in sweep.overrides}
    for p in sweep.params:
        if p.key in fixed:
            raise ConfigError(f"{p.where}: space field {p.key!r} is also fixed in overrides; keep one")
        values = list(p.choices) if p.kind == "categorical" else [p.low, p.high]
        for value in values:
            try:
                trial_config(sweep, {p.key: value})
            except ConfigError as err:
                raise ConfigError(f"{p.where}: space field {p.key!r} = {value!r}: {err}") from None
    for pick, label in ((Param.first, "lowest/first"), (Param.last, "highest/last")):
        values = _resolve(sweep.params, pick)
        try:
            config = trial_config(sweep, values)
            if pick is Param.first:
                plan_experiment(config)  # task specs, gates, LoRA targets: checked, nothing loaded
        except ConfigError as err:
            raise ConfigError(f"{sweep.path}: the space at its {label} values ({params_text(values)}): {err}") \
                from None


def _resolve(params: list[Param], choose) -> dict[str, Any]:
    """Values of the active fields (those whose `when` holds), in dependency order; `choose(param)` picks."""
    values: dict[str, Any] = {}
    for p in params:
        if all(values.get(k, _MISSING) == v for k, v in p.when.items()):
            values[p.key] = choose(p)
    return values


_MISSING = object()


# --- Optuna: storage, study, suggestions ---------------------------------------------------

def open_storage(sweep: Sweep, url: Optional[str]):
    """The study's storage: a journal file (default SWEEP/study.journal) or an RDB URL with heartbeats, whose
    stale trials (a dead worker on another machine) are queued again with the same parameters."""
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    url = url or sweep.config.storage
    if url and "://" in url:
        from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

        with _quiet():
            return RDBStorage(url, heartbeat_interval=60, grace_period=180,
                              heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback())
    journal = Path(url) if url else sweep.out / "study.journal"
    journal.parent.mkdir(parents=True, exist_ok=True)
    return JournalStorage(JournalFileBackend(str(journal)))


@contextlib.contextmanager
def _quiet():
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        yield


def make_sampler(sweep: Sweep, offset: int = 0):
    """The configured sampler, seeded with seed + offset: a worker reseeds it with the number of trials before
    each one, so that trial N is drawn with seed + N whichever worker draws it (parallel workers do not repeat
    each other's first draws, and a resumed sweep does not repeat its first trials)."""
    import optuna

    sampler = sweep.config.sampler
    classes = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler,
               "nsga2": optuna.samplers.NSGAIISampler, "gp": optuna.samplers.GPSampler}
    try:
        with _quiet():
            return classes[sampler.name](seed=None if sampler.seed is None else sampler.seed + offset,
                                         **sampler.options)
    except TypeError as err:
        raise ConfigError(f"{sweep.path}: sampler.options for {sampler.name}: {err}") from None


def open_study(sweep: Sweep, url: Optional[str] = None):
    """Create the study, or load it; a study of other settings in the same storage and name is refused."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    pruning = sweep.config.pruning
    pruner = (optuna.pruners.MedianPruner(n_startup_trials=pruning.startup_trials,
                                          n_warmup_steps=pruning.warmup_steps)
              if pruning.median and sweep.config.objective == "score" else optuna.pruners.NopPruner())
    directions = ["maximize"] if sweep.config.objective == "score" else ["maximize", "maximize"]
    study = optuna.create_study(study_name=sweep.name, storage=open_storage(sweep, url), sampler=make_sampler(sweep),
                                pruner=pruner, directions=directions, load_if_exists=True)
    print_ = study.user_attrs.get("fingerprint")
    if print_ is None:
        for values in sweep.config.start:
            study.enqueue_trial(_start_params(sweep, values), skip_if_exists=True)
        study.set_user_attr("fingerprint", sweep.fingerprint())
        study.set_user_attr("objective", sweep.config.objective)
    elif print_ != sweep.fingerprint():
        raise ConfigError(f"{sweep.out}: the study {sweep.name!r} there was made with another base, overrides, "
                          "space or objective; give this sweep another out= (or name=), or restore its settings")
    return study


def suggest(trial, params: list[Param]) -> dict[str, Any]:
    """The trial's values of the active fields (conditional ones only when their `when` holds)."""
    values: dict[str, Any] = {}
    for p in params:
        if not all(values.get(k, _MISSING) == v for k, v in p.when.items()):
            continue
        if p.kind == "log_uniform":
            values[p.key] = trial.suggest_float(p.key, p.low, p.high, log=True)
        elif p.kind == "uniform":
            values[p.key] = trial.suggest_float(p.key, p.low, p.high)
        elif p.kind == "int":
            values[p.key] = trial.suggest_int(p.key, p.low, p.high, step=p.step)
        elif p.encoded:
            values[p.key] = json.loads(trial.suggest_categorical(p.key, [_encode(c) for c in p.choices]))
        else:
            values[p.key] = trial.suggest_categorical(p.key, list(p.choices))
    return values


def _encode(choice: Any) -> str:
    return json.dumps(choice, sort_keys=True, ensure_ascii=False)


# --- one trial ------------------------------------------------------------------------------

def violation(entry: dict, results: dict) -> float:
    """How far a checkpoint is below the gate: the largest (fraction - scalar / baseline) over the gated scalars,
    0 when it passes (Optuna's constraint: <= 0 is feasible)."""
    if entry["passes_gate"]:
        return 0.0
    fractions = {t["name"]: t["gate"]["fraction"] for t in results["tasks"] if t["role"] == "retention"}
    gaps = [fractions[task] - r for task, ratios in entry["retention"].items() for r in ratios.values()
            if r is not None]
    return max([g for g in gaps if g > 0] or [1e-9])


def trial_outcome(results: dict, objective: str) -> dict:
    """What a finished run gives the study: values, the gate constraint and the numbers of its table row."""
    entries, best = results["checkpoints"], results["best"]
    ratio = results["params"]["ratio"]
    if best is not None:
        chosen, constraint = best, 0.0
    elif entries:  # infeasible: the checkpoint closest to the gate
        chosen = min(entries, key=lambda e: (violation(e, results), -e["accuracy"]))
        constraint = violation(chosen, results)
    else:
        chosen, constraint = None, 1.0
    accuracy = chosen["accuracy"] if chosen else 0.0
    retention = rules.lowest_retention(chosen["retention"]) if chosen else 0.0
    values = [rules.score(accuracy, ratio)] if objective == "score" else [accuracy, retention]
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
            failed = [task for task, passed in track["gate"].items() if not passed]
            lowest = min((r for task in failed for r in track["retention"][task].values() if r is not None),
                         default=None)
            reason = (f"tracked retention of {', '.join(failed)} below the gate"
                      + (f" ({lowest:.3f} of the baseline)" if lowest is not None else ""))
        elif median and self.trial.should_prune():
            reason = f"tracked accuracy {accuracy:.3f} below the median of the other trials at step {step}"
        if reason:
            self.pruned = {"step": step, "reason": reason}
        return reason


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


def retried_numbers(trials) -> set[int]:
    """Trials that were queued again (killed, interrupted, or stale in an RDB)."""
    retried = set()
    for t in trials:
        origin = t.user_attrs.get("retry_of", t.system_attrs.get("failed_trial"))
        if origin is not None:
            retried.add(origin)
    return retried


def recover(study, sweep: Sweep) -> None:
    """Fail the RUNNING trials whose worker on this machine died (kill -9) and queue every killed or
    interrupted trial again with its parameters: the retry resumes its run directory."""
    from optuna.trial import TrialState

    host = socket.gethostname()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        worker = t.user_attrs.get("worker", "")
        journal = not isinstance(study._storage, _rdb_class())
        if (journal or worker.startswith(host + ":")) and _trial_lock(sweep, t.number, take=False):
            study._storage.set_trial_user_attr(t._trial_id, "interrupted", "killed")
            study.tell(t.number, state=TrialState.FAIL, skip_if_finished=True)
            print(f"trial {t.number}: its worker died; it is queued again")
    trials = study.get_trials(deepcopy=False)
    retried = retried_numbers(trials)
    for t in trials:
        if t.state == TrialState.FAIL and t.user_attrs.get("interrupted") and t.number not in retried:
            study.enqueue_trial(t.params, user_attrs={"retry_of": t.number})


def _rdb_class():
    from optuna.storages import RDBStorage

    return RDBStorage


def share_baseline(run: Path, sweep: Sweep) -> list[str]:
    """Start a new trial's run directory with the base model's evaluations of an earlier trial; returns the tasks.

    Every trial evaluates the same base model on the same tasks before it trains (a minute of a demo trial's
    six), so a trial whose directory does not exist yet gets a copy of each finished baseline folder
    (RUN/baseline/TASK with its metrics.json) of a sibling trial. The evaluation engine's resume check decides
    whether the copy is used: one made for other samples (their sha256), another model name or other generation
    settings is evaluated again, as after any change of settings. Nothing is shared when the space searches a
    `model.` field: the engine knows the model by its name, not its dtype or device."""
    if run.exists() or any(p.key.startswith("model.") for p in sweep.params):
        return []
    found: dict[str, Path] = {}
    for metrics in sorted(run.parent.glob("*/baseline/*/metrics.json")):
        found.setdefault(metrics.parent.name, metrics.parent)
    if not found:
        return []
    staging = run.parent / f".{run.name}.tmp"  # built aside, renamed into place: a kill leaves no half copy
    shutil.rmtree(staging, ignore_errors=True)
    for task, folder in found.items():
        (staging / "baseline" / task).mkdir(parents=True)
        for name in ("eval.json", "predictions.jsonl"):
            shutil.copyfile(folder / name, staging / "baseline" / task / name)
    os.replace(staging, run)
    print(f"baseline of {', '.join(found)}: the base model's predictions of "
          f"{', '.join(sorted({f.parent.parent.name for f in found.values()}))}, checked as on resume")
    return list(found)


def work(sweep: Sweep, storage: Optional[str] = None) -> None:
    """One worker: run trials of the shared study until the budget is spent."""
    import optuna
    from optuna.trial import TrialState

    from keeptune.experiment.runner import plan_experiment, run_dir, run_experiment
    from keeptune.report import build_report

    study = open_study(sweep, storage)
    worker = f"{socket.gethostname()}:{os.getpid()}"
    lock = AskLock(sweep.out)
    plan = plan_experiment(trial_config(sweep, _resolve(sweep.params, Param.first)))
    new_task, accuracy_key = plan.new.spec.name, plan.accuracy
    held: list = []

    def objective(trial):
        handle = _trial_lock(sweep, trial.number, take=True)
        held.append(handle)
        trial.set_user_attr("worker", worker)
        values = suggest(trial, sweep.params)
        lock.release()
        config = trial_config(sweep, values)
        trial.set_user_attr("run_dir", str(run_dir(config)))
        command = shlex.join(["keeptune", "run", *([str(sweep.base)] if sweep.base else []),
                              *trial_words(sweep, values), f"name={config.name}", f"out={config.out}"])
        print(f"== sweep {sweep.name}: trial {trial.number} ({worker}): {params_text(values)} -> {config.out}")
        hook = Pruning(sweep, trial, new_task, accuracy_key)
        try:
            with _run_lock(sweep, config.name):  # a trial of the same parameters elsewhere: wait, then reuse it
                share_baseline(run_dir(config), sweep)
                results = run_experiment(config, command, on_track=hook)
                build_report(run_dir(config))
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", "interrupted")
            raise
        except Exception as err:
            trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:500])
            raise
        outcome = trial_outcome(results, sweep.config.objective)
        for key in ("score", "accuracy", "retention", "step", "wall_seconds", "feasible"):
            trial.set_user_attr(key, outcome[key])
        trial.set_constraint("gate", outcome["constraint"])
        if hook.pruned:
            trial.set_user_attr("pruned_step", hook.pruned["step"])
            trial.set_user_attr("pruned_reason", hook.pruned["reason"])
            raise optuna.TrialPruned(f"step {hook.pruned['step']}: {hook.pruned['reason']}")
        return outcome["values"][0] if len(outcome["values"]) == 1 else outcome["values"]

    while True:
        lock.acquire()
        try:
            recover(study, sweep)
            trials = study.get_trials(deepcopy=False)
            retried = retried_numbers(trials)
            waiting = any(t.state == TrialState.WAITING for t in trials)
            counted = sum(1 for t in trials if t.number not in retried)
            if not waiting and counted >= sweep.config.trials:
                return
            study.sampler = make_sampler(sweep, len(trials))
            study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=True)
            lock.release()
            report(study, sweep)  # after every trial: the report shows the sweep so far
        finally:
            lock.release()
            while held:
                handle = held.pop()
                if handle:
                    handle.close()


def report(study, sweep: Sweep, wall_seconds: Optional[float] = None, strict: bool = False) -> str:
    """Rewrite SWEEP/sweep.md, sweep.html, plots/ and best.yaml (keeptune.report.sweep); returns sweep.md's text.
    A worker's rewrite after a trial only warns when it fails (`strict`: the final one raises)."""
    from keeptune.report.sweep import write_sweep_report

    try:
        return write_sweep_report(study, sweep, wall_seconds)
    except Exception as err:  # noqa: BLE001 - a worker goes on with the next trial; the final report raises
        if strict:
            raise
        print(f"keeptune sweep: the report could not be written: {type(err).__name__}: {err}", file=sys.stderr)
        return ""


def params_text(values: dict) -> str:
    """`field=value, ...` (values as JSON)."""
    return ", ".join(f"{k}={_yaml_value(v)}" for k, v in values.items())


# --- the table's helpers (the report itself: keeptune.report.sweep) ----------------------------------

def decoded(params: dict, sweep: Sweep) -> dict:
    """Optuna's stored parameters with list and mapping choices decoded from their JSON text."""
    encoded = {p.key for p in sweep.params if p.encoded}
    return {k: json.loads(v) if k in encoded else v for k, v in params.items()}


# --- the command ----------------------------------------------------------------------------


__all__ = ["SweepConfig", "load_sweep", "sweep", "main"]
