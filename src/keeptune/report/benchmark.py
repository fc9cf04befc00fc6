"""`keeptune benchmark SOURCES...`: retention methods told apart by significance on held-out tasks (issue 29).

A source is a run (RUN/results.json) or a sweep (every SWEEP/trials/*/results.json). Every run must have the same
new task and the same held-out tasks (an `original:` entry with `held_out: true`: evaluated at every checkpoint,
never gated, so a comparison on it is not biased by the checkpoint choice). Each run is labelled by its method
("+".join(retention.methods) or "plain", "mica" in front with lora.init mica), its recipe (the other config
settings that differ among the runs given, seed aside) and its seed. The numbers, all plain data (benchmark.json):

- the curve: every evaluated state of every run (checkpoints as trained and post-training variants), its new-task
  accuracy with its interval, its gate verdict, and each held-out scalar kept against the base model with its
  paired interval (results.json's held_out_uncertainty, or the bare ratio of held_out);
- a run of post-training methods only ([scale], [intruders], [scale, intruders]) trains as plain LoRA does: it is
  read as the methods it holds, plain, scale and intruders, each its own run of the benchmark with its best
  recomputed over its own entries (keeptune.report.benchmark_split);
- the matched comparisons: each non-plain run R against the plain run P of the same recipe (settings of retention
  methods aside: plain LoRA ignores them) and seed. R's state is its gate-chosen best (none passing: its most
  accurate state, flagged); P's is its checkpoint as trained whose new-task accuracy is nearest R's (ties: the later
  step). Each held-out scalar and the new task's accuracy are compared on the same samples, paired by sample id
  (keeptune.experiment.uncertainty): R - P with its paired bootstrap interval, exact McNemar for 0/1 per-sample
  scores, a paired permutation test otherwise (keeptune.core.stats.compare). A corpus statistic (a perplexity)
  has no per-sample values to test: R - P of the statistic with a paired bootstrap interval, distinguishable when
  the interval excludes 0;
- pooled over seeds per (method, recipe): each sample's score averaged over the seeds' matched states, R's and P's,
  then the same paired test on the averages; a corpus statistic: the mean of the per-seed differences and their
  range, untested.

The document and the plots are keeptune.report.benchmark_doc's.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from keeptune.core import stats
from keeptune.core.errors import DataError
from keeptune.core.io import atomic_write_json, atomic_write_text
from keeptune.core.outputs import claim_output_dir
from keeptune.evaluate import intervals
from keeptune.evaluate.metrics.registry import Resample
from keeptune.experiment import uncertainty
from keeptune.report.benchmark_split import PLAIN, keep_one_plain, shown, split
from keeptune.report.compare import State, common_tasks
from keeptune.report.results import RESULTS, entry_scale, load_results, new_task, variant
from keeptune.retention.config import fields_read

MICA, HELD_OUT = "mica", "held_out"
# Config fields that name a run, not its recipe; the method's and the seed's are labelled apart.
NOT_RECIPE = ("name", "out", "overwrite", "skip_bad", "retention.methods", "lora.init", "train.seed")
OUTPUTS = ("benchmark.md", "benchmark.json", "frontier-*.png")


@dataclass(frozen=True)
class Run:
    """One run of the benchmark: its folder, its checked results.json and its label."""

    path: Path
    results: dict
    method: str
    seed: Any
    settings: dict[str, Any]  # the config, flattened: {"train.lr": 0.001, ...}
    recipe: str = ""  # the differing settings, in words ("lr 0.002")
    matches: str = ""  # the recipe without retention settings: what a plain run must share
    part: str = ""  # a part of a run of post-training methods: the states it holds ("as trained + scale")
    left_out: str = ""  # a plain run left out of the comparisons: why (another of the same training is compared)

    @property
    def label(self) -> str:
        return " ".join(p for p in (self.method, self.recipe, f"seed {self.seed}") if p)


# --- the runs --------------------------------------------------------------------------------------------

def run_folders(sources: Iterable[Path]) -> list[Path]:
    """The run folders SOURCES name: a run itself, or each finished trial of a sweep; each once."""
    found: list[Path] = []
    for source in map(Path, sources):
        if (source / RESULTS).is_file():
            found.append(source)
        elif (source / "trials").is_dir():
            trials = sorted(p.parent for p in (source / "trials").glob(f"*/{RESULTS}"))
            if not trials:
                raise DataError(f"{source}: a sweep with no finished trial (no trials/*/{RESULTS})")
            found += trials
        else:
            raise DataError(f"{source}: neither a run (no {RESULTS}) nor a sweep (no trials/*/{RESULTS})")
    unique = {p.resolve(): p for p in reversed(found)}
    return [p for p in found if unique.get(p.resolve()) is p]


def flatten(config: Any, prefix: str = "") -> dict[str, Any]:
    """A nested config as {"train.lr": value, ...}; lists stay values."""
    if not isinstance(config, dict):
        return {prefix[:-1]: config}
    return {k: v for key, inner in config.items() for k, v in flatten(inner, f"{prefix}{key}.").items()}


def method_of(settings: dict[str, Any]) -> str:
    """"plain", "kl", "kl+scale", and with lora.init mica "mica", "mica+kl"."""
    methods = [str(m) for m in settings.get("retention.methods") or []]
    if settings.get("lora.init") == MICA:
        methods = [MICA, *methods]
    return "+".join(methods) or PLAIN


def held_out_specs(results: dict) -> list[dict]:
    """The task specs of results.json with role held_out, in order."""
    return [t for t in results["tasks"] if t["role"] == HELD_OUT]


def measured(spec: dict) -> list[str]:
    return list((spec.get("measured") or {}).get("metrics") or [])


def lower_is_better(spec: dict, scalar: str) -> bool:
    return scalar in ((spec.get("measured") or {}).get("lower_is_better") or ())


def tasks_of(results: dict) -> tuple:
    """What runs compared must share: the new task and its accuracy scalar, each held-out task and its scalars."""
    new = new_task(results)
    return (new.name, new.accuracy), tuple((t["name"], tuple(measured(t))) for t in held_out_specs(results))


def _value(value: Any) -> str:
    if isinstance(value, float):
        return format(value, "g")
    if isinstance(value, list) and all(isinstance(v, (str, int, float)) for v in value):
        return ",".join(map(_value, value))
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True)


def recipes(settings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each run's settings that differ among the runs (method and seed fields and run names aside); a retention
    setting is one of a run's only where its methods read it, and differs only among the runs that do (plain
    LoRA's `retention.scales` is no part of its recipe, and kl's kl_weight 0.1 none of kl's beside plain's)."""
    settings = [_read(s) for s in settings]
    keys = sorted({k for s in settings for k in s})

    def differs(key: str) -> bool:  # two values among the runs that have it, or (not a retention key) one lacks it
        values = {json.dumps(s[key], sort_keys=True) for s in settings if key in s}
        return len(values) > 1 or (not key.startswith("retention.") and any(key not in s for s in settings))

    differ = [k for k in keys if differs(k)]
    return [{k: s[k] for k in differ if k in s} for s in settings]


def _read(settings: dict[str, Any]) -> dict[str, Any]:
    """The settings a run reads, NOT_RECIPE aside: a retention setting only where one of its methods reads it."""
    read = {f"retention.{name}" for name in fields_read(settings.get("retention.methods") or ())}
    return {k: v for k, v in settings.items()
            if k not in NOT_RECIPE and (not k.startswith("retention.") or k in read)}


def recipe_text(recipe: dict[str, Any]) -> str:
    """"lr 0.002, rank 16": each setting by its last name (its full name where two share one)."""
    short = [k.rsplit(".", 1)[-1] for k in recipe]
    return ", ".join(f"{s if short.count(s) == 1 else k} {_value(v)}" for s, (k, v) in zip(short, recipe.items()))


def load_runs(sources: Iterable[Path]) -> tuple[list[Run], list[str]]:
    """The runs SOURCES name, labelled, a run of post-training methods split into its parts, plain runs first, and
    the notes on plain runs left out of the comparisons (keeptune.report.benchmark_split); DataError when they do
    not share their tasks or two are the same method, recipe and seed."""
    runs = []
    for path in run_folders(sources):
        results = load_results(path)
        settings = flatten(results.get("config") or {})
        runs.append(Run(path, results, method_of(settings), settings.get("train.seed"), settings))
    first = runs[0]
    if not held_out_specs(first.results):
        raise DataError(f"{first.path / RESULTS}: no held-out task (an original entry with held_out: true); the "
                        "benchmark compares methods on data that did not choose their checkpoints")
    for run in runs[1:]:
        if tasks_of(run.results) != tasks_of(first.results):
            raise DataError(f"{run.path / RESULTS}: its new task and held-out tasks {tasks_of(run.results)} differ "
                            f"from {first.path / RESULTS}'s {tasks_of(first.results)}; the runs compared must share "
                            "them")
    labelled = []
    for run, recipe in zip(runs, recipes([r.settings for r in runs])):
        matches = {k: v for k, v in recipe.items() if not k.startswith("retention.")}
        labelled += split(dataclasses.replace(run, recipe=recipe_text(recipe), matches=recipe_text(matches)))
    labelled.sort(key=lambda r: (r.method != PLAIN, r.method, r.recipe, str(r.seed)))
    for a, b in itertools.pairwise(labelled):
        same = (a.method, a.recipe, a.seed) == (b.method, b.recipe, b.seed)
        if same and not (a.method == PLAIN and (a.part or b.part)):  # a part's plain: keep_one_plain judges it
            raise DataError(f"{a.path} and {b.path} are both {a.label}: give one of them")
    return keep_one_plain(labelled)


# --- the curve -------------------------------------------------------------------------------------------

def state_key(entry: dict) -> tuple:
    """(step, scale, intruders share): which state an entry is."""
    return entry["step"], entry_scale(entry), entry.get("intruders")


def state_of(entry: dict) -> dict:
    """Which state an entry is, for benchmark.json: step, scale, intruders (null when none), variant in words."""
    step, scale, share = state_key(entry)
    return {"step": step, "scale": scale, "intruders": share, "variant": variant(entry)}


def held_out_change(entry: dict, task: str, scalar: str) -> dict:
    """A held-out scalar kept against the base model at one state: {ratio, low, high} from held_out_uncertainty
    (the paired interval), or the ratio of held_out alone (low, high null)."""
    numbers = ((entry.get("held_out_uncertainty") or {}).get(task) or {}).get("scalars", {}).get(scalar)
    if isinstance(numbers, dict):
        return {"ratio": numbers.get("ratio"), "low": numbers.get("low"), "high": numbers.get("high")}
    return {"ratio": ((entry.get("held_out") or {}).get(task) or {}).get(scalar), "low": None, "high": None}


def curve(parts: list[Run]) -> list[dict]:
    """One row per evaluated state of a run (given as its parts, or itself alone), in step order, each state once
    under the method it belongs to (keeptune.report.benchmark_split.shown): the state, its new-task accuracy and
    interval, its gate verdict, the methods whose best it is (best_of; best: any), and each held-out scalar's
    change against the base model."""
    rows = []
    for run in parts:
        new = new_task(run.results)
        for entry in shown(run):
            accuracy = (entry["tasks"].get(new.name, {}).get("intervals") or {}).get(new.accuracy) or {}
            best_of = [p.method for p in parts
                       if p.results.get("best") is not None and state_key(p.results["best"]) == state_key(entry)]
            rows.append({"run": str(run.path), "method": run.method, "recipe": run.recipe, "seed": run.seed,
                         **state_of(entry), "accuracy": entry["accuracy"], "accuracy_low": accuracy.get("low"),
                         "accuracy_high": accuracy.get("high"), "passes_gate": entry["passes_gate"],
                         "best": bool(best_of), "best_of": best_of,
                         "held_out": {t["name"]: {s: held_out_change(entry, t["name"], s) for s in measured(t)}
                                      for t in held_out_specs(run.results)}})
    return sorted(rows, key=lambda r: (r["step"], bool(r["variant"]), -r["scale"], -(r["intruders"] or 1)))


# --- matching -----------------------------------------------------------------------------------------------

def chosen_state(run: Run) -> tuple[dict | None, bool]:
    """A method's state: its gate-chosen best, or where none passes its most accurate state (flagged: True)."""
    if run.results.get("best") is not None:
        return run.results["best"], False
    entries = run.results["checkpoints"]
    return (max(entries, key=lambda e: (e["accuracy"], e["step"])) if entries else None), True


def nearest_state(plain: Run, accuracy: float) -> dict | None:
    """Plain LoRA's checkpoint as trained whose new-task accuracy is nearest `accuracy` (ties: the later step).
    Distances are rounded to 1e-9, so that 6/12 is as near 5/12 as 7/12 despite float rounding."""
    trained = [e for e in plain.results["checkpoints"] if not variant(e)]
    return min(trained, key=lambda e: (round(abs(e["accuracy"] - accuracy), 9), -e["step"])) if trained else None


def plain_for(run: Run, runs: list[Run]) -> Run | None:
    """The plain run of `run`'s recipe (retention settings aside) and seed, or None; of a run of post-training
    methods, the same run's checkpoints as trained (or the plain run kept in their place: benchmark_split)."""
    return next((p for p in runs if p.method == PLAIN and not p.left_out and p.matches == run.matches
                 and p.seed == run.seed), None)


# --- paired numbers -------------------------------------------------------------------------------------------

def verdict(difference: float, significant: bool, lower: bool, method: str, level: float) -> str:
    """Who is better, by the sign that is better for the scalar: "kl better", "plain better", or not
    distinguishable at the level."""
    if not significant:
        return f"not distinguishable at {level * 100:g}%"
    return f"{method} better" if (difference < 0) == lower else f"{PLAIN} better"


def paired_columns(a_folder: Path, b_folder: Path, scalar: str) -> tuple[list[str], Resample, Resample]:
    """The sample ids (in order) and what each evaluation's scalar resamples, paired by sample id; DataError when
    the two were evaluated on different samples (their eval.json's samples_sha256, as `keeptune compare`)."""
    task = a_folder.name
    common_tasks(State(str(a_folder), {task: a_folder}), State(str(b_folder), {task: b_folder}))
    a_records, b_records = uncertainty.paired_records(a_folder, b_folder)
    metrics = uncertainty.folder_metrics(a_folder)
    return ([r["id"] for r in a_records], uncertainty.scalar_resample(metrics, scalar, a_records),
            uncertainty.scalar_resample(metrics, scalar, b_records))


def mean_difference(a: np.ndarray, b: np.ndarray, lower: bool, method: str, level: float) -> dict:
    """`stats.compare` of per-sample scores as `uncertainty.comparison_json` (its interval's method under
    "interval"), with the verdict by the better sign."""
    numbers = uncertainty.comparison_json(stats.compare(a, b, level=level, seed=intervals.SEED))
    numbers["interval"] = numbers.pop("method")  # BCa or percentile; "method" names the retention method here
    significant = numbers["p_value"] < 1 - level
    return {**numbers, "verdict": verdict(numbers["difference"], significant, lower, method, level)}


def corpus_difference(a: Resample, b: Resample, lower: bool, method: str, level: float) -> dict:
    """A corpus statistic's A - B with the paired bootstrap interval of the difference (each replicate redraws the
    same samples for both); distinguishable when the interval excludes 0. No p-value: it is not a test."""
    k = len(a.columns)

    def statistic(*columns: np.ndarray) -> float:
        return a.statistic(*columns[:k]) - b.statistic(*columns[k:])

    columns = [np.asarray(c, dtype=float) for c in (*a.columns, *b.columns)]
    difference = float(statistic(*columns))
    interval = stats.corpus_interval(columns, statistic, level, seed=intervals.SEED)
    significant = interval is not None and (interval.low > 0 or interval.high < 0)
    bounds = (interval.low, interval.high) if interval else (None, None)
    low, high = (b if b is not None and math.isfinite(b) else None for b in bounds)  # infinite: JSON's null
    return {"difference": difference, "low": low, "high": high, "level": level,
            "interval": interval.method if interval else None, "p_value": None,
            "test": "paired bootstrap interval of a corpus statistic", "verdict":
            verdict(difference, significant, lower, method, level), "n": len(columns[0]),
            "mean_a": float(a.statistic(*columns[:k])), "mean_b": float(b.statistic(*columns[k:])), "discordant": None}


def compare_scalar(a_folder: Path, b_folder: Path, scalar: str, lower: bool, method: str,
                   level: float) -> tuple[dict, tuple[list[str], np.ndarray, np.ndarray] | None]:
    """A against B on one scalar, and for a per-sample mean the (ids, A's, B's) scores the pooling averages."""
    ids, a, b = paired_columns(a_folder, b_folder, scalar)
    if not a.is_mean:
        return corpus_difference(a, b, lower, method, level), None
    columns = np.asarray(a.columns[0], dtype=float), np.asarray(b.columns[0], dtype=float)
    return mean_difference(*columns, lower, method, level), (ids, *columns)


def matched(run: Run, runs: list[Run], level: float) -> tuple[dict, dict]:
    """One non-plain run against plain LoRA at matched new-task accuracy: the record of benchmark.json, and
    {(task, scalar): (ids, R's, P's)} of the per-sample means for the pooling."""
    record = {"run": str(run.path), "method": run.method, "recipe": run.recipe, "seed": run.seed}
    plain, (state, flagged) = plain_for(run, runs), chosen_state(run)
    if plain is None or state is None:
        why = "no evaluated state" if state is None else f"no plain run of recipe '{run.recipe}' and seed {run.seed}"
        return {**record, "plain": None, "note": why}, {}
    other = nearest_state(plain, state["accuracy"])
    if other is None:
        return {**record, "plain": str(plain.path), "note": "the plain run has no checkpoint"}, {}
    record |= {"plain": str(plain.path), "note": None,
               "state": {**state_of(state), "accuracy": state["accuracy"], "passes_gate": not flagged},
               "plain_state": {**state_of(other), "accuracy": other["accuracy"]}}
    folders = uncertainty.entry_state_folder(run.path, state), uncertainty.entry_state_folder(plain.path, other)
    new = new_task(run.results)
    record["new_task"], _ = compare_scalar(folders[0] / new.name, folders[1] / new.name, new.accuracy, False,
                                           run.method, level)
    record["new_task"] |= {"task": new.name, "scalar": new.accuracy, "units": new.unit(new.accuracy)}
    record["held_out"], pooled = [], {}
    for spec in held_out_specs(run.results):
        for scalar in measured(spec):
            lower = lower_is_better(spec, scalar)
            numbers, columns = compare_scalar(folders[0] / spec["name"], folders[1] / spec["name"], scalar, lower,
                                              run.method, level)
            record["held_out"].append({"task": spec["name"], "scalar": scalar, "lower_is_better": lower,
                                       "units": (spec.get("units") or {}).get(scalar), **numbers})
            if columns is not None:
                pooled[spec["name"], scalar] = columns
    return record, pooled


# --- pooled over seeds ----------------------------------------------------------------------------------------

def pool(records: list[dict], columns: list[dict], level: float) -> list[dict]:
    """Per (method, recipe), task and scalar, over the seeds compared: a per-sample mean's test on each sample's
    scores averaged over the seeds (R's and P's), or a corpus statistic's mean and range of the per-seed
    differences."""
    groups: dict[tuple, list[int]] = {}
    for i, record in enumerate(records):
        if record.get("plain") is not None and "held_out" in record:
            groups.setdefault((record["method"], record["recipe"]), []).append(i)
    out = []
    for (method, recipe), members in groups.items():
        for k, row in enumerate(records[members[0]]["held_out"]):
            key, seeds = (row["task"], row["scalar"]), [records[i]["seed"] for i in members]
            common = {"method": method, "recipe": recipe, "seeds": seeds, "task": row["task"],
                      "scalar": row["scalar"], "units": row["units"], "lower_is_better": row["lower_is_better"]}
            if key in columns[members[0]]:
                out.append({**common, **pooled_means([columns[i][key] for i in members], row, method, level)})
            else:
                differences = [records[i]["held_out"][k]["difference"] for i in members]
                out.append({**common, "pooled": "mean of the per-seed differences (a corpus statistic: untested)",
                            "difference": float(np.mean(differences)), "range": [min(differences), max(differences)],
                            "low": None, "high": None, "p_value": None, "test": None, "verdict": "not tested"})
    return out


def pooled_means(seeds: list[tuple[list[str], np.ndarray, np.ndarray]], row: dict, method: str,
                 level: float) -> dict:
    """The paired test of each sample's score averaged over the seeds, R's against P's."""
    ids = seeds[0][0]
    for other, _, _ in seeds[1:]:
        if other != ids:
            raise DataError(f"{row['task']}: the seeds' evaluations hold different samples; pooling pairs each "
                            "sample with itself")
    a, b = (np.mean([s[i] for s in seeds], axis=0) for i in (1, 2))
    return {"pooled": "each sample's score averaged over the seeds, then the paired test",
            **mean_difference(a, b, row["lower_is_better"], method, level)}


# --- the command -----------------------------------------------------------------------------------------------

def cost(runs: list[Run]) -> dict:
    """The time the runs took, each run folder once (a run of post-training methods is several methods): results.json's
    wall and CPU seconds summed, those of a run's last invocation (a resumed run's earlier ones are not recorded);
    CPU time over the runs that record it (`cpu_runs`)."""
    once = {r.path: r.results for r in runs}
    walls = [res["wall_seconds"] for res in once.values() if res.get("wall_seconds") is not None]
    cpus = [res["cpu_seconds"] for res in once.values() if res.get("cpu_seconds") is not None]
    return {"runs": len(once), "wall_seconds": sum(walls), "cpu_seconds": sum(cpus) if cpus else None,
            "cpu_runs": len(cpus)}


def compute(sources: Iterable[Path], level: float = stats.LEVEL) -> dict:
    """benchmark.json's content: the level, the runs, the curve, the matched comparisons and the pooled ones."""
    runs, notes = load_runs(sources)
    records, columns = [], []
    for run in tqdm([r for r in runs if r.method != PLAIN], desc="benchmark", unit="run", disable=None):
        record, pooled = matched(run, runs, level)
        records.append(record)
        columns.append(pooled)
    new = new_task(runs[0].results)
    return {"level": level, "new_task": {"task": new.name, "scalar": new.accuracy, "units": new.unit(new.accuracy)},
            "held_out": [{"task": t["name"], "scalars": measured(t), "units": t.get("units") or {},
                          "confidence": (t.get("measured") or {}).get("confidence", stats.LEVEL),
                          "lower_is_better": [s for s in measured(t) if lower_is_better(t, s)]}
                         for t in held_out_specs(runs[0].results)],
            "runs": [{"run": str(r.path), "method": r.method, "recipe": r.recipe, "seed": r.seed,
                      "states": r.part or None, "left_out": r.left_out or None} for r in runs], "notes": notes,
            "cost": cost(runs),
            "curve": [row for path in dict.fromkeys(r.path for r in runs if not r.left_out)
                      for row in curve([r for r in runs if r.path == path])], "comparisons": records,
            "pooled": pool(records, columns, level)}


def benchmark(sources: list[Path], out: Path = Path("runs/benchmark"), level: float = stats.LEVEL,
              overwrite: bool = False) -> dict:
    """Compare retention methods with plain LoRA on held-out tasks, at matched new-task accuracy, with paired tests.

    Writes OUT/benchmark.md (the curve of every run, each method against plain LoRA of the same recipe and seed,
    pooled over seeds), OUT/benchmark.json (every number) and one frontier plot per held-out scalar
    (OUT/frontier-TASK-SCALAR.png); prints their paths. docs/benchmark.md says how states are matched and tested.

    Args:
        sources: run directories (holding results.json) and sweep directories (their trials/*/results.json).
        out: the output directory.
        level: the level of the intervals and of the verdicts (0.95: p < 0.05).
        overwrite: write into an output directory keeptune did not make.
    """
    from keeptune.report.benchmark_doc import document, write_frontiers  # matplotlib loads only here

    if not 0 < level < 1:
        raise DataError(f"--level is {level}; it must be between 0 and 1 (0.95 for 95%)")
    if not sources:
        raise DataError("give one or more runs or sweeps (keeptune benchmark RUN... or SWEEP...)")
    claim_output_dir(out, "benchmark", overwrite, inputs=run_folders(sources), outputs=OUTPUTS)
    data = compute(sources, level)
    images = write_frontiers(data, Path(out))
    atomic_write_json(Path(out) / "benchmark.json", data)
    atomic_write_text(Path(out) / "benchmark.md", document(data, images))
    for path in (Path(out) / "benchmark.md", Path(out) / "benchmark.json", *(Path(out) / i for i in images)):
        print(path)
    return data
