"""Command functions: files written atomically, in the real file's JSON format."""
from __future__ import annotations

import json

import pytest

from keeptune.cli.data import build, generate, stats
from keeptune.data.math.templates import ENGLISH


def test_generate_writes_the_real_line_format(tmp_path):
    out = generate(50, seed=3, out=tmp_path / "gen.jsonl")
    lines = out.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 50
    for line in lines:  # same bytes as the real file: UTF-8 text, ", " and ": " separators
        record = json.loads(line)
        assert list(record) == ["problem", "solution"]
        assert line == '{"problem": "%s", "solution": "%s"}' % (record["problem"], record["solution"])
    again = generate(50, seed=3, out=tmp_path / "again.jsonl")
    assert again.read_bytes() == out.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["again.jsonl", "gen.jsonl"]


def test_failed_write_leaves_no_file(tmp_path):
    with pytest.raises(ValueError):
        generate(5, templates=["nope"], out=tmp_path / "x.jsonl")
    assert list(tmp_path.iterdir()) == []


def test_stats_of_the_real_sample(math_sample, capsys):
    counts = stats(math_sample)
    assert counts["arithmetic"] == 649 and counts[ENGLISH] == 16  # see the template test
    assert sum(counts.values()) == 996
    assert "total" in capsys.readouterr().out


def test_build_real_sample_then_stats_agree(math_sample, tmp_path):
    out = build(math_sample, strategy="real", prompt="alpaca", out=tmp_path / "conv.jsonl")
    assert stats(out) == stats(math_sample)


def test_build_generated_easy(tmp_path):
    out = build(None, strategy="easy", n=40, pool=2_000, cot=True, out=tmp_path / "easy.jsonl")
    counts = stats(out)
    assert sum(counts.values()) == 40
    assert counts["power"] == counts["root"] == counts["fraction"] == counts["function"] == 0


def test_build_chat_prompt_uses_the_models_chat_template(tmp_path):
    from tests.tiny import save_tiny

    model = save_tiny(tmp_path / "tiny")
    config = json.loads((model / "tokenizer_config.json").read_text())
    config["chat_template"] = "{% for m in messages %}<u>{{ m['content'] }}</u>{% endfor %}<a>"
    (model / "tokenizer_config.json").write_text(json.dumps(config))
    out = build(None, strategy="arithmetic", n=3, prompt="chat", model=str(model), pool=50, out=tmp_path / "c.jsonl")
    for line in out.read_text(encoding="utf-8").splitlines():
        human = json.loads(line)["conversations"][0]["value"]
        assert human.startswith("<u>计算 ") and human.endswith("等于多少？</u><a>")


def test_build_chat_prompt_refuses_a_model_without_chat_template(tmp_path):
    from keeptune.core.errors import ModelLoadError
    from tests.tiny import save_tiny

    with pytest.raises(ModelLoadError, match="no chat template"):
        build(None, prompt="chat", model=str(save_tiny(tmp_path / "tiny")), out=tmp_path / "x.jsonl")
    assert not (tmp_path / "x.jsonl").exists()


# --- issue 11: `data stats` on malformed input ----------------------------------------------

def _stats_error(tmp_path, capsys, content: bytes) -> str:
    from keeptune.cli import main

    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    assert main(["data", "stats", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"keeptune: error: {path}") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(("content", "fragment"), [
    (b"[1, 2]", "bad.jsonl: item 1: not a JSON object (int)"),
    (b"5\n6\n", "bad.jsonl:1: not a JSON object (int)"),
    (b'{"a": 1}\n', "bad.jsonl:1: neither a problem/solution pair nor a conversation record"),
    (b'{"problem": 3, "solution": "x"}\n', "bad.jsonl:1: field 'problem': not a string (int)"),
    (b'{"conversations": [1]}\n', "bad.jsonl:1: field 'conversations': not a list of turns"),
    (b'{"conversations": [{"from": "human", "value": "q"}]}\n', "no gpt turn"),
    ('{"problem": "caf\u00e9"}\n'.encode("cp1252"), "bad.jsonl:1: not valid UTF-8"),
    (b"[1, 2", "bad.jsonl:1: not a valid JSON array"),
])
def test_stats_malformed_records_are_one_line_errors(tmp_path, capsys, content, fragment):
    """Issue 11.6: a JSON array or numbers where a record is expected were tracebacks."""
    assert fragment in _stats_error(tmp_path, capsys, content)


def test_stats_does_not_count_a_record_without_solution(tmp_path, capsys):
    """Issue 11.7: a record with no solution was counted as arithmetic."""
    err = _stats_error(tmp_path, capsys, '{"problem": "计算 1.00 + 2.00 等于多少？"}\n'.encode())
    assert "bad.jsonl:1: field 'solution': missing" in err
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"problem": "计算 1.00 + 2.00 等于多少？"}\n'
                    '{"problem": "计算 1.00 + 2.00 等于多少？", "solution": "1.00 + 2.00 = 3.00"}\n{oops\n',
                    encoding="utf-8")
    counts = stats(path, skip_bad=True)
    assert counts["arithmetic"] == 1 and sum(counts.values()) == 1
