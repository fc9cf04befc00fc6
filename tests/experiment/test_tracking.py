"""Retention tracking: each tracked subset is gated against the base model's score on that
same subset (read from the baseline's predictions), and stop_below_gate stops."""
from __future__ import annotations

import pytest

from keeptune.core.gate import TaskGate
from keeptune.core.io import write_jsonl
from keeptune.evaluate.samples import Sample
from keeptune.evaluate.task import SpecTask
from keeptune.evaluate.spec import load_spec
from keeptune.experiment.config import ExperimentConfig, TrackingConfig
from keeptune.experiment.tracking import Tracker
from tests.tiny import byte_tokenizer, tiny_llama

SAMPLES = [Sample(f"q{i}", {"id": f"q{i}", "passage": f"Passage {i} names Ada.", "question": f"Who is in {i}?",
                            "label": "Ada", "answers": ["Ada"]}, "-") for i in range(3)]
MATH = [Sample("m0", {"problem": "计算 1.00 + 2.00 等于多少？", "solution": "1.00 + 2.00 = 3.00"}, "-")]


class FakePlan:
    gates = [TaskGate("squad-seed", ("emf1.F1", "emf1.Em"), 0.9)]


def tracker(tmp_path, base_answer: str, stop: bool) -> Tracker:
    """A tracker over the first 2 paragraphs whose base model answered `base_answer` to each."""
    squad = SpecTask(load_spec("squad-seed"), SAMPLES, byte_tokenizer())
    math = SpecTask(load_spec("math-worked", {"generation.max_new_tokens": 4}), MATH, byte_tokenizer())
    for task, answer in ((squad, base_answer), (math, "")):
        write_jsonl(tmp_path / "baseline" / task.name / "predictions.jsonl",
                    [task.score(s, answer) for s in task.samples])
    config = ExperimentConfig(tracking=TrackingConfig(every=1, retention=2, new_task=1, stop_below_gate=stop),
                              batch_size=4)
    return Tracker(config, FakePlan(), tmp_path, [squad, math], None)


@pytest.mark.parametrize("stop", [True, False])
def test_a_subset_below_its_own_baseline_fails_the_gate_and_stops_on_request(tmp_path, stop):
    track = tracker(tmp_path, "Ada", stop=stop)  # the base model answered both exactly
    assert track.baseline["squad-seed"]["emf1.F1"] == 100.0 and len(track.tasks[0].samples) == 2
    record = track.on_step(1, tiny_llama())  # a random model does not answer "Ada"
    tracked = record["track"]
    assert tracked["tasks"]["squad-seed"]["scores"]["emf1.F1"] < 90.0 and tracked["passes_gate"] is False
    assert tracked["gate"] == {"squad-seed": False} and tracked["subset"] == {"squad-seed": 2, "math-worked": 1}
    assert record.get("stop", False) == stop


def test_a_subset_at_its_baseline_passes_and_training_goes_on(tmp_path):
    track = tracker(tmp_path, "", stop=True)  # F1 and EM 0: gate 0.9 x 0 = 0, any score passes
    record = track.on_step(1, tiny_llama())
    assert record["track"]["passes_gate"] is True and "stop" not in record
