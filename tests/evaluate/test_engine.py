"""The evaluation engine: resumable predictions, metrics equal to an uninterrupted run."""
from __future__ import annotations

import json
from dataclasses import dataclass

import pytest

from keeptune.core.errors import ResumeMismatchError
from keeptune.evaluate.engine import evaluate
from keeptune.evaluate.generation import GenerationSettings
from tests.tiny import byte_tokenizer, tiny_llama


@dataclass(frozen=True)
class Item:
    id: str
    text: str


class EchoTask:
    """A task whose score counts calls and can crash, standing in for a kill."""

    name = "echo"

    def __init__(self, count: int, crash_after: int | None = None):
        self.samples = [Item(f"s{i}", "abc " * (i % 5 + 1)) for i in range(count)]
        self.calls, self.crash_after = 0, crash_after

    def prompt(self, sample):
        return sample.text

    def score(self, sample, raw):
        self.calls += 1
        if self.crash_after is not None and self.calls > self.crash_after:
            raise KeyboardInterrupt("killed")
        return {"id": sample.id, "raw": raw, "length": float(len(raw))}

    def aggregate(self, records):
        # Order-sensitive on purpose: a resumed run must aggregate in dataset order.
        return {"ids": [r["id"] for r in records], "mean_length": sum(r["length"] for r in records) / len(records)}

    def summary(self, metrics):
        return [f"mean_length {metrics['mean_length']}"]


SETTINGS = GenerationSettings(max_new_tokens=5, batch_size=3, prefill_batch_size=2)
IDENTITY = {"model": "tiny", "data": "synthetic"}


@pytest.fixture(scope="module")
def model_and_tokenizer():
    return tiny_llama(), byte_tokenizer()


def run(task, tmp, model_and_tokenizer, settings=SETTINGS):
    model, tokenizer = model_and_tokenizer
    return evaluate(task, model, tokenizer, tmp, settings, IDENTITY)


def test_resume_after_crash_generates_only_the_rest(tmp_path, model_and_tokenizer):
    whole = run(EchoTask(10), tmp_path / "whole", model_and_tokenizer)

    crashing = EchoTask(10, crash_after=4)  # dies inside the second group of 3
    with pytest.raises(KeyboardInterrupt):
        run(crashing, tmp_path / "resumed", model_and_tokenizer)
    written = (tmp_path / "resumed" / "predictions.jsonl").read_text().splitlines()
    assert len(written) == 3  # only the complete first group reached the file
    assert not (tmp_path / "resumed" / "metrics.json").exists()

    resumed_task = EchoTask(10)
    resumed = run(resumed_task, tmp_path / "resumed", model_and_tokenizer)
    assert resumed_task.calls == 7 and resumed["generated"] == 7
    assert resumed["ids"] == whole["ids"] == [f"s{i}" for i in range(10)]
    assert resumed["mean_length"] == whole["mean_length"]
    on_disk = json.loads((tmp_path / "resumed" / "metrics.json").read_text())
    assert on_disk["mean_length"] == whole["mean_length"] and on_disk["total_count"] == 10


def test_torn_last_line_is_dropped_and_redone(tmp_path, model_and_tokenizer):
    run(EchoTask(4), tmp_path, model_and_tokenizer)
    predictions = tmp_path / "predictions.jsonl"
    lines = predictions.read_text().splitlines(keepends=True)
    predictions.write_text("".join(lines[:2]) + lines[2][:7])  # a kill mid-write
    task = EchoTask(4)
    metrics = run(task, tmp_path, model_and_tokenizer)
    assert task.calls == 2 and metrics["total_count"] == 4
    assert len(predictions.read_text().splitlines()) == 4


def test_batch_size_may_change_but_generation_may_not(tmp_path, model_and_tokenizer):
    run(EchoTask(4), tmp_path, model_and_tokenizer)
    task = EchoTask(4)
    run(task, tmp_path, model_and_tokenizer, GenerationSettings(max_new_tokens=5, batch_size=1))
    assert task.calls == 0
    with pytest.raises(ResumeMismatchError, match=r"other settings \(generation.max_new_tokens differ\); use another"):
        run(EchoTask(4), tmp_path, model_and_tokenizer, GenerationSettings(max_new_tokens=6))


def test_add_bos_puts_the_bos_id_before_the_prompt(tmp_path, model_and_tokenizer):
    # The byte tokenizer adds no BOS of its own: the engine must put the id there itself.
    import torch

    model, tokenizer = model_and_tokenizer
    task = EchoTask(2)
    evaluate(task, model, tokenizer, tmp_path, SETTINGS, IDENTITY, add_bos=True)
    raws = {r["id"]: r["raw"] for r in map(json.loads, (tmp_path / "predictions.jsonl").open())}
    for sample in task.samples:
        ids = torch.tensor([[tokenizer.bos_token_id, *tokenizer(sample.text, add_special_tokens=False).input_ids]])
        out = model.generate(ids, max_new_tokens=5, do_sample=False, eos_token_id=2, pad_token_id=3)
        assert raws[sample.id] == tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def test_a_second_evaluation_into_the_same_folder_is_refused(tmp_path, model_and_tokenizer):
    from keeptune.core.errors import DataError
    from keeptune.core.outputs import locked

    with locked(tmp_path, "busy"):  # a first evaluation holds OUT/.lock
        with pytest.raises(DataError, match="another evaluation is writing into this directory"):
            run(EchoTask(3), tmp_path, model_and_tokenizer)
        assert not (tmp_path / "predictions.jsonl").exists()
    assert run(EchoTask(3), tmp_path, model_and_tokenizer)["total_count"] == 3  # free again
