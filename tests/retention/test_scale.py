"""Retention method `scale` on a tiny random Llama: the scaled adapter against forwards computed without it (the
base model itself, the weights merged by hand), the folded export loaded by plain PEFT and by `keeptune merge`,
and an experiment that evaluates, judges and exports every (checkpoint, scale)."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from keeptune.core.errors import ConfigError
from keeptune.model.adapter import export_adapter
from keeptune.model.lora import LoraSettings, apply_lora
from keeptune.retention import scale as scaling
from keeptune.train.config import RetentionConfig
from tests.tiny import save_tiny
from tests.train.conftest import one_thread  # noqa: F401  (autouse: one torch thread here too)

SETTINGS = LoraSettings(targets=("q_proj", "v_proj"), rank=8, alpha=16, dropout=0.0)
IDS = torch.tensor([[5, 80, 81, 90, 100, 7, 3, 60, 61, 62, 63, 64]])


def logits(model):
    with torch.no_grad():
        return model(input_ids=IDS).logits


def fresh(directory):
    return AutoModelForCausalLM.from_pretrained(directory).eval()


def randomised(peft_model, matrix: str = "lora_B", seed: int = 1, std: float = 0.5):
    """`peft_model` (in eval mode) with every `matrix` of its adapter drawn at random: a trained adapter's update
    is not zero, and PEFT starts it at zero."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if matrix in name:
                param.copy_(torch.randn(param.shape, generator=generator) * std)
    return peft_model.eval()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """The tiny model's directory and a PEFT model on it whose B matrices are random."""
    directory = save_tiny(tmp_path_factory.mktemp("tiny") / "model")
    return directory, randomised(apply_lora(fresh(directory), SETTINGS))


def merged_by_hand(directory, peft_model, factor: float):
    """The base model with W + factor x (alpha / r) x B @ A written into each adapted layer (no PEFT forward)."""
    model = fresh(directory)
    modules = dict(model.named_modules())
    with torch.no_grad():
        for name, module in peft_model.named_modules():
            if hasattr(module, "lora_A") and "default" in module.lora_A:
                a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
                target = modules[name.removeprefix("base_model.model.")]
                target.weight += factor * SETTINGS.alpha / SETTINGS.rank * (b @ a)
    return model


def test_scale_0_is_the_base_model_and_1_the_adapter(tiny):
    directory, peft_model = tiny
    base, adapted = logits(fresh(directory)), logits(peft_model)
    assert not torch.allclose(base, adapted, atol=1e-3)  # the adapter does something
    assert torch.allclose(adapted, logits(merged_by_hand(directory, peft_model, 1.0)), atol=1e-5)
    with scaling.scaled(peft_model, 0.0):
        assert torch.equal(logits(peft_model), base)  # + 0 x update: the base model's logits exactly
    with scaling.scaled(peft_model, 1.0):
        assert torch.equal(logits(peft_model), adapted)
    with scaling.scaled(peft_model, 0.5):
        half = logits(peft_model)
    assert torch.allclose(half, logits(merged_by_hand(directory, peft_model, 0.5)), atol=1e-5)
    assert not torch.allclose(half, adapted, atol=1e-3) and not torch.allclose(half, base, atol=1e-3)
    assert torch.equal(logits(peft_model), adapted)  # the scale is restored on leaving


def write_checkpoint(directory, peft_model, folder):
    peft_model.save_pretrained(folder)
    (folder / "keeptune.json").write_text(json.dumps({"base_model": str(directory), "step": 4}), encoding="utf-8")
    return folder


def test_a_folded_export_loads_in_plain_peft_and_merges_to_the_scaled_model(tiny, tmp_path, capsys):
    from peft import PeftModel

    from keeptune.model.commands import merge

    directory, peft_model = tiny
    checkpoint = write_checkpoint(directory, peft_model, tmp_path / "step-000004")
    exported = export_adapter(checkpoint, tmp_path / "best" / "adapter", 0.5)
    assert json.loads((exported / "keeptune.json").read_text())["scale"] == 0.5
    before = load_file(checkpoint / "adapter_model.safetensors")
    after = load_file(exported / "adapter_model.safetensors")
    assert before.keys() == after.keys() and any(".lora_B." in key for key in after)
    for key, value in after.items():  # B halved, A untouched
        assert torch.equal(value, before[key] * 0.5 if ".lora_B." in key else before[key]), key

    expected = logits(merged_by_hand(directory, peft_model, 0.5))
    plain = PeftModel.from_pretrained(fresh(directory), exported).eval()  # no keeptune code
    assert torch.allclose(logits(plain), expected, atol=1e-5)
    with scaling.scaled(peft_model, 0.5):
        assert torch.allclose(logits(plain), logits(peft_model), atol=1e-6)
    merged = merge(exported, out=tmp_path / "merged")
    assert torch.allclose(logits(fresh(merged)), expected, atol=1e-5)

    unscaled = export_adapter(checkpoint, tmp_path / "plain" / "adapter")  # scale 1: the checkpoint's own files
    weights = "adapter_model.safetensors"
    assert (unscaled / weights).read_bytes() == (checkpoint / weights).read_bytes()
    assert "scale" not in json.loads((unscaled / "keeptune.json").read_text())


def test_factors_folders_and_methods():
    on = RetentionConfig(methods=("kl", "scale"), scales=(0.75, 1, 0.5, 0.75, 0))
    assert scaling.factors(on) == (1.0, 0.75, 0.5, 0.0)  # as trained first; 1 and repeats once
    assert scaling.factors(RetentionConfig(methods=("kl",), scales=(0.5,))) == (1.0,)  # scales need `scale`
    assert [scaling.folder(s) for s in (0.5, 0.0, 1 / 3)] == ["scale-0.5", "scale-0.0", "scale-0.3333333333333333"]
    assert scaling.state_methods(on.methods, 1.0) == ["kl"]
    assert scaling.state_methods(on.methods, 0.5) == ["kl", "scale"]


def test_scale_refuses_corda_and_a_task_named_like_its_folders():
    scaling.check(RetentionConfig(methods=("corda",)), ["scale-0.5"])  # off: nothing to refuse
    with pytest.raises(ConfigError, match="scale does not combine with corda"):
        scaling.check(RetentionConfig(methods=("scale", "corda")), ["squad-seed"])
    with pytest.raises(ConfigError, match="task name 'scale-0.5'"):
        scaling.check(RetentionConfig(methods=("scale",)), ["scale-0.5", "math-worked"])


# --- end to end --------------------------------------------------------------------------

def self_answered_squad(tmp, model):
    """A 3-paragraph SQuAD file whose answers are the base model's own greedy answers: the base model scores
    100, so with gate 1.0 a state passes only while it answers exactly as the base model does."""
    from keeptune.cli import main
    from tests.experiment.test_runner import SQUAD

    squad = tmp / "probe.json"
    squad.write_text(json.dumps(SQUAD), encoding="utf-8")
    assert main(["eval", "squad", "--model", str(model), "--data", str(squad), "--out", str(tmp / "probe")]) == 0
    answers = {r["id"]: r["prediction"] for r in map(json.loads, open(tmp / "probe" / "predictions.jsonl"))}
    assert all(answers.values()), answers  # an empty answer would not score 100
    data = json.loads(json.dumps(SQUAD))
    for paragraph in data["data"][0]["paragraphs"]:
        for qa in paragraph["qas"]:
            qa["answers"] = [{"text": answers[qa["id"]], "answer_start": 0}]
    path = tmp / "squad.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def plain_then_with(tmp, *methods: str) -> tuple[dict, dict]:
    """The same tiny experiment twice in TMP/run: plain LoRA, then with the post-training `methods` words (which
    must not train again: the log stays); gate 1.0 on a SQuAD file the base model answers perfectly. The two
    results.json."""
    from keeptune.cli import main

    model = save_tiny(tmp / "tiny")
    squad = self_answered_squad(tmp, model)
    words = [f"model.source={model}", f"original.data={squad}", f"out={tmp / 'run'}", "name=tiny", "new_task.n=16",
             "new_task.seq_len=512", "train.global_batch=4", "train.micro_batch=2", "batch_size=4",
             "new_task.eval_n=4", "new_task.max_new_tokens=6", "train.max_steps=4", "train.checkpoints=2",
             "train.lr=1e-2", "tracking.every=0", "gate=1.0"]
    assert main(["run", *words]) == 0
    plain = json.loads((tmp / "run" / "results.json").read_text())
    log = (tmp / "run" / "train" / "log.jsonl").read_text()
    assert main(["run", *words, *methods]) == 0
    assert (tmp / "run" / "train" / "log.jsonl").read_text() == log  # trained nothing: the checkpoints stay
    return plain, json.loads((tmp / "run" / "results.json").read_text())


@pytest.fixture(scope="module")
def scaled_run(tmp_path_factory):
    """The tiny experiment plain, then with retention.methods=[scale] and scales 0.5 and 0."""
    tmp = tmp_path_factory.mktemp("scaled")
    plain, scaled = plain_then_with(tmp, "retention.methods=[scale]", "retention.scales=[0.5,0]")
    return tmp / "run", plain, scaled


def test_every_checkpoint_and_scale_is_an_entry_and_scale_1_is_the_plain_run(scaled_run):
    run, plain, results = scaled_run
    assert [(e["step"], e["scale"], e["methods"]) for e in results["checkpoints"]] == [
        (2, 1.0, []), (2, 0.5, ["scale"]), (2, 0.0, ["scale"]), (4, 1.0, []), (4, 0.5, ["scale"]), (4, 0.0, ["scale"])]
    assert [e for e in results["checkpoints"] if e["scale"] == 1] == plain["checkpoints"]
    assert [e["scale"] for e in plain["checkpoints"]] == [1.0, 1.0]
    for step in ("step-000002", "step-000004"):  # scale 1 was the plain run's evaluation, reused
        assert json.loads((run / "checkpoints" / step / "squad-seed" / "metrics.json").read_text())["generated"] == 0
        for folder in ("scale-0.5", "scale-0.0"):
            assert json.loads((run / "checkpoints" / step / folder / "math-worked" / "metrics.json").read_text())[
                "total_count"] == 4
    base = results["baseline"]["tasks"]["squad-seed"]["scores"]
    assert base["emf1.F1"] == pytest.approx(100.0)  # the base model's own answers
    for entry in results["checkpoints"]:
        scores = entry["tasks"]["squad-seed"]["scores"]
        assert entry["passes_gate"] == (scores["emf1.F1"] >= base["emf1.F1"] and scores["emf1.Em"] >= base["emf1.Em"])
        if entry["scale"] == 0:  # the base model: its answers, its scores
            assert entry["tasks"] == results["baseline"]["tasks"]
    assert [r["phase"] for r in results["timing"] if r["phase"].startswith("checkpoint 4")] == [
        "checkpoint 4", "checkpoint 4", "checkpoint 4 scale 0.5", "checkpoint 4 scale 0.5", "checkpoint 4 scale 0",
        "checkpoint 4 scale 0"]


def test_the_best_pair_is_chosen_by_the_gate_and_exported_folded(scaled_run):
    run, plain, results = scaled_run
    passing = [e for e in results["checkpoints"] if e["passes_gate"]]
    chosen = max(passing, key=lambda e: (e["score"], e["scale"], e["step"]))  # gate.py's documented rule
    best = results["best"]
    assert (best["step"], best["scale"]) == (chosen["step"], chosen["scale"])
    assert best["scale"] != 1  # four steps at lr 1e-2 change the answers; scale 0 answers as the base model
    assert not any(e["passes_gate"] for e in plain["checkpoints"]) and plain["best"] is None
    exported = run / "best" / "adapter"
    assert json.loads((exported / "keeptune.json").read_text())["scale"] == best["scale"]
    trained = load_file(run / "train" / "checkpoints" / f"step-{best['step']:06d}" / "adapter_model.safetensors")
    for key, value in load_file(exported / "adapter_model.safetensors").items():
        assert torch.equal(value, trained[key] * best["scale"] if ".lora_B." in key else trained[key]), key


def test_the_report_draws_the_frontier_and_lists_method_and_scale(scaled_run):
    run, _, results = scaled_run
    assert (run / "plots" / "frontier.png").read_bytes()[:4] == b"\x89PNG"
    from tests.report.synthetic import markdown_rows

    report = (run / "report.md").read_text(encoding="utf-8")
    assert "](plots/frontier.png)" in report and "- Method: lora+scale." in report
    rows = markdown_rows(report.split("## Checkpoints\n", 1)[1].split("\n## ", 1)[0].split("\n\n", 1)[1])
    expected = [[str(e["step"]), "lora" if e["scale"] == 1 else "lora+scale", f"{e['scale']:g}"]
                for e in results["checkpoints"]]
    assert [row[:3] for row in rows] == expected
    assert sum(row[-1].endswith("(best)") for row in rows) == 1
