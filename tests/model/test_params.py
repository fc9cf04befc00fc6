"""`keeptune params`: exact accounting of the built-in architectures, built on the meta device.

The Llama-3-8B numbers are SPEC facts (section 3). The SmolLM2-135M numbers
are worked out by hand below; 134515008 is also the real model's count.
"""
from __future__ import annotations

import pytest

from keeptune.cli import main
from keeptune.core.errors import ModelLoadError
from keeptune.model.lora import LoraSettings
from keeptune.model.params import architecture_config, leaderboard_ratio, lora_accounting, source_config
from tests.tiny import tiny_llama

# SPEC section 3: rank 8 on wq, wv of Llama-3-8B.
LLAMA3_TRAINABLE = 3_407_872
LLAMA3_TOTAL = 8_030_261_248
# SmolLM2-135M, rank 8 on q_proj (576 -> 576) and v_proj (576 -> 3 KV heads * 64 = 192):
#   q: A 8*576 + B 576*8 = 9216;  v: A 8*576 + B 192*8 = 6144;  15360 per layer, x30 = 460800.
# Total: embeddings 49152*576 = 28311552 (tied: once);
#   per layer q 576*576 = 331776, k 576*192 = 110592, v 110592, o 331776,
#   gate/up/down 3 * 576*1536 = 2654208, two norms 1152 -> 3540096; x30 = 106202880; final norm 576.
#   28311552 + 106202880 + 576 = 134515008.
SMOLLM2_TRAINABLE = 460_800
SMOLLM2_TOTAL = 134_515_008


def test_llama3_8b_baseline_on_meta():
    model, count = lora_accounting(architecture_config("llama3-8b"), LoraSettings(targets="wq,wv", rank=8))
    assert all(p.device.type == "meta" for p in model.parameters())
    assert (count.trainable, count.total) == (LLAMA3_TRAINABLE, LLAMA3_TOTAL)
    assert f"{count.ratio:.11g}".startswith("0.00042437872")
    # SPEC: "0.000424393 is 3,407,872 / 8.03e9".
    assert f"{leaderboard_ratio(count):.6g}" == "0.000424393"


@pytest.mark.parametrize("targets", ["q_proj,v_proj", "wq,wv", ".*wq|.*wv"])
def test_smollm2_135m_baseline(targets):
    _, count = lora_accounting(architecture_config("smollm2-135m"), LoraSettings(targets=targets, rank=8))
    assert (count.trainable, count.total) == (SMOLLM2_TRAINABLE, SMOLLM2_TOTAL)
    assert leaderboard_ratio(count) is None


def test_rank_scales_trainable_linearly():
    # Every LoRA matrix has rank as one dimension: rank 64 is 8 times rank 8.
    _, count = lora_accounting(architecture_config("smollm2-135m"), LoraSettings(rank=64))
    assert count.trainable == 8 * SMOLLM2_TRAINABLE


def test_config_only_directory_is_enough(tmp_path):
    tiny_llama().config.save_pretrained(tmp_path)
    _, count = lora_accounting(source_config(tmp_path), LoraSettings())
    # tests/model/test_lora.py: rank 8 on q_proj, v_proj of the tiny Llama is 3584 of 107328.
    assert (count.trainable, count.total) == (3584, 107328)


def test_directory_without_config_is_refused(tmp_path):
    with pytest.raises(ModelLoadError, match="no config.json"):
        source_config(tmp_path)


def test_cli_prints_the_spec_numbers(capsys):
    assert main(["params", "--arch", "llama3-8b", "--target", "wq,wv", "--rank", "8"]) == 0
    out = capsys.readouterr().out
    assert "trainable parameters: 3407872\n" in out
    assert "total parameters: 8030261248\n" in out
    assert "ratio: 0.00042437872" in out
    assert "0.000424393" in out
    # (1 - 3407872 / 8030261248) * 0.3
    assert f"{(1 - LLAMA3_TRAINABLE / LLAMA3_TOTAL) * 0.3!r}" in out


def test_cli_mindformers_names(capsys):
    assert main(["params", "--arch", "smollm2-135m", "--names", "mindformers"]) == 0
    assert "model.layers.29.attention.wv.mindpet_delta_lora_b (192, 8)" in capsys.readouterr().out


def test_cli_refuses_model_and_arch_together(capsys, tmp_path):
    assert main(["params", "--arch", "llama3-8b", "--model", str(tmp_path)]) == 2
    assert "not both" in capsys.readouterr().err
