"""`keeptune run` on the embedded SmolLM2-135M-Instruct with the default config,
shortened (a few training steps, a few math problems): the real model through every
step. Slow (a few minutes on 2 CPU cores): `make test-slow`."""
from __future__ import annotations

import json

import pytest

from keeptune.cli import main

pytestmark = pytest.mark.slow


def test_default_experiment_on_the_embedded_model(tmp_path):
    words = [f"out={tmp_path / 'run'}", "new_task.n=48", "new_task.eval_n=8", "train.max_steps=6",
             "train.checkpoints=2", "tracking.every=3", "tracking.retention=4", "tracking.new_task=4"]
    assert main(["run", *words]) == 0
    run = tmp_path / "run"
    results = json.loads((run / "results.json").read_text())

    # The baseline is the seed protocol's number on the 54 packaged paragraphs (SPEC section 1, batch-1 generate).
    squad = results["baseline"]["tasks"]["squad-seed"]["scores"]
    assert (squad["emf1.F1"], squad["emf1.Em"]) == (13.8433416458184, 0.0)
    # SmolLM2-135M: 30 layers, hidden 576, 3 KV heads of 64. Rank 8 on q_proj (576 -> 576) and v_proj
    # (576 -> 192): 8 * (576 + 576) + 8 * (576 + 192) = 15,360 per layer, 460,800 in all.
    assert results["params"]["trainable"] == 460_800
    assert [c["step"] for c in results["checkpoints"]] == [3, 6]
    assert [t["step"] for t in results["tracking"]] == [3, 6]
    for entry in results["checkpoints"]:
        passes = entry["tasks"]["squad-seed"]["scores"]["emf1.F1"] >= 0.9 * 13.8433416458184  # EM's gate: 0 >= 0
        assert entry["passes_gate"] == passes
        assert entry["tasks"]["math-worked"]["total_count"] == 8
    assert (results["best"] is None) == (not any(c["passes_gate"] for c in results["checkpoints"]))
    html = (run / "report.html").read_text()
    assert "data:image/png;base64," in html and "keeptune run" in html
