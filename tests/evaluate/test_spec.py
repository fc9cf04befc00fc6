"""Task specs: a wrong field, metric, step or scalar is an error naming the file, the line and
the field, before any model loads; a user's spec evaluates end to end; an adapter is evaluated
in the prompt and format it was trained with; a changed data file is never served from cache."""
from __future__ import annotations

import json

import pytest

from keeptune.cli import main
from keeptune.core.errors import DataError
from keeptune.evaluate.spec import SpecError, load_spec, load_task_samples
from tests.tiny import save_tiny

SPEC = """\
name: qa
data:
  path: qa.jsonl
prompt: "Q: {question}\\nA:"
reference: answer
generation: {max_new_tokens: 4}
postprocess: [strip, first_line]
metrics:
  - exact_match
gate: [exact_match.accuracy]
accuracy: exact_match.accuracy
"""
ROWS = [{"question": "2 + 2?", "answer": "4"}, {"question": "Capital of France?", "answer": "Paris"}]


def write(tmp_path, spec: str = SPEC, rows=ROWS):
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    path = tmp_path / "qa.yaml"
    path.write_text(spec, encoding="utf-8")
    return path


@pytest.mark.parametrize("change,line,field,words", [
    ('  - exact_match\n', 9, "metrics[0]", "unknown metric type 'bleu'"),
    ('postprocess: [strip, first_line]\n', 7, "postprocess[1]", "unknown step 'last_line'"),
    ('gate: [exact_match.accuracy]\n', 10, "gate", "'exact_match.f1' is not a scalar"),
    ('postprocess: [strip, first_line]\n', 7, "postprocess[0]", "does not compile"),
    ('prompt: "Q: {question}\\nA:"\n', 4, "prompt", "plain field name"),
    ('generation: {max_new_tokens: 4}\n', 6, "generation.max_new_tokens", "at least 1"),
])
def test_a_wrong_spec_names_file_line_and_field(tmp_path, change, line, field, words):
    broken = {"metrics[0]": "  - bleu\n", "postprocess[1]": "postprocess: [strip, last_line]\n",
              "gate": "gate: [exact_match.f1]\n", "postprocess[0]": "postprocess: [{regex: '[('}]\n",
              "prompt": 'prompt: "Q: {question.upper}"\n',
              "generation.max_new_tokens": "generation: {max_new_tokens: 0}\n"}[field]
    path = write(tmp_path, SPEC.replace(change, broken))
    with pytest.raises(SpecError) as info:
        load_spec(path)
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: field '{field}'") and words in message, message


def test_an_unknown_key_and_a_missing_field_name_where(tmp_path):
    path = write(tmp_path, SPEC + "extract: seed\n")
    with pytest.raises(SpecError, match=rf"{path}:12: unknown field 'extract'"):
        load_spec(path)
    path = write(tmp_path, SPEC, rows=[ROWS[0], {"question": "x"}])
    compiled = load_spec(path)
    with pytest.raises(DataError) as info:
        load_task_samples(compiled, tmp_path / "qa.jsonl")
    assert str(info.value) == f"{tmp_path / 'qa.jsonl'}:2: field 'answer': missing (the task qa reads it)"


def test_an_unknown_task_lists_the_builtins():
    with pytest.raises(SpecError, match="built-in tasks are math-contest, math-worked, squad-seed"):
        load_spec("squad2")


def test_errors_come_before_any_model_loads(tmp_path, capsys):
    path = write(tmp_path, SPEC.replace("  - exact_match\n", "  - bleu\n"))
    missing_model = tmp_path / "no-model"  # would be a model error, were the model loaded first
    assert main(["eval", str(path), "--model", str(missing_model)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"keeptune: error: {path}:9: field 'metrics[0]'") and "no-model" not in err


def test_a_users_spec_evaluates_end_to_end(tmp_path, capsys):
    path = write(tmp_path)
    model = save_tiny(tmp_path / "tiny")
    out = tmp_path / "out"
    assert main(["eval", str(path), "--model", str(model), "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    # A random model answers neither; the scalar is the share of records judged correct.
    correct = sum(r["scores"]["exact_match"]["correct"] for r in records)
    assert metrics["scores"] == {"exact_match.accuracy": correct / 2} and metrics["total_count"] == 2
    assert all(r["prediction"] == r["raw"].strip().split("\n", 1)[0] for r in records)
    assert "(normalized exact match)" in capsys.readouterr().out


def test_a_changed_data_file_is_evaluated_again_not_resumed(tmp_path, capsys):
    path = write(tmp_path)
    model = save_tiny(tmp_path / "tiny")
    out = tmp_path / "out"
    args = ["eval", str(path), "--model", str(model), "--out", str(out)]
    assert main(args) == 0
    write(tmp_path, rows=[ROWS[0], {"question": "Capital of France?", "answer": "Lyon"}])  # same path, new label
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "other settings (samples_sha256 differ)" in err and str(out) in err


def test_an_adapter_is_evaluated_in_its_training_prompt_and_format(tmp_path):
    """The adapter's keeptune.json says math prompt, vicuna format: eval math uses them unless told."""
    from peft import LoraConfig, get_peft_model

    from tests.tiny import tiny_llama

    model = save_tiny(tmp_path / "tiny")
    adapter = tmp_path / "adapter"
    get_peft_model(tiny_llama(), LoraConfig(r=2, target_modules=["q_proj", "v_proj"])).save_pretrained(adapter)
    (adapter / "keeptune.json").write_text(json.dumps({"base_model": str(model), "prompt": "math",
                                                       "format": "vicuna", "add_bos": True}))
    data = tmp_path / "m.jsonl"
    data.write_text(json.dumps({"problem": "计算 1.00 + 2.00 等于多少？", "solution": "1.00 + 2.00 = 3.00"},
                               ensure_ascii=False) + "\n", encoding="utf-8")
    out = tmp_path / "out"
    assert main(["eval", "math", "--adapter", str(adapter), "--data", str(data), "--out", str(out),
                 "--max-new-tokens", "2"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["prompt"], metrics["format"], metrics["generation"]["add_bos"]) == ("math", "vicuna", True)
    assert metrics["model"] == str(model) and metrics["adapter"].startswith(str(adapter.resolve()))
    # squad-seed is a fixed protocol: the adapter's prompt does not apply to it.
    squad = tmp_path / "squad"
    assert main(["eval", "squad", "--adapter", str(adapter), "--limit", "1", "--out", str(squad),
                 "--max-new-tokens", "2"]) == 0
    assert json.loads((squad / "metrics.json").read_text())["prompt"] == "squad-seed"
    # Told otherwise, the user's choice wins.
    assert main(["eval", "math", "--adapter", str(adapter), "--data", str(data), "--out", str(tmp_path / "o2"),
                 "--max-new-tokens", "2", "--format", "plain", "--prompt", "none"]) == 0
    again = json.loads((tmp_path / "o2" / "metrics.json").read_text())
    assert (again["prompt"], again["format"], again["generation"]["add_bos"]) == ("none", "plain", False)


def test_a_prompt_longer_than_the_context_is_an_error_or_skipped(tmp_path, capsys):
    """A 100 kB line (the tiny model's context is 1024 tokens, one per byte): an error naming the
    file and line before anything is generated; with --skip-bad it is left out and counted."""
    path = write(tmp_path, rows=[ROWS[0], {"question": "x" * 100_000, "answer": "y"}, ROWS[1]])
    model = save_tiny(tmp_path / "tiny")
    out = tmp_path / "out"
    assert main(["eval", str(path), "--model", str(model), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"keeptune: error: {tmp_path / 'qa.jsonl'}:2: the prompt is 100006 characters, more than 1024 tokens" in err
    assert not (out / "predictions.jsonl").exists() and not (out / "eval.json").exists()
    assert main(["eval", str(path), "--model", str(model), "--out", str(out), "--skip-bad"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert (metrics["total_count"], metrics["skipped"]) == (2, 1)


def test_skip_bad_leaves_out_and_counts_malformed_records(tmp_path, capsys):
    path = write(tmp_path)
    data = tmp_path / "qa.jsonl"
    good = data.read_bytes()
    data.write_bytes(good + '{"question": "caf\u00e9?", "answer": "x"}\n'.encode("cp1252") + b"[1]\n"
                     + b'{"question": "no answer"}\n' + b'{"question": "3 + 3?", "answer": "6"}\n')
    compiled = load_spec(path)
    with pytest.raises(DataError, match=rf"{data}:3: not valid UTF-8 \(byte 0xe9"):
        load_task_samples(compiled, data)
    samples = load_task_samples(compiled, data, skip_bad=True)
    assert [s.fields["question"] for s in samples] == ["2 + 2?", "Capital of France?", "3 + 3?"]
    assert [s.where for s in samples][-1] == f"{data}:6"
    printed = capsys.readouterr().out
    assert f"skipped 3 malformed lines of {data}; the first: {data}:3: not valid UTF-8" in printed
