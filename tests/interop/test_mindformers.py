"""`keeptune import` and `keeptune export` between Hugging Face / PEFT and MindFormers / mindpet, on tiny
random Llamas, without MindSpore (tests/interop/test_real_mindspore.py checks the same against the real
MindSpore, mindpet and MindFormers: `make test-mindspore`)."""
from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
import yaml
from peft import LoraConfig, PeftModel, get_peft_model
from safetensors.torch import save_file
from transformers import AutoModelForCausalLM, LlamaConfig

from keeptune.cli import main
from keeptune.interop.config import LLAMA3_8B, expected_shapes, infer_config, yaml_config
from keeptune.interop.mindspore_ckpt import read_checkpoint, tensor_records, write_checkpoint
from keeptune.interop.names import hf_weight_name, mindformers_weight_name, peft_module_of_mindpet
from keeptune.model.lora import LoraSettings, trainable_parameters
from keeptune.model.params import architecture_config, lora_accounting
from tests.tiny import save_tiny

IDS = torch.tensor([[1, 5, 9, 33, 100, 7, 250, 3]])


def mindformers_name_replace(name: str) -> str:
    """MindFormers 2.1.0's models/llama/convert_weight.py `name_replace`, copied as it is: the oracle."""
    name = name.replace('embed_tokens.weight', 'tok_embeddings.embedding_weight')
    name = name.replace('.self_attn.q_proj.', '.attention.wq.')
    name = name.replace('.self_attn.k_proj.', '.attention.wk.')
    name = name.replace('.self_attn.v_proj.', '.attention.wv.')
    name = name.replace('.self_attn.o_proj.', '.attention.wo.')
    name = name.replace('.mlp.gate_proj.', '.feed_forward.w1.')
    name = name.replace('.mlp.down_proj.', '.feed_forward.w2.')
    name = name.replace('.mlp.up_proj.', '.feed_forward.w3.')
    name = name.replace('.input_layernorm.', '.attention_norm.')
    name = name.replace('.post_attention_layernorm.', '.ffn_norm.')
    name = name.replace('.norm.', '.norm_out.')
    return name


def logits(model_dir: Path) -> torch.Tensor:
    with torch.no_grad():
        return AutoModelForCausalLM.from_pretrained(model_dir).eval()(IDS).logits


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("KEEPTUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    return save_tiny(tmp_path_factory.mktemp("tiny") / "model")


def make_adapter(base: Path, folder: Path, **lora) -> Path:
    """A PEFT adapter on `base` with random (non-zero) B, and keeptune.json naming its base."""
    torch.manual_seed(1)
    settings = {"r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"], "lora_dropout": 0.0, **lora}
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(base), LoraConfig(**settings))
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.2)
    model.save_pretrained(folder)
    (folder / "keeptune.json").write_text(json.dumps({"base_model": str(base)}))
    return folder


def config_dir(tiny: Path, folder: Path, **changes) -> Path:
    """A directory holding only a config.json: the tiny model's with `changes` (all a configuration needs)."""
    folder.mkdir()
    config = json.loads((tiny / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, **changes}))
    return folder


def adapter_logits(base: Path, adapter: Path) -> torch.Tensor:
    with torch.no_grad():
        return PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), adapter).eval()(IDS).logits


# --- names ------------------------------------------------------------------------------

def test_weight_names_are_mindformers_converters(tiny):
    names = list(AutoModelForCausalLM.from_pretrained(tiny).state_dict())
    assert len(names) == 21
    for name in names:
        ours = mindformers_weight_name(name)
        assert ours == mindformers_name_replace(name)
        assert hf_weight_name(ours) == name
    assert mindformers_weight_name("model.layers.0.self_attn.rotary_emb.inv_freq") is None
    assert hf_weight_name("model.layers.0.attention.w_qkv.weight") is None
    assert hf_weight_name("model.layers.0.feed_forward.wq.weight") is None  # wq lives in attention


def test_mindpet_names_are_the_params_names():
    assert peft_module_of_mindpet("model.layers.3.attention.wv.mindpet_delta_lora_b") == (
        "model.layers.3.self_attn.v_proj", "B")
    assert peft_module_of_mindpet("model.layers.3.feed_forward.w1.tk_delta_lora_a") == (  # older mindpet's prefix
        "model.layers.3.mlp.gate_proj", "A")
    assert peft_module_of_mindpet("adam_m.model.layers.3.attention.wv.mindpet_delta_lora_b") is None


# --- models -------------------------------------------------------------------------------

@pytest.mark.parametrize("tied", [False, True])
def test_model_round_trip_gives_the_same_logits(tmp_path, capsys, tied):
    source = save_tiny(tmp_path / "model", tie_word_embeddings=tied)
    assert main(["export", str(source), "--out", str(tmp_path / "m.ckpt")]) == 0
    written = read_checkpoint(tmp_path / "m.ckpt")
    original = AutoModelForCausalLM.from_pretrained(source).state_dict()
    assert set(written) == {mindformers_name_replace(n) for n in original}  # a tied head too, as MindFormers writes
    for name, tensor in original.items():
        assert torch.equal(written[mindformers_name_replace(name)], tensor)  # same layout, same dtype, no permutation
    assert main(["import", str(tmp_path / "m.ckpt"), "--config", str(source), "--tokenizer", str(source),
                 "--out", str(tmp_path / "back")]) == 0
    assert torch.equal(logits(tmp_path / "back"), logits(source))
    config = json.loads((tmp_path / "back" / "config.json").read_text())
    assert config["tie_word_embeddings"] is tied and config["dtype"] == "float32"
    assert (tmp_path / "back" / "tokenizer.json").is_file()


def test_dtypes_are_kept_unless_asked(tmp_path, tiny, capsys):
    assert main(["export", str(tiny), "--out", str(tmp_path / "m.ckpt"), "--dtype", "bfloat16"]) == 0
    assert {t.dtype for t in read_checkpoint(tmp_path / "m.ckpt").values()} == {torch.bfloat16}
    assert main(["import", str(tmp_path / "m.ckpt"), "--config", str(tiny), "--out", str(tmp_path / "bf16")]) == 0
    assert json.loads((tmp_path / "bf16" / "config.json").read_text())["dtype"] == "bfloat16"
    assert main(["import", str(tmp_path / "m.ckpt"), "--config", str(tiny), "--out", str(tmp_path / "f32"),
                 "--dtype", "float32"]) == 0
    state = AutoModelForCausalLM.from_pretrained(tmp_path / "f32").state_dict()
    bf16 = {n: t.to(torch.bfloat16).float() for n, t in AutoModelForCausalLM.from_pretrained(tiny).state_dict().items()}
    assert all(torch.equal(state[n], bf16[n]) for n in state)


def test_a_training_checkpoint_imports_its_weights_and_skips_the_rest(tmp_path, tiny, capsys):
    """MindFormers' training checkpoints hold optimizer moments and counters beside the network."""
    weights = {mindformers_weight_name(n): t for n, t in AutoModelForCausalLM.from_pretrained(tiny).state_dict().items()}
    extra = {"adam_m.model.norm_out.weight": torch.ones(64), "global_step": torch.tensor([10], dtype=torch.int32),
             "model.layers.0.attention.wq.mindpet_delta_lora_a": torch.ones(4, 64),
             "model.layers.0.attention.wq.mindpet_delta_lora_b": torch.zeros(64, 4)}
    write_checkpoint(tmp_path / "train.ckpt", list(weights.items()) + list(extra.items()))
    assert main(["import", str(tmp_path / "train.ckpt"), "--config", str(tiny), "--out", str(tmp_path / "hf")]) == 0
    out = capsys.readouterr().out
    assert "skipped 2 parameters that are no model weights (adam_m.model.norm_out.weight, global_step)" in out
    assert "also holds 2 mindpet LoRA parameters" in out
    assert torch.equal(logits(tmp_path / "hf"), logits(tiny))


def test_llama3_8b_shapes_get_its_published_configuration(tmp_path, capsys):
    shapes = expected_shapes(architecture_config("llama3-8b"))  # as the weights of its checkpoint give them
    config = infer_config(shapes, tmp_path / "llama3_8b.ckpt")
    assert isinstance(config, LlamaConfig) and config.to_dict() == LlamaConfig(**LLAMA3_8B).to_dict()
    assert (config.num_attention_heads, config.num_key_value_heads, config.rms_norm_eps) == (32, 8, 1e-5)
    assert config.rope_parameters["rope_theta"] == 500000.0 and config.tie_word_embeddings is False


def test_without_a_config_only_llama3_8b_shapes_are_recognized(tmp_path, tiny, capsys):
    assert main(["export", str(tiny), "--out", str(tmp_path / "m.ckpt")]) == 0
    assert main(["import", str(tmp_path / "m.ckpt"), "--out", str(tmp_path / "hf")]) == 2
    assert "do not tell the number of attention heads (hidden size 64): pass --config" in capsys.readouterr().err
    assert not (tmp_path / "hf").exists()


def test_a_config_that_does_not_fit_is_refused(tmp_path, tiny, capsys):
    assert main(["export", str(tiny), "--out", str(tmp_path / "m.ckpt")]) == 0
    three = config_dir(tiny, tmp_path / "three", num_hidden_layers=3)
    assert main(["import", str(tmp_path / "m.ckpt"), "--config", str(three), "--out", str(tmp_path / "hf")]) == 2
    assert "does not fit the configuration: no model.layers.2.self_attn.q_proj.weight" in capsys.readouterr().err
    wide = config_dir(tiny, tmp_path / "wide", intermediate_size=256)
    assert main(["import", str(tmp_path / "m.ckpt"), "--config", str(wide), "--out", str(tmp_path / "hf")]) == 2
    assert "feed_forward.w2.weight has shape [64, 128], the configuration gives [64, 256]" in capsys.readouterr().err
    assert not (tmp_path / "hf").exists()


def test_asking_for_what_the_file_does_not_hold_says_so(tmp_path, tiny, capsys):
    adapter = make_adapter(tiny, tmp_path / "adapter")
    assert main(["export", str(adapter), "--out", str(tmp_path / "a.ckpt")]) == 0
    assert main(["export", str(tiny), "--out", str(tmp_path / "m.ckpt")]) == 0
    assert main(["import", str(tmp_path / "a.ckpt"), "--what", "model"]) == 2
    assert "holds no MindFormers Llama weights" in capsys.readouterr().err
    assert main(["import", str(tmp_path / "m.ckpt"), "--what", "adapter"]) == 2
    assert "no mindpet LoRA parameters" in capsys.readouterr().err
    write_checkpoint(tmp_path / "other.ckpt", [("global_step", torch.tensor(3))])
    assert main(["import", str(tmp_path / "other.ckpt")]) == 2
    err = capsys.readouterr().err
    assert "neither MindFormers Llama weights" in err and "it holds global_step" in err


def test_qkv_concat_checkpoints_are_named_as_such(tmp_path, capsys):
    write_checkpoint(tmp_path / "c.ckpt", [("model.tok_embeddings.embedding_weight", torch.ones(4, 2)),
                                           ("model.layers.0.attention.w_qkv.weight", torch.ones(6, 2))])
    assert main(["import", str(tmp_path / "c.ckpt"), "--config", "llama3-8b"]) == 2
    assert "saved with qkv_concat: True" in capsys.readouterr().err


def mindformers_yaml(path: Path, **model_config) -> Path:
    """A MindFormers run YAML as the seed's (model.model_config, its pet_config), for the tiny model's shapes."""
    config = {"type": "LlamaConfig", "num_layers": 2, "hidden_size": 64, "num_heads": 4, "n_kv_heads": 2,
              "intermediate_size": 128, "vocab_size": 260, "rms_norm_eps": 1.0e-6, "theta": 10000.0,
              "seq_length": 256, "max_position_embedding": 1024, "bos_token_id": 1, "eos_token_id": 2,
              "pad_token_id": 3, "compute_dtype": "bfloat16", "param_init_type": "float32",
              "pet_config": {"pet_type": "lora", "lora_rank": 4, "lora_alpha": 8, "lora_dropout": 0.05,
                             "target_modules": ".*wq|.*wv"}, **model_config}
    path.write_text(yaml.safe_dump({"run_mode": "finetune", "model": {"model_config": config,
                                                                       "arch": {"type": "LlamaForCausalLM"}}}))
    return path


def test_a_mindformers_yaml_is_a_config(tmp_path, tiny, capsys):
    assert main(["export", str(tiny), "--out", str(tmp_path / "m.ckpt")]) == 0
    run_yaml = mindformers_yaml(tmp_path / "run.yaml")
    assert main(["import", str(tmp_path / "m.ckpt"), "--config", str(run_yaml), "--out", str(tmp_path / "hf")]) == 0
    assert torch.equal(logits(tmp_path / "hf"), logits(tiny))  # the tiny model's own eps, theta and heads
    llama3 = yaml_config_of(tmp_path, hidden_size=4096, intermediate_size=None, ffn_dim_multiplier=1.3,
                            multiple_of=1024)
    assert llama3.intermediate_size == 14336  # Meta's Llama-3-8B, computed as MindFormers' LlamaFeedForward does


def test_a_mindformers_yaml_may_repeat_a_key_as_mindformers_reads_it(tmp_path):
    """MindFormers reads its YAML with PyYAML, which keeps a repeated key's last value: so does keeptune."""
    path = mindformers_yaml(tmp_path / "run.yaml")
    path.write_text(path.read_text().replace("    num_layers: 2\n", "    num_layers: 7\n    num_layers: 2\n"))
    assert path.read_text().count("num_layers") == 2
    assert yaml_config(path)[0].num_hidden_layers == 2


def yaml_config_of(tmp_path: Path, **model_config):
    return yaml_config(mindformers_yaml(tmp_path / "other.yaml", **model_config))[0]


@pytest.mark.parametrize(("content", "message"), [
    ("model: {}\n", "has no model.model_config mapping"),
    ("model: {model_config: {type: GLMConfig}}\n", "keeptune imports MindFormers' LlamaConfig"),
    ("model: {model_config: {extend_method: LLAMA3}}\n", "extend_method LLAMA3 (rotary scaling) is not supported"),
    ("model: [\n", "not valid YAML"),
    ("a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(f"{c}: &{c} [{', '.join(['*' + b] * 9)}]\n"
                                                    for b, c in zip("abcdefgh", "bcdefghi")),
     "bad.yaml:6: its aliases expand to more than 100000 values"),
])
def test_yaml_configs_it_cannot_use_are_refused(tmp_path, tiny, capsys, content, message):
    assert main(["export", str(tiny), "--out", str(tmp_path / "m.ckpt")]) == 0
    (tmp_path / "bad.yaml").write_text(content)
    assert main(["import", str(tmp_path / "m.ckpt"), "--config", str(tmp_path / "bad.yaml")]) == 2
    assert message in capsys.readouterr().err


# --- adapters -----------------------------------------------------------------------------

def test_adapter_export_has_the_seed_names_shapes_and_values(tmp_path, tiny, capsys):
    adapter = make_adapter(tiny, tmp_path / "adapter")
    assert main(["export", str(adapter), "--format", "mindformers", "--out", str(tmp_path / "a.ckpt")]) == 0
    out = capsys.readouterr().out
    assert yaml.safe_load(out[out.index("pet_config:"):])["pet_config"] == {
        "pet_type": "lora", "lora_rank": 4, "lora_alpha": 8, "lora_dropout": 0.0, "target_modules": ".*wq|.*wv"}
    written = read_checkpoint(tmp_path / "a.ckpt")
    peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny), adapter, is_trainable=True)
    expected = list(trainable_parameters(peft_model, names="mindformers"))
    assert [(n, tuple(t.shape)) for n, t in written.items()] == [(n, tuple(s)) for n, s in expected]
    assert written["model.layers.1.attention.wv.mindpet_delta_lora_a"].shape == (4, 64)  # rank x in
    assert written["model.layers.1.attention.wv.mindpet_delta_lora_b"].shape == (32, 4)  # out x rank
    state = dict(peft_model.named_parameters())
    assert torch.equal(written["model.layers.1.attention.wv.mindpet_delta_lora_b"],
                       state["base_model.model.model.layers.1.self_attn.v_proj.lora_B.default.weight"])


def test_adapter_round_trip_gives_the_same_logits(tmp_path, tiny, capsys):
    adapter = make_adapter(tiny, tmp_path / "adapter")
    assert main(["export", str(adapter), "--out", str(tmp_path / "a.ckpt")]) == 0
    assert main(["import", str(tmp_path / "a.ckpt"), "--alpha", "8", "--model", str(tiny),
                 "--out", str(tmp_path / "back")]) == 0
    assert torch.equal(adapter_logits(tiny, tmp_path / "back"), adapter_logits(tiny, adapter))
    info = json.loads((tmp_path / "back" / "keeptune.json").read_text())
    assert info["base_model"] == str(tiny) and info["lora"] == {"targets": ["q_proj", "v_proj"], "rank": 4,
                                                                "alpha": 8.0, "dropout": 0.0}
    config = json.loads((tmp_path / "back" / "adapter_config.json").read_text())
    assert config["r"] == 4 and config["lora_alpha"] == 8 and len(config["target_modules"]) == 4


def test_adapter_import_takes_alpha_from_the_yaml_and_skips_optimizer_state(tmp_path, tiny, capsys):
    adapter = make_adapter(tiny, tmp_path / "adapter")
    assert main(["export", str(adapter), "--out", str(tmp_path / "a.ckpt")]) == 0
    lora = read_checkpoint(tmp_path / "a.ckpt")
    # a MindFormers fine-tuning checkpoint: base weights, LoRA, Adam moments of the LoRA, counters
    base = {mindformers_weight_name(n): t for n, t in AutoModelForCausalLM.from_pretrained(tiny).state_dict().items()}
    moments = {f"adam_m.{n}": torch.randn_like(t) for n, t in lora.items()}
    write_checkpoint(tmp_path / "train.ckpt", [*base.items(), *lora.items(), *moments.items(),
                                               ("global_step", torch.tensor([30], dtype=torch.int32))])
    assert main(["import", str(tmp_path / "train.ckpt"), "--what", "adapter", "--out", str(tmp_path / "back"),
                 "--config", str(mindformers_yaml(tmp_path / "run.yaml"))]) == 0
    assert torch.equal(adapter_logits(tiny, tmp_path / "back"), adapter_logits(tiny, adapter))
    assert json.loads((tmp_path / "back" / "adapter_config.json").read_text())["lora_dropout"] == 0.05


def test_adapter_import_needs_alpha(tmp_path, tiny, capsys):
    adapter = make_adapter(tiny, tmp_path / "adapter")
    assert main(["export", str(adapter), "--out", str(tmp_path / "a.ckpt")]) == 0
    assert main(["import", str(tmp_path / "a.ckpt")]) == 2
    assert "does not record lora_alpha: pass --alpha" in capsys.readouterr().err
    assert main(["import", str(tmp_path / "a.ckpt"), "--alpha", "8", "--model",
                 str(config_dir(tiny, tmp_path / "wide", hidden_size=128))]) == 2
    assert "maps 64 -> 64, model" in capsys.readouterr().err


def mindspore_file(path: Path, tensors: list[tuple[str, torch.Tensor]]) -> Path:
    """A checkpoint as MindSpore's save_checkpoint writes it: the records alone, no keeptune length note."""
    path.write_bytes(b"".join(record for name, tensor in tensors for record in tensor_records(name, tensor)))
    return path


def exported_lora(tmp_path: Path, tiny: Path) -> list[tuple[str, torch.Tensor]]:
    """The mindpet parameters of a q_proj/v_proj adapter of the tiny model, in file order (8: 2 layers x 2 x A, B)."""
    assert main(["export", str(make_adapter(tiny, tmp_path / "adapter")), "--out", str(tmp_path / "a.ckpt")]) == 0
    return list(read_checkpoint(tmp_path / "a.ckpt").items())


def test_an_adapter_cut_short_is_refused_naming_what_is_missing(tmp_path, tiny, capsys):
    """Issue 28: half of an exported adapter (layer 0 of 2) imported as a valid adapter, exit 0."""
    lora = exported_lora(tmp_path, tiny)
    whole = (tmp_path / "a.ckpt").read_bytes()
    (tmp_path / "t.ckpt").write_bytes(whole[:len(whole) // 2])
    assert main(["import", str(tmp_path / "t.ckpt"), "--what", "adapter", "--alpha", "16"]) == 2
    assert f"keeptune wrote it with {len(whole)} bytes, it holds {len(whole) // 2}: it was cut short" in \
        capsys.readouterr().err
    # a file MindSpore wrote (no length note), cut after layer 0: the base model tells that layer 1 is missing
    layer0 = mindspore_file(tmp_path / "layer0.ckpt", lora[:4])
    for given in (["--model", str(tiny)], ["--config", str(tiny)]):
        assert main(["import", str(layer0), "--alpha", "8", "--out", str(tmp_path / "out"), *given]) == 2
        assert capsys.readouterr().err.strip() == (
            f"keeptune: error: {layer0}: the adapter is incomplete: model {tiny} has 2 layers, the adapter no LoRA "
            "on model.layers.1.self_attn.q_proj, model.layers.1.self_attn.v_proj (a file cut short, or saved in part?)")
    # cut inside layer 1: its names tell, with no base given
    six = mindspore_file(tmp_path / "six.ckpt", lora[:6])
    assert main(["import", str(six), "--alpha", "8", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"keeptune: error: {six}: the adapter is incomplete: it has LoRA on self_attn.q_proj, self_attn.v_proj up "
        "to layer 1, but none on model.layers.1.self_attn.v_proj (a file cut short, or saved in part?)")
    assert not (tmp_path / "out").exists()
    # with no base and no note, a cut at a layer's end cannot be told: the import says which layers it holds
    assert main(["import", str(layer0), "--alpha", "8", "--out", str(tmp_path / "out")]) == 0
    assert ("LoRA of rank 4 on q_proj, v_proj of layers 0-0 (pass --model or --config to check that the base has no "
            "more)") in capsys.readouterr().out


def test_lora_of_one_module_kind_shaped_differently_on_two_layers_is_refused(tmp_path, tiny, capsys):
    lora = dict(exported_lora(tmp_path, tiny))
    lora["model.layers.1.attention.wq.mindpet_delta_lora_a"] = torch.ones(4, 32)  # layer 0's: 4 x 64
    bad = mindspore_file(tmp_path / "bad.ckpt", list(lora.items()))
    capsys.readouterr()
    assert main(["import", str(bad), "--alpha", "8", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err.strip() == (
        f"keeptune: error: {bad}: the LoRA of model.layers.1.self_attn.q_proj maps 32 -> 64, that of "
        "model.layers.0.self_attn.q_proj 64 -> 64: the layers of one model have one shape")


def test_rslora_scaling_is_folded_into_b(tmp_path, tiny, capsys):
    """mindpet scales by alpha / rank; rsLoRA by alpha / sqrt(rank): B carries the difference."""
    adapter = make_adapter(tiny, tmp_path / "adapter", use_rslora=True)
    assert main(["export", str(adapter), "--out", str(tmp_path / "a.ckpt")]) == 0
    written = read_checkpoint(tmp_path / "a.ckpt")
    b = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny), adapter).state_dict()[
        "base_model.model.model.layers.0.self_attn.q_proj.lora_B.default.weight"]
    assert torch.allclose(written["model.layers.0.attention.wq.mindpet_delta_lora_b"], b * math.sqrt(4), rtol=1e-6)
    assert main(["import", str(tmp_path / "a.ckpt"), "--alpha", "8", "--out", str(tmp_path / "back")]) == 0
    torch.testing.assert_close(adapter_logits(tiny, tmp_path / "back"), adapter_logits(tiny, adapter),
                               atol=1e-5, rtol=1e-5)


def test_merged_export_is_the_merged_model(tmp_path, tiny, capsys):
    adapter = make_adapter(tiny, tmp_path / "adapter")
    assert main(["export", str(adapter), "--merged", "--out", str(tmp_path / "m.ckpt")]) == 0
    merged = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny), adapter).merge_and_unload()
    written = read_checkpoint(tmp_path / "m.ckpt")
    for name, tensor in merged.state_dict().items():
        torch.testing.assert_close(written[mindformers_name_replace(name)], tensor, atol=1e-6, rtol=1e-6)
    assert main(["import", str(tmp_path / "m.ckpt"), "--config", str(tiny), "--out", str(tmp_path / "back")]) == 0
    torch.testing.assert_close(logits(tmp_path / "back"), adapter_logits(tiny, adapter), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(logits(tmp_path / "back"), logits(tiny), atol=1e-3)  # the adapter does something


@pytest.mark.parametrize(("lora", "message"), [({"use_dora": True}, "use_dora"),
                                              ({"target_modules": ["q_proj", "lm_head"]}, "MindFormers has no name"),
                                              ({"modules_to_save": ["lm_head"]}, "modules_to_save")])
def test_adapters_mindpet_cannot_hold_are_refused(tmp_path, tiny, capsys, lora, message):
    adapter = make_adapter(tiny, tmp_path / "adapter", **lora)
    assert main(["export", str(adapter), "--out", str(tmp_path / "a.ckpt")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "a.ckpt").exists()


def test_export_refuses_what_it_would_overwrite_or_cannot_merge(tmp_path, tiny, capsys):
    adapter = make_adapter(tiny, tmp_path / "adapter")
    (tmp_path / "a.ckpt").write_text("mine")
    assert main(["export", str(adapter), "--out", str(tmp_path / "a.ckpt")]) == 2
    assert "exists; choose another --out or pass --overwrite" in capsys.readouterr().err
    assert main(["export", str(adapter), "--out", str(tmp_path / "a.ckpt"), "--overwrite"]) == 0
    assert main(["export", str(tiny), "--merged"]) == 2
    assert "--merged merges an adapter" in capsys.readouterr().err
    assert main(["export", str(adapter)]) == 0
    assert (tmp_path / "adapter-mindformers.ckpt").is_file()


def test_import_never_writes_into_a_folder_it_did_not_make(tmp_path, tiny, capsys):
    assert main(["export", str(tiny), "--out", str(tmp_path / "m.ckpt")]) == 0
    (tmp_path / "hf").mkdir()
    (tmp_path / "hf" / "notes.txt").write_text("mine")
    assert main(["import", str(tmp_path / "m.ckpt"), "--config", str(tiny), "--out", str(tmp_path / "hf")]) == 2
    assert "keeptune did not create it" in capsys.readouterr().err
    assert main(["import", str(tmp_path / "m.ckpt"), "--config", str(tiny), "--out", str(tmp_path / "hf"),
                 "--overwrite"]) == 0
    assert (tmp_path / "hf" / "notes.txt").read_text() == "mine" and (tmp_path / "hf" / "config.json").is_file()
    assert main(["import", str(tmp_path / "m.ckpt"), "--config", str(tiny)]) == 0  # default: m-hf
    assert main(["import", str(tmp_path / "m.ckpt"), "--config", str(tiny)]) == 0  # its own output: replaced
    assert torch.equal(logits(tmp_path / "m-hf"), logits(tiny))


# --- Llama-3-8B -------------------------------------------------------------------------------

def test_llama3_8b_adapter_names_are_the_params_names(tmp_path, capsys):
    """The 128 names `keeptune params --arch llama3-8b --names mindformers` prints are the names and shapes
    `keeptune export` writes for an adapter of that shape (its base: a config.json, built on the meta device)."""
    config = architecture_config("llama3-8b")
    (tmp_path / "llama3").mkdir()
    config.save_pretrained(tmp_path / "llama3")
    peft_model, _ = lora_accounting(config, LoraSettings())
    peft_model.peft_config["default"].save_pretrained(tmp_path / "adapter")
    generator = torch.Generator().manual_seed(0)
    weights = {re.sub(r"\.default\.weight$", ".weight", n): torch.randn(tuple(p.shape), generator=generator) * 0.01
               for n, p in peft_model.named_parameters() if p.requires_grad}
    save_file(weights, tmp_path / "adapter" / "adapter_model.safetensors")
    assert main(["export", str(tmp_path / "adapter"), "--model", str(tmp_path / "llama3"),
                 "--out", str(tmp_path / "a.ckpt")]) == 0
    capsys.readouterr()
    assert main(["params", "--arch", "llama3-8b", "--names", "mindformers"]) == 0
    printed = re.findall(r"^  (\S+) \((\d+), (\d+)\)$", capsys.readouterr().out, re.M)
    written = read_checkpoint(tmp_path / "a.ckpt")
    assert len(printed) == 128
    assert [(name, (int(a), int(b))) for name, a, b in printed] == [(n, tuple(t.shape)) for n, t in written.items()]
    assert printed[0] == ("model.layers.0.attention.wq.mindpet_delta_lora_a", "8", "4096")
    assert printed[-1] == ("model.layers.31.attention.wv.mindpet_delta_lora_b", "1024", "8")


def test_a_ckpt_given_as_a_model_points_to_import(tmp_path, tiny, capsys):
    assert main(["export", str(tiny), "--out", str(tmp_path / "m.ckpt")]) == 0
    assert main(["params", "--model", str(tmp_path / "m.ckpt")]) == 2
    assert f"becomes one with `keeptune import {tmp_path / 'm.ckpt'} --out DIR`" in capsys.readouterr().err
