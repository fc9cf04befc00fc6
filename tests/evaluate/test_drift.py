"""The drift signal (keeptune.evaluate.drift): KL(base || tuned) per predicted token, recomputed here from two
separate models (the base, and the base with the adapter merged), 0 for a fresh adapter."""
from __future__ import annotations

import copy

import pytest
import torch
from peft import LoraConfig, get_peft_model

from keeptune.evaluate.drift import token_kl
from tests.tiny import tiny_llama

TEXTS = [[5, 9, 17, 33, 70], [8, 8, 120, 4], [200, 3], [7]]  # the last predicts nothing


def peft_model():
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], lora_dropout=0.0)
    return get_peft_model(tiny_llama(), config).eval()


def by_hand(base, tuned, texts) -> float:
    total, count = 0.0, 0
    for text in texts:
        if len(text) < 2:
            continue
        ids = torch.tensor([text])
        p = base(ids).logits[0, :-1].float().log_softmax(-1)
        q = tuned(ids).logits[0, :-1].float().log_softmax(-1)
        total += float((p.exp() * (p - q)).sum())
        count += len(text) - 1
    return total / count


def test_a_fresh_adapter_has_not_drifted():
    assert token_kl(peft_model(), TEXTS, pad=3) == pytest.approx(0.0, abs=1e-9)


def test_kl_equals_the_divergence_of_two_separate_models():
    model = peft_model()
    torch.manual_seed(1)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if "lora_B" in name:
                weight.normal_(0, 0.5)
    base = copy.deepcopy(model).unload()  # the adapter layers removed: the base model alone
    merged = copy.deepcopy(model).merge_and_unload()  # the adapter folded in: the tuned model alone
    expected = by_hand(base, merged, TEXTS)
    got = token_kl(model, TEXTS, pad=3, batch_size=2)  # padded batches give the per-text figure
    assert expected > 1e-4 and got == pytest.approx(expected, rel=1e-4)


def test_no_adapter_no_figure():
    assert token_kl(tiny_llama(), TEXTS, pad=3) is None
