"""`keeptune run` with lm-eval retention tasks beside a keeptune spec (issue 26): a multiple-choice task gated on
acc and a perplexity gated on its rise, evaluated at the baseline, every checkpoint and in tracking on the model
in memory; the gate recomputed by hand from the numbers the run reports."""
from __future__ import annotations

import json

import pytest

from keeptune.cli import main
from tests.evaluate.test_lmeval import write_arc
from tests.experiment.test_runner import tiny_experiment


def test_lm_eval_tasks_are_gated_at_every_checkpoint(tmp_path):
    arc = write_arc(tmp_path / "arc.jsonl", n=8)
    raw = tmp_path / "wiki.test.raw"
    raw.write_text(" = One = \n \n The cat sat . \n = Two = \n \n A dog ran , far . \n", encoding="utf-8")
    words = tiny_experiment(tmp_path, "new_task.eval_n=4", "new_task.max_new_tokens=4", "train.max_steps=2",
                            "train.checkpoints=2", "tracking.every=1", "tracking.retention=2", "tracking.new_task=2")
    squad = next(w for w in words if w.startswith("original.data=")).split("=", 1)[1]
    config = tmp_path / "experiment.yaml"
    config.write_text(f"""
original:
  - task: squad-seed
    data: {squad}
  - lm_eval: arc_easy_local
    data: {arc}
    gate: [acc]
    fraction: 0.8
  - lm_eval: wikitext_local
    data: {raw}
    gate: [word_perplexity]
    max_rise: 0.25
""", encoding="utf-8")
    assert main(["run", str(config), *[w for w in words if not w.startswith("original.")]]) == 0
    run = tmp_path / "run"
    results = json.loads((run / "results.json").read_text(encoding="utf-8"))
    gates = {t["name"]: t["gate"] for t in results["tasks"] if t["role"] == "retention"}
    assert gates["arc_easy_local"]["metrics"] == ["lmeval.acc"] and gates["arc_easy_local"]["lower_is_better"] == []
    assert gates["wikitext_local"]["lower_is_better"] == ["lmeval.word_perplexity"]
    assert gates["wikitext_local"]["fraction"] == pytest.approx(1 / 1.25)
    base = results["baseline"]["tasks"]
    for entry in results["checkpoints"]:
        scores = entry["tasks"]
        acc, acc_base = (s["arc_easy_local"]["scores"]["lmeval.acc"] for s in (scores, base))
        acc_ok = acc >= 0.8 * acc_base
        ppl, ppl_base = (s["wikitext_local"]["scores"]["lmeval.word_perplexity"] for s in (scores, base))
        assert entry["gate"]["arc_easy_local"] is acc_ok
        assert entry["gate"]["wikitext_local"] is (ppl <= 1.25 * ppl_base)
        assert entry["retention"]["wikitext_local"]["lmeval.word_perplexity"] == pytest.approx(ppl_base / ppl)
        step = f"step-{entry['step']:06d}"
        records = (run / "checkpoints" / step / "arc_easy_local" / "predictions.jsonl").read_text().splitlines()
        assert len(records) == 8
    tracked = results["tracking"]
    assert tracked and all(set(t["tasks"]) >= {"arc_easy_local", "wikitext_local"} for t in tracked)
    assert all(t["subset"]["arc_easy_local"] == 2 for t in tracked)
    # drift from the base: logged at each tracked step, on the new task's 2 tracked prompts (no preservation here)
    log = [json.loads(line) for line in (run / "train" / "log.jsonl").read_text().splitlines()]
    drifts = [(r["drift_kl"], r["track"]["drift"]) for r in log if "track" in r]
    assert len(drifts) == len(tracked) and all(kl == d["kl"] >= 0 and d["texts"] == 2 for kl, d in drifts)
    assert drifts[-1][0] > 0  # the adapter moved the model
    report = (run / "report.md").read_text(encoding="utf-8")
    assert "arc_easy_local" in report and "wikitext_local" in report


def test_the_lm_eval_example_plans_on_the_shared_data(monkeypatch):
    """configs/examples/lm-eval.yaml reads the real ARC-Easy dev set and WikiText-2 (skipped without ../shared):
    its tasks load with their official sizes and its gates say which way each scalar is kept."""
    from keeptune.core.config import load_config
    from keeptune.experiment.config import ExperimentConfig
    from keeptune.experiment.plan import plan_experiment
    from tests.conftest import REPO, shared_file

    shared_file("arc-easy/ARC-Easy-Dev.jsonl")
    shared_file("wikitext-2/wiki.test.raw")
    monkeypatch.chdir(REPO)
    plan = plan_experiment(load_config(REPO / "configs" / "examples" / "lm-eval.yaml", [], ExperimentConfig))
    tasks = {task.name: (task, gate) for task, gate in plan.retention}
    arc, arc_gate = tasks["arc_easy_local"]
    wiki, wiki_gate = tasks["wikitext_local"]
    assert len(arc.documents) == 570 and len(wiki.documents) == 8
    assert arc_gate.metrics == ("lmeval.acc", "lmeval.acc_norm") and arc_gate.lower_is_better == ()
    assert wiki_gate.lower_is_better == ("lmeval.word_perplexity",)
    assert wiki_gate.fraction == pytest.approx(1 / 1.05)
