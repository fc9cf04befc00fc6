"""The SQuAD task under the seed protocol: prompt, post-processing, scoring."""
from __future__ import annotations

import pytest
import torch
from transformers import GenerationConfig

from keeptune.data.squad import SquadSample, load_samples
from keeptune.evaluate.engine import evaluate
from keeptune.evaluate.generation import GenerationSettings, generate
from keeptune.evaluate.tasks.squad import SEED_PROMPT, SquadTask, postprocess
from tests.tiny import byte_tokenizer

SAMPLE = SquadSample(id="q1", passage="P.", question="Q?", label="Denver Broncos",
                     answers=("Denver Broncos", "the Broncos"))


def test_prompt_is_the_seed_string_byte_for_byte():
    # Typed from SPEC section 1, not copied from the code.
    expected = ("Read the passage and answer the question below.\n\n### Instruction:\nP.\n\n"
                "### Input:\nQ?\n\n### Response:")
    assert SquadTask([SAMPLE], byte_tokenizer()).prompt(SAMPLE) == expected
    assert SEED_PROMPT.count("{passage}") == SEED_PROMPT.count("{query}") == 1


@pytest.mark.parametrize("raw,expected", [
    ("\nThe AFC won.\n\nThe answer is:", "The AFC won."),  # strip first, then the first line
    ("  Denver Broncos  ", "Denver Broncos"),
    ("Denver \n Broncos", "Denver "),  # the line is not stripped again
    ("", ""),
    ("\n\n", ""),
])
def test_postprocess(raw, expected):
    assert postprocess(raw) == expected


def test_score_uses_both_metrics():
    record = SquadTask([SAMPLE], byte_tokenizer()).score(SAMPLE, "\nthe Broncos\nmore")
    assert record["prediction"] == "the Broncos"
    # Seed EmF1: label segments [denver, ' ', broncos], prediction [the, ' ', broncos];
    # longest common run is [' ', broncos] (L=2): P = R = 2/3, F1 = 2/3. EM 0.
    assert record["f1"] == pytest.approx(2 / 3) and record["em"] == 0.0
    # Official: normalised "broncos" equals the second gold answer normalised: EM 1, F1 1.
    assert record["squad_em"] == 1.0 and record["squad_f1"] == 1.0


@pytest.mark.slow
def test_embedded_default_matches_batch1_generate_and_spec(squad_sample, tmp_path):
    """On SmolLM2-135M over the 54 shared paragraphs: identical tokens to batch-1
    generate, and the SPEC's measured scores (F1 13.8433416458184, EM 0.0)."""
    from keeptune.model.load import load_model

    model, tokenizer = load_model(None)
    samples = load_samples(squad_sample)
    task = SquadTask(samples, tokenizer)
    metrics = evaluate(task, model, tokenizer, tmp_path, GenerationSettings(), {"model": "default"})
    assert metrics["emf1"] == {"F1": 13.8433416458184, "Em": 0.0, "total_count": 54}

    prompts = [tokenizer(task.prompt(s), add_special_tokens=False).input_ids for s in samples]
    batched = {}
    for group in generate(model, prompts, GenerationSettings(), [tokenizer.eos_token_id], tokenizer.pad_token_id):
        batched.update(group)
    config = GenerationConfig(max_new_tokens=20, do_sample=False, num_beams=1,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    with torch.inference_mode():
        for i, ids in enumerate(prompts):
            out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 generation_config=config)
            assert batched[i] == out[0, len(ids):].tolist(), samples[i].id
