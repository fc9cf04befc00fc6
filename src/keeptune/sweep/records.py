"""The study as plain data for the sweep report (keeptune.report.sweep renders it; it reads no study).

`report_data(study, sweep)` gives one mapping: the sweep's settings, one row per trial, the best feasible trial's
row, the gate fractions, Optuna's parameter importances (or the sentence that replaces them), the text of
best.yaml, the best trial's full experiment config, which `keeptune run SWEEP/best.yaml` runs as it is, and the
best trial against the runner-up (a paired test on the new task's accuracy, read from both trials' run folders).

Optuna is imported inside the functions that use it: it is heavy, and the rest of keeptune works without it.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Optional

from keeptune.core.config import to_yaml
from keeptune.core.errors import DataError
from keeptune.experiment import uncertainty
from keeptune.experiment.config import ExperimentConfig
from keeptune.sweep.config import Sweep, params_text, trial_config
from keeptune.sweep.study import decoded, retried_as
from keeptune.train.config import load_config

BEST = "best.yaml"
# Optuna's importances need a few finished trials to compare; below this many the report says so instead.
MIN_IMPORTANCE_TRIALS = 3


def report_data(study, sweep: Sweep) -> dict[str, Any]:
    """Everything the sweep report shows, as plain data: `name`, `path` (the sweep file), `out`, `objective`,
    `sampler`, `seed`, `budget` (trials), `fields` (the searched fields), `start` (whether `start` recipes were
    queued: trial 0 is the first), `rows` (`rows`), `best` (the best row, or None), `gates` (the gate fractions),
    `importances` and `importances_how` (`importances`), `best_path` and `best_yaml` (its text, or None),
    `versus_runner_up` (`versus_runner_up`)."""
    rows = trial_rows(study, sweep)
    best = best_trial(study)
    shares, how = importances(study, sweep)
    config = trial_config(sweep, decoded(best.params, sweep)) if best else None
    s = sweep.config
    return {"name": sweep.name, "path": sweep.path, "out": sweep.out, "objective": s.objective,
            "sampler": s.sampler.name, "seed": s.sampler.seed, "budget": s.trials,
            "fields": [p.key for p in sweep.params], "start": bool(s.start), "rows": rows,
            "best": next(r for r in rows if r["number"] == best.number) if best else None,
            "gates": gate_fractions(config or load_config(sweep.base, sweep.overrides, root=ExperimentConfig)),
            "importances": shares, "importances_how": how, "best_path": sweep.out / BEST,
            "best_yaml": best_yaml(sweep, best, config) if best else None,
            "versus_runner_up": versus_runner_up(study)}


# --- the trials ------------------------------------------------------------------------------------

def kind_of(t) -> str:
    """complete (feasible), infeasible, pruned, failed, killed, running or waiting."""
    from optuna.trial import TrialState  # optuna: heavy, optional

    if t.state == TrialState.COMPLETE:
        return "complete" if t.user_attrs.get("feasible") else "infeasible"
    if t.state == TrialState.FAIL:
        return "killed" if t.user_attrs.get("interrupted") else "failed"
    return t.state.name.lower()


def state_text(t, again: dict[int, int]) -> str:
    """The table's state: complete / infeasible (gate short by X) / pruned: REASON / failed: ERROR / killed,
    retried as #M."""
    kind, a = kind_of(t), t.user_attrs
    if kind == "infeasible":
        return f"infeasible (gate short by {t.constraints.get('gate', 0):.3f})"
    if kind == "pruned":
        return f"pruned: {a.get('pruned_reason')}"
    if kind == "killed":
        return a["interrupted"] + (f", retried as #{again[t.number]}" if t.number in again else "")
    if kind == "failed":
        return f"failed: {a.get('error', 'see the worker output')}"
    return kind


def trial_rows(study, sweep: Sweep) -> list[dict]:
    """One plain dict per trial: `number`, `kind` (kind_of), `state` (state_text), `params` (decoded) and
    `params_text`, `score` (its best passing checkpoint's, or None), `value` (what it told Optuna: an infeasible
    trial's would-be score), `accuracy` and `retention` (of its chosen checkpoint; retention = the lowest gated
    scalar / baseline), `step`, `wall_seconds`, `pruned_step`, `run_dir`, `retry_of`."""
    trials = study.get_trials(deepcopy=False)
    again = retried_as(trials)
    rows = []
    for t in trials:
        a, params = t.user_attrs, decoded(t.params, sweep)
        rows.append({"number": t.number, "kind": kind_of(t), "state": state_text(t, again),
                     "params": params, "params_text": params_text(params), "score": a.get("score"),
                     "value": t.value if t.values is not None and len(t.values) == 1 else None,
                     "accuracy": a.get("accuracy"), "retention": a.get("retention"), "step": a.get("step"),
                     "wall_seconds": a.get("wall_seconds"), "pruned_step": a.get("pruned_step"),
                     "run_dir": a.get("run_dir"), "retry_of": a.get("retry_of")})
    return rows


def ranked_trials(study) -> list:
    """The feasible complete trials, best first: the highest score, the earliest on a tie."""
    from optuna.trial import TrialState  # optuna: heavy, optional

    feasible = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
                if t.user_attrs.get("feasible") and t.user_attrs.get("score") is not None]
    return sorted(feasible, key=lambda t: (-t.user_attrs["score"], t.number))


def best_trial(study):
    """The feasible complete trial of the highest score (the earliest on a tie), or None."""
    ranked = ranked_trials(study)
    return ranked[0] if ranked else None


def versus_runner_up(study) -> Optional[dict]:
    """The best feasible trial against the runner-up (the next by score) on the new task's accuracy scalar at each
    one's best state, read from their run folders: {best, runner_up (trial numbers), units (of the scalar),
    comparison (`keeptune.experiment.uncertainty.compare_folders`'s, with `task`) or None, note (why not compared)
    or None}; None with fewer than two feasible trials."""
    ranked = ranked_trials(study)
    if len(ranked) < 2:
        return None
    first, second = ranked[:2]
    out = {"best": first.number, "runner_up": second.number, "units": None, "comparison": None, "note": None}
    try:
        folders, task, scalar, units = [], None, None, None
        for t in (first, second):
            run = Path(t.user_attrs["run_dir"])
            results = uncertainty.read_json(run / "results.json")
            new = next(spec for spec in results["tasks"] if spec["role"] == "new")
            best = results["best"]
            task, scalar, units = new["name"], new["accuracy"], (new.get("units") or {}).get(new["accuracy"])
            folders.append(uncertainty.entry_state_folder(run, best) / task)
        out["comparison"] = {"task": task, **uncertainty.compare_folders(*folders, scalar)}
        out["units"] = units
    except (DataError, KeyError, TypeError, StopIteration) as err:
        out["note"] = f"not compared: {err}"
    return out


def gate_fractions(config: ExperimentConfig) -> list[float]:
    """The distinct gate fractions of an experiment's retention tasks, ascending."""
    return sorted({item.fraction if item.fraction is not None else config.gate for item in config.original})


def best_yaml(sweep: Sweep, trial, config: ExperimentConfig) -> str:
    """best.yaml: the best trial's experiment config (the base, the overrides and its parameters, its name and
    run directory) under a comment saying what it is and how to run it."""
    a = trial.user_attrs
    here = sweep.out / BEST
    return (f"# keeptune sweep {sweep.name}: trial #{trial.number}, the best feasible trial: score {a['score']:.6f} "
            f"at step {a['step']}.\n"
            f"# Parameters: {params_text(decoded(trial.params, sweep))}\n"
            f"# Its full experiment config. `keeptune run {here}` runs it as it is, in the trial's run\n"
            f"# directory {config.out} (every step found done). To train the recipe anew elsewhere:\n"
            f"#   keeptune run {here} name=NEW out=null\n"
            + to_yaml(config))


# --- importances -------------------------------------------------------------------------------------

def importances(study, sweep: Sweep) -> tuple[Optional[dict[str, float]], str]:
    """Optuna's parameter importances (`optuna.importance.get_param_importances`, normalised to sum 1) and a
    sentence on how they were computed, or (None, why not) with too few trials, one field, or no spread.

    objective score: importance for reaching a high score under the gate, feasible trials first (the target
    ranks every infeasible trial below every feasible one, by its gap to the gate); objective pareto: importance
    for reaching the Pareto front of the feasible trials."""
    import optuna  # heavy, optional
    from optuna.trial import TrialState

    names = [p.key for p in sweep.params]
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    if len(names) < 2:
        return None, (f"One field is searched ({names[0]}): parameter importances need two or more to rank "
                      "(the table and the plots show how it acts).")
    if len(complete) < MIN_IMPORTANCE_TRIALS:
        return None, (f"Too few finished trials for parameter importances: {len(complete)} complete, "
                      f"{MIN_IMPORTANCE_TRIALS} needed (pruned, failed and running trials do not count).")
    target, subject = None, study
    if sweep.config.objective == "score":
        target = _score_target
        how = (f"over the {len(complete)} complete trials, for reaching a high score under the gate (infeasible "
               "trials rank below every feasible one)")
    else:
        feasible = [t for t in complete if t.user_attrs.get("feasible")]
        if len(feasible) < MIN_IMPORTANCE_TRIALS:
            return None, (f"Too few feasible trials for parameter importances: {len(feasible)}, "
                          f"{MIN_IMPORTANCE_TRIALS} needed.")
        subject = optuna.create_study(directions=study.directions)  # in memory: the feasible trials only
        subject.add_trials(feasible)
        how = f"over the {len(feasible)} feasible trials, for reaching the Pareto front"
    return _shares(subject, target, how)


def _score_target(t) -> float:
    """Lower is better (PED-ANOVA): -score; an infeasible trial: 1 + its gap to the gate."""
    return -t.user_attrs["score"] if t.user_attrs.get("feasible") else 1.0 + t.constraints.get("gate", 1.0)


def _shares(subject, target, how: str) -> tuple[Optional[dict[str, float]], str]:
    import optuna  # heavy, optional

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # few-trial and experimental-argument warnings: the sentence says it
            raw = optuna.importance.get_param_importances(subject, target=target, normalize=False)
    except (ValueError, RuntimeError, TypeError) as err:
        return None, f"Optuna could not compute parameter importances: {type(err).__name__}: {err}"
    total = sum(raw.values())
    if not total > 0:
        return None, (f"Parameter importances are all 0 {how}: these trials do not tell the fields apart "
                      "(more trials would).")
    shares = dict(sorted(((k, v / total) for k, v in raw.items()), key=lambda kv: -kv[1]))
    return shares, (f"Optuna's default evaluator (optuna.importance.get_param_importances) {how}, as shares of "
                    "the total. With few trials they are a hint, not a measurement.")
