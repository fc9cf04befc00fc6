"""The sweep report from finished studies built in memory (no model runs): the trials table, the Pareto front,
parameter importances or the sentence that replaces them, the self-contained page and best.yaml.

A sweep run end to end on a tiny model checks the same report in tests/experiment/test_sweep.py."""
from __future__ import annotations

import dataclasses
import functools
import re
from pathlib import Path

import pytest

from keeptune.experiment.config import ExperimentConfig
from keeptune.sweep.study import Param, Sweep, SweepConfig
from keeptune.train.config import load_config

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
    """A finished trial as keeptune.sweep.study records it (user attributes, the `gate` constraint)."""
    feasible = kind == "complete"
    gap = 0.0 if feasible else 0.2
    if kind == "killed":  # a killed trial never finished: no outcome
        accuracy = retention = None
    user = {"score": score if feasible else None, "accuracy": accuracy, "retention": retention, "step": 10,
            "wall_seconds": 30.0 + number, "feasible": feasible, "run_dir": str(root / "trials" / f"trial-{number}"), **attrs}
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


def rows_of(markdown: str) -> list[list[str]]:
    lines = [line for line in markdown.split("## Trials", 1)[1].split("\n## ", 1)[0].splitlines()
             if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[2:]]


def test_the_report_of_a_finished_study(tmp_path):
    from keeptune.report.sweep import write_sweep_report

    sweep = make_sweep(tmp_path, start=[{"train.lr": 1e-4, "lora.rank": 16}])
    trial = functools.partial(globals()["trial"], root=sweep.out)
    # The score depends on the rank only (16: 0.6, else 0.3); the learning rates are spread over the range.
    lrs = [1e-4 * 10 ** (2 * i / 9) for i in range(10)]
    ranks = [16, 4, 8, 16, 4, 8, 16, 4, 8, 16]
    trials = [trial(i, lr, r, score=0.6 if r == 16 else 0.3, accuracy=0.6 if r == 16 else 0.3,
                    retention=0.95 + 0.005 * i) for i, (lr, r) in enumerate(zip(lrs, ranks))]
    trials += [trial(10, 5e-3, 8, kind="infeasible", accuracy=0.9, retention=0.7),
               trial(11, 2e-3, 4, kind="pruned", score=None, pruned_step=5,
                     pruned_reason="tracked accuracy 0.100 below the median of the other trials at step 5"),
               trial(12, 1e-3, 8, kind="killed", interrupted="killed"),
               trial(13, 1e-3, 8, score=0.3, accuracy=0.3, retention=0.99, retry_of=12)]
    markdown = write_sweep_report(study_of(trials), sweep, wall_seconds=125.0)
    out = sweep.out
    assert (out / "sweep.md").read_text() == markdown

    rows = rows_of(markdown)  # #, train.lr, lora.rank, state, score, accuracy, retention, step, wall s, pruned at, run
    assert [row[0] for row in rows] == [str(n) for n in range(14)]
    assert rows[3][2:5] == ["16", "complete", "0.600000"] and rows[3][5:7] == ["60.00%", "96.50%"]
    assert rows[10][3] == "infeasible (gate short by 0.200)" and rows[10][4] == ""
    assert rows[11][3].startswith("pruned: tracked accuracy 0.100") and rows[11][9] == "5"
    assert rows[12][3] == "killed, retried as #13" and rows[13][-1] == "trials/trial-13"
    assert "Trials: 14 (13 of the budget of 12" in markdown
    assert "11 feasible, 1 infeasible, 1 pruned, 0 failed, 1 killed" in markdown

    # The best: the highest score, the earliest of the ties (trial 0); trial 0 is the `start` recipe.
    assert "Best feasible trial: #0, score 0.600000" in markdown
    assert "Trial 0, the first `start` recipe: score 0.600000; the best is +0.000000 against it." in markdown
    # The Pareto front of the feasible trials: trial 9 (accuracy 0.6, retention 0.995) has the best accuracy and
    # the highest retention of all, so it alone is on the front.
    front = [line for line in markdown.splitlines() if re.match(r"- #\d+: accuracy", line)]
    assert [line.split(":")[0] for line in front] == ["- #9"]

    # Importances: the rank decides the score, so it ranks above the learning rate; shares sum to 1.
    shares = dict(re.findall(r"^\| (train\.lr|lora\.rank) +\| +([0-9.]+) \|$", markdown, re.M))
    assert set(shares) == {"train.lr", "lora.rank"} and float(shares["lora.rank"]) > float(shares["train.lr"])
    assert sum(map(float, shares.values())) == pytest.approx(1.0, abs=2e-3)

    # The page needs no other file: three plots embedded, the CSS inline, best.yaml folded in.
    page = (out / "sweep.html").read_text()
    assert page.count('src="data:image/png;base64,') == 3 and "<style>" in page and "<link" not in page
    assert "best.yaml (trial #0)" in page
    assert sorted(p.name for p in (out / "plots").iterdir()) == ["importances.png", "pareto.png", "scores.png"]

    # best.yaml: keeptune's loader reads it to the best trial's config, built here from its words.
    expected = load_config(None, [*OVERRIDES, f"train.lr={lrs[0]!r}", "lora.rank=16", "name=trial-x",
                                  "out=x"], root=ExperimentConfig)
    loaded = load_config(out / "best.yaml", root=ExperimentConfig)
    assert loaded.train.lr == lrs[0] and loaded.lora.rank == 16 and loaded.train.max_steps == 10
    assert loaded.out == str(out / "trials" / loaded.name) and loaded.name.startswith("trial-")
    assert loaded == dataclasses.replace(expected, name=loaded.name, out=loaded.out)


def test_importances_give_way_to_a_sentence(tmp_path):
    from keeptune.report.sweep import importances, write_sweep_report

    two = [trial(0, 1e-4, 4, score=0.3), trial(1, 1e-3, 16, score=0.5)]
    sweep = make_sweep(tmp_path)
    markdown = write_sweep_report(study_of(two), sweep)
    assert "Too few finished trials for parameter importances: 2 complete, 3 needed" in markdown
    assert not (sweep.out / "plots" / "importances.png").exists()
    assert "## Parameter importances" in markdown and not re.search(r"^\| lora\.rank +\| +[0-9.]+ \|$", markdown, re.M)

    one_field = make_sweep(tmp_path, params=PARAMS[:1])
    assert importances(study_of(two), one_field)[0] is None
    assert "One field is searched (train.lr)" in importances(study_of(two), one_field)[1]

    # Identical outcomes everywhere: nothing tells the fields apart.
    same = [trial(i, 1e-4 * (i + 1), 8, score=0.4) for i in range(4)]
    shares, why = importances(study_of(same), sweep)
    assert shares is None and "all 0" in why


def test_no_feasible_trial_means_no_best_yaml(tmp_path):
    from keeptune.report.sweep import write_sweep_report

    sweep = make_sweep(tmp_path)
    markdown = write_sweep_report(study_of([trial(0, 1e-3, 8, kind="infeasible")]), sweep)
    assert "No feasible trial: no trial has a checkpoint that passes the gate." in markdown
    assert "Pareto front: no feasible trial yet." in markdown and not (sweep.out / "best.yaml").exists()


def test_pareto_front_keeps_ties_and_drops_dominated_and_infeasible():
    from keeptune.report.sweep import pareto_front

    def row(number, accuracy, retention, kind="complete"):
        return {"number": number, "kind": kind, "accuracy": accuracy, "retention": retention}

    rows = [row(0, 0.5, 1.0), row(1, 0.6, 0.95), row(2, 0.6, 0.95), row(3, 0.4, 0.99), row(4, 0.9, 0.5, "infeasible"),
            row(5, 0.6, 0.9), row(6, 0.7, 0.8, "pruned")]
    assert pareto_front(rows) == [0, 1, 2]  # 3 is beaten by 0, 5 by 1; 4 and 6 do not count
