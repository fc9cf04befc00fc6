"""`keeptune run` end to end on a tiny random model: every step, its caching, the
gate and the score recomputed by hand from the numbers the run reports."""
from __future__ import annotations

import json

import numpy as np
import pytest

from keeptune.cli import main
from tests.tiny import save_tiny

SQUAD = {"version": "1.1", "data": [{"title": "t", "paragraphs": [
    {"context": f"Passage {i} names {name}.", "qas": [
        {"id": f"q{i}", "question": f"Who is in passage {i}?", "answers": [{"text": name, "answer_start": 0}]}]}
    for i, name in enumerate(["Ada", "Bob", "Cy"])]}]}


def tiny_experiment(tmp, *words: str) -> list[str]:
    """The words of a small experiment on a tiny model and a 3-paragraph SQuAD file written into `tmp`;
    `words` change or add settings."""
    model = save_tiny(tmp / "tiny")
    squad = tmp / "squad.json"
    squad.write_text(json.dumps(SQUAD), encoding="utf-8")
    return [f"model.source={model}", f"original.data={squad}", f"out={tmp / 'run'}", "new_task.n=16",
            "new_task.seq_len=512", "train.global_batch=4", "train.micro_batch=2", "batch_size=4", *words]


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("experiment")
    words = tiny_experiment(tmp, "name=tiny", "new_task.eval_n=6", "new_task.max_new_tokens=6",
                            "train.max_steps=4", "train.checkpoints=2", "train.lr=1e-2", "tracking.every=2",
                            "tracking.retention=2", "tracking.new_task=2")
    assert main(["run", *words]) == 0
    return tmp / "run", words


def read(path):
    return json.loads(path.read_text(encoding="utf-8"))


def test_every_step_leaves_its_output(experiment):
    run, _ = experiment
    for part in ("data/train.jsonl", "data/eval.jsonl", "baseline/squad-seed/metrics.json",
                 "baseline/math-worked/metrics.json", "train/log.jsonl", "results.json", "report.md", "report.html"):
        assert (run / part).is_file(), part
    results = read(run / "results.json")
    assert [c["step"] for c in results["checkpoints"]] == [2, 4]
    assert [(t["name"], t["role"]) for t in results["tasks"]] == [("squad-seed", "retention"), ("math-worked", "new")]
    for entry in results["checkpoints"]:
        name = f"step-{entry['step']:06d}"
        assert read(run / "checkpoints" / name / "squad-seed" / "metrics.json")["total_count"] == 3
        assert read(run / "checkpoints" / name / "math-worked" / "metrics.json")["total_count"] == 6
    assert [t["step"] for t in results["tracking"]] == [2, 4]
    # The tracked subset (tracking.retention=2: q0, q1) is gated against its own baseline.
    predictions = {r["id"]: r for r in map(json.loads, open(run / "baseline" / "squad-seed" / "predictions.jsonl"))}
    subset_f1 = 100 * (predictions["q0"]["scores"]["emf1"]["f1"] + predictions["q1"]["scores"]["emf1"]["f1"]) / 2
    assert all(t["baseline"]["squad-seed"]["emf1.F1"] == pytest.approx(subset_f1) for t in results["tracking"])
    assert all(t["subset"] == {"squad-seed": 2, "math-worked": 2} for t in results["tracking"])
    assert results["command"].startswith("keeptune run ")
    assert results["settings"]["steps"] == 4
    assert results["settings"]["data_recipe"] == "generated custom (mass 70, fraction 30, area 300) x16, cot"


def test_the_timing_table_accounts_for_every_phase_in_order(experiment):
    """results.json's timing: each phase once per task and checkpoint, in run order, training apart from
    the tracking done during it; within the wall time; the report shows the table with the report's row."""
    run, _ = experiment
    results = read(run / "results.json")
    rows = results["timing"]
    tasks = ["squad-seed", "math-worked"]
    assert [(r["phase"], r["task"]) for r in rows] == [
        ("data", None), ("model load", None), *(("baseline", t) for t in tasks), ("training", None),
        ("tracking", None), *(("checkpoint 2", t) for t in tasks), *(("checkpoint 4", t) for t in tasks),
        ("export", None), ("report", None)]
    assert rows[4]["steps"] == 4 and rows[5]["evaluations"] == 2
    assert all(r["seconds"] >= 0 for r in rows)
    assert sum(r["seconds"] for r in rows if r["phase"] != "report") <= results["wall_seconds"]
    report = (run / "report.md").read_text(encoding="utf-8")
    assert "## Where the time went" in report
    assert "| tracking" in report and "2 evaluations" in report and "4 steps" in report and "| report" in report


def test_eval_set_is_held_out_from_training(experiment):
    run, _ = experiment
    trained = {json.loads(line)["conversations"][0]["value"] for line in open(run / "data" / "train.jsonl")}
    for line in open(run / "data" / "eval.jsonl"):
        assert not any(json.loads(line)["problem"] in prompt for prompt in trained)


def test_eval_set_obeys_the_training_strategy_filter(tmp_path):
    from keeptune.core.io import write_jsonl
    from keeptune.data.math.build import conversation
    from keeptune.experiment.newdata import held_out_problems

    train = tmp_path / "train.jsonl"
    write_jsonl(train, [conversation(1, "计算 1.00 + 2.00 等于多少？", "1.00 + 2.00 = 3.00", "arithmetic")])
    easy = held_out_problems(train, 40, seed=0, templates=None, strategy="easy")
    anything = held_out_problems(train, 40, seed=0, templates=None, strategy="arithmetic")
    assert all(p["problem"].startswith("计算 ") for p in easy + anything)
    assert not any(" * " in p["problem"] for p in easy)  # easy trains on no multiplication
    assert any(" * " in p["problem"] for p in anything)


def test_gate_score_and_best_follow_the_seed_rules(experiment):
    run, _ = experiment
    results = read(run / "results.json")
    base = results["baseline"]["tasks"]["squad-seed"]["scores"]
    ratio = results["params"]["ratio"]
    # LoRA rank 8 on q_proj (64->64) and v_proj (64->32) of 2 layers: (8*64 + 64*8) + (8*64 + 32*8) = 1792 per
    # layer, 3584 in all (tests/model/test_lora.py pins the tiny model's totals the same way).
    assert results["params"]["trainable"] == 3584
    # Recomputed from the predictions: the seed's EmF1 means and the judge's share correct at EPS 1e-2.
    for entry in results["checkpoints"]:
        folder = run / "checkpoints" / f"step-{entry['step']:06d}"
        records = [json.loads(line) for line in open(folder / "squad-seed" / "predictions.jsonl")]
        f1 = 100 * sum(r["scores"]["emf1"]["f1"] for r in records) / len(records)
        em = 100 * sum(r["scores"]["emf1"]["em"] for r in records) / len(records)
        judged = [json.loads(line) for line in open(folder / "math-worked" / "predictions.jsonl")]
        accuracy = sum(r["scores"]["judge"]["seed"]["0.01"] for r in judged) / len(judged)
        assert entry["tasks"]["squad-seed"]["scores"]["emf1.F1"] == pytest.approx(f1)
        assert entry["accuracy"] == pytest.approx(accuracy)
        assert entry["tasks"]["squad-seed"]["scores"]["emf1.Em"] == pytest.approx(em)
        scores = entry["tasks"]["squad-seed"]["scores"]
        passes = scores["emf1.F1"] >= 0.9 * base["emf1.F1"] and scores["emf1.Em"] >= 0.9 * base["emf1.Em"]
        assert entry["passes_gate"] == passes
        assert entry["score"] == (pytest.approx((1 - ratio) * 0.3 + accuracy * 0.7) if passes else None)
    passing = [e for e in results["checkpoints"] if e["passes_gate"]]
    if passing:
        assert results["best"]["step"] == max(passing, key=lambda e: (e["score"], e["step"]))["step"]
        assert (run / "best" / "adapter" / "adapter_model.safetensors").is_file()
    else:
        assert results["best"] is None


def test_rerun_redoes_nothing_and_a_changed_evaluation_redoes_only_it(experiment):
    run, words = experiment
    log = (run / "train" / "log.jsonl").read_text()
    assert main(["run", *words]) == 0
    assert (run / "train" / "log.jsonl").read_text() == log
    assert [r["steps"] for r in read(run / "results.json")["timing"] if r["phase"] == "training"] == [0]
    assert read(run / "baseline" / "squad-seed" / "metrics.json")["generated"] == 0
    assert read(run / "checkpoints" / "step-000004" / "math-worked" / "metrics.json")["generated"] == 0

    changed = [w for w in words if not w.startswith("new_task.max_new_tokens")] + ["new_task.max_new_tokens=5"]
    assert main(["run", *changed]) == 0
    assert (run / "train" / "log.jsonl").read_text() == log  # training untouched
    assert read(run / "checkpoints" / "step-000004" / "math-worked" / "metrics.json")["generated"] == 6
    assert read(run / "baseline" / "squad-seed" / "metrics.json")["generated"] == 0


@pytest.mark.parametrize("fmt", ["plain", "vicuna", "chat"])
def test_evaluation_reads_the_prompt_tokens_training_put_before_the_answer(fmt):
    from keeptune.data.prompts import format_prompt
    from keeptune.evaluate.samples import Sample
    from keeptune.evaluate.task import SpecTask
    from keeptune.experiment.config import ExperimentConfig, NewTaskConfig
    from keeptune.experiment.plan import new_task_spec
    from keeptune.train.records import IGNORE, Conversation, encode
    from tests.tiny import chat_tokenizer

    tokenizer = chat_tokenizer()
    problem = "计算 1 + 2 等于多少？"
    config = ExperimentConfig(new_task=NewTaskConfig(prompt="math", format=fmt))
    task = SpecTask(new_task_spec(config, None), [Sample("m0", {"problem": problem, "solution": "1 + 2 = 3"}, "-")],
                    tokenizer)
    bos = [tokenizer.bos_token_id] if task.add_bos else []  # as the engine puts it
    seen = bos + tokenizer(task.prompt(task.samples[0]), add_special_tokens=False).input_ids
    trained = encode([Conversation(1, format_prompt("math", problem), "1 + 2 = 3")], tokenizer, fmt,
                     seq_len=512).samples[0]
    assert trained.tokens[:len(seen)] == seen
    assert set(trained.labels[:len(seen)]) == {IGNORE} and trained.labels[len(seen)] != IGNORE
    assert (seen[0] == tokenizer.bos_token_id) == (fmt == "vicuna")


def test_a_max_new_tokens_shorter_than_the_answers_is_warned(tmp_path, capsys):
    from keeptune.core.io import write_jsonl
    from keeptune.data.math.build import conversation
    from keeptune.experiment.newdata import warn_if_answers_do_not_fit
    from tests.tiny import byte_tokenizer

    train = tmp_path / "train.jsonl"
    write_jsonl(train, [conversation(1, "q", "12 克", "mass"), conversation(2, "q", "1 + 2 = 3", "arithmetic")])
    longest = len("1 + 2 = 3".encode()) + 1  # one token per byte, and EOS
    warn_if_answers_do_not_fit(train, byte_tokenizer(), longest)
    assert capsys.readouterr().err == ""
    warn_if_answers_do_not_fit(train, byte_tokenizer(), longest - 1)
    assert f"longest training answer is {longest} tokens" in capsys.readouterr().err
    # The vicuna sequence's answer starts with a space (SPEC section 2): one token more.
    warn_if_answers_do_not_fit(train, byte_tokenizer(), longest, "vicuna")
    assert f"longest training answer is {longest + 1} tokens" in capsys.readouterr().err


def test_under_torchrun_every_rank_trains_and_evaluates_its_share(tmp_path):
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    words = tiny_experiment(tmp_path, "new_task.eval_n=4", "new_task.max_new_tokens=4", "train.max_steps=2",
                            "train.checkpoints=1", "tracking.every=1", "tracking.retention=2", "tracking.new_task=2",
                            "lora.dropout=0")
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                             "-m", "keeptune", "run", *words], cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"},
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "global batch 4 = micro-batch 2 x accumulation 1 x world 2" in result.stdout
    assert result.stdout.count("== baseline") == 1 and result.stdout.count("best checkpoint") + \
        result.stdout.count("no checkpoint passes the gate") == 1
    run = tmp_path / "run"
    for folder in (run / "baseline" / "squad-seed", run / "checkpoints" / "step-000002" / "math-worked",
                   run / "tracking" / "step-000001" / "squad-seed"):
        ids = [json.loads(line)["id"] for line in (folder / "predictions.jsonl").read_text().splitlines()]
        assert len(ids) == len(set(ids)) > 0, folder  # every sample once: the ranks' shares gathered, rank 0 wrote
    assert [t["step"] for t in read(run / "results.json")["tracking"]] == [1, 2]


def test_the_base_model_is_loaded_once_per_run(tmp_path, monkeypatch):
    """Baseline, training and both checkpoints' evaluations share one load of the base model."""
    from keeptune.experiment import runner
    from keeptune.model import load
    from keeptune.train import loop

    loads = []

    def counting(*args, **kwargs):
        loads.append(args[0] if args else kwargs.get("source"))
        return load.load_model(*args, **kwargs)

    for module in (runner, loop):
        monkeypatch.setattr(module, "load_model", counting)
    words = tiny_experiment(tmp_path, "new_task.n=8", "new_task.eval_n=2", "new_task.max_new_tokens=2",
                            "train.max_steps=2", "train.checkpoints=2", "tracking.every=1")
    assert main(["run", *words]) == 0
    model = tmp_path / "tiny"
    assert loads == [str(model)]
    assert len(read(tmp_path / "run" / "results.json")["checkpoints"]) == 2


def test_results_carry_each_scalars_interval_and_the_paired_retention(experiment):
    """The default (point) rule: decisions as before, with each evaluation's intervals (metrics.json's) and each
    gated scalar's paired retention, recomputed here from the predictions paired by sample id."""
    from keeptune.core import stats

    run, _ = experiment
    results = read(run / "results.json")
    assert results["tasks"][0]["gate"]["rule"] == "point" and results["tasks"][0]["gate"]["confidence"] == 0.95
    assert results["gate_rule"].startswith("a checkpoint passes when every retention task keeps each gated scalar")
    base_dir = run / "baseline" / "squad-seed"
    assert results["baseline"]["tasks"]["squad-seed"]["intervals"] == read(base_dir / "metrics.json")["intervals"]
    base = {r["id"]: r for r in map(json.loads, open(base_dir / "predictions.jsonl"))}
    for entry in results["checkpoints"]:
        folder = run / "checkpoints" / f"step-{entry['step']:06d}"
        assert entry["tasks"]["math-worked"]["intervals"] == read(folder / "math-worked" / "metrics.json")["intervals"]
        tuned = {r["id"]: r for r in map(json.loads, open(folder / "squad-seed" / "predictions.jsonl"))}
        ids = sorted(base)
        decision = entry["retention_uncertainty"]["squad-seed"]
        assert decision["rule"] == "point" and decision["passed"] == entry["gate"]["squad-seed"]
        for scalar, key in (("emf1.F1", "f1"), ("emf1.Em", "em")):
            expected = stats.retention([100 * base[i]["scores"]["emf1"][key] for i in ids],
                                       [100 * tuned[i]["scores"]["emf1"][key] for i in ids], 0.9, 0.95, 0)
            numbers = decision["scalars"][scalar]
            assert numbers["base_zero"] == expected.base_zero and numbers["p_at_least"] == expected.p_at_least
            assert numbers["lower"] == (expected.lower if expected.lower is None or np.isfinite(expected.lower)
                                        else None)
    report = (run / "report.md").read_text(encoding="utf-8")
    assert "## Gate decisions" in report and "Gate of squad-seed: rule point" in report


def test_a_confident_gate_decides_by_the_lower_bound_and_says_so(tmp_path, capsys):
    """`rule: confident`: each checkpoint passes only when every gated scalar's paired lower bound (recomputed
    here) reaches the fraction; results.json and the report state the rule, the confidence and the numbers."""
    from keeptune.core import stats

    words = tiny_experiment(tmp_path, "new_task.eval_n=4", "new_task.max_new_tokens=4", "train.max_steps=2",
                            "train.checkpoints=2", "tracking.every=0", "original.rule=confident",
                            "original.confidence=0.8", "gate=0.5")
    assert main(["run", *words]) == 0
    out = capsys.readouterr().out
    run = tmp_path / "run"
    results = read(run / "results.json")
    assert results["tasks"][0]["gate"] | {"thresholds": None} == {
        "metrics": ["emf1.F1", "emf1.Em"], "fraction": 0.5, "thresholds": None, "rule": "confident",
        "confidence": 0.8, "lower_is_better": []}
    assert "lower bound" in results["gate_rule"]
    base = {r["id"]: r for r in map(json.loads, open(run / "baseline" / "squad-seed" / "predictions.jsonl"))}
    ids = sorted(base)
    for entry in results["checkpoints"]:
        folder = run / "checkpoints" / f"step-{entry['step']:06d}" / "squad-seed"
        tuned = {r["id"]: r for r in map(json.loads, open(folder / "predictions.jsonl"))}
        kept = []
        for key in ("f1", "em"):
            r = stats.retention([100 * base[i]["scores"]["emf1"][key] for i in ids],
                                [100 * tuned[i]["scores"]["emf1"][key] for i in ids], 0.5, 0.8, 0)
            kept.append(r.base_zero or r.lower >= 0.5)
        assert entry["passes_gate"] is all(kept) and entry["retention_uncertainty"]["squad-seed"]["rule"] == "confident"
        assert entry["score"] is None or all(kept)
    report = (run / "report.md").read_text(encoding="utf-8")
    assert "rule confident: the one-sided 80% lower bound" in report and "## Gate decisions" in report
    assert "confident (80%)" in report
    assert ("best checkpoint: step" in out) == (results["best"] is not None)
    # keeptune compare of the run's two checkpoints: every task, both scalars of SQuAD's two metrics
    assert main(["compare", str(run), "--steps", "1,2", "--json"]) == 0
    compared = json.loads(capsys.readouterr().out)
    assert {(row["task"], row["scalar"]) for row in compared["rows"]} >= {("squad-seed", "emf1.F1"),
                                                                         ("math-worked", "judge.accuracy@0.01")}
