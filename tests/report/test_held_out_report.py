"""Held-out tasks in the report (`tests.report.synthetic.with_held_out`): measured at every state like a retention
task, their change against the base model shown with its paired interval, never a verdict, and nothing else of the
report moves. Expected cells are computed from synthetic.py's constants and keeptune.report.fmt's formats."""
from __future__ import annotations

import re

import pytest

from keeptune.core.errors import DataError
from keeptune.report import build_report
from keeptune.report.document import to_markdown
from keeptune.report.plots import frontier, make_plots, retention_scores
from keeptune.report.registry import write_registry
from keeptune.report.render import checkpoint_columns, report_blocks
from keeptune.report.results import held_out_tasks, load_results, new_task, retention_tasks
from tests.report.synthetic import (
    GATE,
    HELD_OUT,
    HELD_OUT_BASE,
    HELD_OUT_KEPT,
    HELD_OUT_METRICS,
    LOG,
    NOTE_ZERO_HELD_OUT,
    RESULTS,
    STEPS,
    markdown_headers,
    markdown_rows,
    synthetic_results,
    uncertain_results,
    with_held_out,
    write_run,
)

DPI = 30
MEASURED = HELD_OUT_METRICS[0]


def section(markdown: str, heading: str) -> str:
    return markdown.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0]


def markdown(content: dict) -> str:
    """The report's Markdown without plots (no files read or written)."""
    return to_markdown(report_blocks(content, []))


def checkpoint_table(md: str) -> tuple[list[str], list[list[str]]]:
    table = section(md, "Checkpoints").split("\n\n", 1)[1]
    return markdown_headers(table), markdown_rows(table)


def percent(value: float) -> str:
    return f"{100 * value:.2f}%"


def bounds(low: float, high: float) -> str:
    return f"[{100 * low:.1f}, {100 * high:.1f}]"


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    run = write_run(tmp_path_factory.mktemp("run") / "held", with_held_out(uncertain_results("point")), LOG)
    md, html = build_report(run, dpi=DPI)
    return run, md.read_text(encoding="utf-8"), html.read_text(encoding="utf-8")


def test_a_held_out_task_loads_apart_from_the_gated_ones(tmp_path):
    content = with_held_out(uncertain_results("point"))
    assert load_results(write_run(tmp_path, content)) == content
    assert [task.name for task in retention_tasks(content)] == ["squad-seed"]
    [held] = held_out_tasks(content)
    assert (held.name, held.measured, held.gate_metrics, held.gate_fraction) == (HELD_OUT, (MEASURED,), (), GATE)
    assert held.paired_metrics == (MEASURED,) and new_task(content).name == "math"


@pytest.mark.parametrize("change, message", [
    (lambda r: r["tasks"][1].pop("measured"), r"tasks\[1\] lacks 'measured'"),
    (lambda r: r["tasks"][1]["measured"].update(metrics="lmeval.acc"),
     r"tasks\[1\].measured.metrics is not a list of metric names"),
    (lambda r: r["tasks"][1]["measured"].update(fraction="0.9"), r"tasks\[1\].measured.fraction is not a number"),
    (lambda r: r["tasks"][1]["measured"].update(confidence=None), r"tasks\[1\].measured.confidence is not a number"),
    (lambda r: r["tasks"][1]["measured"].update(lower_is_better="x"), r"tasks\[1\].measured.lower_is_better is not"),
    (lambda r: r["tasks"][1].update(role="held out"), r"tasks\[1\].role is 'held out', not one of"),
    (lambda r: r["checkpoints"][0]["held_out"][HELD_OUT].update({MEASURED: "96%"}),
     rf"checkpoints\[0\].held_out.{HELD_OUT}.lmeval.acc is not a number"),
    (lambda r: r["checkpoints"][1].update(held_out=[0.5]), r"checkpoints\[1\].held_out is not a JSON object"),
    (lambda r: r["checkpoints"][2]["held_out_uncertainty"][HELD_OUT].pop("fraction"),
     rf"checkpoints\[2\].held_out_uncertainty.{HELD_OUT} lacks 'fraction'"),
    (lambda r: r["checkpoints"][2]["held_out_uncertainty"][HELD_OUT]["scalars"][MEASURED].pop("lower"),
     rf"held_out_uncertainty.{HELD_OUT}.scalars.lmeval.acc lacks 'lower'"),
    (lambda r: r["best"]["held_out_uncertainty"][HELD_OUT]["scalars"][MEASURED].update(base_zero=0),
     rf"best.held_out_uncertainty.{HELD_OUT}.scalars.lmeval.acc.base_zero is not true or false"),
    (lambda r: r["baseline"]["tasks"].pop(HELD_OUT), f"baseline.tasks lacks '{HELD_OUT}'"),
])
def test_a_malformed_held_out_task_is_named(tmp_path, change, message):
    content = with_held_out(uncertain_results("point"))
    change(content)
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "results.json")) + ": .*" + message):
        load_results(write_run(tmp_path, content))


def test_the_tables_show_the_held_out_values_and_changes_without_a_verdict(built):
    _, md, _ = built
    assert [HELD_OUT, f"held out (measured, never gated: {MEASURED})"] == markdown_rows(section(md, "Tasks"))[1][:2]
    baseline = [row for row in markdown_rows(section(md, "Baseline (base model)")) if row[0] == HELD_OUT]
    base = HELD_OUT_BASE
    assert baseline == [[HELD_OUT, MEASURED, f"{percent(base)} {bounds(base - 0.05, base + 0.05)}"],
                        [HELD_OUT, HELD_OUT_METRICS[1], f"{percent(0.6)} {bounds(0.55, 0.65)}"],
                        [HELD_OUT, "samples", "30"]]  # no gate row
    headers, rows = checkpoint_table(md)
    at = headers.index(f"{HELD_OUT} {MEASURED} (held out)")
    assert headers[at + 1] == f"{HELD_OUT} retention {MEASURED} (held out)"
    assert f"{HELD_OUT} gate" not in headers
    for row, kept in zip(rows, HELD_OUT_KEPT):
        value = base * kept
        assert row[at:at + 2] == [f"{percent(value)} {bounds(value - 0.05, value + 0.05)}",
                                  f"{percent(kept)} {bounds(kept - 0.1, kept + 0.1)}"]
    held = markdown_rows(section(md, "Held-out tasks (never gated)"))
    assert held == [[f"step {step}", HELD_OUT, MEASURED, "95%", f"{GATE:g}",
                     f"{percent(kept)} {bounds(kept - 0.1, kept + 0.1)}", percent(kept - 0.05), f"{kept - 0.5:.2f}"]
                    for step, kept in zip(STEPS, HELD_OUT_KEPT)]
    assert not any(word in cell for row in held for cell in row for word in ("PASS", "FAIL"))
    assert "Held-out tasks (marked held out) are measured on data the gate never sees" in section(md, "Checkpoints")
    kept = HELD_OUT_KEPT[STEPS.index(300)]  # the best step
    assert (f"- Held-out task {HELD_OUT} (measured, never gated): {MEASURED} {percent(base * kept)} "
            f"{bounds(base * kept - 0.05, base * kept + 0.05)} ({percent(kept)} of baseline, paired 95% interval "
            f"{bounds(kept - 0.1, kept + 0.1)}, P(>= 90%) {kept - 0.5:.2f}).") in section(md, "Summary")


def test_the_html_shows_the_held_out_task(built):
    _, _, html = built
    assert "held out (measured, never gated: lmeval.acc)" in html and "Held-out tasks (never gated)</h2>" in html
    assert "80.00% [70.0, 90.0]" in html  # step 300's retention


@pytest.mark.parametrize("content", [RESULTS, uncertain_results("point"), uncertain_results("confident"),
                                     synthetic_results(retention=("a", "b")), synthetic_results(passes=False)],
                         ids=["plain", "point", "confident", "two", "failing"])
def test_a_held_out_task_changes_nothing_else(content):
    """Every line of the report without the held-out task is in the report with it, the checkpoint table less the
    held-out columns is the same (the gate verdicts included), and the summary counts the same kept tasks."""
    before, after = markdown(content), markdown(with_held_out(content))
    headers, rows = checkpoint_table(after)
    kept = [i for i, header in enumerate(headers) if not header.endswith("(held out)")]
    assert len(kept) == len(headers) - 2
    assert ([headers[i] for i in kept], [[row[i] for i in kept] for row in rows]) == checkpoint_table(before)
    for name in ("Summary", "Gate decisions") if "## Gate decisions" in before else ("Summary",):
        assert set(section(before, name).splitlines()) <= set(section(after, name).splitlines())
    assert section(before, "Summary").count("Retention task") == section(after, "Summary").count("Retention task")
    assert checkpoint_columns(content) == [h for h in checkpoint_columns(with_held_out(content))
                                           if not h.endswith("(held out)")]


@pytest.mark.parametrize("content", [RESULTS, uncertain_results("confident")], ids=["plain", "confident"])
def test_a_results_file_without_held_out_tasks_mentions_none(content):
    assert not re.search("held", markdown(content), re.IGNORECASE)


def test_without_the_uncertainty_the_change_is_the_point_ratio():
    md = markdown(with_held_out(RESULTS))
    headers, rows = checkpoint_table(md)
    at = headers.index(f"{HELD_OUT} retention {MEASURED} (held out)")
    assert [row[at - 1:at + 1] for row in rows] == [[percent(HELD_OUT_BASE * k), percent(k)] for k in HELD_OUT_KEPT]
    assert "## Held-out tasks" not in md


def test_a_held_out_baseline_of_0_is_no_retention_and_no_gate_note():
    md = markdown(with_held_out(uncertain_results("point"), zero_baseline=True))
    headers, rows = checkpoint_table(md)
    at = headers.index(f"{HELD_OUT} retention {MEASURED} (held out)")
    assert [row[at] for row in rows] == ["baseline 0"] * len(STEPS)
    held = section(md, "Held-out tasks (never gated)")
    assert f"- {HELD_OUT} {MEASURED}: the baseline is 0, so its retention is undefined at every state" in held
    line = next(line for line in section(md, "Summary").splitlines() if line.startswith("- Held-out task"))
    assert line.endswith(f"{MEASURED} {percent(0.2)} {bounds(0.15, 0.25)} ({NOTE_ZERO_HELD_OUT}).")


def test_the_plots_draw_the_held_out_task_and_keep_the_frontier_gated(tmp_path):
    content = with_held_out(uncertain_results("point"))
    made = make_plots(content, LOG, tmp_path)
    assert (tmp_path / f"task_{HELD_OUT}.png").is_file()
    assert any("Held-out task" in title and "never gated" in title for title, _ in made)
    [held] = held_out_tasks(content)
    ax = retention_scores(content, held).axes[0]
    [bars] = ax.containers
    assert bars.get_label() == f"checkpoint {MEASURED} (held out)"
    segments = [s.tolist() for s in bars.lines[2][0].get_segments()]
    values = [100 * HELD_OUT_BASE * k for k in HELD_OUT_KEPT]  # each -+ 5 points
    assert segments == [[[s, pytest.approx(v - 5)], [s, pytest.approx(v + 5)]] for s, v in zip(STEPS, values)]
    assert not any(line.get_label().startswith("gate") for line in ax.get_lines())
    # step 200 loses half of the held-out scalar: drawn on the frontier, its x would be 50, not the gated 75
    offsets = [[c.get_label(), c.get_offsets().tolist()] for c in frontier(content).axes[0].collections]
    gated = frontier(uncertain_results("point")).axes[0].collections
    assert offsets == [[c.get_label(), c.get_offsets().tolist()] for c in gated]


def test_runs_leaves_held_out_tasks_out_of_the_gate_columns(tmp_path):
    write_run(tmp_path / "runs" / "a", with_held_out(uncertain_results("point")))
    write_run(tmp_path / "plain" / "a", uncertain_results("point"))
    _, text, _ = write_registry(tmp_path / "runs")
    _, plain, _ = write_registry(tmp_path / "plain")
    assert markdown_headers(text) == markdown_headers(plain)
    assert markdown_rows(text) == markdown_rows(plain)
