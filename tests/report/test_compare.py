"""`keeptune compare` (keeptune.report.compare) on evaluation folders written by hand: a known McNemar table,
every form of A and B, and the refusals."""
from __future__ import annotations

import json

import pytest
from scipy import stats as scipy_stats

from keeptune.core.errors import DataError
from keeptune.experiment.uncertainty import state_folder
from keeptune.report.compare import compare, resolve
from tests.experiment.evalfolders import answers, write_evaluation

# 20 samples: both right on 7, A alone on 8, B alone on 1, neither on 4.
A_RIGHT = [True] * 7 + [True] * 8 + [False] * 1 + [False] * 4
B_RIGHT = [True] * 7 + [False] * 8 + [True] * 1 + [False] * 4


@pytest.fixture
def folders(tmp_path):
    a = write_evaluation(tmp_path / "a", "squad", answers(A_RIGHT), shuffle=1)
    b = write_evaluation(tmp_path / "b", "squad", answers(B_RIGHT), shuffle=2)
    return a, b


def by_scalar(rows):
    return {row["scalar"]: row for row in rows}


def test_a_known_mcnemar_table(folders, capsys):
    rows = by_scalar(compare(*folders))
    exact = rows["exact_match.accuracy"]
    assert exact["discordant"] == [8, 1] and exact["n"] == 20 and exact["test"] == "exact McNemar"
    assert exact["p_value"] == pytest.approx(2 * (1 + 9) / 2 ** 9)  # two-sided: 2 P(X <= 1), X ~ B(9, 1/2)
    assert exact["p_value"] == pytest.approx(scipy_stats.binomtest(8, 9, 0.5).pvalue)
    assert exact["difference"] == pytest.approx(15 / 20 - 8 / 20) and exact["verdict"] == "A is better"
    assert exact["low"] < exact["difference"] < exact["high"]
    # F1 and Em are points (0..100 per sample), not 0/1: the paired permutation test
    assert rows["emf1.F1"]["test"] == rows["emf1.Em"]["test"] == "paired permutation"
    assert rows["emf1.Em"]["difference"] == pytest.approx(35.0) and rows["emf1.Em"]["verdict"] == "A is better"
    out = capsys.readouterr().out
    line = next(line for line in out.splitlines() if line.startswith("squad") and "exact_match.accuracy" in line)
    assert line.split() == ["squad", "exact_match.accuracy", "20", "75.00%", "40.00%", "+35.00",
                            f"[{100 * exact['low']:.1f},", f"{100 * exact['high']:.1f}]", "McNemar", "8", "vs", "1",
                            "0.0391", "A", "is", "better"]
    assert out.splitlines()[:2] == [f"A: {folders[0]}", f"B: {folders[1]}"]


def test_the_other_way_round_and_identical_states(folders, capsys):
    swapped = by_scalar(compare(folders[1], folders[0]))["exact_match.accuracy"]
    assert swapped["verdict"] == "B is better" and swapped["discordant"] == [1, 8]
    same = by_scalar(compare(folders[0], folders[0]))["exact_match.accuracy"]
    assert same["p_value"] == 1.0 and same["verdict"] == "not distinguishable at 95%"
    strict = by_scalar(compare(*folders, confidence=0.99))["exact_match.accuracy"]
    assert strict["p_value"] > 0.01 and strict["verdict"] == "not distinguishable at 99%"
    capsys.readouterr()


def test_json_output(folders, capsys):
    compare(*folders, as_json=True)
    data = json.loads(capsys.readouterr().out)
    assert data["a"] == str(folders[0]) and data["level"] == 0.95
    assert by_scalar(data["rows"])["exact_match.accuracy"]["discordant"] == [8, 1]


def test_different_samples_are_refused(tmp_path):
    a = write_evaluation(tmp_path / "a", "squad", answers(A_RIGHT))
    b = write_evaluation(tmp_path / "b", "squad", answers(B_RIGHT), samples="another set")
    with pytest.raises(DataError, match="squad: .* were not evaluated on the same samples"):
        compare(a, b)


def fake_run(root, steps=(100, 200), best=200):
    """A run folder: results.json naming its best, a baseline and each step's evaluations of two tasks."""
    run = root / "run"
    write_evaluation(run / "baseline" / "squad", "squad", answers([False] * 20))
    write_evaluation(run / "baseline" / "math", "math", answers([False] * 20, prefix="m"))
    for i, step in enumerate(steps):
        write_evaluation(state_folder(run, step) / "squad", "squad", answers(A_RIGHT if i else B_RIGHT))
        write_evaluation(state_folder(run, step) / "math", "math", answers(B_RIGHT, prefix="m"))
    from tests.report.synthetic import results

    content = results()
    content["best"]["step"] = best
    (run / "results.json").write_text(json.dumps(content))
    return run


def test_every_form_of_a_and_b(tmp_path):
    run = fake_run(tmp_path)
    a, b = resolve(run, None, "100,200")
    assert (a.label, sorted(a.tasks)) == (f"{run} step 100", ["math", "squad"])
    assert b.tasks["squad"] == state_folder(run, 200) / "squad"
    base, _ = resolve(run, None, "base,200")
    assert base.tasks["squad"] == run / "baseline" / "squad"
    a, b = resolve(state_folder(run, 100), state_folder(run, 200), None)
    assert a.tasks == resolve(run, None, "100,200")[0].tasks
    first, second = resolve(run, run, None)  # a run: its best checkpoint
    assert first.label == f"{run} (best: step 200)" and first.tasks["math"] == state_folder(run, 200) / "math"
    rows = compare(run, None, "100,200")
    assert {(r["task"], r["scalar"]) for r in rows} >= {("squad", "emf1.F1"), ("math", "exact_match.accuracy")}
    assert by_scalar([r for r in rows if r["task"] == "squad"])["exact_match.accuracy"]["discordant"] == [1, 8]


@pytest.mark.parametrize("args, message", [
    (("run", None, "100"), "name two states"),
    (("run", None, "100,300"), "no such evaluation"),
    (("run", None, "100,abc"), "'abc' is not a step"),
    (("run", "run", "100,200"), "give the run alone"),
    (("run", None, None), "give two states"),
    (("nowhere", "run", None), "nowhere: no such folder"),
])
def test_wrong_arguments_are_named(tmp_path, args, message):
    fake_run(tmp_path)
    a, b, steps = args
    with pytest.raises(DataError, match=message):
        resolve(tmp_path / a, tmp_path / b if b else None, steps)
