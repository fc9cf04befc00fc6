"""Task specs: a wrong field, metric, step or scalar is an error naming the file, the line and
the field, before any model loads; a user's spec evaluates end to end; an adapter is evaluated
in the prompt and format it was trained with; a changed data file is never served from cache."""
from __future__ import annotations

import json

import pytest

from keeptune.cli import main
from keeptune.core.errors import DataError
from keeptune.evaluate.samples import load_task_samples, resolve_data_path
from keeptune.evaluate.spec import SpecError, load_spec
from tests.core.test_config import alias_bomb
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


# --- include: a spec over another ---------------------------------------------------------------

BASE = """\
description: questions, exact match
data:
  path: qa.jsonl
  dedup: true
prompt: "Q: {question}\\nA:"
generation: {max_new_tokens: 4, min_new_tokens: 1}
postprocess: [strip, first_line]
metrics:
  - exact_match
gate: [exact_match.accuracy]
"""


def test_an_included_spec_gives_the_defaults_and_the_includer_wins(tmp_path):
    """Mappings merge key by key, a list is replaced whole, the name is the includer's (or its file's)."""
    write(tmp_path)
    (tmp_path / "base").mkdir()
    (tmp_path / "base" / "qa.yaml").write_text(BASE, encoding="utf-8")
    (tmp_path / "base" / "qa.jsonl").write_text(json.dumps(ROWS[0]) + "\n", encoding="utf-8")
    path = tmp_path / "short.yaml"
    path.write_text("include: base/qa.yaml\ndata: {limit: 1}\ngeneration: {max_new_tokens: 8}\n"
                    "postprocess: [strip]\n", encoding="utf-8")
    spec = load_spec(path).spec
    assert (spec.name, spec.description, spec.prompt) == ("short", "questions, exact match", "Q: {question}\nA:")
    assert (spec.generation.max_new_tokens, spec.generation.min_new_tokens) == (8, 1)
    assert (spec.data.limit, spec.data.dedup, spec.postprocess) == (1, True, ("strip",))
    # data.path is relative to the file that wrote it: base/qa.jsonl, not the qa.jsonl beside short.yaml
    assert spec.data.path == str(tmp_path / "base" / "qa.jsonl") == str(resolve_data_path(spec))


def test_errors_in_an_included_spec_name_the_file_that_wrote_the_key(tmp_path):
    write(tmp_path)
    base = tmp_path / "base.yaml"
    base.write_text(BASE.replace("  - exact_match\n", "  - bleu\n"), encoding="utf-8")
    path = tmp_path / "top.yaml"
    path.write_text("include: base.yaml\nname: top\n", encoding="utf-8")
    with pytest.raises(SpecError, match=rf"^{base}:9: field 'metrics\[0\]': unknown metric type 'bleu'"):
        load_spec(path)
    path.write_text("include: base.yaml\nmetrics: [exact_match]\ngeneration:\n  max_new_tokens: 0\n",
                    encoding="utf-8")
    with pytest.raises(SpecError, match=rf"^{path}:4: field 'generation.max_new_tokens': is 0"):
        load_spec(path)
    path.write_text("include: base.yaml\nmetrics: [exact_match]\npostprocess: [strip, last_line]\n",
                    encoding="utf-8")
    with pytest.raises(SpecError, match=rf"^{path}:3: field 'postprocess\[1\]'"):
        load_spec(path)


@pytest.mark.parametrize("include,words", [
    ("nowhere.yaml", "'nowhere.yaml' is neither a spec file"),
    ("[1, 2]", "[1, 2] is neither a spec file"),
    ("top.yaml", "the specs include each other"),
])
def test_a_wrong_include_names_the_line(tmp_path, include, words):
    path = tmp_path / "top.yaml"
    path.write_text(f"name: top\ninclude: {include}\n", encoding="utf-8")
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value).startswith(f"{path}:2: field 'include': ") and words in str(info.value)


def test_a_spec_may_include_a_builtin_by_name(tmp_path):
    path = tmp_path / "squad-full.yaml"
    path.write_text("include: squad-seed\ndata: {path: dev-v1.1.json}\n", encoding="utf-8")
    spec = load_spec(path).spec
    assert (spec.name, spec.data.path, spec.data.layout, spec.prompt) == \
        ("squad-full", "dev-v1.1.json", "squad_v1", "squad-seed")


# --- metadata.version -----------------------------------------------------------------------------

@pytest.mark.parametrize("metadata,words", [
    ("metadata: {version: 0}\n", "field 'metadata.version': is 0; it must be at least 1"),
    ("metadata: {version: two}\n", "field 'metadata.version' is 'two'; expected int"),
    ("metadata: {revision: 2}\n", "unknown field 'metadata.revision'"),
])
def test_a_wrong_version_names_file_and_line(tmp_path, metadata, words):
    path = write(tmp_path, SPEC + metadata)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert str(info.value).startswith(f"{path}:12") and words in str(info.value), str(info.value)


def test_the_version_is_recorded_and_a_new_version_is_evaluated_again(tmp_path, capsys):
    """metrics.json and eval.json record task_version (1 without metadata); an eval.json written before
    versions existed resumes as version 1; predictions of another version are refused."""
    path = write(tmp_path)
    assert load_spec(path).spec.metadata.version == 1
    model = save_tiny(tmp_path / "tiny")
    out = tmp_path / "out"
    args = ["eval", str(path), "--model", str(model), "--out", str(out)]
    assert main(args) == 0
    assert json.loads((out / "metrics.json").read_text())["task_version"] == 1
    identity = json.loads((out / "eval.json").read_text())
    assert identity["task_version"] == 1
    del identity["task_version"]  # as an evaluation before specs had versions wrote it
    (out / "eval.json").write_text(json.dumps(identity))
    capsys.readouterr()
    assert main(args) == 0
    assert "resuming: 2 of 2 samples already in" in capsys.readouterr().out
    assert json.loads((out / "metrics.json").read_text())["generated"] == 0
    write(tmp_path, SPEC + "metadata:\n  version: 2\n")
    assert main(args) == 2
    assert "other settings (task_version differ)" in capsys.readouterr().err


def test_an_alias_bomb_in_a_spec_is_refused_before_it_expands(tmp_path):
    path = write(tmp_path, SPEC + alias_bomb(9).replace("a: &a", "x_a: &a", 1))
    with pytest.raises(SpecError, match=rf"^{path}:17: its aliases expand to more than 100000 values"):
        load_spec(path)  # before: the location walk expanded 387 million values (over 11 GB)


def test_a_repeated_key_in_a_spec_or_one_it_includes_names_both_lines(tmp_path):
    path = write(tmp_path, SPEC + "reference: question\n")
    with pytest.raises(SpecError, match=rf"^{path}:12: key 'reference' is written twice in one mapping; this one "
                                        "repeats line 5"):
        load_spec(path)
    (tmp_path / "base.yaml").write_text("generation:\n  max_new_tokens: 2\n  max_new_tokens: 3\n", encoding="utf-8")
    path = write(tmp_path, SPEC + "include: base.yaml\n")
    with pytest.raises(SpecError, match=rf"^{tmp_path / 'base.yaml'}:3: key 'max_new_tokens' .* repeats line 2"):
        load_spec(path)
