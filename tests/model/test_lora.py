"""LoRA targets, the seed's parameter names, and exact parameter accounting on a tiny Llama.

The tiny Llama (tests/tiny.py): 2 layers, hidden 64, 4 heads of 16, 2 KV heads
(so k/v project 64 -> 32), intermediate 128, vocab 260. Every pinned number
below is worked out by hand from those sizes in a comment.
"""
from __future__ import annotations

import io

import pytest
import torch

from keeptune.core.errors import TargetError
from keeptune.model.lora import (
    LoraSettings,
    apply_lora,
    count_parameters,
    mindformers_lora_name,
    print_parameter_groups,
    resolve_targets,
    trainable_parameters,
)
from tests.tiny import tiny_llama

# LoRA rank 8 on q_proj (64 -> 64) and v_proj (64 -> 32), per layer:
#   q: A 8*64 + B 64*8 = 1024;  v: A 8*64 + B 32*8 = 768;  1792 per layer, x2 layers = 3584.
TINY_QV_RANK8 = 3584
# Base model, untied: embeddings 260*64 = 16640, lm_head 16640;
#   per layer: q 64*64 = 4096, k 32*64 = 2048, v 2048, o 4096, gate/up/down 3 * 128*64 = 24576,
#   two RMSNorms 2*64 = 128 -> 36992; x2 layers = 73984; final norm 64.
#   16640 + 16640 + 73984 + 64 = 107328; tied: the lm_head counts once, 107328 - 16640 = 90688.
TINY_TOTAL_UNTIED = 107328
TINY_TOTAL_TIED = 90688


@pytest.fixture(scope="module")
def tiny_peft():
    return apply_lora(tiny_llama(), LoraSettings(targets=("wq", "wv"), rank=8))


@pytest.mark.parametrize("targets", ["q_proj,v_proj", "wq,wv", ".*wq|.*wv", ".*q_proj|.*v_proj", ["wq", "v_proj"]])
def test_target_spellings_select_the_same_modules(targets):
    expected = [f"model.layers.{i}.self_attn.{p}" for i in range(2) for p in ("q_proj", "v_proj")]
    assert resolve_targets(tiny_llama(), targets) == expected


def test_target_matching_nothing_lists_existing_names():
    with pytest.raises(TargetError) as err:
        resolve_targets(tiny_llama(), "wq,attn_q")
    message = str(err.value)
    assert "'attn_q'" in message
    assert all(name in message for name in ("q_proj", "v_proj", "down_proj", "wq", "w1"))


def test_count_parameters_of_peft_model_is_the_hand_count(tiny_peft):
    count = count_parameters(tiny_peft)
    assert (count.trainable, count.total) == (TINY_QV_RANK8, TINY_TOTAL_UNTIED)
    assert count.ratio == 3584 / 107328
    assert count.score_term == (1 - 3584 / 107328) * 0.3


def test_tied_embeddings_count_once():
    count = count_parameters(apply_lora(tiny_llama(tie_word_embeddings=True), LoraSettings()))
    assert (count.trainable, count.total) == (TINY_QV_RANK8, TINY_TOTAL_TIED)


def test_count_parameters_on_meta_device():
    with torch.device("meta"):
        model = tiny_llama()
    peft_model = apply_lora(model, LoraSettings())
    assert all(p.device.type == "meta" for p in peft_model.parameters())
    assert count_parameters(peft_model).total == TINY_TOTAL_UNTIED


@pytest.mark.parametrize("peft_name, seed_name", [
    ("base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight",
     "model.layers.0.attention.wq.mindpet_delta_lora_a"),
    ("base_model.model.model.layers.11.self_attn.v_proj.lora_B.default.weight",
     "model.layers.11.attention.wv.mindpet_delta_lora_b"),
    ("base_model.model.model.layers.2.mlp.gate_proj.lora_A.default.weight",
     "model.layers.2.feed_forward.w1.mindpet_delta_lora_a"),
    ("base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight",
     "base_model.model.model.layers.0.self_attn.q_proj.base_layer.weight"),
])
def test_mindformers_lora_name(peft_name, seed_name):
    assert mindformers_lora_name(peft_name) == seed_name


def test_seed_names_and_shapes(tiny_peft):
    # A: rank x in, B: out x rank; v_proj projects 64 -> 2 KV heads * 16 = 32.
    shapes = dict(trainable_parameters(tiny_peft, names="mindformers"))
    assert shapes == {f"model.layers.{i}.attention.{w}.mindpet_delta_lora_{ab}": shape
                      for i in range(2)
                      for w, ab, shape in [("wq", "a", (8, 64)), ("wq", "b", (64, 8)),
                                           ("wv", "a", (8, 64)), ("wv", "b", (32, 8))]}


@pytest.mark.parametrize("names, expected", [
    ("mindformers", "model.layers.0.attention.wq.mindpet_delta_lora_a (8, 64)"),
    ("hf", "base_model.model.model.layers.1.self_attn.v_proj.lora_B.default.weight (32, 8)"),
])
def test_print_parameter_groups(tiny_peft, names, expected):
    out = io.StringIO()
    print_parameter_groups(tiny_peft, weight_decay=0.1, names=names, file=out)
    text = out.getvalue()
    assert 'param group "decay": weight_decay 0.1, 8 parameters' in text
    assert expected in text
    # 3584 / 107328 = 0.033392963625521764... (11 significant digits: 0.033392963626)
    assert "trainable parameters: 3584\ntotal parameters: 107328\n" in text
    assert f"ratio: 0.033392963626 (exact: {3584 / 107328!r})" in text


def test_unknown_name_style_is_refused(tiny_peft):
    with pytest.raises(ValueError, match="names must be"):
        print_parameter_groups(tiny_peft, names="megatron", file=io.StringIO())
