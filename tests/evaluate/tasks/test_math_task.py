"""The math task: samples, prompts, judging through the engine, the metrics layout."""
from __future__ import annotations

import json

import pytest

from keeptune.cli import main
from keeptune.evaluate.tasks.math import MathSample, MathTask, load_math_samples
from keeptune.io import DataError
from tests.tiny import save_tiny

ADD = MathSample("m0", "计算 1.50 + 2.25 等于多少？", "1.50 + 2.25 = 3.75")
MEAN = MathSample("m1", "求以下数据的平均值：[1, 2, 6]", "平均值为 3.0")


def test_prompt_none_is_the_raw_problem_and_math_is_the_seed_template():
    assert MathTask([ADD]).prompt(ADD) == ADD.problem
    # Typed from SPEC section 2.
    assert MathTask([ADD], prompt_name="math").prompt(ADD) == (
        "Below is an instruction that describes a grade school math problem. Write a response that gives "
        "the correct answer.\n\n### Instruction:\n计算 1.50 + 2.25 等于多少？\n\n### Response:")


def test_aggregate_reports_both_judges_per_eps_and_template():
    task = MathTask([ADD, MEAN])
    records = [task.score(ADD, " 1.50 + 2.25 = 3.75"), task.score(MEAN, "平均值为 3.001")]
    metrics = task.aggregate(records)
    # ADD right at every EPS; MEAN off by 0.001: right only at EPS 1e-2 (both judges:
    # rtol 1e-5 * 3 adds 3e-5, still far below 1e-3).
    assert metrics["accuracy"] == {"1e-08": 0.5, "0.0001": 0.5, "0.01": 1.0}
    assert metrics["accuracy_strict"] == {"1e-08": 0.5, "0.0001": 0.5, "0.01": 1.0}
    assert metrics["per_template"]["mean"] == {"1e-08": [0, 1], "0.0001": [0, 1], "0.01": [1, 1]}
    assert metrics["per_template"]["arithmetic"]["1e-08"] == [1, 1]


def test_samples_are_deduplicated_in_file_order(tmp_path):
    path = tmp_path / "test.jsonl"
    lines = [{"problem": ADD.problem, "solution": ADD.solution}] * 2 + [
        {"problem": MEAN.problem, "solution": MEAN.solution}]
    path.write_text("".join(json.dumps(line, ensure_ascii=False) + "\n" for line in lines), encoding="utf-8")
    assert load_math_samples(path) == [ADD, MathSample("m1", MEAN.problem, MEAN.solution)]
    (tmp_path / "empty.jsonl").write_text("\n")
    with pytest.raises(DataError, match="empty.jsonl"):
        load_math_samples(tmp_path / "empty.jsonl")


def test_cli_eval_math_writes_metrics(tmp_path, math_sample, capsys):
    model = save_tiny(tmp_path / "tiny")
    out = tmp_path / "out"
    code = main(["eval", "math", "--model", str(model), "--data", str(math_sample), "--limit", "12",
                 "--max-new-tokens", "3", "--out", str(out), "--prompt", "math"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["total_count"] == 12 and metrics["prompt"] == "math"
    assert set(metrics["accuracy"]) == {"1e-08", "0.0001", "0.01"}
    assert sum(cells["0.01"][1] for cells in metrics["per_template"].values()) == 12
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 12 and {"id", "problem", "solution", "raw", "template", "seed", "strict"} <= set(records[0])
    printed = capsys.readouterr().out
    assert "per template [correct, total]" in printed and "EPS 0.01" in printed
