"""Fixtures of the report tests: a folder of runs for the registry."""
from __future__ import annotations

import pytest

from tests.report.synthetic import results, synthetic_results, write_run


def with_best_score(name: str, score: float | None) -> dict:
    """The synthetic run renamed, its best checkpoint's score set (None: no checkpoint passes)."""
    if score is None:
        return {**synthetic_results(passes=False), "name": name}
    content = results(name=name)
    content["best"]["score"] = score
    return content


@pytest.fixture
def runs_folder(tmp_path):
    folder = tmp_path / "runs"
    write_run(folder / "a", with_best_score("alpha", 0.70))
    write_run(folder / "b", with_best_score("bravo", 0.72))
    write_run(folder / "c", with_best_score("charlie", None))
    write_run(folder / "group" / "e", with_best_score("echo", 0.65))  # found below a subfolder too
    (folder / "group" / "d").mkdir(parents=True)
    (folder / "group" / "d" / "results.json").write_text('{"name": "delta", ', encoding="utf-8")
    return folder
