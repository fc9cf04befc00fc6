"""`lora.init: mica` on a tiny random Llama: PEFT's MiCA initialisation (B the r left singular vectors of W with
the smallest singular values, frozen; A zero, trained) as PEFT's own get_peft_model makes it, the parameter
accounting of what trains, and `keeptune train` end to end: B stays, A learns, every checkpoint is a plain LoRA
that plain PEFT, `keeptune merge` and the MindFormers export load as the trained model, and a resumed run ends
where an uninterrupted one does."""
from __future__ import annotations

import copy
import dataclasses
import json
import shutil

import pytest
import torch
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from keeptune.cli import main
from keeptune.core.errors import ConfigError
from keeptune.model.lora import LoraSettings, apply_lora, count_parameters, lora_config
from keeptune.model.params import lora_accounting, source_config
from keeptune.retention.training import train
from keeptune.train import checkpoint
from keeptune.train.config import load_config
from tests.tiny import save_tiny, tiny_llama
from tests.train.conftest import conversation, one_thread, tiny_config, tiny_words  # noqa: F401  (one_thread: autouse)

MICA = LoraSettings(targets=("q_proj", "v_proj"), rank=8, alpha=16, dropout=0.0, init="mica")
IDS = torch.tensor([[1, 5, 9, 33, 100, 7, 250, 3, 77, 12]])


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    return save_tiny(tmp_path_factory.mktemp("tiny") / "model")


@pytest.fixture(scope="module")
def tiny_data(tmp_path_factory):
    from keeptune.core.io import write_jsonl

    path = tmp_path_factory.mktemp("data") / "train.jsonl"
    write_jsonl(path, [conversation(i) for i in range(48)])
    return path


def logits_of(model) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(IDS).logits


def adapted_layers(peft_model):
    return {name: module for name, module in peft_model.named_modules()
            if hasattr(module, "lora_A") and "default" in module.lora_A}


def test_mica_is_peft_s_own_initialisation():
    ours = apply_lora(tiny_llama(), MICA)
    reference = get_peft_model(tiny_llama(), LoraConfig(r=8, lora_alpha=16, lora_dropout=0.0, bias="none",
                                                        target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM",
                                                        init_lora_weights="mica"))
    mine, theirs = ours.state_dict(), reference.state_dict()
    assert mine.keys() == theirs.keys() and all(torch.equal(mine[k], theirs[k]) for k in mine)
    assert [(n, p.requires_grad) for n, p in ours.named_parameters()] == \
        [(n, p.requires_grad) for n, p in reference.named_parameters()]
    layers = adapted_layers(ours)
    assert len(layers) == 4
    for name, module in layers.items():
        a, b = module.lora_A["default"].weight, module.lora_B["default"].weight
        assert a.requires_grad and not b.requires_grad, name  # only A trains
        assert torch.count_nonzero(a) == 0, name  # A starts at zero: the model starts as the base model
        # B: the last r left singular vectors of W (the smallest singular values), each up to its sign
        u = torch.linalg.svd(module.get_base_layer().weight.detach(), full_matrices=False)[0][:, -8:]
        assert torch.allclose((u.T @ b).abs(), torch.eye(8), atol=1e-5), name
    assert torch.equal(logits_of(ours), logits_of(tiny_llama()))


def test_parameter_accounting_counts_the_a_matrices_that_train(tiny_dir):
    # A is rank x in: q_proj 8 x 64 and v_proj 8 x 64 on 2 layers = 2048 (plain LoRA adds the Bs: 3584)
    on_meta = lora_accounting(source_config(tiny_dir), MICA)[1]
    real = count_parameters(apply_lora(AutoModelForCausalLM.from_pretrained(tiny_dir), MICA))
    assert on_meta == real
    assert real.trainable == sum(m.lora_A["default"].weight.numel()
                                 for m in adapted_layers(apply_lora(tiny_llama(), MICA)).values()) == 2048
    plain = lora_accounting(source_config(tiny_dir), dataclasses.replace(MICA, init="default"))[1]
    assert (plain.trainable, plain.total) == (3584, real.total)


def test_mica_does_not_combine_with_corda():
    with pytest.raises(ConfigError, match="'lora.init' is 'mica' and 'retention.methods' has corda"):
        load_config(None, ["lora.init=mica", "retention.methods=[corda]"])
    with pytest.raises(ValueError, match="CorDA and lora.init=mica"):
        lora_config(tiny_llama(), MICA, corda=True)
    with pytest.raises(ConfigError, match="lora.init"):
        load_config(None, ["lora.init=pissa"])  # PEFT's other initialisations are not switches


def test_a_peft_without_mica_is_refused_not_trained_as_plain_lora(monkeypatch):
    import peft.tuners.lora.variants

    monkeypatch.delattr(peft.tuners.lora.variants, "MiCALinearVariant")
    with pytest.raises(ValueError, match="lora.init=mica needs a PEFT that ships"):
        lora_config(tiny_llama(), MICA)


# --- keeptune train ------------------------------------------------------------------------

RUN = ("lora.init=mica", "train.max_steps=6", "train.checkpoints=2", "train.precision=fp32")


@pytest.fixture(scope="module")
def mica_run(tiny_dir, tiny_data, tmp_path_factory):
    """`keeptune train` with lora.init=mica: 6 steps, checkpoints at steps 3 and 6."""
    out = tmp_path_factory.mktemp("runs") / "run"
    with torch.random.fork_rng():
        torch.set_num_threads(1)
        assert main(["train", *tiny_words(tiny_dir, tiny_data, out, *RUN)]) == 0
    return out


def test_b_stays_a_learns_and_every_checkpoint_is_a_plain_lora(mica_run, tiny_dir):
    initial = {name: module.lora_B["default"].weight.detach()
               for name, module in adapted_layers(apply_lora(AutoModelForCausalLM.from_pretrained(tiny_dir),
                                                             MICA)).items()}
    folders = checkpoint.complete_checkpoints(mica_run)
    assert [checkpoint.step_of(f) for f in folders] == [3, 6]
    for folder in folders:
        weights = load_file(folder / "adapter_model.safetensors")
        assert len(weights) == 8  # A and B of 4 layers: the frozen Bs are saved too
        for name, b in initial.items():
            key = f"{name}.lora_B.weight"
            assert torch.equal(weights[key], b), key  # frozen: MiCA's B as initialised
            assert torch.count_nonzero(weights[f"{name}.lora_A.weight"]) > 0  # trained from zero
        config = json.loads((folder / "adapter_config.json").read_text())
        assert config["init_lora_weights"] is True  # once trained, a plain LoRA: no SVD when PEFT loads it
        assert json.loads((folder / "keeptune.json").read_text())["config"]["lora"]["init"] == "mica"
    optimizer = load_file(folders[-1] / "optimizer.safetensors")
    assert sum(v.numel() for k, v in optimizer.items() if k.endswith("::exp_avg")) == 2048  # only A is optimised


def test_a_mica_adapter_loads_merges_and_exports_as_the_trained_model(mica_run, tiny_dir, tmp_path, capsys):
    adapter = mica_run / "adapter"
    trained = apply_lora(AutoModelForCausalLM.from_pretrained(tiny_dir), MICA)  # the model as training made it
    from keeptune.model.adapter import load_adapter_weights

    load_adapter_weights(adapter, trained)
    expected = logits_of(trained)
    base = logits_of(AutoModelForCausalLM.from_pretrained(tiny_dir))
    assert not torch.allclose(expected, base, atol=1e-4)  # it learned something
    plain = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_dir), adapter)
    assert torch.allclose(logits_of(plain), expected, atol=1e-5)
    assert torch.allclose(logits_of(copy.deepcopy(plain).merge_and_unload()), expected, atol=1e-5)
    assert main(["merge", str(adapter), "--out", str(tmp_path / "merged")]) == 0
    assert torch.allclose(logits_of(AutoModelForCausalLM.from_pretrained(tmp_path / "merged")), expected, atol=1e-5)
    assert main(["export", str(adapter), "--format", "mindformers", "--out", str(tmp_path / "a.ckpt")]) == 0
    assert "lora_rank: 8" in capsys.readouterr().out
    assert main(["import", str(tmp_path / "a.ckpt"), "--alpha", "16", "--model", str(tiny_dir),
                 "--out", str(tmp_path / "back")]) == 0
    back = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_dir), tmp_path / "back")
    assert torch.allclose(logits_of(back), expected, atol=1e-5)


def test_a_resumed_mica_run_ends_where_an_uninterrupted_one_does(mica_run, tiny_dir, tiny_data, tmp_path):
    out = tmp_path / "resumed"
    with torch.random.fork_rng():
        train(tiny_config(tiny_dir, tiny_data, out, *RUN))
    shutil.rmtree(out / "checkpoints" / "step-000006")  # as if killed after its first checkpoint
    shutil.rmtree(out / "adapter")
    with torch.random.fork_rng():
        resumed = train(dataclasses.replace(tiny_config(tiny_dir, tiny_data, out, *RUN), resume=True))
    assert (resumed.start, resumed.step) == (3, 6)
    expected, actual = (load_file(r / "adapter" / "adapter_model.safetensors") for r in (mica_run, out))
    assert expected.keys() == actual.keys() and all(torch.equal(expected[k], actual[k]) for k in expected)
