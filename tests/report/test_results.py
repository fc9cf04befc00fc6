"""`load_results`: every field the report reads is checked, and the error names the file and the field."""
from __future__ import annotations

import re

import pytest

from keeptune.core.errors import DataError
from keeptune.report import build_report
from keeptune.report.results import load_results, new_task, retention_tasks
from tests.report.synthetic import RESULTS, markdown_rows, results, synthetic_results, write_run


def test_valid_results_load(tmp_path):
    content = synthetic_results(retention=("a", "b"), new="c")
    assert load_results(write_run(tmp_path, content)) == content
    assert [task.name for task in retention_tasks(content)] == ["a", "b"]
    assert (new_task(content).name, new_task(content).accuracy) == ("c", "judge.accuracy@0.01")


def test_missing_and_invalid_file(tmp_path):
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "results.json")) + ": no such file"):
        build_report(tmp_path)
    (tmp_path / "results.json").write_text("{", encoding="utf-8")
    with pytest.raises(DataError, match="results.json: not valid JSON"):
        build_report(tmp_path)


def test_old_schema_asks_for_a_rerun(tmp_path):
    old = {"name": "x", "command": "keeptune run configs/a.yaml", "settings": {}, "params": {},
           "baseline": {"squad": {"F1": 1.0, "Em": 0.0}, "math": {}}, "checkpoints": []}
    write_run(tmp_path, old)
    with pytest.raises(DataError, match=re.escape(f"{tmp_path / 'results.json'}: written by an older keeptune "
                                                  "(no 'tasks' list); re-run `keeptune run configs/a.yaml`")):
        load_results(tmp_path)


def broken(change) -> dict:
    content = results()
    change(content)
    return content


@pytest.mark.parametrize("change, message", [
    (lambda r: r.pop("params"), "field 'params' missing"),
    (lambda r: r.pop("score_rule"), "field 'score_rule' missing"),
    (lambda r: r["params"].pop("ratio"), "params lacks 'ratio'"),
    (lambda r: r["tasks"][0].pop("metrics"), r"tasks\[0\] lacks 'metrics'"),
    (lambda r: r["tasks"][0].update(role="old"), r"tasks\[0\].role is 'old'"),
    (lambda r: r["tasks"][0]["gate"]["thresholds"].pop("emf1.Em"), r"tasks\[0\].gate.thresholds lacks 'emf1.Em'"),
    (lambda r: r["tasks"][1].pop("accuracy"), r"tasks\[1\] lacks 'accuracy'"),
    (lambda r: r["tasks"][1].update(role="retention"), r"tasks\[1\] lacks 'gate'"),
    (lambda r: r["tasks"].append({**r["tasks"][1], "name": "other"}), "2 tasks with role 'new'"),
    (lambda r: r["baseline"]["tasks"].pop("math"), "baseline.tasks lacks 'math'"),
    (lambda r: r["checkpoints"][2]["tasks"]["squad-seed"].pop("scores"),
     r"checkpoints\[2\].tasks.squad-seed lacks 'scores'"),
    (lambda r: r["checkpoints"][1]["tasks"]["math"]["scores"].update({"judge.strict@0.01": "high"}),
     r"checkpoints\[1\].tasks.math.scores.judge.strict@0.01 is not a number"),
    (lambda r: r["checkpoints"][0]["tasks"]["math"].update(breakdown={"add": [1]}),
     r"checkpoints\[0\].tasks.math.breakdown.add is not a \[correct, total\] pair"),
    (lambda r: r["checkpoints"][0].pop("gate"), r"checkpoints\[0\] lacks 'gate'"),
    (lambda r: r["best"].pop("accuracy"), "best lacks 'accuracy'"),
    (lambda r: r["tracking"][1]["tasks"]["math"].pop("scores"), r"tracking\[1\].tasks.math lacks 'scores'"),
    (lambda r: r["checkpoints"][1].update(scale="half"), r"checkpoints\[1\].scale is not a number"),
    (lambda r: r["best"].update(methods="kl"), r"best.methods is not a list of method names"),
])
def test_a_missing_field_is_named(tmp_path, change, message):
    write_run(tmp_path, broken(change))
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "results.json")) + ": .*" + message):
        load_results(tmp_path)


def test_optional_fields(tmp_path):
    """No tracking, no best, no loss, no total_count, no breakdown, no units: loads, and the report builds."""
    content = results(best=None)
    del content["tracking"], content["wall_seconds"]
    for task in content["tasks"]:
        del task["units"]
    del content["checkpoints"][0]["loss"], content["baseline"]["tasks"]["math"]["total_count"]
    del content["baseline"]["tasks"]["math"]["breakdown"]
    write_run(tmp_path, content)
    assert load_results(tmp_path)["name"] == RESULTS["name"]
    md = build_report(tmp_path, dpi=30)[0].read_text(encoding="utf-8")
    baseline = markdown_rows(md.split("## Baseline (base model)\n", 1)[1])
    assert ["math", "samples", "n/a"] in baseline
    assert ["math", "judge.accuracy@0.01", "0.15"] in baseline  # no unit: the plain number


def test_scale_and_methods_are_optional_and_read(tmp_path):
    """A plain run's entries (no scale, no methods) are at scale 1 with no method; a scaled run's are read."""
    from keeptune.report.results import entry_methods, entry_scale, lowest_retention, method_label, run_methods
    from tests.report.synthetic import scaled_results

    plain = load_results(write_run(tmp_path / "plain", results()))
    assert [(entry_scale(c), entry_methods(c)) for c in plain["checkpoints"]] == [(1.0, [])] * 3
    assert method_label(run_methods(plain)) == "lora"
    scaled = load_results(write_run(tmp_path / "scaled", scaled_results()))
    assert [entry_scale(c) for c in scaled["checkpoints"]] == [1.0, 0.5] * 3
    assert method_label(run_methods(scaled)) == "lora+kl+scale"
    # step 300 keeps F1 110% and Em 92.5%: the gate's one number is the lower
    assert lowest_retention(plain["checkpoints"][2]) == pytest.approx(0.925)
