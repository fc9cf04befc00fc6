"""Retention method `corda` on a tiny random Llama: PEFT's CorDA (knowledge-preserved mode) starts at the
base model on a residual base, and everything downstream of training stays right with the rewritten
weights: the merged model, every checkpoint in plain PEFT on the original base and in place, `keeptune
merge`, `keeptune export --format mindformers`, the parameter accounting, kl against the base."""
from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
import torch
from peft import PeftModel
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from keeptune.cli import main
from keeptune.model import adapter as adapters
from keeptune.model.lora import LoraSettings, apply_corda, apply_lora, count_parameters
from keeptune.model.params import lora_accounting, source_config
from keeptune.retention.corda import prompt_runner
from keeptune.retention.training import train
from keeptune.train import checkpoint
from tests.tiny import byte_tokenizer, save_tiny, tiny_llama
from tests.train.conftest import conversation, one_thread, tiny_config  # noqa: F401  (one_thread: autouse, one torch thread)

IDS = torch.tensor([[1, 5, 9, 33, 100, 7, 250, 3, 77, 12]])
# Preservation prompts: passages and questions, varied enough to give each 64-wide input a full-rank covariance.
PROMPTS = [f"Passage {i}: the {w} river runs {7 * i + 3} miles past the town of {w.title()}ford, where "
           f"{i % 5 + 2} bridges cross it. Question: how many bridges cross the {w} river?"
           for i, w in enumerate(["red", "blue", "long", "slow", "old", "wide", "cold", "dark", "north", "east",
                                  "west", "south", "deep", "clear", "green", "quiet"])]
RUN = ("retention.methods=[corda]", "train.epochs=2", "train.checkpoints=3", "train.precision=fp32")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    from keeptune.core.io import write_jsonl

    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    write_jsonl(path, [conversation(i) for i in range(48)])
    return path


@pytest.fixture(scope="module")
def corda_run(tiny, data, tmp_path_factory):
    """12 steps with corda, checkpoints at steps 4, 8, 12."""
    with torch.random.fork_rng():
        torch.set_num_threads(1)
        return train(tiny_config(tiny, data, tmp_path_factory.mktemp("runs") / "run", *RUN), preservation=PROMPTS)


def logits_of(model) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(IDS).logits


def original(tiny: Path):
    return AutoModelForCausalLM.from_pretrained(tiny)


def test_corda_starts_at_the_base_model_on_a_residual_base():
    base = tiny_llama()
    model = tiny_llama()
    peft_model = apply_corda(model, LoraSettings(rank=4), prompt_runner(model, byte_tokenizer(), PROMPTS))
    assert torch.allclose(logits_of(peft_model), logits_of(base), atol=1e-5)  # W_res + (alpha/r) B0 A0 = W
    layer = peft_model.base_model.model.model.layers[0].self_attn.q_proj
    assert not torch.allclose(layer.base_layer.weight, base.model.layers[0].self_attn.q_proj.weight, atol=1e-3)
    assert layer.lora_B["default"].weight.abs().sum() > 0  # the adapter starts non-zero
    with peft_model.disable_adapter():  # without it: the residual, not the base
        assert not torch.allclose(logits_of(peft_model), logits_of(base), atol=1e-3)
    # the directions kept are W C's smallest: B0 A0 is small next to W (knowledge-preserved mode)
    delta = layer.scaling["default"] * layer.lora_B["default"].weight @ layer.lora_A["default"].weight
    assert delta.norm() < 0.5 * base.model.layers[0].self_attn.q_proj.weight.norm()


def test_the_decomposition_cache_is_read_instead_of_running_the_prompts(tmp_path):
    cache, settings = tmp_path / "eigens.safetensors", LoraSettings(rank=4)
    first = apply_corda(model := tiny_llama(), settings, prompt_runner(model, byte_tokenizer(), PROMPTS), cache, "k1")

    def never():
        raise AssertionError("the cache holds this key: the prompts must not run")

    again = apply_corda(tiny_llama(), settings, never, cache, "k1")
    assert all(torch.equal(a, b) for a, b in zip(first.state_dict().values(), again.state_dict().values()))
    ran = []
    apply_corda(model := tiny_llama(), settings, lambda: (ran.append(1), prompt_runner(model, byte_tokenizer(),
                                                                                      PROMPTS[:8])())[1],
                cache, "k2")
    assert ran  # another key: computed again


def test_the_merged_model_equals_the_unmerged_one(corda_run):
    trained = logits_of(corda_run.model)
    merged = copy.deepcopy(corda_run.model).merge_and_unload()
    assert torch.allclose(logits_of(merged), trained, atol=1e-5)


def test_every_checkpoint_is_a_plain_lora_on_the_original_base_and_loads_in_place(corda_run, tiny):
    folders = checkpoint.complete_checkpoints(corda_run.run)
    assert [checkpoint.step_of(f) for f in folders] == [4, 8, 12]
    trained = logits_of(corda_run.model)
    for folder in folders:
        config = json.loads((folder / "adapter_config.json").read_text())
        assert (config["r"], config["lora_alpha"], config["init_lora_weights"]) == (16, 32, True)
        plain = logits_of(PeftModel.from_pretrained(original(tiny), folder))
        # the experiment's way: the checkpoint's weights as trained, into the model trained in place
        adapters.load_adapter_weights(folder, corda_run.model)
        assert torch.allclose(logits_of(corda_run.model), plain, atol=1e-5)
    assert torch.allclose(plain, trained, atol=1e-5)  # the last checkpoint is the trained model
    assert not torch.allclose(plain, logits_of(original(tiny)), atol=1e-3)  # and it learned something
    final = load_file(corda_run.adapter / "adapter_model.safetensors")
    last = load_file(folders[-1] / "adapter_model.safetensors")
    assert final.keys() == last.keys() and all(torch.equal(final[k], last[k]) for k in final)
    info = json.loads((corda_run.adapter / "keeptune.json").read_text())
    assert info["corda"]["trained_rank"] == 8 and info["corda"]["prompts"] == len(PROMPTS)
    assert {p.name for p in (corda_run.run / "corda").iterdir()} == {"eigens.safetensors", "corda_initial"}


def test_a_corda_checkpoint_does_not_load_into_a_plain_model(corda_run, tiny):
    with pytest.raises(RuntimeError, match="a CorDA checkpoint cannot be loaded into a plain LoRA model"):
        adapters.load_adapter_weights(corda_run.adapter.parent / "checkpoints" / "step-000004",
                                        apply_lora(original(tiny), LoraSettings()))


def test_keeptune_merge_and_mindformers_export_give_the_trained_model(corda_run, tiny, tmp_path, capsys):
    trained = logits_of(corda_run.model)
    assert main(["merge", str(corda_run.adapter), "--out", str(tmp_path / "merged")]) == 0
    assert torch.allclose(logits_of(AutoModelForCausalLM.from_pretrained(tmp_path / "merged")), trained, atol=1e-5)
    assert main(["export", str(corda_run.adapter), "--format", "mindformers", "--out", str(tmp_path / "a.ckpt")]) == 0
    assert "lora_rank: 16" in capsys.readouterr().out
    assert main(["import", str(tmp_path / "a.ckpt"), "--alpha", "32", "--model", str(tiny),
                 "--out", str(tmp_path / "back")]) == 0
    back = PeftModel.from_pretrained(original(tiny), tmp_path / "back")
    assert torch.allclose(logits_of(back), trained, atol=1e-5)


def test_parameter_accounting_counts_the_rank_r_matrices_that_train(corda_run, tiny):
    # trainable: the A (8 x in) and B (out x 8) CorDA trains, as plain LoRA of rank 8 (3584 on the tiny
    # Llama's q_proj and v_proj); total: the base model's, its residual weights of the same shapes
    count = count_parameters(corda_run.model)
    assert count == lora_accounting(source_config(tiny), LoraSettings())[1]
    assert (count.trainable, count.total) == (3584, 107328)
    saved = load_file(corda_run.adapter / "adapter_model.safetensors")
    assert sum(t.numel() for t in saved.values()) == 2 * 3584  # the file for the original base: rank 16


def test_kl_with_corda_measures_against_the_base_model(tiny, data, tmp_path):
    result = train(tiny_config(tiny, data, tmp_path / "run", "retention.methods=[kl,corda]", "train.max_steps=6",
                               "train.precision=fp32", "lora.dropout=0.0"), preservation=PROMPTS)
    kls = [json.loads(line)["kl"] for line in (result.run / "log.jsonl").read_text().splitlines()]
    assert kls[0] < 1e-9 and kls[1] < 1e-9  # the reference is the untrained CorDA model: the base, to float error
    assert kls[-1] > 1e3 * max(kls[0], 1e-12)
    assert sorted(p.name for p in result.adapter.iterdir()) == ["adapter_config.json", "adapter_model.safetensors",
                                                                "keeptune.json"]  # the frozen reference is not saved


def test_the_experiment_rewrites_the_base_after_its_baseline_and_evaluates_every_checkpoint_right(tmp_path):
    from tests.experiment.test_runner import tiny_experiment

    def raws(folder: Path) -> list[str]:
        return [json.loads(line)["raw"] for line in (folder / "predictions.jsonl").read_text().splitlines()]

    preservation = tmp_path / "preservation.json"  # passages the gate does not evaluate
    preservation.write_text(json.dumps({"version": "1.1", "data": [{"title": "p", "paragraphs": [
        {"context": prompt.split(" Question")[0], "qas": [{"id": f"p{i}", "question": "How many bridges?",
                                                           "answers": [{"text": "2", "answer_start": 0}]}]}
        for i, prompt in enumerate(PROMPTS)]}]}))
    words = tiny_experiment(tmp_path, "name=corda", "new_task.eval_n=2", "new_task.max_new_tokens=4",
                            "train.max_steps=4", "train.checkpoints=2", "train.lr=1e-2", "tracking.every=0",
                            "train.precision=fp32", "retention.methods=[corda]", f"retention.preservation={preservation}",
                            "retention.preservation_samples=8")
    assert main(["run", *words]) == 0
    run, model, squad = tmp_path / "run", tmp_path / "tiny", tmp_path / "squad.json"
    # the baseline saw the original weights: CorDA rewrote them afterwards, inside training
    assert main(["eval", "squad-seed", "--model", str(model), "--data", str(squad), "--out", str(tmp_path / "b")]) == 0
    assert raws(tmp_path / "b") == raws(run / "baseline" / "squad-seed")
    # each checkpoint evaluated in place (its weights on the residual) = its adapter in plain PEFT on the original base
    folders = checkpoint.complete_checkpoints(run / "train")
    assert len(folders) == 2 and all((f / adapters.CORDA_WEIGHTS).is_file() for f in folders)
    for folder in folders:
        out = tmp_path / folder.name
        assert main(["eval", "squad-seed", "--adapter", str(folder), "--model", str(model), "--data", str(squad),
                     "--out", str(out)]) == 0
        assert raws(out) == raws(run / "checkpoints" / folder.name / "squad-seed")
    results = json.loads((run / "results.json").read_text())
    assert [r["phase"] for r in results["timing"]].count("corda") == 1  # its one-off cost, apart from the steps


def squad_file(path: Path, contexts: list[str]) -> Path:
    path.write_text(json.dumps({"version": "1.1", "data": [{"title": "p", "paragraphs": [
        {"context": context, "qas": [{"id": f"p{i}", "question": "What is it about?",
                                      "answers": [{"text": context.split()[0], "answer_start": 0}]}]}
        for i, context in enumerate(contexts)]}]}))
    return path


def test_keeptune_train_reads_retention_preservation_and_refuses_the_gate_s_own_passages(tiny, data, tmp_path,
                                                                                       capsys):
    from keeptune.data.shared import PACKAGED_DIR

    words = [f"model.source={tiny}", f"data.path={data}", "train.max_steps=2", "train.global_batch=8",
             "train.micro_batch=4", "retention.methods=[corda]", "retention.preservation_samples=8"]
    source = squad_file(tmp_path / "p.json", [p.split(" Question")[0] for p in PROMPTS])
    assert main(["train", *words, f"retention.preservation={source}", f"out={tmp_path / 'run'}"]) == 0
    info = json.loads((tmp_path / "run" / "adapter" / "keeptune.json").read_text())
    assert info["corda"]["prompts"] == 8
    gate = next(PACKAGED_DIR.glob("*.json"))  # squad-seed's packaged article, which keeptune train checks against
    assert main(["train", *words, f"retention.preservation={gate}", f"out={tmp_path / 'leak'}"]) == 2
    assert "overlap" in capsys.readouterr().err
    assert not (tmp_path / "leak").exists()  # refused before any model load or output
