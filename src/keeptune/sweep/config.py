"""A sweep file: its schema, its checks and the trials it describes.

A sweep file names a base experiment, fixed overrides and a search space over any experiment field (the
`key=value` names of `keeptune run`); docs/sweep.md describes every field. `load_sweep` reads and checks it
before any trial starts. A trial is a set of values of the space's active fields: `trial_words` are its
`keeptune run` words, `trial_name` its run directory's name (SWEEP/trials/trial-HASH, a hash of the values, so
that a retried trial finds its checkpoints) and `trial_config` its experiment config.

About 400 lines, one thing: a third of them are the fields' docstrings, which are `keeptune sweep --help`.
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional

from keeptune.core.config import build, read_yaml, set_word, split_override
from keeptune.core.errors import ConfigError
from keeptune.core.resume import file_digest, sha256_bytes
from keeptune.experiment.config import ExperimentConfig
from keeptune.experiment.plan import plan_experiment
from keeptune.train.config import load_config

KINDS = ("log_uniform", "uniform", "int", "categorical")
# Experiment fields a sweep sets itself, per trial.
RESERVED = ("name", "out", "overwrite")
SPEC_KEYS = {"type", "low", "high", "step", "choices", "when"}


@dataclass(frozen=True)
class SamplerConfig:
    """Optuna's sampler."""

    name: Literal["tpe", "random", "nsga2", "gp", "grid"] = "tpe"
    """tpe (TPESampler, constraint-aware), random, nsga2 (NSGAIISampler), gp (GPSampler, needs scipy) or grid
    (GridSampler: every combination of the space's categorical choices once, `start`'s first and the others in an
    order the seed shuffles; a benchmark rather than a search, `trials` at most the number of combinations)."""
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
        """What a study is of: the same directory refuses another base, overrides, space or objective.
        (The formula is the one studies were created with; changing it would refuse every existing study.)"""
        return sha256_bytes(json.dumps(self._identity(), sort_keys=True, default=str).encode())[:16]

    def fingerprint_parts(self) -> dict[str, str]:
        """Each part of the fingerprint apart, so that a refusal can name the part that changed."""
        return {part: sha256_bytes(json.dumps(value, sort_keys=True, default=str).encode())[:16]
                for part, value in self._identity().items()}

    def _identity(self) -> dict:
        return {"base": file_digest(self.base), "overrides": self.overrides, "objective": self.config.objective,
                "space": [dataclasses.asdict(p) | {"where": None} for p in self.params]}

    def changed(self, parts: dict[str, str]) -> list[str]:
        """The parts of this sweep that differ from a study's stored `fingerprint_parts`, in words."""
        words = {"base": f"the base experiment {self.base} (its bytes: an edited comment counts)",
                 "overrides": "the overrides (the sweep file's and the command line's)", "objective": "the objective",
                 "space": "the space"}
        return [words[part] for part, digest in self.fingerprint_parts().items() if parts.get(part) != digest]


# --- reading and validating -------------------------------------------------------------

def load_sweep(path: Path | str, words: list[str] = ()) -> Sweep:
    """Read a sweep file and `key=value` words, and check every field before any trial starts: each searched
    field is built into an experiment config at its lowest/first and highest/last value, the whole space at its
    lowest and its highest, and the lowest trial's experiment is planned (tasks, gates, LoRA targets).
    Errors name FILE:LINE and the field."""
    path = Path(path)
    tree, where = read_yaml(path)
    extra = _apply_words(tree, where, words)
    space, overrides = tree.pop("space", None), tree.pop("overrides", None)
    config = build(SweepConfig, tree, where, "", str(path))
    _check_counts(config, where, path)
    base = _base_path(config, where, path)
    fixed = _override_words(overrides, where, path) + extra
    params = _parse_space(space, where, path)
    name = config.name or path.name.removesuffix(".yaml").removesuffix(".yml")
    out = Path(config.out) if config.out else Path("runs") / "sweeps" / name
    sweep = Sweep(config, path, name, base, fixed, params, out)
    _check_start(sweep, where)
    _check_grid(sweep, where)
    _check_overrides(sweep, where)  # then each searched value and the space at both ends, built as experiments
    _check_each_value(sweep)
    _check_space_ends(sweep)
    return sweep


def _apply_words(tree: dict, where: dict, words: list[str]) -> list[str]:
    """Put the sweep fields of the command line's words into `tree`; returns the others, experiment fields
    fixed for every trial, as `field=value` words."""
    sweep_fields = {f.name for f in dataclasses.fields(SweepConfig)}
    extra: list[str] = []
    for word in words:
        try:
            key, text = split_override(word)
        except ConfigError:
            raise ConfigError(f"word {word!r} is not key=value (e.g. trials=10 or train.max_steps=50)") from None
        head = key.split(".")[0]
        if head == "space":
            raise ConfigError(f"word {word!r}: change the search space in the sweep file")
        if head == "overrides" or head not in sweep_fields:  # an experiment field: fixed for every trial
            extra.append(f"{key.removeprefix('overrides.')}={text}")
        else:
            set_word(tree, where, key, text, f"word {word!r}")
    return extra


def _check_grid(sweep: Sweep, where: dict) -> None:
    """A grid crosses categorical fields, every one in every trial: no range, no `when`; and it has no more trials
    than combinations."""
    if sweep.config.sampler.name != "grid":
        return
    for p in sweep.params:
        if p.kind != "categorical" or p.when:
            raise ConfigError(f"{p.where}: space field {p.key!r}: sampler grid crosses categorical fields without "
                              "`when`; list the values as {type: categorical, choices: [...]}")
    for i, values in enumerate(sweep.config.start):
        missing = [p.key for p in sweep.params if p.key not in values]
        if missing:
            raise ConfigError(f"{_start_at(sweep, where, i)}: start[{i}] leaves out {', '.join(missing)}: a grid's "
                              "trial is a whole combination, every field given")
    size = math.prod(len(p.choices) for p in sweep.params)
    if sweep.config.trials > size:
        raise ConfigError(f"{where.get('trials', sweep.path)}: field 'trials' is {sweep.config.trials}, but the grid "
                          f"has {size} combinations; set trials: {size}")


def _check_counts(config: SweepConfig, where: dict, path: Path) -> None:
    if config.trials < 1:
        raise ConfigError(f"{where.get('trials', path)}: field 'trials' is {config.trials}; it must be at least 1")
    if config.pruning.warmup_steps < 0 or config.pruning.startup_trials < 0:
        raise ConfigError(f"{where.get('pruning', path)}: pruning.warmup_steps and startup_trials must be >= 0")


def _base_path(config: SweepConfig, where: dict, path: Path) -> Optional[Path]:
    """The base experiment file: relative to the sweep file, or (given as a word) to the working directory."""
    if config.base is None:
        return None
    base = Path(config.base).expanduser()
    if not base.is_absolute() and not str(where.get("base", "")).startswith("word"):
        base = path.parent / base
    if not base.is_file():
        raise ConfigError(f"{where.get('base', path)}: field 'base': {base} is not a file")
    return base


def _start_at(sweep: Sweep, where: dict, i: int) -> str:
    """FILE:LINE of start[i] (or of `start`, or the file)."""
    return where.get(f"start[{i}]", where.get("start", str(sweep.path)))


def _check_start(sweep: Sweep, where: dict) -> None:
    by_key = {p.key: p for p in sweep.params}
    for i, values in enumerate(sweep.config.start):
        at = _start_at(sweep, where, i)
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


def _override_words(overrides: Any, where: dict, path: Path) -> list[str]:
    if overrides is None:
        return []
    if isinstance(overrides, dict):
        words = [f"{k}={_yaml_value(v)}" for k, v in overrides.items()]
    elif isinstance(overrides, list) and all(isinstance(w, str) and "=" in w for w in overrides):
        words = list(overrides)
    else:
        raise ConfigError(f"{where.get('overrides', path)}: field 'overrides' is a mapping {{field: value}} or a "
                          f"list of field=value words, not {overrides!r}")
    for word in words:
        key = split_override(word)[0]
        if key.split(".")[0] in RESERVED:
            raise ConfigError(f"{where.get('overrides.' + key, where.get('overrides', path))}: field {key!r}: the "
                              "sweep sets it for every trial (its run directory is SWEEP/trials/trial-HASH)")
    return words


def _yaml_value(value: Any) -> str:
    """A value as the text of a `key=value` word (JSON is YAML)."""
    return json.dumps(value, ensure_ascii=False)


# --- the space --------------------------------------------------------------------------------

def _parse_space(space: Any, where: dict, path: Path) -> list[Param]:
    if not isinstance(space, dict) or not space:
        raise ConfigError(f"{where.get('space', path)}: field 'space' must map one or more experiment fields "
                          "(e.g. train.lr) to a distribution")
    params = [_parse_param(str(key), spec, where.get(f"space.{key}", str(path))) for key, spec in space.items()]
    _check_conditions(params)
    return _ordered(params)


def _parse_param(key: str, spec: Any, at: str) -> Param:
    """One field of the space: its distribution checked, FILE:LINE kept for later errors."""
    what = f"{at}: space field {key!r}"
    if key.split(".")[0] in RESERVED:
        raise ConfigError(f"{what}: the sweep sets it for every trial")
    if not isinstance(spec, dict) or "type" not in spec:
        raise ConfigError(f"{what}: give a mapping with a `type` ({', '.join(KINDS)})")
    unknown = set(spec) - SPEC_KEYS
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
        return _categorical(key, spec, when, at, what)
    return _numeric(key, kind, spec, when, at, what)


def _categorical(key: str, spec: dict, when: dict, at: str, what: str) -> Param:
    choices = spec.get("choices")
    if not isinstance(choices, list) or not choices:
        raise ConfigError(f"{what}: a categorical needs `choices: [...]` (one or more values)")
    if set(spec) & {"low", "high", "step"}:
        raise ConfigError(f"{what}: a categorical has `choices`, not low/high/step")
    return Param(key, "categorical", choices=tuple(choices), when=when, where=at)


def _numeric(key: str, kind: str, spec: dict, when: dict, at: str, what: str) -> Param:
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
    if kind != "int":
        low, high = float(low), float(high)
    return Param(key, kind, low, high, step, when=when, where=at)


def _check_conditions(params: list[Param]) -> None:
    """Each `when` names a categorical field of the space and one of its choices."""
    by_key = {p.key: p for p in params}
    categorical = ", ".join(k for k, q in by_key.items() if q.kind == "categorical") or "none"
    for p in params:
        for other, value in p.when.items():
            what = f"{p.where}: space field {p.key!r}: when {other}"
            if other not in by_key or by_key[other].kind != "categorical":
                raise ConfigError(f"{what}: `when` names a categorical field of the space ({categorical})")
            if value not in by_key[other].choices:
                raise ConfigError(f"{what}={value!r}: not one of its choices {list(by_key[other].choices)}")


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


def active(p: Param, values: dict[str, Any]) -> bool:
    """Whether a field is searched given the values chosen before it (its `when` holds)."""
    return all(values.get(k, _MISSING) == v for k, v in p.when.items())


def resolve(params: list[Param], choose) -> dict[str, Any]:
    """Values of the active fields, in dependency order; `choose(param)` picks (e.g. Param.first)."""
    values: dict[str, Any] = {}
    for p in params:
        if active(p, values):
            values[p.key] = choose(p)
    return values


_MISSING = object()


# --- trials -------------------------------------------------------------------------------------

def trial_words(sweep: Sweep, values: dict[str, Any]) -> list[str]:
    return [*sweep.overrides, *(f"{k}={_yaml_value(v)}" for k, v in values.items())]


def trial_name(values: dict[str, Any]) -> str:
    """trial-HASH: the same parameters, the same run directory (a retried trial finds its checkpoints).
    (The hashed text is the one existing run directories were named by: keep it.)"""
    return "trial-" + sha256_bytes(json.dumps(values, sort_keys=True, default=str).encode())[:10]


def trial_config(sweep: Sweep, values: dict[str, Any]) -> ExperimentConfig:
    name = trial_name(values)
    return load_config(sweep.base, [*trial_words(sweep, values), f"name={name}",
                                    f"out={sweep.out / 'trials' / name}"], root=ExperimentConfig)


def params_text(values: dict) -> str:
    """`field=value, ...` (values as JSON)."""
    return ", ".join(f"{k}={_yaml_value(v)}" for k, v in values.items())


# --- the trials' experiments, built before any trial starts ------------------------------------------

def _check_overrides(sweep: Sweep, where: dict) -> None:
    for i, word in enumerate(sweep.overrides):  # each fixed override alone, then together
        key = split_override(word)[0]
        at = where.get(f"overrides.{key}") or where.get(f"overrides[{i}]") or f"word {word!r}"
        try:
            load_config(sweep.base, [word], root=ExperimentConfig)
        except ConfigError as err:
            raise ConfigError(f"{at}: overrides field {key!r}: {err}") from None
    try:
        load_config(sweep.base, sweep.overrides, root=ExperimentConfig)
    except ConfigError as err:
        raise ConfigError(f"{where.get('overrides', sweep.path)}: overrides: {err}") from None


def _check_each_value(sweep: Sweep) -> None:
    fixed = {split_override(w)[0] for w in sweep.overrides}
    for p in sweep.params:
        if p.key in fixed:
            raise ConfigError(f"{p.where}: space field {p.key!r} is also fixed in overrides; keep one")
        values = list(p.choices) if p.kind == "categorical" else [p.low, p.high]
        for value in values:
            try:
                trial_config(sweep, {p.key: value})
            except ConfigError as err:
                raise ConfigError(f"{p.where}: space field {p.key!r} = {value!r}: {err}") from None


def _check_space_ends(sweep: Sweep) -> None:
    for pick, label in ((Param.first, "lowest/first"), (Param.last, "highest/last")):
        values = resolve(sweep.params, pick)
        try:
            config = trial_config(sweep, values)
            if pick is Param.first:
                plan_experiment(config)  # task specs, gates, LoRA targets: checked, nothing loaded
        except ConfigError as err:
            raise ConfigError(f"{sweep.path}: the space at its {label} values ({params_text(values)}): {err}") \
                from None
