"""Hand-written experiment directories: results.json (the runner's schema) and train/log.jsonl.

`synthetic_results(...)` builds a valid results dict with values chosen here,
for any task and metric names. Three checkpoints (steps 100, 200, 300).

Retention task k (0-based) has metrics R = (R0, R1, R2, R3) in points, gated on
R0 and R1 at 0.9 x baseline. Baseline R0 = 40 + 10k, R1 = 20, R2 = R0 + 5.5,
R3 = R1 + 10 (thresholds 0.9 x R0, 0.9 x R1: 36.0 / 18.0 for k = 0). A checkpoint's
R0, R1 are baseline x the retention in `RETAINED` (R2, R3 follow as above):

- task 0: step 100 keeps (0.95, 0.95) PASS, step 200 (0.75, 1.05) FAIL, step 300 (1.1, 0.925) PASS;
- task k >= 1: step 100 (0.85, 1.0) FAIL, step 200 (0.95, 0.95) PASS, step 300 (1.0, 1.0) PASS;
- with ``passes=False``, task 0 keeps (0.85, 0.95) at every step: no checkpoint passes.

The new task has metrics N = (N0, N1, N2, N3) as fractions; N2 enters the score
and has a breakdown over two groups of 20 problems ("add", "mean"):
baseline (0.1, 0.125, 0.15, 0.125), add 4 mean 2; step 100 (0.25, 0.375, 0.5, 0.45),
12 / 8; step 200 (0.5, 0.6, 0.7, 0.65), 16 / 12; step 300 (0.4, 0.5, 0.6, 0.55), 14 / 10.
Score = TERM + 0.7 x N2 for passing checkpoints: 0.649873 (step 100), 0.719873 (step 300).
With one retention task steps 100 and 300 pass, with two only step 300; the best is step 300.
"""
from __future__ import annotations

import copy
import json
import re
from pathlib import Path

RATIO = 3407872 / 8030261248  # the score's ratio, trainable / all parameters: 0.00042437872...
TERM = 0.2998726863836149  # (1 - RATIO) * 0.3
STEPS = (100, 200, 300)
GATE = 0.9

RETENTION_METRICS = ("emf1.F1", "emf1.Em", "squad_v1.f1", "squad_v1.exact_match")
NEW_METRICS = ("judge.accuracy@1e-08", "judge.accuracy@0.0001", "judge.accuracy@0.01", "judge.strict@0.01")

RETAINED = {
    "first": ((0.95, 0.95), (0.75, 1.05), (1.1, 0.925)),
    "others": ((0.85, 1.0), (0.95, 0.95), (1.0, 1.0)),
    "failing": ((0.85, 0.95), (0.85, 0.95), (0.85, 0.95)),
}
NEW_SCORES = ((0.1, 0.125, 0.15, 0.125), (0.25, 0.375, 0.5, 0.45), (0.5, 0.6, 0.7, 0.65), (0.4, 0.5, 0.6, 0.55))
GROUPS = ((4, 2), (12, 8), (16, 12), (14, 10))  # "add" and "mean" correct of 20, baseline then per step
LOSSES = (1.23456, None, 0.9)


def _retention_eval(names: tuple[str, ...], first: float, second: float) -> dict:
    values = (first, second, first + 5.5, second + 10.0)
    return {"total_count": 50, "scores": dict(zip(names, values)), "breakdown": None}


def _new_eval(names: tuple[str, ...], i: int) -> dict:
    add, mean = GROUPS[i]
    return {"total_count": 40, "scores": dict(zip(names, NEW_SCORES[i])),
            "breakdown": {"add": [add, 20], "mean": [mean, 20]}}


def synthetic_results(retention: tuple[str, ...] = ("squad-seed",), new: str = "math", passes: bool = True,
                      retention_metrics: tuple[str, ...] = RETENTION_METRICS,
                      new_metrics: tuple[str, ...] = NEW_METRICS, zero_baseline: bool = False) -> dict:
    """A valid results.json content of the runner's schema, with the values of the module docstring.

    Args:
        retention: the retention tasks' names (one or more).
        new: the new task's name.
        passes: False makes every checkpoint fail task 0's gate (no best checkpoint).
        retention_metrics: four metric names of each retention task; the first two are gated.
        new_metrics: four metric names of the new task; the third enters the score.
        zero_baseline: retention task 0's second gated metric has a baseline of 0 (retention null).
    """
    gated = retention_metrics[:2]
    accuracy = new_metrics[2]
    specs, base_values = [], {}
    for k, name in enumerate(retention):
        base = (40.0 + 10 * k, 0.0 if zero_baseline and k == 0 else 20.0)
        base_values[name] = base
        specs.append({"name": name, "role": "retention", "description": f"reading comprehension <{k}>",
                      "metrics": list(retention_metrics), "units": dict.fromkeys(retention_metrics, "points"),
                      "gate": {"metrics": list(gated), "fraction": GATE,
                               "thresholds": {m: GATE * b for m, b in zip(gated, base)}}})
    specs.append({"name": new, "role": "new", "description": "templated arithmetic & worked steps",
                  "metrics": list(new_metrics), "units": dict.fromkeys(new_metrics, "fraction"),
                  "accuracy": accuracy, "breakdown": accuracy})

    baseline = {"tasks": {name: _retention_eval(retention_metrics, *base_values[name]) for name in retention}}
    baseline["tasks"][new] = _new_eval(new_metrics, 0)
    checkpoints = []
    for i, step in enumerate(STEPS):
        entry = {"step": step, "loss": LOSSES[i], "adapter": f"runs/x/checkpoints/step-{step}",
                 "tasks": {}, "retention": {}, "gate": {}}
        for k, name in enumerate(retention):
            table = "failing" if k == 0 and not passes else "first" if k == 0 else "others"
            kept = RETAINED[table][i]
            base = base_values[name]
            values = tuple(b * r if b else 20.0 * r for b, r in zip(base, kept))
            entry["tasks"][name] = _retention_eval(retention_metrics, *values)
            entry["retention"][name] = {m: (v / b if b else None) for m, v, b in zip(gated, values, base)}
            entry["gate"][name] = all(v >= GATE * b for v, b in zip(values, base))
        entry["tasks"][new] = _new_eval(new_metrics, i + 1)
        entry["passes_gate"] = all(entry["gate"].values())
        entry["accuracy"] = NEW_SCORES[i + 1][2]
        entry["score"] = TERM + 0.7 * entry["accuracy"] if entry["passes_gate"] else None
        checkpoints.append(entry)
    passing = [c for c in checkpoints if c["passes_gate"]]
    best = max(passing, key=lambda c: c["score"]) if passing else None

    first = retention[0]
    tracking = []
    for step, kept, passed, acc in ((150, 0.85, False, 0.3), (300, 1.1, True, 0.6)):
        row = {"step": step, "tasks": {}, "retention": {}, "passes_gate": passed, "subset": {}}
        for name in retention:
            factor = kept if name == first else 1.0
            row["tasks"][name] = {"scores": {gated[0]: base_values[name][0] * factor, gated[1]: 19.5}}
            row["retention"][name] = {gated[0]: factor, gated[1]: 0.975}
            row["subset"][name] = 20
        row["tasks"][new] = {"scores": {accuracy: acc}}
        row["subset"][new] = 10
        tracking.append(row)

    return {
        "name": "cot-r8 <script>alert(1)</script>",
        "command": "keeptune run configs/default.yaml seed=7 out=runs/cot-r8",
        "wall_seconds": 4020.0,
        "settings": {"model": "SmolLM2-135M-Instruct", "data_recipe": "generated easy x2400, cot", "prompt": "math",
                     "targets": ["q_proj", "v_proj"], "rank": 8, "alpha": 16, "dropout": 0.05, "lr": 0.001,
                     "steps": 300, "global_batch": 8, "seq_len": 256},
        "config": {"train": {"lr": 0.001, "steps": 300}, "lora": {"rank": 8}},
        "params": {"trainable": 3407872, "total": 8030261248, "ratio": RATIO},
        "score_rule": f"score = (1 - ratio) * 0.3 + accuracy * 0.7, accuracy = {new}.{accuracy}",
        "gate_rule": "a checkpoint passes when every retention task passes its gate",
        "tasks": specs,
        "baseline": baseline,
        "checkpoints": checkpoints,
        "best": None if best is None else {**copy.deepcopy(best), "merged": None},
        "tracking": tracking,
    }


RESULTS = synthetic_results()

# A run with retention methods [kl, scale]: each step also evaluated at scale 0.5, where task 0 keeps
# (1.0, 1.0) (PASS everywhere) and N2 is 0.3, 0.65, 0.5 with the breakdown add/mean 6/4, 14/12, 11/9 of 20. Step 200
# fails at scale 1 but passes at 0.5 with score TERM + 0.7 x 0.65 = 0.754873, above step 300's 0.719873: the best is
# (200, 0.5). Entries come per step, scale 1 first.
SCALED_ACCURACY = {100: 0.3, 200: 0.65, 300: 0.5}
SCALED_GROUPS = {100: (6, 4), 200: (14, 12), 300: (11, 9)}


def scaled_results() -> dict:
    """RESULTS of a run with retention.methods [kl, scale] and scales [0.5] (see SCALED_ACCURACY)."""
    content = copy.deepcopy(RESULTS)
    content["config"]["retention"] = {"methods": ["kl", "scale"], "scales": [0.5]}
    base = content["baseline"]["tasks"]["squad-seed"]["scores"]
    entries = []
    for plain in content["checkpoints"]:
        plain.update(scale=1.0, methods=["kl"])
        scaled = copy.deepcopy(plain)
        accuracy, (add, mean) = SCALED_ACCURACY[plain["step"]], SCALED_GROUPS[plain["step"]]
        scaled.update(scale=0.5, methods=["kl", "scale"], accuracy=accuracy, score=TERM + 0.7 * accuracy,
                      passes_gate=True, gate={"squad-seed": True},
                      retention={"squad-seed": {"emf1.F1": 1.0, "emf1.Em": 1.0}})
        scaled["tasks"]["squad-seed"] = _retention_eval(RETENTION_METRICS, base["emf1.F1"], base["emf1.Em"])
        scaled["tasks"]["math"]["scores"]["judge.accuracy@0.01"] = accuracy
        scaled["tasks"]["math"]["breakdown"] = {"add": [add, 20], "mean": [mean, 20]}
        entries += [plain, scaled]
    content["checkpoints"] = entries
    content["best"] = {**copy.deepcopy(entries[3]), "adapter": "runs/x/best/adapter", "merged": None}
    return content

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


def markdown_headers(markdown: str) -> list[str]:
    """Cells of the header row of the first Markdown table in `markdown`."""
    line = next(line for line in markdown.splitlines() if line.startswith("|"))
    return [cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]]


# A run whose results.json records the uncertainty (intervals, paired retention, best against runner-up), values
# chosen here: every retention metric's interval is value -+ 5 points, every new-task fraction's -+ 0.1; each gated
# scalar's paired retention r has the interval [r - 0.2, r + 0.2], the lower bound r - 0.04 and P(>= 0.9) = r / 2.
# Under rule confident step 100 (0.95, 0.95: bounds 0.91, 0.91) passes, step 300 (1.1, 0.925: bounds 1.06, 0.885)
# passes the point rule but not the confident one, step 200 fails both: the best is step 100 (score 0.649873).
# Under rule point steps 100 and 300 pass as in RESULTS, and the best (300) is compared with the runner-up (100).
LOWER_MARGIN = 0.04
RUNNER_UP = {"task": "math", "scalar": "judge.accuracy@0.01", "best": {"step": 300, "scale": 1.0},
             "runner_up": {"step": 100, "scale": 1.0}, "difference": 0.1, "low": -0.05, "high": 0.25, "level": 0.95,
             "method": "BCa", "p_value": 0.34375, "test": "exact McNemar", "verdict": "not distinguishable at 95%",
             "n": 40, "mean_a": 0.6, "mean_b": 0.5, "discordant": [7, 3]}


def _intervals(evaluation: dict, half: float) -> None:
    evaluation["intervals"] = {m: {"low": v - half, "high": v + half, "level": 0.95, "method": "BCa",
                                   "resampled": "mean"} for m, v in evaluation["scores"].items()}


def uncertain_results(rule: str = "confident") -> dict:
    """RESULTS (one retention task, squad-seed) with the uncertainty of the comment above, under `rule`."""
    content = copy.deepcopy(RESULTS)
    content["tasks"][0]["gate"].update(rule=rule, confidence=0.95)
    for entry in [content["baseline"], *content["checkpoints"]]:
        _intervals(entry["tasks"]["squad-seed"], 5.0)
        _intervals(entry["tasks"]["math"], 0.1)
    for entry in content["checkpoints"]:
        scalars = {}
        for metric, r in entry["retention"]["squad-seed"].items():
            scalars[metric] = {"ratio": r, "low": r - 0.2, "high": r + 0.2, "method": "BCa", "lower": r - LOWER_MARGIN,
                               "p_at_least": r / 2, "base": 20.0, "tuned": 20.0 * r, "base_zero": False, "note": None,
                               "point_passes": r >= GATE, "confident_passes": r - LOWER_MARGIN >= GATE}
        passed = all(s[f"{rule}_passes"] for s in scalars.values())
        entry["retention_uncertainty"] = {"squad-seed": {"rule": rule, "confidence": 0.95, "fraction": GATE,
                                                         "passed": passed, "scalars": scalars}}
        entry.update(gate={"squad-seed": passed}, passes_gate=passed,
                     score=TERM + 0.7 * entry["accuracy"] if passed else None)
    passing = [c for c in content["checkpoints"] if c["passes_gate"]]
    content["best"] = {**copy.deepcopy(max(passing, key=lambda c: c["score"])), "merged": None}
    content["best_vs_runner_up"] = copy.deepcopy(RUNNER_UP) if rule == "point" else None
    return content


# A held-out task (role held_out: measured at every state like a retention task, never gated), values chosen here:
# metrics HELD_OUT_METRICS as fractions, the first measured: baseline 0.5, kept at HELD_OUT_KEPT per step (0.48,
# 0.25, 0.40); the other 0.6 at every state. With the uncertainty recorded: each value's
# interval -+ 0.05, each measured scalar's paired retention r has the interval [r - 0.1, r + 0.1], the lower bound
# r - 0.05 and P(>= 0.9) = r - 0.5. Step 200 loses half of it, step 300 a fifth: neither may move the gate or the best.
HELD_OUT = "arc-heldout"
HELD_OUT_METRICS = ("lmeval.acc", "lmeval.acc_norm")
HELD_OUT_BASE = 0.5
HELD_OUT_KEPT = (0.96, 0.5, 0.8)
NOTE_ZERO_HELD_OUT = "baseline 0: the ratio is undefined; this scalar cannot show a loss"  # nothing gates it
NOTE_ZERO = ("baseline 0: the ratio is undefined and the gate 0.2 >= 0.9 x 0 passes trivially; this scalar cannot "
             "show a loss")  # keeptune.core.stats' note, which speaks of a gate even for a held-out task


def _held_out_eval(first: float, uncertain: bool) -> dict:
    evaluation = {"total_count": 30, "scores": dict(zip(HELD_OUT_METRICS, (first, 0.6))), "breakdown": None}
    if uncertain:
        _intervals(evaluation, 0.05)
    return evaluation


def with_held_out(content: dict, zero_baseline: bool = False) -> dict:
    """A deep copy of `content` with the held-out task of the comment above before the new task (uncertainty
    recorded when `content` records the retention's). `zero_baseline`: the measured scalar's baseline is 0 (no
    ratio, base_zero)."""
    content = copy.deepcopy(content)
    uncertain = any("retention_uncertainty" in c for c in content["checkpoints"])
    measured, base = HELD_OUT_METRICS[0], 0.0 if zero_baseline else HELD_OUT_BASE
    spec = {"name": HELD_OUT, "role": "held_out", "description": "grade-school science questions, held out",
            "version": 2, "lm_eval": "arc_easy_local", "metrics": list(HELD_OUT_METRICS),
            "units": dict.fromkeys(HELD_OUT_METRICS, "fraction"),
            "measured": {"metrics": [measured], "fraction": GATE, "confidence": 0.95, "lower_is_better": []}}
    content["tasks"].insert(len(content["tasks"]) - 1, spec)
    content["baseline"]["tasks"][HELD_OUT] = _held_out_eval(base, uncertain)
    for entry in content["checkpoints"]:
        r = HELD_OUT_KEPT[STEPS.index(entry["step"])]
        entry["tasks"][HELD_OUT] = _held_out_eval(base * r if base else 0.2, uncertain)
        entry["held_out"] = {HELD_OUT: {measured: r if base else None}}
        if uncertain:
            numbers = ({"ratio": r, "low": r - 0.1, "high": r + 0.1, "method": "BCa", "lower": r - 0.05,
                        "p_at_least": r - 0.5, "base_zero": False, "note": None} if base else
                       {"ratio": None, "low": None, "high": None, "method": None, "lower": None, "p_at_least": None,
                        "base_zero": True, "note": NOTE_ZERO_HELD_OUT})
            entry["held_out_uncertainty"] = {HELD_OUT: {"confidence": 0.95, "fraction": GATE, "scalars": {
                measured: {**numbers, "base": base, "tuned": base * r}}}}
    if content.get("best") is not None:
        same = next(c for c in content["checkpoints"] if c["step"] == content["best"]["step"])
        content["best"] = {**copy.deepcopy(same), "adapter": content["best"]["adapter"],
                           "merged": content["best"]["merged"]}
    return content
