"""Command functions: files written atomically, in the real file's JSON format."""
from __future__ import annotations

import json

import pytest

from keeptune.data.math.commands import build, generate, stats
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


def test_build_refuses_chat_without_tokenizer(tmp_path):
    with pytest.raises(ValueError, match="tokenizer"):
        build(None, prompt="chat", out=tmp_path / "x.jsonl")
    assert list(tmp_path.iterdir()) == []
