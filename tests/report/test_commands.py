"""`keeptune report RUN` and `keeptune runs --folder DIR` through the command line."""
from __future__ import annotations

from keeptune.cli import main
from tests.report.synthetic import results, write_run


def test_cli_runs(runs_folder, capsys):
    assert main(["runs", "--folder", str(runs_folder)]) == 0
    out, err = capsys.readouterr()
    assert "| b " in out and f"wrote {runs_folder / 'RUNS.md'}" in out
    assert f"keeptune: skipped {runs_folder / 'group' / 'd' / 'results.json'}: not valid JSON" in err


def test_cli_report_without_results(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert f"keeptune: error: {tmp_path / 'results.json'}: no such file" in capsys.readouterr().err


def test_cli_report(tmp_path, capsys):
    run = write_run(tmp_path / "run", results(tracking=[]))
    assert main(["report", str(run)]) == 0
    assert capsys.readouterr().out.split() == [str(run / "report.md"), str(run / "report.html")]
    assert sorted(p.name for p in (run / "plots").iterdir()) == [
        "breakdown.png", "frontier.png", "task_math.png", "task_squad-seed.png"]
