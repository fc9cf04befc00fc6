"""The sweep report (keeptune.report.sweep) from finished studies built in memory (no model runs), turned into
plain data by keeptune.sweep.records: the trials table, the Pareto front, parameter importances or the sentence
that replaces them, the self-contained page and best.yaml.

A sweep run end to end on a tiny model checks the same report in tests/sweep/test_sweep.py."""
from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import pytest

import keeptune.report.sweep as report_module
from keeptune.experiment.config import ExperimentConfig
from keeptune.report.sweep import pareto_front, write_sweep_report
from keeptune.train.config import load_config
from tests.sweep.studies import OVERRIDES, make_sweep, mixed_trials, study_of, trial

optuna = pytest.importorskip("optuna")


def render(study, sweep, wall_seconds=None) -> str:
    """What `keeptune sweep` does: the study as plain data, rendered."""
    from keeptune.sweep.records import report_data

    return write_sweep_report(report_data(study, sweep), wall_seconds)


def rows_of(markdown: str) -> list[list[str]]:
    lines = [line for line in markdown.split("## Trials", 1)[1].split("\n## ", 1)[0].splitlines()
             if line.startswith("| ")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[2:]]


def test_the_report_of_a_finished_study(tmp_path):
    sweep = make_sweep(tmp_path, start=[{"train.lr": 1e-4, "lora.rank": 16}])
    trials, lrs = mixed_trials(sweep.out)
    markdown = render(study_of(trials), sweep, wall_seconds=125.0)
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
    two = [trial(0, 1e-4, 4, score=0.3), trial(1, 1e-3, 16, score=0.5)]
    sweep = make_sweep(tmp_path)
    markdown = render(study_of(two), sweep)
    assert "Too few finished trials for parameter importances: 2 complete, 3 needed" in markdown
    assert not (sweep.out / "plots" / "importances.png").exists()
    assert "## Parameter importances" in markdown and not re.search(r"^\| lora\.rank +\| +[0-9.]+ \|$", markdown, re.M)


def test_no_feasible_trial_means_no_best_yaml(tmp_path):
    sweep = make_sweep(tmp_path)
    markdown = render(study_of([trial(0, 1e-3, 8, kind="infeasible")]), sweep)
    assert "No feasible trial: no trial has a checkpoint that passes the gate." in markdown
    assert "Pareto front: no feasible trial yet." in markdown and not (sweep.out / "best.yaml").exists()


def test_pareto_front_keeps_ties_and_drops_dominated_and_infeasible():
    def row(number, accuracy, retention, kind="complete"):
        return {"number": number, "kind": kind, "accuracy": accuracy, "retention": retention}

    rows = [row(0, 0.5, 1.0), row(1, 0.6, 0.95), row(2, 0.6, 0.95), row(3, 0.4, 0.99), row(4, 0.9, 0.5, "infeasible"),
            row(5, 0.6, 0.9), row(6, 0.7, 0.8, "pruned")]
    assert pareto_front(rows) == [0, 1, 2]  # 3 is beaten by 0, 5 by 1; 4 and 6 do not count


def test_the_report_renders_plain_data_and_reads_no_study():
    """report/sweep.py imports nothing of keeptune.sweep, keeptune.experiment or Optuna: it renders the plain
    data keeptune.sweep.records gives it."""
    tree = ast.parse(Path(report_module.__file__).read_text(encoding="utf-8"))
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    imported |= {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    assert not {m for m in imported if m.startswith(("keeptune.sweep", "keeptune.experiment", "optuna"))}


def test_the_summary_says_whether_the_best_trial_is_distinguishable_from_the_runner_up():
    from keeptune.report.sweep import summary_items

    data = {"rows": [], "best": {"number": 1, "score": 0.6, "accuracy": 0.6, "retention": 1.0, "step": 10,
                                 "params_text": "lr=1", "run_dir": "t1"},
            "budget": 2, "best_path": "best.yaml", "start": False,
            "versus_runner_up": {"best": 1, "runner_up": 0, "units": "fraction", "note": None, "comparison": {
                "task": "math", "scalar": "exact_match.accuracy", "mean_a": 0.6, "mean_b": 0.45, "difference": 0.15,
                "low": 0.05, "high": 0.3, "test": "exact McNemar", "p_value": 0.25,
                "verdict": "not distinguishable at 95%"}}}
    assert summary_items(data, None)[-1] == (
        "Against the runner-up, trial #0: math exact_match.accuracy 60.00% against 45.00% at their best checkpoints, "
        "difference +15.00 points [5.0, 30.0], exact McNemar p = 0.25: not distinguishable at 95%.")
    data["versus_runner_up"] |= {"comparison": None, "note": "not compared: different samples"}
    assert summary_items(data, None)[-1] == "Against the runner-up, trial #0: not compared: different samples."
