"""Retention tracking: the tracked subset is gated against the base model's score on
that same subset (read from the baseline's predictions), and stop_below_gate stops."""
from __future__ import annotations

import dataclasses

import pytest

from keeptune.data.squad import SquadSample
from keeptune.evaluate.tasks.math import MathSample, MathTask
from keeptune.evaluate.tasks.squad import SquadTask
from keeptune.experiment.config import ExperimentConfig, TrackingConfig
from keeptune.experiment.tracking import Tracker
from keeptune.io import write_jsonl
from tests.tiny import byte_tokenizer, tiny_llama

SAMPLES = [SquadSample(f"q{i}", f"Passage {i} names Ada.", f"Who is in passage {i}?", "Ada", ("Ada",))
           for i in range(3)]


def tracker(tmp_path, base_answer: str, stop: bool) -> Tracker:
    """A tracker over the first 2 paragraphs whose base model answered `base_answer` to each."""
    squad = SquadTask(SAMPLES, byte_tokenizer())
    write_jsonl(tmp_path / "baseline" / "squad" / "predictions.jsonl", [squad.score(s, base_answer) for s in SAMPLES])
    config = ExperimentConfig(tracking=TrackingConfig(every=1, squad=2, math=1, stop_below_gate=stop),
                              batch_size=4)
    config = dataclasses.replace(config, new_task=dataclasses.replace(config.new_task, max_new_tokens=4))
    math = MathTask([MathSample("m0", "计算 1.00 + 2.00 等于多少？", "1.00 + 2.00 = 3.00")], "math", "final")
    return Tracker(config, tmp_path, byte_tokenizer(), SAMPLES, math)


@pytest.mark.parametrize("stop", [True, False])
def test_a_subset_below_its_own_baseline_fails_the_gate_and_stops_on_request(tmp_path, stop):
    track = tracker(tmp_path, "Ada", stop=stop)  # the base model answered both exactly
    assert track.baseline["F1"] == 100.0
    metrics = track.on_step(1, tiny_llama())  # a random model does not answer "Ada"
    assert metrics["track_squad_F1"] < 90.0 and metrics["track_passes_gate"] is False
    assert metrics["track_baseline_F1"] == 100.0
    assert metrics.get("stop", False) == stop


def test_a_subset_at_its_baseline_passes_and_training_goes_on(tmp_path):
    track = tracker(tmp_path, "", stop=True)  # F1 and EM 0: gate 0.9 x 0 = 0, any score passes
    metrics = track.on_step(1, tiny_llama())
    assert metrics["track_passes_gate"] is True and "stop" not in metrics
