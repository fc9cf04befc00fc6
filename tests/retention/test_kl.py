"""Retention method `kl` on the tiny Llama: the term against independent computations, zero while the
adapter is zero and growing as it trains, independent of the micro-batch split."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from keeptune.model.lora import LoraSettings, apply_lora
from keeptune.retention.kl import KL
from keeptune.retention.training import train
from keeptune.train.loop import token_loss_sum
from keeptune.train.records import IGNORE, collate, encode, parse_conversation
from tests.tiny import byte_tokenizer, tiny_llama
from tests.train.conftest import conversation, tiny_config


def log_of(run) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def test_the_kl_term_is_torch_distributions_kl_beside_the_cross_entropy():
    torch.manual_seed(0)
    base, tuned = torch.randn(5, 11) * 3, torch.randn(5, 11) * 3
    targets = torch.tensor([3, IGNORE, 0, 7, IGNORE])  # rows 1 and 4 predict no label: left out
    kl = KL(None, 0.5)
    total = kl.loss_sum(tuned, targets, base)
    rows = targets != IGNORE
    expected_kl = torch.distributions.kl_divergence(torch.distributions.Categorical(logits=base[rows].double()),
                                                    torch.distributions.Categorical(logits=tuned[rows].double()))
    expected_ce = torch.nn.functional.cross_entropy(tuned.double(), targets, ignore_index=IGNORE, reduction="sum")
    assert kl.kl == pytest.approx(expected_kl.sum().item(), rel=1e-6) and expected_kl.sum() > 0.5
    assert kl.ce == pytest.approx(expected_ce.item(), rel=1e-6)
    assert total.item() == pytest.approx(kl.ce + 0.5 * kl.kl, rel=1e-6)
    assert KL(None, 1.0).loss_sum(tuned, targets, tuned).item() == pytest.approx(expected_ce.item(), rel=1e-6)
    # bfloat16 logits: the softmaxes in float32
    low = KL(None, 0.5)
    assert low.loss_sum(tuned.bfloat16(), targets, base.bfloat16()).dtype == torch.float32
    same = KL(None, 0.5)
    same.loss_sum(tuned.bfloat16().float(), targets, base.bfloat16().float())
    assert (low.kl, low.ce) == (pytest.approx(same.kl, rel=1e-6), pytest.approx(same.ce, rel=1e-6))


def test_token_loss_sum_adds_the_weighted_kl_of_base_and_tuned_at_the_label_positions():
    tokenizer = byte_tokenizer()
    samples = encode([parse_conversation(conversation(i), Path("t"), 1) for i in (1, 4)], tokenizer, "plain", 256).samples
    batch = collate(samples, tokenizer.pad_token_id)  # two rows of different lengths: padding and prompts masked
    peft_model = apply_lora(tiny_llama(), LoraSettings(dropout=0.0))
    torch.manual_seed(1)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.normal_(std=0.3)
    kl = KL(peft_model, 0.5)
    total = token_loss_sum(peft_model, batch, kl)

    # by hand, in float64: every position t whose next token is a label, on full logits of both models
    base = tiny_llama()  # the same seed: the weights under the adapter
    with torch.no_grad():
        base_logits = base(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double()
        tuned_logits = peft_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.double()
    ce = divergence = 0.0
    for row in range(2):
        for t in range(batch["labels"].shape[1] - 1):
            label = batch["labels"][row, t + 1].item()
            if label == IGNORE:
                continue
            p_log, q_log = base_logits[row, t].log_softmax(-1), tuned_logits[row, t].log_softmax(-1)
            ce -= q_log[label].item()
            divergence += (p_log.exp() * (p_log - q_log)).sum().item()
    assert divergence > 0.01
    assert kl.ce == pytest.approx(ce, rel=1e-5) and kl.kl == pytest.approx(divergence, rel=1e-4)
    assert total.item() == pytest.approx(ce + 0.5 * divergence, rel=1e-5)
    assert token_loss_sum(peft_model, batch).item() == pytest.approx(ce, rel=1e-5)  # without kl: the CE alone
    assert peft_model.training  # the base pass ran in eval mode and put the mode back


def test_kl_is_zero_while_the_adapter_is_zero_and_grows_as_it_trains(tiny_dir, tiny_data, tmp_path):
    result = train(tiny_config(tiny_dir, tiny_data, tmp_path / "run", "retention.methods=[kl]",
                               "retention.kl_weight=0.25", "train.epochs=2", "train.precision=fp32"))
    log = log_of(result.run)
    kls = [r["kl"] for r in log]
    # PEFT starts B at 0 and step 1's learning rate is 0 (warm-up): the tuned model is the base, exactly
    assert kls[0] == kls[1] == 0.0
    assert 0 < kls[2] < kls[-1]
    for record in log:
        assert record["loss"] == pytest.approx(record["ce"] + 0.25 * record["kl"], rel=1e-6)  # float32 sums
        assert record["seconds"] > 0
    info = json.loads((result.adapter / "keeptune.json").read_text())
    assert info["retention"]["methods"] == ["kl"] and info["retention"]["kl_weight"] == 0.25


def test_the_kl_gradient_does_not_depend_on_the_micro_batch_split(tiny_dir, tiny_data, tmp_path):
    runs = {}
    for micro in (2, 8):
        result = train(tiny_config(tiny_dir, tiny_data, tmp_path / f"m{micro}", "retention.methods=[kl]",
                                   f"train.micro_batch={micro}", "train.max_steps=3", "lora.dropout=0.0",
                                   "train.precision=fp32", "data.group_by_length=false"))
        runs[micro] = (log_of(result.run), load_file(result.adapter / "adapter_model.safetensors"))
    (log2, adapter2), (log8, adapter8) = runs[2], runs[8]
    assert log2[-1]["kl"] > 0
    for a, b in zip(log2, log8):
        assert a["kl"] == pytest.approx(b["kl"], rel=1e-4) and a["loss"] == pytest.approx(b["loss"], rel=1e-5)
    assert all(torch.allclose(adapter2[k], adapter8[k], atol=1e-6) for k in adapter2)
