"""Batched greedy generation must give, token for token, what batch-1
`model.generate` gives (float32), including EOS stops and min_new_tokens."""
from __future__ import annotations

import inspect
from collections import Counter

import pytest
import torch
from transformers import GenerationConfig

from keeptune.evaluate.generation import GenerationSettings, generate
from tests.tiny import tiny_llama

PAD = 3


def prompts(count: int = 13, seed: int = 1) -> list[list[int]]:
    """Prompts of very different lengths (2..60 tokens), ids avoiding the special tokens."""
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 61, (count,), generator=g).tolist()
    return [torch.randint(4, 260, (n,), generator=g).tolist() for n in lengths]


def batch1(model, rows, eos: list[int], max_new: int, min_new: int | None = None) -> list[list[int]]:
    """The reference: Hugging Face generate, one prompt at a time, no padding."""
    config = GenerationConfig(max_new_tokens=max_new, min_new_tokens=min_new, do_sample=False, num_beams=1,
                              eos_token_id=eos, pad_token_id=PAD)
    outs = []
    with torch.inference_mode():
        for row in rows:
            ids = torch.tensor([row])
            out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=config)
            outs.append(out[0, len(row):].tolist())
    return outs


def batched(model, rows, eos: list[int], **settings) -> list[list[int]]:
    results: dict[int, list[int]] = {}
    for group in generate(model, rows, GenerationSettings(**settings), eos, PAD):
        results.update(group)
    assert sorted(results) == list(range(len(rows)))
    return [results[i] for i in range(len(rows))]


@pytest.fixture(scope="module")
def model():
    return tiny_llama()


@pytest.fixture(scope="module")
def frequent_eos(model) -> list[int]:
    """An EOS the random model actually emits, so some rows stop early and are dropped."""
    free = batch1(model, prompts(), eos=[0], max_new=12)  # token 0 (<unk>) is never generated here
    first_tokens = Counter(tok for out in free for tok in out[1:6])
    return [first_tokens.most_common(1)[0][0]]


@pytest.mark.parametrize("batch_size,prefill_batch_size", [(64, 8), (4, 2), (5, 5), (1, 1)])
def test_matches_batch1_generate(model, frequent_eos, batch_size, prefill_batch_size):
    rows = prompts()
    reference = batch1(model, rows, frequent_eos, max_new=12)
    stopped = [out for out in reference if out[-1] == frequent_eos[0] and len(out) < 12]
    assert stopped, "the chosen EOS must stop some rows early, or this test checks less than it claims"
    assert batched(model, rows, frequent_eos, max_new_tokens=12, batch_size=batch_size,
                   prefill_batch_size=prefill_batch_size) == reference


def test_min_new_tokens_matches_generate(model, frequent_eos):
    rows = prompts(seed=2)
    reference = batch1(model, rows, frequent_eos, max_new=10, min_new=6)
    assert all(frequent_eos[0] not in out[:6] for out in reference)
    assert batched(model, rows, frequent_eos, max_new_tokens=10, min_new_tokens=6, batch_size=8,
                   prefill_batch_size=3) == reference


def test_single_new_token(model):
    rows = prompts(count=5, seed=3)
    assert batched(model, rows, [0], max_new_tokens=1, batch_size=4) == batch1(model, rows, [0], max_new=1)


def test_groups_are_longest_first(model):
    rows = prompts(count=6, seed=4)
    groups = list(generate(model, rows, GenerationSettings(max_new_tokens=2, batch_size=2), [0], PAD))
    order = [index for group in groups for index, _ in group]
    assert [len(rows[i]) for i in order] == sorted((len(r) for r in rows), reverse=True)


def test_describe_is_the_greedy_seed_config():
    described = GenerationSettings().describe([2], 3)
    assert (described["do_sample"], described["num_beams"], described["max_new_tokens"],
            described["min_new_tokens"], described["top_k"], described["top_p"]) == (False, 1, 20, None, 0, 1.0)


def test_cache_goes_in_by_the_keyword_the_model_takes(model):
    """`cache=` where transformers renamed `past_key_values` (5.24), else the old name; a PEFT
    model is asked about its base model, which receives the keyword."""
    from peft import LoraConfig, get_peft_model

    from keeptune.evaluate.generation import _cache_keyword

    expected = "cache" if "cache" in inspect.signature(model.forward).parameters else "past_key_values"
    assert _cache_keyword(model) == expected
    peft_model = get_peft_model(tiny_llama(), LoraConfig(r=2, target_modules=["q_proj"]))
    assert _cache_keyword(peft_model) == expected
