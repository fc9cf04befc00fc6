"""`build_report(run)`: RUN/report.md, RUN/report.html and RUN/plots/*.png from the run's files.

Sections: summary, settings, parameter accounting, baseline, checkpoints,
per-template accuracy, plots, the command to reproduce, the full config.
Numbers are written as `keeptune.report.fmt` documents.
"""
from __future__ import annotations

import json
from pathlib import Path

from keeptune.io import atomic_write_text
from keeptune.report import fmt
from keeptune.report.document import Block, Code, Heading, Image, Items, Table, Text, to_html, to_markdown
from keeptune.report.plots import make_plots, template_names
from keeptune.report.results import accuracy, eps_keys, gate, load_results, read_log, score_eps


def build_report(run: Path, dpi: int = 110) -> tuple[Path, Path]:
    """Write RUN/report.md, RUN/report.html (self-contained) and RUN/plots/*.png; returns both report paths.

    Raises:
        DataError: RUN/results.json is missing or lacks a field the report needs.
    """
    run = Path(run)
    results = load_results(run)
    plots = make_plots(results, read_log(run), run / "plots", dpi=dpi)
    blocks = report_blocks(results, [(title, path.relative_to(run)) for title, path in plots])
    md_path, html_path = run / "report.md", run / "report.html"
    atomic_write_text(md_path, to_markdown(blocks))
    atomic_write_text(html_path, to_html(blocks, title(results), run))
    return md_path, html_path


def title(results: dict) -> str:
    return f"Experiment report: {results['name']}"


def report_blocks(results: dict, plots: list[tuple[str, Path]]) -> list[Block]:
    """Every section of the report; `plots` are (title, path relative to the run) pairs."""
    return [
        Heading(title(results), 1),
        Heading("Summary"), Items(summary(results)),
        Heading("Settings"), settings_table(results),
        Heading("Parameters"), params_table(results),
        Heading("Baseline (base model)"), baseline_table(results),
        Heading("Checkpoints"), Text(checkpoint_legend(results)), checkpoint_table(results),
        Heading(f"Per-template accuracy (seed judge, EPS {score_eps(results)})"), per_template_table(results),
        Heading("Plots"), *([Image(t, p) for t, p in plots] or [Text("No data to plot.")]),
        Heading("Reproduce"), Code(results["command"], lang="sh"),
        Heading("Configuration"), Code(json.dumps(results.get("config", {}), indent=2, ensure_ascii=False),
                                       lang="json", summary="full resolved experiment config (JSON)"),
    ]


def summary(results: dict) -> list[str]:
    share, eps = gate(results), score_eps(results)
    best = results.get("best")
    if best is None:
        lines = [f"No checkpoint passes the gate ({len(results['checkpoints'])} evaluated)."]
    else:
        retention = best["retention"]
        lines = [
            (f"Best checkpoint: step {best['step']}, score {fmt.score(best['score'])} (accuracy "
             f"{fmt.percent(accuracy(best, eps))} at EPS {eps}, ratio {fmt.ratio(results['params']['ratio'])})."),
            (f"Original task kept: F1 {fmt.points(best['squad']['F1'])} ({fmt.percent(retention['F1'])} of "
             f"baseline), EM {fmt.points(best['squad']['Em'])} "
             f"({'baseline EM 0' if retention.get('Em') is None else fmt.percent(retention['Em']) + ' of baseline'})."),
            f"Adapter: {best.get('adapter') or fmt.MISSING}; merged model: {best.get('merged') or fmt.MISSING}.",
        ]
    return lines + [
        (f"Gate: original-task F1 and EM >= {share:g} x baseline; "
         f"score = (1 - ratio) * 0.3 + accuracy * 0.7 with accuracy at EPS {eps} (seed judge)."),
        f"Wall time: {fmt.duration(results.get('wall_seconds'))}.",
    ]


def settings_table(results: dict) -> Table:
    return Table(["setting", "value"], [[key, fmt.setting(value)] for key, value in results["settings"].items()],
                 left=2)


def params_table(results: dict) -> Table:
    params = results["params"]
    term = params.get("score_term", (1 - params["ratio"]) * 0.3)
    return Table(["quantity", "value"], [
        ["trainable parameters", fmt.count(params["trainable"])],
        ["all parameters", fmt.count(params["total"])],
        ["ratio = trainable / all (exact)", repr(params["ratio"])],
        ["score term (1 - ratio) * 0.3", repr(term)],
    ])


def baseline_table(results: dict) -> Table:
    base, share = results["baseline"], gate(results)
    squad, math = base["squad"], base["math"]
    official = squad.get("squad_v1") or {}
    rows = [
        ["SQuAD F1 (seed EmF1)", fmt.points(squad["F1"])],
        ["SQuAD EM (seed EmF1)", fmt.points(squad["Em"])],
        [f"gate F1 ({share:g} x baseline)", fmt.points(share * squad["F1"])],
        [f"gate EM ({share:g} x baseline)", fmt.points(share * squad["Em"])],
        ["SQuAD v1.1 official f1", fmt.points(official.get("f1"))],
        ["SQuAD v1.1 official exact_match", fmt.points(official.get("exact_match"))],
        ["SQuAD samples", fmt.count(squad.get("total_count"))],
    ]
    rows += [[f"math accuracy EPS {eps} (seed / strict)", _accuracies(base, eps)] for eps in eps_keys(results)]
    rows.append(["math problems", fmt.count(math.get("total_count"))])
    return Table(["metric", "value"], rows)


def _accuracies(entry: dict, eps: str) -> str:
    """Seed judge and strict judge side by side: ``12.50% / 10.00%``."""
    return f"{fmt.percent(accuracy(entry, eps))} / {fmt.percent(accuracy(entry, eps, 'accuracy_strict'))}"


def checkpoint_legend(results: dict) -> str:
    return ("F1 and EM in percent (seed EmF1); retention = checkpoint / baseline; accuracy cells: "
            f"seed judge / strict judge; score at EPS {score_eps(results)}; gate: F1 and EM >= "
            f"{gate(results):g} x baseline.")


def checkpoint_table(results: dict) -> Table:
    keys = eps_keys(results)
    best_step = (results.get("best") or {}).get("step")
    headers = ["step", "loss", "F1", "EM", "retention F1", "retention EM",
               *(f"accuracy EPS {eps}" for eps in keys), "ratio", "score", "gate"]
    rows = []
    for c in results["checkpoints"]:
        verdict = "PASS" if c["passes_gate"] else "FAIL"
        rows.append([
            str(c["step"]), fmt.loss(c.get("loss")), fmt.points(c["squad"]["F1"]), fmt.points(c["squad"]["Em"]),
            fmt.percent(c["retention"].get("F1")), fmt.percent(c["retention"].get("Em")),
            *(_accuracies(c, eps) for eps in keys), fmt.ratio(results["params"]["ratio"]), fmt.score(c["score"]),
            verdict + (" (best)" if c["step"] == best_step else ""),
        ])
    return Table(headers, rows, left=1)


def per_template_table(results: dict) -> Table:
    """Rows: templates; columns: the baseline and each checkpoint; cells ``correct/total (percent)``."""
    eps, checkpoints = score_eps(results), results["checkpoints"]
    entries = [results["baseline"], *checkpoints]
    headers = ["template", "baseline", *(f"step {c['step']}" for c in checkpoints)]
    rows = [[name, *(fmt.cell(e["math"]["per_template"].get(name, {}).get(eps)) for e in entries)]
            for name in template_names(entries)]
    return Table(headers, rows)
