"""The `keeptune` command line: option spelling, one-line user errors, and
`keeptune eval squad` end to end on a tiny random Llama (a few seconds on CPU).

The end-to-end test checks the predictions against Hugging Face's own greedy
`generate` on the seed prompt, written out here from SPEC section 1, so it does
not trust keeptune's prompt or generation code to check themselves.
"""
from __future__ import annotations

import json
import re

import pytest
import torch

from keeptune.cli import _underscored, main
from tests.tiny import save_tiny

# SPEC section 1, byte for byte.
SEED_PROMPT = ("Read the passage and answer the question below.\n\n### Instruction:\n{passage}"
               "\n\n### Input:\n{query}\n\n### Response:")
RESULT_LINE = re.compile(r"^F1 score: (\S+), Em score: (\S+), total_count: (\d+)$")
PREDICTION_KEYS = {"id", "label", "references", "raw", "prediction", "scores"}


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    """Cache and default output directory under tmp_path."""
    monkeypatch.setenv("KEEPTUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)


def write_squad(path, paragraphs):
    """paragraphs: (id, context, question, [answers])."""
    data = {"version": "1.1", "data": [{"title": "Tiny", "paragraphs": [
        {"context": context, "qas": [{"id": qid, "question": question,
                                       "answers": [{"answer_start": 0, "text": a} for a in answers]}]}
        for qid, context, question, answers in paragraphs]}]}
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


# --- option spelling ----------------------------------------------------------------

@pytest.mark.parametrize(
    ("arg", "expected"),
    [
        ("--batch-size=8", "--batch_size=8"),
        ("--batch-size", "--batch_size"),
        ("--batch_size", "--batch_size"),
        ("--max-new-tokens=20", "--max_new_tokens=20"),
        ("--data=https://x-y.org/dev-v1.1.json", "--data=https://x-y.org/dev-v1.1.json"),
        ("--out=runs/a-b", "--out=runs/a-b"),
        ("8", "8"),
        ("-h", "-h"),
        ("my-model-dir", "my-model-dir"),
        ("squad", "squad"),
    ],
)
def test_underscored(arg, expected):
    assert _underscored(arg) == expected


# --- errors and help ------------------------------------------------------------------

def test_missing_model_is_one_line_error(tmp_path, capsys):
    data = write_squad(tmp_path / "squad.json", [("a", "Paris is in France.", "Where is Paris?", ["France"])])
    missing = tmp_path / "nonexistent"
    assert main(["eval", "squad", "--model", str(missing), "--data", str(data)]) == 2
    err = capsys.readouterr().err
    lines = err.splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("keeptune: error: ")
    assert str(missing) in lines[0]
    assert "Traceback" not in err
    assert not (tmp_path / "runs").exists()


def test_missing_data_is_one_line_error(tmp_path, capsys):
    missing = tmp_path / "nope.json"
    assert main(["eval", "squad", "--data", str(missing)]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("keeptune: error: ") and str(missing) in lines[0]


def test_help(capsys):
    with pytest.raises(SystemExit) as info:
        main(["eval", "squad", "--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--batch_size" in out
    assert "--min_new_tokens" in out
    assert "--max_new_tokens" in out


# --- end to end -----------------------------------------------------------------------

def reference_predictions(model_dir, samples, max_new_tokens):
    """Greedy continuations by transformers' own `generate`, one prompt at a time, no BOS."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    raws = []
    for _, context, question, _ in samples:
        ids = tokenizer(SEED_PROMPT.format(passage=context, query=question), add_special_tokens=False,
                        return_tensors="pt").input_ids
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, num_beams=1,
                                 max_new_tokens=max_new_tokens, pad_token_id=tokenizer.pad_token_id)
        raws.append(tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True))
    return raws


def test_eval_squad_end_to_end(tmp_path, capsys):
    model_dir = save_tiny(tmp_path / "tiny-model")
    out = tmp_path / "out"
    questions = [
        ("q1", "Paris is the capital of France.", "What is the capital of France?"),
        ("q2", "Water boils at 100 degrees Celsius at sea level.", "When does water boil?"),
        ("q3", "The Nile flows north into the Mediterranean Sea.", "Where does the Nile flow?"),
    ]
    # The prompt does not contain the answer, so the model's continuation is known before
    # the data file is written: make sample q1's label the reference prediction itself
    # (EM 1, F1 1) and give q2, q3 CJK labels that 4 generated bytes cannot contain (0, 0).
    raws = reference_predictions(model_dir, [(*q, None) for q in questions], max_new_tokens=4)
    predictions = [r.strip().split("\n", 1)[0] for r in raws]
    assert predictions[0] and all(p.isprintable() for p in predictions[:1]), raws
    labels = [predictions[0], "巴黎大学", "尼罗河流"]
    samples = [(*q, [label, "other answer"]) for q, label in zip(questions, labels)]
    data = write_squad(tmp_path / "squad.json", samples)

    args = ["eval", "squad", "--model", str(model_dir), "--data", str(data), "--out", str(out),
            "--batch-size", "2", "--max-new-tokens", "4"]
    assert main(args) == 0
    stdout = capsys.readouterr().out

    lines = (out / "predictions.jsonl").read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3
    # lines are appended as decode groups finish (not in dataset order): key them by id
    by_id = {record["id"]: record for record in map(json.loads, lines)}
    records = [by_id[qid] for qid, *_ in samples]
    for record, (qid, _, question, answers), raw, prediction in zip(records, samples, raws, predictions):
        assert PREDICTION_KEYS <= set(record)
        assert record["id"] == qid and record["references"] == answers
        assert record["raw"] == raw
        assert record["prediction"] == prediction
    assert [r["label"] for r in records] == labels
    assert [(r["scores"]["emf1"]["f1"], r["scores"]["emf1"]["em"]) for r in records] == \
        [(1.0, 1.0), (0.0, 0.0), (0.0, 0.0)]

    metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert metrics["task"] == "squad-seed" and metrics["prompt"] == "squad-seed"
    assert metrics["total_count"] == 3
    assert metrics["scores"]["emf1.F1"] == pytest.approx(100 / 3)
    assert metrics["scores"]["emf1.Em"] == pytest.approx(100 / 3)
    assert metrics["scores"]["squad_v1.exact_match"] == pytest.approx(100 / 3)  # q1 matches its first answer
    assert metrics["generation"]["max_new_tokens"] == 4
    assert metrics["generation"]["min_new_tokens"] is None
    assert metrics["model"] == str(model_dir)
    assert isinstance(metrics["seconds"], float) and metrics["seconds"] >= 0
    assert metrics["generated"] == 3

    result_lines = [line for line in stdout.splitlines() if line.startswith("F1 score: ")]
    assert result_lines == [f"F1 score: {metrics['scores']['emf1.F1']}, Em score: {metrics['scores']['emf1.Em']}, "
                            "total_count: 3"]
    assert RESULT_LINE.match(result_lines[0])
    assert "generation config:" in stdout

    # The same command again resumes: nothing is generated, the scores are the same.
    predictions_before = (out / "predictions.jsonl").read_bytes()
    assert main(args) == 0
    again = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
    assert again["generated"] == 0
    assert again["scores"] == metrics["scores"]
    assert (out / "predictions.jsonl").read_bytes() == predictions_before
    assert result_lines[0] in capsys.readouterr().out.splitlines()

    # Other generation settings into the same --out are refused, and nothing is touched.
    changed = args[:-1] + ["5"]
    assert main(changed) == 2
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line.lower()]  # stderr also has progress bars
    assert len(errors) == 1 and errors[0].startswith("keeptune: error: "), err
    assert err.endswith(errors[0] + "\n") and "Traceback" not in err
    assert "other settings" in errors[0] and str(out) in errors[0]
    assert (out / "predictions.jsonl").read_bytes() == predictions_before
    assert json.loads((out / "metrics.json").read_text(encoding="utf-8")) == again


@pytest.mark.parametrize("argv,expected", [
    (["eval", "squad", "--skip_bad", "--limit", "3"], ["eval", "squad", "--skip_bad=true", "--limit", "3"]),
    (["eval", "squad", "--add_bos", "false"], ["eval", "squad", "--add_bos", "false"]),
    (["eval", "squad", "--overwrite"], ["eval", "squad", "--overwrite=true"]),
    (["merge", "a", "--overwrite", "--out", "x"], ["merge", "a", "--overwrite=true", "--out", "x"]),
    (["eval", "squad", "--limit", "--skip_bad"], ["eval", "squad", "--limit", "--skip_bad=true"]),  # int: untouched
    (["train", "c.yaml", "--resume"], ["train", "c.yaml", "--resume"]),  # its own parser takes the bare flag
])
def test_a_bare_switch_means_true(argv, expected):
    from keeptune.cli import _bare_switches

    assert _bare_switches(argv) == expected
