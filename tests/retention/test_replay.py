"""Retention method `replay` end to end on a tiny random model: the base model's answers to the
preservation prompts mixed into the training set at retention.replay_share, no gate sample among them,
cached, in the training's identity and in the report; the leak check refuses before any work."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch

from keeptune.cli import main
from keeptune.retention.replay import replay_count
from tests.experiment.test_runner import SQUAD, tiny_experiment

SEED = ("Read the passage and answer the question below.\n\n### Instruction:\n{passage}\n\n### Input:\n{question}"
        "\n\n### Response:")
GATE_PROMPTS = {SEED.format(passage=p["context"], question=p["qas"][0]["question"])
                for p in SQUAD["data"][0]["paragraphs"]}
GATE_PASSAGES = {p["context"] for p in SQUAD["data"][0]["paragraphs"]}


def read(path):
    return json.loads(path.read_text(encoding="utf-8"))


def lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_replay_count_makes_the_share_of_the_final_set():
    assert replay_count(0.2, 400) == 100  # 100 / (400 + 100) = 0.2
    assert replay_count(0.5, 16) == 16
    assert replay_count(0.2, 16) == 4  # 0.2 x 16 / 0.8
    assert replay_count(0.1, 7) == 1  # 0.78 rounds to 1


@pytest.fixture(scope="module")
def replayed(tmp_path_factory):
    """A tiny experiment with replay and the offline default (self-written preservation data)."""
    tmp = tmp_path_factory.mktemp("replay")
    words = tiny_experiment(tmp, "name=replay", "new_task.eval_n=4", "new_task.max_new_tokens=4",
                            "train.max_steps=2", "train.checkpoints=1", "tracking.every=0",
                            "retention.methods=[replay]", "retention.preservation_samples=3")
    assert main(["run", *words]) == 0
    return tmp / "run", words


def test_replay_records_are_the_base_models_answers_and_no_gate_sample(replayed):
    run, _ = replayed
    records = lines(run / "replay" / "train.jsonl")
    new = lines(run / "data" / "train.jsonl")
    assert records[:len(new)] == new and len(new) == 16
    replay = records[len(new):]
    assert len(replay) == 4  # round(0.2 x 16 / 0.8); 3 distinct prompts, the first one again
    samples = lines(run / "preservation" / "samples.jsonl")
    assert [r["replay"]["sample"] for r in replay] == [s["id"] for s in samples] + [samples[0]["id"]]
    for record, sample in zip(replay, samples + samples[:1]):
        prompt = record["conversations"][0]["value"]
        assert prompt == SEED.format(passage=sample["passage"], question=sample["question"])
        assert prompt not in GATE_PROMPTS and sample["passage"] not in GATE_PASSAGES
        assert not any(passage in prompt for passage in GATE_PASSAGES)
    # Each answer is what the base model says to that prompt: batch-1 greedy `generate`, 20 tokens (squad-seed's)
    from transformers import AutoModelForCausalLM, AutoTokenizer

    base = AutoModelForCausalLM.from_pretrained(run.parent / "tiny").eval()
    tokenizer = AutoTokenizer.from_pretrained(run.parent / "tiny")
    for record in replay[:2]:
        ids = torch.tensor([tokenizer(record["conversations"][0]["value"], add_special_tokens=False).input_ids])
        with torch.no_grad():
            out = base.generate(ids, max_new_tokens=20, do_sample=False, pad_token_id=tokenizer.pad_token_id)
        expected = tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)
        assert record["conversations"][1]["value"] == expected


def test_training_reads_the_mixed_set_and_the_report_says_what_was_preserved(replayed):
    run, _ = replayed
    adapter = next((run / "train" / "checkpoints").iterdir())
    config = read(adapter / "keeptune.json")["config"]
    assert config["data"]["path"] == str(run / "replay" / "train.jsonl")
    assert config["data_sha256"] == hashlib.sha256((run / "replay" / "train.jsonl").read_bytes()).hexdigest()
    assert config["retention"]["methods"] == []  # replay is in the data, not a training step
    settings = read(run / "results.json")["settings"]
    assert settings["preservation"].startswith("self-written by the base model (3 passages on 3 topics")
    assert settings["preservation"].endswith("none overlaps the gate's samples")
    assert settings["replay"] == "4 records answered by the base model (3 distinct prompts) + 16 new-task records: " \
                                 "share 0.200"
    report = (run / "report.md").read_text(encoding="utf-8")
    assert "self-written by the base model" in report and "4 records answered by the base model" in report
    phases = [r["phase"] for r in read(run / "results.json")["timing"]]
    assert phases.index("baseline") < phases.index("preservation") < phases.index("replay") < phases.index("training")


def test_a_rerun_generates_nothing_and_a_new_share_retrains(replayed):
    run, words = replayed
    log = (run / "train" / "log.jsonl").read_text()
    assert main(["run", *words]) == 0
    assert (run / "train" / "log.jsonl").read_text() == log
    for folder in ("preservation/passages", "preservation/questions", "replay/answers/squad-seed"):
        assert read(run / folder / "metrics.json")["generated"] == 0, folder
    assert main(["run", *words, "retention.replay_share=0.5"]) == 0
    assert len(lines(run / "replay" / "train.jsonl")) == 32  # 16 + 16
    assert read(run / "preservation" / "passages" / "metrics.json")["generated"] == 0  # preservation reused
    assert [r["steps"] for r in read(run / "results.json")["timing"] if r["phase"] == "training"] == [2]


def test_overlapping_preservation_is_refused_before_any_work(tmp_path, capsys):
    from dataclasses import replace

    from keeptune.experiment.config import ExperimentConfig, RetentionTaskConfig
    from keeptune.experiment.plan import plan_experiment
    from keeptune.train.config import RetentionConfig

    words = tiny_experiment(tmp_path, "retention.methods=[replay]")
    gate = next(w for w in words if w.startswith("original.data=")).split("=", 1)[1]
    assert main(["run", *words, f"retention.preservation={gate}"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("keeptune: error: field 'retention.preservation': 3 of the 3 preservation samples")
    assert "squad.json" in err and "retention.allow_overlap=true" in err
    assert not (tmp_path / "run").exists()  # nothing built, no model loaded

    disjoint = tmp_path / "mine.json"
    disjoint.write_text(json.dumps({"data": [{"title": "x", "paragraphs": [{"context": "Owls hunt at night.", "qas": [
        {"id": "o", "question": "When?", "answers": [{"text": "night", "answer_start": 0}]}]}]}]}), encoding="utf-8")
    config = ExperimentConfig(original=[RetentionTaskConfig(data=gate)])
    plan = plan_experiment(replace(config, retention=RetentionConfig(methods=("replay",), preservation=str(disjoint))))
    assert [i.sample.id for i in plan.preservation.items] == ["o"] and plan.preservation.overlap == []
    allowed = plan_experiment(replace(config, retention=RetentionConfig(methods=("replay",), preservation=gate,
                                                                        allow_overlap=True)))
    assert allowed.preservation.overlap == ["q0", "q1", "q2"]
