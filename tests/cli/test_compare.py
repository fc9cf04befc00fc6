"""`keeptune compare` on the command line: the table, --json, --steps, and a refusal as one error line."""
from __future__ import annotations

import json

from keeptune.cli import main
from tests.experiment.evalfolders import answers, write_evaluation

A_RIGHT = [True] * 15 + [False] * 5
B_RIGHT = [True] * 7 + [False] * 8 + [True] + [False] * 4


def test_two_folders_print_the_table_and_json(tmp_path, capsys):
    a = write_evaluation(tmp_path / "a", "squad", answers(A_RIGHT))
    b = write_evaluation(tmp_path / "b", "squad", answers(B_RIGHT))
    assert main(["compare", str(a), str(b)]) == 0
    out = capsys.readouterr().out
    assert "exact_match.accuracy" in out and "McNemar 8 vs 1" in out and "A is better" in out
    assert main(["compare", str(a), str(b), "--json", "--confidence", "0.99"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["level"] == 0.99 and {r["verdict"] for r in data["rows"]} == {"not distinguishable at 99%"}


def test_different_samples_are_one_error_line(tmp_path, capsys):
    a = write_evaluation(tmp_path / "a", "squad", answers(A_RIGHT))
    b = write_evaluation(tmp_path / "b", "squad", answers(B_RIGHT), samples="other")
    assert main(["compare", str(a), str(b)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("keeptune: error: squad: ")
    assert "were not evaluated on the same samples" in err[0]
    assert main(["compare", str(a)]) == 2
    assert "give two states" in capsys.readouterr().err
