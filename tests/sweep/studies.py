"""Finished studies built in memory (no model runs), as keeptune.sweep's workers record trials: the user
attributes of each outcome and the `gate` constraint. Shared by tests/sweep/test_records.py and
tests/report/test_sweep_report.py."""
from __future__ import annotations

from pathlib import Path

import pytest

from keeptune.sweep.config import Param, Sweep, SweepConfig

optuna = pytest.importorskip("optuna")
from optuna.distributions import CategoricalDistribution, FloatDistribution  # noqa: E402
from optuna.trial import TrialState, create_trial  # noqa: E402

OVERRIDES = ["train.max_steps=10", "tracking.every=5"]
PARAMS = [Param("train.lr", "log_uniform", 1e-4, 1e-2), Param("lora.rank", "categorical", choices=(4, 8, 16))]
DISTRIBUTIONS = {"train.lr": FloatDistribution(1e-4, 1e-2, log=True),
                 "lora.rank": CategoricalDistribution((4, 8, 16))}


def make_sweep(tmp_path: Path, params=PARAMS, objective: str = "score", start: list = ()) -> Sweep:
    config = SweepConfig(objective=objective, trials=12, start=list(start))
    return Sweep(config, tmp_path / "s.yaml", "s", None, list(OVERRIDES), list(params), tmp_path / "sweep")


def trial(number, lr, rank, kind="complete", score=None, accuracy=0.5, retention=1.0, root=Path("sweep"), **attrs):
    """A finished trial as keeptune.sweep.worker records it (user attributes, the `gate` constraint)."""
    feasible = kind == "complete"
    gap = 0.0 if feasible else 0.2
    if kind == "killed":  # a killed trial never finished: no outcome
        accuracy = retention = None
    user = {"score": score if feasible else None, "accuracy": accuracy, "retention": retention, "step": 10,
            "wall_seconds": 30.0 + number, "feasible": feasible, "run_dir": str(root / "trials" / f"trial-{number}"),
            **attrs}
    state = {"complete": TrialState.COMPLETE, "infeasible": TrialState.COMPLETE, "pruned": TrialState.PRUNED,
             "killed": TrialState.FAIL}[kind]
    value = (score if feasible else 0.1) if state == TrialState.COMPLETE else None
    return create_trial(state=state, value=value, params={"train.lr": lr, "lora.rank": rank},
                        distributions=DISTRIBUTIONS, user_attrs=user,
                        constraints={"gate": gap} if state == TrialState.COMPLETE else None)


def study_of(trials) -> "optuna.Study":
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize")
    study.add_trials(trials)
    return study


def mixed_trials(root: Path) -> tuple[list, list[float]]:
    """Fourteen trials: ten feasible whose score depends on the rank only (16: 0.6, else 0.3) with learning rates
    spread over the range, then an infeasible, a pruned, a killed one and its retry; and their learning rates."""
    lrs = [1e-4 * 10 ** (2 * i / 9) for i in range(10)]
    ranks = [16, 4, 8, 16, 4, 8, 16, 4, 8, 16]
    trials = [trial(i, lr, r, score=0.6 if r == 16 else 0.3, accuracy=0.6 if r == 16 else 0.3,
                    retention=0.95 + 0.005 * i, root=root) for i, (lr, r) in enumerate(zip(lrs, ranks))]
    trials += [trial(10, 5e-3, 8, kind="infeasible", accuracy=0.9, retention=0.7, root=root),
               trial(11, 2e-3, 4, kind="pruned", score=None, pruned_step=5, root=root,
                     pruned_reason="tracked accuracy 0.100 below the median of the other trials at step 5"),
               trial(12, 1e-3, 8, kind="killed", interrupted="killed", root=root),
               trial(13, 1e-3, 8, score=0.3, accuracy=0.3, retention=0.99, retry_of=12, root=root)]
    return trials, lrs
