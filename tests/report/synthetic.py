"""A hand-written experiment directory: results.json and train/log.jsonl with values chosen here.

Three checkpoints over a baseline of F1 40.0 / EM 20.0 (gate 36.0 / 18.0):
step 100 passes (score 0.649873), step 200 fails on F1 (30.0), step 300 passes
and is the best (score 0.719873). Two templates of 20 problems each.
"""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

RATIO = 3407872 / 8030261248  # SPEC section 3: 0.00042437872...
TERM = 0.2998726863836149  # (1 - RATIO) * 0.3


def _math(seed: tuple, strict: tuple, add: tuple, mean: tuple) -> dict:
    keys = ("1e-08", "0.0001", "0.01")
    return {"total_count": 40, "accuracy": dict(zip(keys, seed)), "accuracy_strict": dict(zip(keys, strict)),
            "per_template": {"add": {k: [c, 20] for k, c in zip(keys, add)},
                             "mean": {k: [c, 20] for k, c in zip(keys, mean)}}}


def _squad(f1: float, em: float) -> dict:
    return {"F1": f1, "Em": em, "total_count": 50, "squad_v1": {"f1": f1 + 5.5, "exact_match": em + 10.0}}


CHECKPOINTS = [
    {"step": 100, "loss": 1.23456, "squad": _squad(38.0, 19.0),
     "math": _math((0.25, 0.375, 0.5), (0.25, 0.3, 0.45), (5, 8, 12), (5, 7, 8)),
     "retention": {"F1": 0.95, "Em": 0.95}, "passes_gate": True, "score": TERM + 0.35},
    {"step": 200, "loss": None, "squad": _squad(30.0, 21.0),
     "math": _math((0.5, 0.6, 0.7), (0.45, 0.55, 0.65), (10, 13, 16), (10, 11, 12)),
     "retention": {"F1": 0.75, "Em": 1.05}, "passes_gate": False, "score": None},
    {"step": 300, "loss": 0.9, "squad": _squad(44.0, 18.5),
     "math": _math((0.4, 0.5, 0.6), (0.35, 0.45, 0.55), (8, 10, 14), (8, 10, 10)),
     "retention": {"F1": 1.1, "Em": 0.925}, "passes_gate": True, "score": TERM + 0.42},
]

RESULTS = {
    "name": "cot-r8 <script>alert(1)</script>",
    "command": "keeptune experiment configs/default.yaml seed=7 out=runs/cot-r8",
    "wall_seconds": 4020.0,
    "settings": {"model": "SmolLM2-135M-Instruct", "data_recipe": "generated easy x2400, cot", "prompt": "math",
                 "targets": ["q_proj", "v_proj"], "rank": 8, "alpha": 16, "dropout": 0.05, "lr": 0.001,
                 "steps": 300, "global_batch": 8, "seq_len": 256, "original_data": "squad dev (54)",
                 "new_task_eval": "generated easy x40"},
    "config": {"train": {"lr": 0.001, "steps": 300}, "lora": {"rank": 8}},
    "params": {"trainable": 3407872, "total": 8030261248, "ratio": RATIO, "score_term": TERM},
    "gate": 0.9, "score_eps": "0.01",
    "baseline": {"squad": _squad(40.0, 20.0),
                 "math": _math((0.1, 0.125, 0.15), (0.1, 0.1, 0.125), (2, 3, 4), (2, 2, 2))},
    "checkpoints": CHECKPOINTS,
    "best": {**CHECKPOINTS[2], "adapter": "runs/cot-r8/checkpoints/step-300", "merged": None},
    "tracking": [{"step": 150, "squad_F1": 39.0, "squad_Em": 19.5, "retention_F1": 0.975, "math_accuracy": 0.3},
                 {"step": 300, "squad_F1": 44.0, "squad_Em": 18.5, "retention_F1": 1.1, "math_accuracy": 0.6}],
}

LOG = [{"step": s, "loss": 2.0 - s / 300, "lr": 1e-3 * min(1.0, s / 30), "tokens_per_s": 170.0, "grad_norm": 0.5}
       for s in range(10, 301, 10)]


def results(**changes) -> dict:
    """A deep copy of RESULTS with top-level fields replaced."""
    return {**copy.deepcopy(RESULTS), **changes}


def write_run(folder: Path, content: dict, log: list[dict] | None = None) -> Path:
    """FOLDER/results.json (and FOLDER/train/log.jsonl when `log` is given); returns FOLDER."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "results.json").write_text(json.dumps(content), encoding="utf-8")
    if log is not None:
        (folder / "train").mkdir(exist_ok=True)
        (folder / "train" / "log.jsonl").write_text("".join(json.dumps(r) + "\n" for r in log), encoding="utf-8")
    return folder


def markdown_rows(markdown: str) -> list[list[str]]:
    """Cells of the body rows of the first Markdown table in `markdown` (header and rule dropped)."""
    lines = [line for line in markdown.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines[2:]]
