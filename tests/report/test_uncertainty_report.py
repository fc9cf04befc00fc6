"""The report, its checks and `keeptune runs` on a results.json that records the uncertainty
(`tests.report.synthetic.uncertain_results`): each value's interval, each gated scalar's paired retention and the
rule that decided, the best against the runner-up, and the plots' error bars. Expected cells are written out
from synthetic.py's values and keeptune.report.fmt's formats (bounds with one decimal; an interval's brackets stay
unescaped: they make no link)."""
from __future__ import annotations

import json
import re

import pytest

from keeptune.cli import main
from keeptune.core.errors import DataError
from keeptune.report import build_report
from keeptune.report.registry import write_registry
from keeptune.report.results import load_results
from tests.report.synthetic import RESULTS, markdown_rows, uncertain_results, write_run

DPI = 30


def section(markdown: str, heading: str) -> str:
    return markdown.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


@pytest.fixture(scope="module")
def confident(tmp_path_factory):
    run = write_run(tmp_path_factory.mktemp("run") / "confident", uncertain_results("confident"))
    md, html = build_report(run, dpi=DPI)
    return run, md.read_text(encoding="utf-8"), html.read_text(encoding="utf-8")


def test_the_summary_states_the_rule_and_the_numbers_behind_the_best(confident):
    _, md, _ = confident
    summary = section(md, "Summary")
    assert "- Best checkpoint: step 100, score 0.649873 (math judge.accuracy@0.01 50.00% [40.0, 60.0]" in summary
    # F1 = 40 x 0.95 = 38 -+ 5; retention 95% with [75, 115], P(>= 90%) = 0.95 / 2
    assert ("Retention task squad-seed kept: emf1.F1 38.00 [33.0, 43.0] (95.00% of baseline, paired 95% "
            "interval [75.0, 115.0], P(>= 90%) 0.47)") in summary
    assert ("Gate of squad-seed: rule confident: the one-sided 95% lower bound of each gated scalar's paired "
            "retention >= 0.9.") in summary
    assert "Against the runner-up" not in summary  # one state passes the confident rule


def test_tables_show_each_value_with_its_interval(confident):
    _, md, _ = confident
    tasks = markdown_rows(section(md, "Tasks"))
    assert tasks[0][1] == ("retention (gate: emf1.F1, emf1.Em >= 0.9 x baseline (rule confident: the 95% lower "
                           "bound of the paired retention))")
    baseline = markdown_rows(section(md, "Baseline (base model)"))
    assert ["squad-seed", "emf1.F1", "40.00 [35.0, 45.0]"] in baseline
    assert ["math", "judge.accuracy@0.01", "15.00% [5.0, 25.0]"] in baseline
    rows = markdown_rows(section(md, "Checkpoints").split("\n\n", 1)[1])
    step300 = rows[2]
    # F1 44 (110%), Em 18.5 (92.5%): each with its interval, each retention with its paired one
    assert step300[4:8] == ["44.00 [39.0, 49.0]", "110.00% [90.0, 130.0]", "18.50 [13.5, 23.5]",
                            "92.50% [72.5, 112.5]"]
    assert step300[10] == "60.00% [50.0, 70.0]"  # the accuracy's interval; the other metrics plain
    assert step300[8] == "40.00%" and step300[-2:] == ["n/a", "FAIL"]


def test_the_gate_decisions_table_has_both_verdicts_and_the_rules_mark(confident):
    _, md, _ = confident
    rows = markdown_rows(section(md, "Gate decisions"))
    assert len(rows) == 6  # 3 states x 2 gated scalars
    # step 300's Em: point passes (92.5%), the bound 88.5% does not: the confident rule decides
    assert rows[5] == ["step 300", "squad-seed", "emf1.Em", "confident (95%)", "92.50% [72.5, 112.5]", "88.50%",
                       "0.46", "PASS", "FAIL *"]
    assert rows[0][-2:] == ["PASS", "PASS *"]


def test_the_html_shows_the_brackets(confident):
    _, _, html = confident
    assert "40.00 [35.0, 45.0]" in html and "\\[" not in html


def test_the_point_rule_compares_the_best_with_the_runner_up(tmp_path):
    run = write_run(tmp_path / "point", uncertain_results("point"))
    md = build_report(run, dpi=DPI)[0].read_text(encoding="utf-8")
    assert ("- Against the runner-up (step 100): math judge.accuracy@0.01 60.00% against 50.00%, difference "
            "+10.00 points [-5.0, 25.0], exact McNemar p = 0.344, 7 against 3 discordant samples: not "
            "distinguishable at 95%.") in md
    assert ("Gate of squad-seed: rule point: each gated scalar >= 0.9 x baseline (the paired retention's 95% "
            "interval is shown beside it, not used).") in md


def test_plots_draw_the_intervals():
    from keeptune.report.plots import frontier, new_task_scores, retention_scores
    from keeptune.report.results import retention_tasks

    content = uncertain_results("point")
    ax = retention_scores(content, retention_tasks(content)[0]).axes[0]
    f1 = ax.containers[0]  # the errorbar of emf1.F1: steps 100, 200, 300 at 38, 30, 44, each -+ 5
    segments = [s.tolist() for s in f1.lines[2][0].get_segments()]
    assert segments == [[[100, 33.0], [100, 43.0]], [[200, 25.0], [200, 35.0]], [[300, 39.0], [300, 49.0]]]
    band = [p for p in ax.patches if p.get_label() == "baseline emf1.F1 95% interval"]
    assert len(band) == 1 and band[0].get_extents().height > 0
    ax = new_task_scores(content).axes[0]
    accuracy = next(c for c in ax.containers if c.get_label() == "judge.accuracy@0.01 (score)")
    assert [s.tolist()[0][1] for s in accuracy.lines[2][0].get_segments()] == pytest.approx([5.0, 40.0, 60.0, 50.0])
    ax = frontier(content).axes[0]
    bars = ax.containers[0]  # step 100: x 95 (lowest retention) in [75, 115]; y 50% in [40, 60]
    x_segments, y_segments = (lines.get_segments() for lines in bars.lines[2])
    assert x_segments[0].ravel().tolist() == pytest.approx([75.0, 50.0, 115.0, 50.0])
    assert y_segments[0].ravel().tolist() == pytest.approx([95.0, 40.0, 95.0, 60.0])


def test_runs_shows_the_intervals_at_the_best(tmp_path):
    write_run(tmp_path / "runs" / "a", uncertain_results("confident"))
    _, text, _ = write_registry(tmp_path / "runs")
    row = markdown_rows(text)[0]
    assert "emf1.F1 38.00 [33.0, 43.0], emf1.Em 19.00 [14.0, 24.0]" in row
    assert "math: judge.accuracy@0.01 50.00% [40.0, 60.0]" in row


def test_runs_prints_the_intervals_without_markdown_escapes(tmp_path, capsys):
    """The terminal shows plain text: `\\[33.0, 43.0\\]` leaked there once; RUNS.md stays Markdown."""
    write_run(tmp_path / "runs" / "a|b", uncertain_results("confident"))  # a | that RUNS.md must escape
    assert main(["runs", str(tmp_path / "runs")]) == 0
    out = capsys.readouterr().out
    assert "emf1.F1 38.00 [33.0, 43.0]" in out and "a|b" in out and "\\" not in out
    assert "a\\|b" in (tmp_path / "runs" / "RUNS.md").read_text(encoding="utf-8")


@pytest.mark.parametrize("change, message", [
    (lambda r: r["checkpoints"][0]["retention_uncertainty"]["squad-seed"].update(rule="lucky"),
     r"checkpoints\[0\].retention_uncertainty.squad-seed.rule is 'lucky'"),
    (lambda r: r["checkpoints"][1]["retention_uncertainty"]["squad-seed"]["scalars"]["emf1.F1"].pop("lower"),
     r"checkpoints\[1\].retention_uncertainty.squad-seed.scalars.emf1.F1 lacks 'lower'"),
    (lambda r: r["checkpoints"][2]["retention_uncertainty"]["squad-seed"]["scalars"]["emf1.Em"].update(
        confident_passes="no"), r"scalars.emf1.Em.confident_passes is not true or false"),
    (lambda r: r["baseline"]["tasks"]["math"]["intervals"]["judge.accuracy@0.01"].update(low="0.1"),
     r"baseline.tasks.math.intervals.judge.accuracy@0.01.low is not a number"),
    (lambda r: r["tasks"][0]["gate"].update(rule="maybe"), r"tasks\[0\].gate.rule is 'maybe'"),
    (lambda r: r["best_vs_runner_up"].pop("verdict"), "best_vs_runner_up lacks 'verdict'"),
])
def test_a_malformed_uncertainty_is_named(tmp_path, change, message):
    content = uncertain_results("point")
    change(content)
    write_run(tmp_path, content)
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "results.json")) + ": .*" + message):
        load_results(tmp_path)


def test_a_results_json_without_uncertainty_reads_as_before(tmp_path):
    content = load_results(write_run(tmp_path, RESULTS))
    assert "retention_uncertainty" not in content["checkpoints"][0]
    md = build_report(tmp_path, dpi=DPI)[0].read_text(encoding="utf-8")
    assert "## Gate decisions" not in md and not re.search(r"\d \[\d", section(md, "Checkpoints"))
    assert (tmp_path / "results.json").read_text() == json.dumps(RESULTS)  # nothing to add, nothing written
