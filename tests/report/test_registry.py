"""The runs registry: every results.json below a folder, sorted by score, corrupt files skipped."""
from __future__ import annotations

import pytest

from keeptune.io import DataError
from keeptune.report.registry import write_registry
from tests.report.synthetic import markdown_rows


def test_sorted_by_score_failed_last(runs_folder):
    path, text, _ = write_registry(runs_folder)
    assert path == runs_folder / "RUNS.md"
    assert path.read_text(encoding="utf-8") == text
    table = markdown_rows(text)
    assert [row[:2] for row in table] == [["b", "bravo"], ["a", "alpha"], ["group/e", "echo"], ["c", "charlie"]]
    assert table[0] == ["b", "bravo", "SmolLM2-135M-Instruct", "generated easy x2400, cot", "math",
                        "q_proj, v_proj", "3,407,872", "300", "44.00", "18.50", "60.00% @ 0.01", "0.720000", "pass"]
    assert table[3][6:] == ["3,407,872", "n/a", "n/a", "n/a", "n/a", "n/a", "fail"]


def test_corrupt_results_are_skipped(runs_folder):
    _, text, skipped = write_registry(runs_folder)
    corrupt = runs_folder / "group" / "d" / "results.json"
    assert [path for path, _ in skipped] == [corrupt]
    assert "not valid JSON" in skipped[0][1]
    assert "delta" not in text.split("## Skipped")[0]
    assert f"- {corrupt}: not valid JSON" in text


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        write_registry(tmp_path / "nowhere")
