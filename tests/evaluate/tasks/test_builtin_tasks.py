"""The built-in task specs: squad-seed is the seed's SQuAD protocol byte for byte, math-contest and
math-worked judge exactly as the seed's judge function does; math-worked includes math-contest
and compiles to what its 22 lines of its own did."""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from transformers import GenerationConfig

from keeptune.cli import main
from keeptune.data.math.generate import generate_pairs
from keeptune.evaluate.engine import evaluate
from keeptune.evaluate.generation import GenerationSettings, generate
from keeptune.evaluate.metrics import math_judge
from keeptune.evaluate.samples import Sample, load_task_samples, resolve_data_path
from keeptune.evaluate.spec import load_spec
from keeptune.evaluate.task import SpecTask
from tests.tiny import byte_tokenizer, save_tiny

SQUAD = Sample("q1", {"id": "q1", "passage": "P.", "question": "Q?", "label": "Denver Broncos",
                      "answers": ["Denver Broncos", "the Broncos"]}, "-")


def squad_task(samples=(SQUAD,), tokenizer=None) -> SpecTask:
    return SpecTask(load_spec("squad-seed"), list(samples), tokenizer or byte_tokenizer())


def test_squad_prompt_is_the_seed_string_byte_for_byte():
    # The seed's SQuAD prompt, typed from its MindFormers script, not copied from the code.
    expected = ("Read the passage and answer the question below.\n\n### Instruction:\nP.\n\n"
                "### Input:\nQ?\n\n### Response:")
    assert squad_task().prompt(SQUAD) == expected
    assert squad_task().add_bos is False


@pytest.mark.parametrize("raw,expected", [
    ("\nThe AFC won.\n\nThe answer is:", "The AFC won."),  # strip first, then the first line
    ("  Denver Broncos  ", "Denver Broncos"),
    ("Denver \n Broncos", "Denver "),  # the line is not stripped again
    ("", ""),
    ("\n\n", ""),
])
def test_squad_postprocess(raw, expected):
    assert squad_task().score(SQUAD, raw)["prediction"] == expected


def test_squad_score_uses_both_metrics():
    record = squad_task().score(SQUAD, "\nthe Broncos\nmore")
    assert record["prediction"] == "the Broncos"
    # Seed EmF1: label segments [denver, ' ', broncos], prediction [the, ' ', broncos];
    # longest common run is [' ', broncos] (L=2): P = R = 2/3, F1 = 2/3. EM 0.
    assert record["scores"]["emf1"]["f1"] == pytest.approx(2 / 3) and record["scores"]["emf1"]["em"] == 0.0
    # Official: normalised "broncos" equals the second gold answer normalised: EM 1, F1 1.
    assert record["scores"]["squad_v1"] == {"f1": 1.0, "em": 1.0}


def test_squad_default_data_is_the_packaged_article():
    compiled = load_spec("squad")
    samples = load_task_samples(compiled, resolve_data_path(compiled.spec))
    assert len(samples) == 54 and samples[0].fields["label"] == "Denver Broncos"


def test_math_prompt_none_is_the_raw_problem_and_math_is_the_seed_template():
    sample = Sample("m0", {"problem": "计算 1.50 + 2.25 等于多少？", "solution": "1.50 + 2.25 = 3.75"}, "-")
    assert SpecTask(load_spec("math"), [sample]).prompt(sample) == sample.fields["problem"]
    # The seed's math training template, typed from its script.
    assert SpecTask(load_spec("math", {"prompt": "math"}), [sample]).prompt(sample) == (
        "Below is an instruction that describes a grade school math problem. Write a response that gives "
        "the correct answer.\n\n### Instruction:\n计算 1.50 + 2.25 等于多少？\n\n### Response:")


def predictions(problem: str, solution: str) -> list[str]:
    """Answers of every kind a model gives: right, echoed, worked, off by a little, wrong, empty."""
    return [solution, f"{problem}{solution}", f" step one\n{solution}\n", solution.replace("1", "7"),
            f"{solution} and then 12.5", "", "no idea", solution + "01"]


@pytest.mark.parametrize("task,extraction", [("math-contest", "seed"), ("math-worked", "final"),
                                             ("math-contest", "last")])
def test_math_tasks_judge_as_the_seed_judge_function(task, extraction):
    pairs = [pair for _, pair in generate_pairs(300, 3, None, "uniform")]
    compiled = load_spec(task, {"extraction": extraction})
    samples = [Sample(str(i), {"problem": p.problem, "solution": p.solution}, "-") for i, p in enumerate(pairs)]
    spec_task = SpecTask(compiled, samples)
    records = []
    for sample, pair in zip(samples, pairs):
        for raw in predictions(pair.problem, pair.solution):
            record = spec_task.score(sample, raw)
            expected = math_judge.judge(pair.problem, raw, pair.solution, extraction=extraction)
            got = record["scores"]["judge"]
            assert (got["template"], got["seed"], got["strict"]) == \
                (expected["template"], expected["seed"], expected["strict"]), (pair, raw)
            assert record["prediction"] == expected["extracted"]
            records.append(record)
    scores = spec_task.aggregate(records)["scores"]
    correct = sum(r["scores"]["judge"]["seed"]["0.01"] for r in records)
    assert scores["judge.accuracy@0.01"] == correct / len(records)
    assert 0 < correct < len(records)


def test_math_tasks_on_the_real_sample_judge_as_the_seed(math_sample):
    compiled = load_spec("math-contest", {"data.path": str(math_sample)})
    samples = load_task_samples(compiled, math_sample)
    assert len(samples) == 996  # deduplicated, as the seed's 996 distinct lines
    task = SpecTask(compiled, samples)
    for sample in samples:
        problem, solution = sample.fields["problem"], sample.fields["solution"]
        record = task.score(sample, f"{problem} {solution}")
        expected = math_judge.judge(problem, f"{problem} {solution}", solution)
        assert record["scores"]["judge"]["seed"] == expected["seed"]


def test_cli_eval_math_writes_metrics(tmp_path, math_sample, capsys):
    model = save_tiny(tmp_path / "tiny")
    out = tmp_path / "out"
    code = main(["eval", "math", "--model", str(model), "--data", str(math_sample), "--limit", "12",
                 "--max-new-tokens", "3", "--out", str(out), "--prompt", "math"])
    assert code == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["total_count"] == 12 and metrics["prompt"] == "math" and metrics["task"] == "math-contest"
    assert {k for k in metrics["scores"] if k.startswith("judge.accuracy@")} == \
        {"judge.accuracy@1e-08", "judge.accuracy@0.0001", "judge.accuracy@0.01"}
    assert sum(cells[1] for cells in metrics["breakdowns"]["judge.accuracy@0.01"].values()) == 12
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert len(records) == 12 and {"id", "raw", "prediction", "label", "scores"} <= set(records[0])
    printed = capsys.readouterr().out
    assert "per template [correct, total]" in printed and "EPS 0.01" in printed


@pytest.mark.slow
def test_embedded_default_matches_batch1_generate_and_spec(tmp_path):
    """On SmolLM2-135M over the 54 packaged paragraphs: identical tokens to batch-1
    generate, and the seed's measured scores there (F1 13.8433416458184, EM 0.0: docs/eval.md)."""
    from keeptune.model.load import load_model

    model, tokenizer = load_model(None)
    compiled = load_spec("squad-seed")
    task = SpecTask(compiled, load_task_samples(compiled, resolve_data_path(compiled.spec)), tokenizer)
    metrics = evaluate(task, model, tokenizer, tmp_path, GenerationSettings(), {"model": "default"})
    assert (metrics["scores"]["emf1.F1"], metrics["scores"]["emf1.Em"], metrics["total_count"]) == \
        (13.8433416458184, 0.0, 54)

    prompts = [tokenizer(task.prompt(s), add_special_tokens=False).input_ids for s in task.samples]
    batched = {}
    for group in generate(model, prompts, GenerationSettings(), [tokenizer.eos_token_id], tokenizer.pad_token_id):
        batched.update(group)
    config = GenerationConfig(max_new_tokens=20, do_sample=False, num_beams=1,
                              eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)
    with torch.inference_mode():
        for i, ids in enumerate(prompts):
            out = model.generate(torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                                 generation_config=config)
            assert batched[i] == out[0, len(ids):].tolist(), task.samples[i].id


# math-worked.yaml as it was before it included math-contest, every line its own.
MATH_WORKED_ALONE = """\
name: math-worked
description: templated arithmetic with worked-step answers, the final answer judged the seed's way
data:
  path: shared:math/train-sample-996.jsonl
  layout: jsonl
  dedup: true
prompt: none
format: plain
adapter_prompt: true
reference: solution
generation:
  max_new_tokens: 64
postprocess:
  - {math_extract: final, problem_field: problem}
metrics:
  - {type: math_judge, name: judge, problem_field: problem, eps: [1.0e-8, 1.0e-4, 1.0e-2]}
accuracy: judge.accuracy@0.01
breakdown: judge.accuracy@0.01
"""


def test_math_worked_includes_math_contest_and_compiles_as_its_own_lines_did(tmp_path):
    """The same spec, steps, metrics and eval.json identity: old evaluations of it still resume."""
    alone = tmp_path / "math-worked.yaml"
    alone.write_text(MATH_WORKED_ALONE, encoding="utf-8")
    included, own = load_spec("math-worked"), load_spec(alone)
    assert "include: math-contest.yaml" in Path(included.spec.source).read_text(encoding="utf-8")
    assert included.spec == dataclasses.replace(own.spec, source=included.spec.source)
    assert (included.scalars(), included.units()) == (own.scalars(), own.units())
    assert [(s.name, s.fields) for s in included.steps] == [(s.name, s.fields) for s in own.steps]
    assert SpecTask(included, []).describe() == SpecTask(own, []).describe()


@pytest.mark.parametrize("task", ["squad-seed", "math-contest", "math-worked"])
def test_builtins_are_version_1(task):
    assert load_spec(task).spec.metadata.version == 1
