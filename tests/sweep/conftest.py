"""Fixtures of the sweep tests: a tiny random model and the retention task `qa` it passes on purpose
(tests/sweep/tinysweep.py)."""
from __future__ import annotations

import json

import pytest

from keeptune.cli import main
from tests.sweep.tinysweep import QUESTIONS, SPEC
from tests.tiny import save_tiny


@pytest.fixture(scope="package")
def setup(tmp_path_factory):
    """The tiny model, the `qa` retention task whose references are the base model's answers, the fixed words."""
    tmp = tmp_path_factory.mktemp("sweep")
    model = save_tiny(tmp / "tiny")
    (tmp / "qa.yaml").write_text(SPEC, encoding="utf-8")
    (tmp / "qa.jsonl").write_text("".join(json.dumps({"question": q, "answer": "-"}) + "\n" for q in QUESTIONS))
    assert main(["eval", str(tmp / "qa.yaml"), "--model", str(model), "--out", str(tmp / "base-eval")]) == 0
    answers = {r["id"]: r["prediction"] for r in map(json.loads, open(tmp / "base-eval" / "predictions.jsonl"))}
    (tmp / "qa.jsonl").write_text("".join(json.dumps({"question": q, "answer": answers[f"qa-{i}"]}) + "\n"
                                          for i, q in enumerate(QUESTIONS)))
    overrides = {"model.source": str(model), "original": [{"task": str(tmp / "qa.yaml")}], "new_task.n": 16,
                 "new_task.eval_n": 4, "new_task.max_new_tokens": 4, "new_task.seq_len": 512, "train.max_steps": 4,
                 "train.global_batch": 4, "train.micro_batch": 2, "train.checkpoints": 2, "tracking.every": 2,
                 "tracking.retention": 2, "tracking.new_task": 2, "batch_size": 4, "lora.dropout": 0.0}
    return tmp, overrides
