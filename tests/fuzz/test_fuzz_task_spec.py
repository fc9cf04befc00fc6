"""Fuzz the task-spec reader: a near-valid spec (one node replaced, maybe damaged bytes) over a
spec it includes and a near-valid data file either load, then score any generation without an
exception, or fail with a user error naming a spec or the data file."""
from __future__ import annotations

import json

import yaml
from hypothesis import given
from hypothesis import strategies as st

from keeptune.evaluate.samples import load_task_samples, resolve_data_path
from keeptune.evaluate.spec import load_spec
from keeptune.evaluate.task import SpecTask
from tests.fuzz.helpers import damaged, encode, encodings, fuzz, long_fuzz, user_error_or_success, workdir
from tests.fuzz.test_fuzz_squad import mutated

BASE = "description: the included spec's\ngeneration: {max_new_tokens: 2}\ndata: {limit: 5}\n"
SPEC = {"include": "base.yaml", "name": "qa", "metadata": {"version": 1},
        "data": {"path": "qa.jsonl", "layout": "jsonl", "dedup": False, "limit": None},
        "prompt": "Q: {question}\nA:", "format": "plain", "reference": "answer", "references": None,
        "generation": {"max_new_tokens": 4, "min_new_tokens": None},
        "postprocess": ["strip", "first_line", {"regex": "(\\d+)"}, {"math_extract": "final"}],
        "metrics": ["exact_match", {"type": "math_judge", "name": "judge", "problem_field": "question",
                                    "eps": [0.01]}],
        "gate": ["exact_match.accuracy"], "accuracy": "judge.accuracy@0.01", "breakdown": "judge.accuracy@0.01"}
ROWS = [{"question": "计算 1.00 + 2.00 等于多少？", "answer": "1.00 + 2.00 = 3.00"}, {"question": "x", "answer": "y"}]


def check_task_spec(data) -> None:
    spec = data.draw(mutated(SPEC))
    rows = data.draw(mutated(ROWS))
    with workdir() as folder:
        text = yaml.safe_dump(spec, allow_unicode=True) if data.draw(st.booleans()) else json.dumps(spec)
        (folder / "spec.yaml").write_bytes(data.draw(damaged(encode(text, data.draw(encodings)))))
        lines = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in (rows if isinstance(rows, list) else [rows]))
        (folder / "qa.jsonl").write_bytes(data.draw(damaged(encode(lines, data.draw(encodings)))))
        (folder / "base.yaml").write_text(BASE, encoding="utf-8")
        names = ("spec.yaml", "qa.jsonl", "base.yaml")

        def load():
            compiled = load_spec(folder / "spec.yaml")
            return compiled, load_task_samples(compiled, resolve_data_path(compiled.spec))

        loaded = user_error_or_success(load, names)
        if loaded is not None:
            compiled, samples = loaded
            task = SpecTask(compiled, samples)
            records = [task.score(s, data.draw(st.text(max_size=30))) for s in samples]
            task.aggregate(records)  # a loaded task scores and aggregates any generation


@fuzz(40)
@given(st.data())
def test_task_spec(data):
    check_task_spec(data)


@long_fuzz
@given(st.data())
def test_task_spec_long(data):
    check_task_spec(data)
