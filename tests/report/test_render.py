"""`build_report` on the hand-written run of `tests.report.synthetic`: files, tables, escaping, plots.

Expected cells are written out here from the values in synthetic.py and the
formats documented in keeptune.report.fmt (F1/EM two decimals, fractions as
percent with two decimals, loss four decimals, score six, ratio 8 digits).
"""
from __future__ import annotations

import json
import re

import pytest

from keeptune.io import DataError
from keeptune.report import build_report
from tests.report.synthetic import LOG, RESULTS, markdown_rows, results, write_run

DPI = 30
RATIO = "0.00042437872"


def table_rows(markdown: str, heading: str) -> list[list[str]]:
    """Cells of the table under `## heading` (header and rule lines dropped)."""
    return markdown_rows(markdown.split(f"## {heading}\n", 1)[1].split("\n## ", 1)[0])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    run = write_run(tmp_path_factory.mktemp("run") / "cot-r8", RESULTS, LOG)
    md_path, html_path = build_report(run, dpi=DPI)
    return run, md_path, html_path


@pytest.fixture(scope="module")
def failed(tmp_path_factory):
    """No checkpoint passes, no training log, and a stale loss plot from an earlier build."""
    run = write_run(tmp_path_factory.mktemp("run") / "failed", results(name="failed", best=None))
    (run / "plots").mkdir()
    (run / "plots" / "loss_lr.png").write_bytes(b"stale")
    return run, *build_report(run, dpi=DPI)


def test_files(built):
    run, md_path, html_path = built
    assert (md_path, html_path) == (run / "report.md", run / "report.html")
    assert sorted(p.name for p in (run / "plots").iterdir()) == [
        "loss_lr.png", "math.png", "per_template.png", "squad.png", "tracking.png"]
    assert all((run / "plots" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for name in ("squad.png", "math.png"))


def test_checkpoint_rows(built):
    rows = table_rows(built[1].read_text(encoding="utf-8"), "Checkpoints")
    assert rows == [
        ["100", "1.2346", "38.00", "19.00", "95.00%", "95.00%", "25.00% / 25.00%", "37.50% / 30.00%",
         "50.00% / 45.00%", RATIO, "0.649873", "PASS"],
        ["200", "n/a", "30.00", "21.00", "75.00%", "105.00%", "50.00% / 45.00%", "60.00% / 55.00%",
         "70.00% / 65.00%", RATIO, "n/a", "FAIL"],
        ["300", "0.9000", "44.00", "18.50", "110.00%", "92.50%", "40.00% / 35.00%", "50.00% / 45.00%",
         "60.00% / 55.00%", RATIO, "0.719873", "PASS (best)"],
    ]


def test_per_template_table(built):
    rows = table_rows(built[1].read_text(encoding="utf-8"), "Per-template accuracy (seed judge, EPS 0.01)")
    assert rows == [
        ["add", "4/20 (20.00%)", "12/20 (60.00%)", "16/20 (80.00%)", "14/20 (70.00%)"],
        ["mean", "2/20 (10.00%)", "8/20 (40.00%)", "12/20 (60.00%)", "10/20 (50.00%)"],
    ]


def test_baseline_params_and_settings(built):
    md = built[1].read_text(encoding="utf-8")
    baseline = dict(table_rows(md, "Baseline (base model)"))
    assert baseline["SQuAD F1 (seed EmF1)"] == "40.00"
    assert baseline["gate F1 (0.9 x baseline)"] == "36.00"
    assert baseline["gate EM (0.9 x baseline)"] == "18.00"
    assert baseline["math accuracy EPS 0.0001 (seed / strict)"] == "12.50% / 10.00%"
    params = dict(table_rows(md, "Parameters"))
    assert params["trainable parameters"] == "3,407,872"
    assert params["all parameters"] == "8,030,261,248"
    assert params["ratio = trainable / all (exact)"] == "0.00042437872128366403"
    settings = dict(table_rows(md, "Settings"))
    assert settings["data_recipe"] == "generated easy x2400, cot"
    assert settings["targets"] == "q_proj, v_proj"


def test_summary_and_reproduce(built):
    md = built[1].read_text(encoding="utf-8")
    assert "- Best checkpoint: step 300, score 0.719873 (accuracy 60.00% at EPS 0.01, ratio 0.00042437872)." in md
    assert "```sh\nkeeptune experiment configs/default.yaml seed=7 out=runs/cot-r8\n```" in md
    assert json.loads(md.split("## Configuration\n\n```json\n", 1)[1].split("\n```", 1)[0]) == RESULTS["config"]


def test_markdown_images_and_escaping(built):
    md = built[1].read_text(encoding="utf-8")
    assert md.startswith("# Experiment report: cot-r8 \\<script>alert(1)\\</script>\n")
    assert len(re.findall(r"!\[[^\]]+\]\(plots/\w+\.png\)", md)) == 5


def test_html_is_self_contained_and_escaped(built):
    run, _, html_path = built
    page = html_path.read_text(encoding="utf-8")
    assert page.count('<img src="data:image/png;base64,') == len(list((run / "plots").glob("*.png"))) == 5
    assert 'src="http' not in page and 'href="http' not in page and "<link" not in page
    assert "<script>" not in page
    assert "cot-r8 &lt;script&gt;alert(1)&lt;/script&gt;" in page
    assert "<td>add</td>" in page


def test_no_checkpoint_passes(failed):
    run, md_path, html_path = failed
    md, page = md_path.read_text(encoding="utf-8"), html_path.read_text(encoding="utf-8")
    assert "- No checkpoint passes the gate (3 evaluated)." in md
    assert "No checkpoint passes the gate (3 evaluated)." in page
    assert "PASS (best)" not in md
    assert not (run / "plots" / "loss_lr.png").exists()  # no log: the stale plot is gone
    assert page.count('<img src="data:image/png;base64,') == 4


def test_missing_and_invalid_results(tmp_path):
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "results.json"))):
        build_report(tmp_path)
    (tmp_path / "results.json").write_text("{", encoding="utf-8")
    with pytest.raises(DataError, match="results.json: not valid JSON"):
        build_report(tmp_path)
    write_run(tmp_path, {k: v for k, v in RESULTS.items() if k != "params"})
    with pytest.raises(DataError, match="field 'params' missing"):
        build_report(tmp_path)
    broken = results()
    del broken["checkpoints"][1]["squad"]["Em"]
    write_run(tmp_path, broken)
    with pytest.raises(DataError, match=r"checkpoints\[1\].squad lacks 'Em'"):
        build_report(tmp_path)


def test_run_without_checkpoints(tmp_path):
    run = write_run(tmp_path, results(checkpoints=[], best=None, tracking=[]))
    md_path, html_path = build_report(run, dpi=DPI)
    md = md_path.read_text(encoding="utf-8")
    assert "- No checkpoint passes the gate (0 evaluated)." in md
    assert table_rows(md, "Checkpoints") == []
    assert table_rows(md, "Per-template accuracy (seed judge, EPS 0.01)") == [
        ["add", "4/20 (20.00%)"], ["mean", "2/20 (10.00%)"]]
    assert "No data to plot." in md and "<img" not in html_path.read_text(encoding="utf-8")
    assert list((run / "plots").iterdir()) == []
