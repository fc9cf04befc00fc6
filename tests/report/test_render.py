"""`build_report` on the hand-written runs of `tests.report.synthetic`: files, tables, escaping, plots.

Expected cells are written out here from the values in synthetic.py's docstring
and the formats documented in keeptune.report.fmt (points two decimals,
fractions as percent with two decimals, loss four decimals, score six, ratio 8 digits).
"""
from __future__ import annotations

import json
import re

import pytest

from keeptune.report import build_report
from keeptune.report.plots import file_names
from tests.report.synthetic import (
    LOG,
    RESULTS,
    markdown_headers,
    markdown_rows,
    results,
    scaled_results,
    synthetic_results,
    write_run,
)
from tests.report.test_document import LINKS, rendered

DPI = 30


def section(markdown: str, heading: str) -> str:
    """The text under `## heading`, up to the next section."""
    return markdown.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


def table_rows(markdown: str, heading: str) -> list[list[str]]:
    """Cells of the table under `## heading` (header and rule lines dropped)."""
    return markdown_rows(section(markdown, heading))


def images(page: str) -> int:
    return page.count('<img src="data:image/png;base64,')


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    run = write_run(tmp_path_factory.mktemp("run") / "cot-r8", RESULTS, LOG)
    md_path, html_path = build_report(run, dpi=DPI)
    return run, md_path, html_path


@pytest.fixture(scope="module")
def failed(tmp_path_factory):
    """No checkpoint passes, no training log, and stale plots from an earlier build."""
    run = write_run(tmp_path_factory.mktemp("run") / "failed", {**synthetic_results(passes=False), "name": "failed"})
    (run / "plots").mkdir()
    for stale in ("loss_lr.png", "task_gone.png"):
        (run / "plots" / stale).write_bytes(b"stale")
    return run, *build_report(run, dpi=DPI)


@pytest.fixture(scope="module")
def three_tasks(tmp_path_factory):
    """Two retention tasks; the first one's second gated metric has a baseline of 0."""
    content = synthetic_results(retention=("squad-seed", "squad-chat"), zero_baseline=True)
    run = write_run(tmp_path_factory.mktemp("run") / "three", content)
    return run, *build_report(run, dpi=DPI)


def test_files(built):
    run, md_path, html_path = built
    assert (md_path, html_path) == (run / "report.md", run / "report.html")
    assert sorted(p.name for p in (run / "plots").iterdir()) == [
        "breakdown.png", "frontier.png", "loss_lr.png", "task_math.png", "task_squad-seed.png", "tracking.png"]
    assert all(path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for path in (run / "plots").iterdir())


def test_checkpoint_rows(built):
    md = built[1].read_text(encoding="utf-8")
    assert markdown_headers(section(md, "Checkpoints").split("\n\n", 1)[1]) == [
        "step", "method", "scale", "loss", "squad-seed emf1.F1", "squad-seed retention emf1.F1", "squad-seed emf1.Em",
        "squad-seed retention emf1.Em", "math judge.accuracy@1e-08", "math judge.accuracy@0.0001",
        "math judge.accuracy@0.01", "math judge.strict@0.01", "score", "gate"]
    assert table_rows(md, "Checkpoints") == [
        ["100", "lora", "1", "1.2346", "38.00", "95.00%", "19.00", "95.00%", "25.00%", "37.50%", "50.00%", "45.00%",
         "0.649873", "PASS"],
        ["200", "lora", "1", "n/a", "30.00", "75.00%", "21.00", "105.00%", "50.00%", "60.00%", "70.00%", "65.00%",
         "n/a", "FAIL"],
        ["300", "lora", "1", "0.9000", "44.00", "110.00%", "18.50", "92.50%", "40.00%", "50.00%", "60.00%",
         "55.00%", "0.719873", "PASS (best)"],
    ]


def test_breakdown_table(built):
    rows = table_rows(built[1].read_text(encoding="utf-8"), "Breakdown: math judge.accuracy@0.01 per group")
    assert rows == [
        ["add", "4/20 (20.00%)", "12/20 (60.00%)", "16/20 (80.00%)", "14/20 (70.00%)"],
        ["mean", "2/20 (10.00%)", "8/20 (40.00%)", "12/20 (60.00%)", "10/20 (50.00%)"],
    ]


def test_baseline_params_and_settings(built):
    md = built[1].read_text(encoding="utf-8")
    assert table_rows(md, "Baseline (base model)") == [
        ["squad-seed", "emf1.F1", "40.00"],
        ["squad-seed", "emf1.F1 gate (0.9 x baseline)", "36.00"],
        ["squad-seed", "emf1.Em", "20.00"],
        ["squad-seed", "emf1.Em gate (0.9 x baseline)", "18.00"],
        ["squad-seed", "squad_v1.f1", "45.50"],
        ["squad-seed", "squad_v1.exact_match", "30.00"],
        ["squad-seed", "samples", "50"],
        ["math", "judge.accuracy@1e-08", "10.00%"],
        ["math", "judge.accuracy@0.0001", "12.50%"],
        ["math", "judge.accuracy@0.01", "15.00%"],
        ["math", "judge.strict@0.01", "12.50%"],
        ["math", "samples", "40"],
    ]
    params = dict(table_rows(md, "Parameters"))
    assert params["trainable parameters"] == "3,407,872"
    assert params["all parameters"] == "8,030,261,248"
    assert params["ratio = trainable / all (exact)"] == "0.00042437872128366403"
    assert params["score term (1 - ratio) * 0.3"] == repr((1 - 3407872 / 8030261248) * 0.3)
    settings = dict(table_rows(md, "Settings"))
    assert settings["data_recipe"] == "generated easy x2400, cot"
    assert settings["targets"] == "q_proj, v_proj"
    assert [row[:2] for row in table_rows(md, "Tasks")] == [
        ["squad-seed", "retention (gate: emf1.F1, emf1.Em >= 0.9 x baseline)"],
        ["math", "new (score: judge.accuracy@0.01)"]]


def test_summary_and_reproduce(built):
    md = built[1].read_text(encoding="utf-8")
    assert ("- Best checkpoint: step 300, score 0.719873 (math judge.accuracy@0.01 60.00%, ratio 0.00042437872)."
            in md)
    assert ("- Retention task squad-seed kept: emf1.F1 44.00 (110.00% of baseline), "
            "emf1.Em 18.50 (92.50% of baseline).") in md
    assert "- Adapter: runs/x/checkpoints/step-300; merged model: n/a." in md
    assert "- Gate: a checkpoint passes when every retention task passes its gate." in md
    assert "- Score: score = (1 - ratio) * 0.3 + accuracy * 0.7, accuracy = math.judge.accuracy@0.01." in md
    assert "- Wall time: 4020.0 s (1 h 07 min)." in md
    assert "```sh\nkeeptune run configs/default.yaml seed=7 out=runs/cot-r8\n```" in md
    assert json.loads(md.split("## Configuration\n\n```json\n", 1)[1].split("\n```", 1)[0]) == RESULTS["config"]


def test_markdown_images_and_escaping(built):
    md = built[1].read_text(encoding="utf-8")
    assert md.startswith("# Experiment report: cot-r8 \\<script>alert(1)\\</script>\n")
    assert "| reading comprehension \\<0> " in md
    assert len(re.findall(r"!\[[^\]]+\]\(plots/[\w.-]+\.png\)", md)) == 6


def test_html_is_self_contained_and_escaped(built):
    run, _, html_path = built
    page = html_path.read_text(encoding="utf-8")
    assert images(page) == len(list((run / "plots").glob("*.png"))) == 6
    assert 'src="http' not in page and 'href="http' not in page and "<link" not in page
    assert "<script>" not in page
    assert "cot-r8 &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<td>templated arithmetic &amp; worked steps</td>" in page
    assert "<td>add</td>" in page


def test_no_checkpoint_passes(failed):
    run, md_path, html_path = failed
    md, page = md_path.read_text(encoding="utf-8"), html_path.read_text(encoding="utf-8")
    assert "- No checkpoint passes the gate (3 evaluated)." in md
    assert "No checkpoint passes the gate (3 evaluated)." in page
    assert "(best)" not in md
    # task 0 keeps 0.85 x 40 = 34.00 (85.00%) of F1 at every step
    assert [row[4:6] + row[-2:] for row in table_rows(md, "Checkpoints")] == [["34.00", "85.00%", "n/a", "FAIL"]] * 3
    # no log: the stale loss plot is gone, and so is the plot of a task the run no longer has
    assert sorted(p.name for p in (run / "plots").iterdir()) == [
        "breakdown.png", "frontier.png", "task_math.png", "task_squad-seed.png", "tracking.png"]
    assert images(page) == 5


def test_three_tasks(three_tasks):
    """Both retention tasks get their columns, per-task verdicts, summary lines, baseline rows and plots."""
    run, md_path, _ = three_tasks
    md = md_path.read_text(encoding="utf-8")
    assert markdown_headers(section(md, "Checkpoints").split("\n\n", 1)[1])[4:14] == [
        "squad-seed emf1.F1", "squad-seed retention emf1.F1", "squad-seed emf1.Em", "squad-seed retention emf1.Em",
        "squad-seed gate", "squad-chat emf1.F1", "squad-chat retention emf1.F1", "squad-chat emf1.Em",
        "squad-chat retention emf1.Em", "squad-chat gate"]
    # squad-chat (k = 1): baseline 50 / 20, kept (0.85, 1.0) FAIL, (0.95, 0.95) PASS, (1.0, 1.0) PASS
    assert [row[4:14] + row[-2:] for row in table_rows(md, "Checkpoints")] == [
        ["38.00", "95.00%", "19.00", "baseline 0", "PASS", "42.50", "85.00%", "20.00", "100.00%", "FAIL",
         "n/a", "FAIL"],
        ["30.00", "75.00%", "21.00", "baseline 0", "FAIL", "47.50", "95.00%", "19.00", "95.00%", "PASS",
         "n/a", "FAIL"],
        ["44.00", "110.00%", "18.50", "baseline 0", "PASS", "50.00", "100.00%", "20.00", "100.00%", "PASS",
         "0.719873", "PASS (best)"],
    ]
    assert ("- Retention task squad-seed kept: emf1.F1 44.00 (110.00% of baseline), emf1.Em 18.50 (baseline 0)."
            in md)
    assert ("- Retention task squad-chat kept: emf1.F1 50.00 (100.00% of baseline), "
            "emf1.Em 20.00 (100.00% of baseline).") in md
    baseline = table_rows(md, "Baseline (base model)")
    assert ["squad-chat", "emf1.F1 gate (0.9 x baseline)", "45.00"] in baseline
    assert ["squad-seed", "emf1.Em gate (0.9 x baseline)", "0.00"] in baseline
    assert {"task_squad-seed.png", "task_squad-chat.png"} <= {p.name for p in (run / "plots").iterdir()}


def test_a_link_in_a_task_description_is_text_in_both_reports(tmp_path):
    """Issue 28: `[x](javascript:...)` in a spec's description stayed a live link in report.md."""
    content = results()
    content["tasks"][0]["description"] = " ".join(LINKS)
    md_path, html_path = build_report(write_run(tmp_path / "run", content), dpi=DPI)
    md, page = md_path.read_text(encoding="utf-8"), html_path.read_text(encoding="utf-8")
    assert "[click\\](javascript:alert(1))" in md  # the ] that would close a link is escaped, so no link
    assert "href" not in rendered(md) and "href" not in page
    assert "[click](javascript:alert(1))" in page  # shown as the text it is


def test_no_literal_task_or_metric_name_is_needed(tmp_path):
    """Tasks "alpha"/"beta" with metrics "x.y"...: every table follows the specs."""
    content = synthetic_results(retention=("alpha",), new="beta", retention_metrics=("x.y", "x.z", "w.a", "w.b"),
                                new_metrics=("n.a", "n.b", "n.c", "n.d"))
    run = write_run(tmp_path / "greek", content, LOG)
    md = build_report(run, dpi=DPI)[0].read_text(encoding="utf-8")
    assert "squad" not in md.lower() and "emf1" not in md and "judge" not in md
    assert markdown_headers(section(md, "Checkpoints").split("\n\n", 1)[1]) == [
        "step", "method", "scale", "loss", "alpha x.y", "alpha retention x.y", "alpha x.z", "alpha retention x.z",
        "beta n.a", "beta n.b", "beta n.c", "beta n.d", "score", "gate"]
    assert table_rows(md, "Checkpoints")[2] == [
        "300", "lora", "1", "0.9000", "44.00", "110.00%", "18.50", "92.50%", "40.00%", "50.00%", "60.00%",
        "55.00%", "0.719873", "PASS (best)"]
    assert "- Best checkpoint: step 300, score 0.719873 (beta n.c 60.00%, ratio 0.00042437872)." in md
    assert table_rows(md, "Breakdown: beta n.c per group")[0] == [
        "add", "4/20 (20.00%)", "12/20 (60.00%)", "16/20 (80.00%)", "14/20 (70.00%)"]
    assert sorted(p.name for p in (run / "plots").iterdir()) == [
        "breakdown.png", "frontier.png", "loss_lr.png", "task_alpha.png", "task_beta.png", "tracking.png"]


def test_other_units_missing_metrics_and_no_breakdown(tmp_path):
    """A metric of an unknown unit prints as a plain number; one absent from an entry prints n/a."""
    content = results()
    new = content["tasks"][-1]
    new["units"]["judge.strict@0.01"] = "tokens"
    new["breakdown"] = None
    del content["checkpoints"][0]["tasks"]["math"]["scores"]["judge.accuracy@1e-08"]
    run = write_run(tmp_path / "run", content)
    md = build_report(run, dpi=DPI)[0].read_text(encoding="utf-8")
    assert table_rows(md, "Checkpoints")[0][8:12] == ["n/a", "37.50%", "50.00%", "0.45"]
    assert "Breakdown" not in md
    assert "breakdown.png" not in {p.name for p in (run / "plots").iterdir()}


def test_run_without_checkpoints(tmp_path):
    run = write_run(tmp_path, results(checkpoints=[], best=None, tracking=[]))
    md_path, html_path = build_report(run, dpi=DPI)
    md = md_path.read_text(encoding="utf-8")
    assert "- No checkpoint passes the gate (0 evaluated)." in md
    assert table_rows(md, "Checkpoints") == []
    assert table_rows(md, "Breakdown: math judge.accuracy@0.01 per group") == [
        ["add", "4/20 (20.00%)"], ["mean", "2/20 (10.00%)"]]
    assert "No data to plot." in md and "<img" not in html_path.read_text(encoding="utf-8")
    assert list((run / "plots").iterdir()) == []


def test_plot_file_names_are_safe_and_unique():
    content = synthetic_results(retention=("a/b", "a b", "../x"), new="a_b")
    assert file_names(content) == {"a/b": "task_a_b", "a b": "task_a_b_", "../x": "task_x", "a_b": "task_a_b__"}


def test_timing_shares_count_the_report_once_with_or_without_the_wall_time():
    from keeptune.report.render import timing_table

    rows = [{"phase": "training", "task": None, "seconds": 6.0, "steps": 3},
            {"phase": "report", "task": None, "seconds": 2.0}]
    # no wall time: the rows are the whole; training 6 of 8 s
    assert [r[:4] for r in timing_table({"timing": rows}).rows] == [
        ["training", "", "6.0", "75.00%"], ["report", "", "2.0", "25.00%"]]
    # wall time 10 s taken before the report: 12 s in all, 4 s of them other
    table = timing_table({"timing": rows, "wall_seconds": 10.0}).rows
    assert [r[:4] for r in table] == [["training", "", "6.0", "50.00%"], ["report", "", "2.0", "16.67%"],
                                      ["other", "", "4.0", "33.33%"], ["total", "", "12.0", "100.00%"]]
    assert table[0][4] == "3 steps, 2.00 s/step"


@pytest.fixture(scope="module")
def scaled(tmp_path_factory):
    """A run with retention methods kl and scale: every step also at scale 0.5; the best is (200, 0.5)."""
    run = write_run(tmp_path_factory.mktemp("run") / "scaled", scaled_results(), LOG)
    return run, *build_report(run, dpi=DPI)


def test_scaled_entries_get_their_rows_method_and_scale(scaled):
    _, md_path, _ = scaled
    md = md_path.read_text(encoding="utf-8")
    rows = table_rows(md, "Checkpoints")
    # step, method, scale; retention of F1; N2 (judge.accuracy@0.01); score; gate (scale 0.5 keeps the baseline)
    assert [row[:3] + [row[5], row[10], row[-2], row[-1]] for row in rows] == [
        ["100", "lora+kl", "1", "95.00%", "50.00%", "0.649873", "PASS"],
        ["100", "lora+kl+scale", "0.5", "100.00%", "30.00%", "0.509873", "PASS"],
        ["200", "lora+kl", "1", "75.00%", "70.00%", "n/a", "FAIL"],
        ["200", "lora+kl+scale", "0.5", "100.00%", "65.00%", "0.754873", "PASS (best)"],
        ["300", "lora+kl", "1", "110.00%", "60.00%", "0.719873", "PASS"],
        ["300", "lora+kl+scale", "0.5", "100.00%", "50.00%", "0.649873", "PASS"],
    ]
    assert ("- Best checkpoint: step 200 at scale 0.5 (its adapter's update x 0.5, folded into the exported "
            "adapter's weights), score 0.754873 (math judge.accuracy@0.01 65.00%, ratio 0.00042437872).") in md
    assert "- Method: lora+kl+scale." in md
    breakdown = section(md, "Breakdown: math judge.accuracy@0.01 per group")
    assert markdown_headers(breakdown)[:4] == ["group", "baseline", "step 100", "step 100 scale 0.5"]
    assert markdown_rows(breakdown)[0][5] == "14/20 (70.00%)"  # add at (200, 0.5)


def test_a_plain_run_is_lora_at_scale_1(built):
    md = built[1].read_text(encoding="utf-8")
    assert "- Method: lora." in md
    assert {(row[1], row[2]) for row in table_rows(md, "Checkpoints")} == {("lora", "1")}


def test_the_per_step_plots_draw_the_checkpoints_as_trained(scaled):
    from keeptune.report.plots import new_task_scores

    content = scaled_results()
    line = new_task_scores(content).axes[0].get_lines()[2]  # judge.accuracy@0.01: base model, then scale 1 only
    assert list(line.get_xdata()) == [0, 100, 200, 300]
    assert list(line.get_ydata()) == pytest.approx([15.0, 50.0, 70.0, 60.0])
    assert (scaled[0] / "plots" / "frontier.png").read_bytes()[:4] == b"\x89PNG"


def test_frontier_draws_every_state_the_gate_and_the_chosen_one():
    from keeptune.report.plots import frontier

    ax = frontier(scaled_results()).axes[0]
    points = {}
    for collection in ax.collections:
        points[collection.get_label()] = [tuple(p) for p in collection.get_offsets().tolist()]
    # x: the lowest gated retention in percent; y: accuracy in percent (synthetic.py's values)
    # min(95, 95) and min(110, 92.5)
    assert points["as trained: passes the gate"] == [(95.0, 50.0), (92.5, 60.0)]
    assert points["as trained: fails the gate"] == [(75.0, 70.0)]
    assert points["scale 0.5: passes the gate"] == [(100.0, 30.0), (100.0, 65.0), (100.0, 50.0)]
    assert points["base model"] == [(100.0, 15.0)]
    assert points["chosen: step 200, scale 0.5"] == [(100.0, 65.0)]
    gate = [line for line in ax.get_lines() if line.get_label().startswith("gate")]
    assert [(line.get_label(), list(line.get_xdata())) for line in gate] == [
        ("gate 0.9 x baseline (squad-seed)", [90.0, 90.0])]


def test_frontier_of_a_plain_run_marks_its_best():
    from keeptune.report.plots import frontier

    ax = frontier(results()).axes[0]
    labels = {c.get_label(): c.get_offsets().tolist() for c in ax.collections}
    assert labels["chosen: step 300"] == [[92.5, 60.0]]
    assert "scale 0.5: passes the gate" not in labels
    no_best = frontier(synthetic_results(passes=False)).axes[0]
    assert not any(c.get_label().startswith("chosen") for c in no_best.collections)


def test_without_a_best_the_last_checkpoint_as_trained_is_compared():
    from keeptune.report.plots import compared_checkpoint

    content = {**scaled_results(), "best": None}
    entry, label = compared_checkpoint(content)
    assert (entry["step"], entry["scale"], label) == (300, 1.0, "last (step 300, fails the gate)")
    assert compared_checkpoint(scaled_results())[1] == "best (step 200, scale 0.5)"


def test_an_intruder_reduced_state_is_its_own_series_not_the_adapter_as_trained():
    """An entry of retention method intruders (scale 1, `intruders` 0.5) is drawn as "intruders 0.5" on the
    frontier and left out of the as-trained checkpoints the per-step plots draw."""
    import copy

    from keeptune.report.plots import as_trained, frontier

    content = copy.deepcopy(results())
    reduced = copy.deepcopy(content["checkpoints"][0])
    reduced.update({"intruders": 0.5, "accuracy": 0.4})
    content["checkpoints"].append(reduced)
    assert reduced not in as_trained(content) and len(as_trained(content)) == len(content["checkpoints"]) - 1
    labels = {c.get_label() for c in frontier(content).axes[0].collections}
    assert any(label.startswith("intruders 0.5: ") for label in labels)
    assert any(label.startswith("as trained: ") for label in labels)
