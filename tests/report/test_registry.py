"""The runs registry: every results.json below a folder, sorted by score, corrupt files skipped."""
from __future__ import annotations

import json

import pytest

from keeptune.core.errors import DataError
from keeptune.report.registry import write_registry
from tests.report.synthetic import markdown_headers, markdown_rows, scaled_results, synthetic_results, write_run

TEXT = ["SmolLM2-135M-Instruct", "generated easy x2400, cot", "math", "q_proj, v_proj", "3,407,872"]


def test_sorted_by_score_failed_last(runs_folder):
    path, text, _ = write_registry(runs_folder)
    assert path == runs_folder / "RUNS.md"
    assert path.read_text(encoding="utf-8") == text
    assert markdown_headers(text) == ["run", "name", "method", "model", "data recipe", "prompt", "targets", "trainable",
                                      "best step", "squad-seed", "accuracy (new task)", "score", "gate"]
    table = markdown_rows(text)
    assert [row[:2] for row in table] == [["b", "bravo"], ["a", "alpha"], ["group/e", "echo"], ["c", "charlie"]]
    assert table[0] == ["b", "bravo", "lora", *TEXT, "300", "emf1.F1 44.00, emf1.Em 18.50",
                        "math: judge.accuracy@0.01 60.00%", "0.720000", "pass"]
    assert table[3][7:] == ["3,407,872", "n/a", "n/a", "n/a", "n/a", "fail"]


def test_retention_columns_are_the_union_of_the_runs_tasks(tmp_path):
    """A run with two retention tasks and one whose tasks have other names: one column per retention task."""
    folder = tmp_path / "runs"
    write_run(folder / "two", synthetic_results(retention=("squad-seed", "squad-chat")))
    write_run(folder / "greek", {**synthetic_results(retention=("alpha",), new="beta",
                                                     retention_metrics=("x.y", "x.z", "w.a", "w.b"),
                                                     new_metrics=("n.a", "n.b", "n.c", "n.d")), "name": "greek"})
    _, text, skipped = write_registry(folder)
    assert skipped == []
    headers = markdown_headers(text)
    assert headers[9:] == ["squad-seed", "squad-chat", "alpha", "accuracy (new task)", "score", "gate"]
    rows = {row[0]: row for row in markdown_rows(text)}
    # both best at step 300: squad-chat kept 1.0 x (50, 20); alpha is task 0: (44.00, 18.50)
    assert rows["two"][8:] == ["300", "emf1.F1 44.00, emf1.Em 18.50", "emf1.F1 50.00, emf1.Em 20.00", "n/a",
                               "math: judge.accuracy@0.01 60.00%", "0.719873", "pass"]
    assert rows["greek"][8:] == ["300", "n/a", "n/a", "x.y 44.00, x.z 18.50", "beta: n.c 60.00%", "0.719873",
                                 "pass"]


def test_corrupt_and_old_results_are_skipped(runs_folder):
    old = runs_folder / "old" / "results.json"
    old.parent.mkdir()
    old.write_text('{"name": "old", "command": "keeptune run x.yaml", "baseline": {"squad": {}}}', encoding="utf-8")
    _, text, skipped = write_registry(runs_folder)
    corrupt = runs_folder / "group" / "d" / "results.json"
    assert [path for path, _ in skipped] == [corrupt, old]
    assert "not valid JSON" in skipped[0][1]
    assert "older keeptune" in skipped[1][1] and "`keeptune run x.yaml`" in skipped[1][1]
    assert "delta" not in text.split("## Skipped")[0]
    assert f"- {corrupt}: not valid JSON" in text


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        write_registry(tmp_path / "nowhere")


def test_the_method_and_a_scaled_best_are_shown(tmp_path):
    """A run with kl and scale beside a plain one: method column, and the best step names its scale."""
    folder = tmp_path / "runs"
    write_run(folder / "plain", synthetic_results())
    write_run(folder / "scaled", scaled_results())
    _, text, _ = write_registry(folder)
    rows = {row[0]: row for row in markdown_rows(text)}
    assert [row[0] for row in markdown_rows(text)] == ["scaled", "plain"]  # 0.754873 before 0.719873
    assert rows["scaled"][2] == "lora+kl+scale" and rows["plain"][2] == "lora"
    assert rows["scaled"][8:10] == ["200 (scale 0.5)", "emf1.F1 40.00, emf1.Em 20.00"]
    assert rows["plain"][8] == "300"
    assert rows["scaled"][-3:] == ["math: judge.accuracy@0.01 65.00%", "0.754873", "pass"]


def versioned(content: dict, **versions: int) -> dict:
    """`content` with results.json's `tasks[].version` set for the named tasks (underscores for dashes)."""
    for spec in content["tasks"]:
        key = spec["name"].replace("-", "_")
        if key in versions:
            spec["version"] = versions[key]
    return content


def test_a_task_version_other_than_most_runs_is_marked(runs_folder):
    """b evaluated squad-seed with version 2, the others with 1 (c and e implicitly: written before versions)."""
    path = runs_folder / "b" / "results.json"
    path.write_text(json.dumps(versioned(json.loads(path.read_text()), squad_seed=2)), encoding="utf-8")
    path = runs_folder / "a" / "results.json"
    path.write_text(json.dumps(versioned(json.loads(path.read_text()), squad_seed=1, math=1)), encoding="utf-8")
    _, text, _ = write_registry(runs_folder)
    rows = {row[0]: row for row in markdown_rows(text)}
    assert rows["b"][9] == "emf1.F1 44.00, emf1.Em 18.50 (v2)"
    assert rows["a"][9] == rows["group/e"][9] == "emf1.F1 44.00, emf1.Em 18.50"
    assert rows["b"][10] == "math: judge.accuracy@0.01 60.00%"  # the new task's versions agree
    assert rows["c"][9] == "n/a"  # a run without a passing checkpoint has no cell to mark, but it counts
    assert ("Task versions differ: squad-seed 1 (3 runs), 2 (1 run). A cell marked (vN) comes from version N "
            "of its task's spec") in text


def test_the_new_tasks_version_is_marked_and_a_tie_keeps_the_best_runs(tmp_path):
    folder = tmp_path / "runs"
    write_run(folder / "plain", versioned(synthetic_results(), math=3))
    write_run(folder / "scaled", versioned(scaled_results(), math=4))  # ranked first: its version is the usual one
    _, text, _ = write_registry(folder)
    rows = {row[0]: row for row in markdown_rows(text)}
    assert rows["scaled"][-3] == "math: judge.accuracy@0.01 65.00%"
    assert rows["plain"][-3] == "math: judge.accuracy@0.01 60.00% (v3)"
    assert "Task versions differ: math 4 (1 run), 3 (1 run)." in text


def test_equal_versions_mark_nothing(tmp_path):
    folder = tmp_path / "runs"
    write_run(folder / "old", synthetic_results())  # no version: 1
    write_run(folder / "new", versioned(synthetic_results(), squad_seed=1, math=1))
    _, text, _ = write_registry(folder)
    assert "(v" not in text and "versions differ" not in text


def test_the_report_names_each_tasks_version(tmp_path):
    """The run report's task table (keeptune.report.render) shows the version the registry compares."""
    from keeptune.report.render import tasks_table

    table = tasks_table(versioned(synthetic_results(), math=2))
    assert table.headers[-1] == "version" and [row[-1] for row in table.rows] == ["1", "2"]
