"""What RUN/results.json says of an experiment: each task's role and gate, each evaluated model
state's verdict and score, and the settings a reader compares runs by. Pure functions of the plan,
the config and the scores: the runner calls them, the report reads what they wrote; and
`complete_uncertainty`, which gives a results.json written before intervals existed what it lacks,
from the run's evaluation folders."""
from __future__ import annotations

import json
from pathlib import Path

from keeptune.core import gate as rules
from keeptune.core import stats
from keeptune.core.errors import DataError
from keeptune.experiment import uncertainty
from keeptune.experiment.config import ExperimentConfig
from keeptune.experiment.plan import Plan
from keeptune.model.load import model_name
from keeptune.retention import replay as replaying


def task_entries(plan: Plan, baseline: dict) -> list[dict]:
    """results.json's `tasks`: what each task is, its gate (a held-out task: what is measured) or its score
    metric."""
    entries = []
    for task, task_gate in plan.retention:  # a spec (Compiled) or an lm-eval task (LmEvalTask)
        role, key = ("held_out", "measured") if task_gate.held_out else ("retention", "gate")
        entries.append({"name": task.name, "role": role, "description": task.description,
                        "version": task.version, "metrics": task.scalars(), "units": task.units(),
                        key: task_gate.describe(baseline[task.name]["scores"])}
                       | ({"lm_eval": task.task} if hasattr(task, "leaves") else {}))
    new = plan.new.spec
    entries.append({"name": new.name, "role": "new", "description": new.description,
                    "version": new.metadata.version, "metrics": plan.new.scalars(), "units": plan.new.units(),
                    "accuracy": plan.accuracy,
                    "breakdown": new.breakdown})
    return entries


def judge_state(plan: Plan, scores: dict[str, dict], baseline: dict[str, dict],
                paired: dict[str, dict[str, stats.Retention]] | None = None) -> dict:
    """Gate, retention, accuracy and score of one evaluated model state; with `paired` (each gated scalar's paired
    retention, keeptune.experiment.uncertainty.state_retention) the numbers behind each decision too."""
    verdict = rules.judge(plan.gates, {t: s["scores"] for t, s in scores.items()},
                          {t: b["scores"] for t, b in baseline.items()}, paired)
    accuracy = scores[plan.new.spec.name]["scores"][plan.accuracy]
    return {**verdict, "accuracy": accuracy,
            "score": rules.score(accuracy, plan.ratio) if verdict["passes_gate"] else None}

def settings_summary(config: ExperimentConfig, plan: Plan, steps: int | None) -> dict:
    """The settings a reader compares runs by; ``steps`` is the number of optimizer steps trained."""
    task = config.new_task
    if task.train_data is not None:
        recipe = f"file {Path(task.train_data).name}"
    else:
        source = f"real {Path(task.source).name}" if task.source else "generated"
        mix = ""
        if task.strategy == "custom" and task.counts:
            mix = " (" + ", ".join(f"{name} {count}" for name, count in task.counts.items()) + ")"
        recipe = f"{source} {task.strategy}{mix}{f' x{task.n}' if task.n else ''}{', cot' if task.cot else ''}"
    new = plan.new.spec
    evaluated = task.eval_data or (f"{task.eval_n} generated held-out problems" if task.train_data is None
                                   else Path(new.data.path or "").name)
    return {"model": model_name(config.model.source), "data_recipe": recipe,
            "prompt": task.prompt if task.train_data is None else new.prompt,
            "format": task.format, "targets": list(config.lora.targets), "rank": config.lora.rank,
            "alpha": config.lora.alpha, "dropout": config.lora.dropout, "lr": config.train.lr,
            "epochs": config.train.epochs, "steps": steps,
            "global_batch": config.train.global_batch, "seq_len": task.seq_len,
            "retention_tasks": [f"{c.name} ({Path(c.data_path).name if c.data_path else 'its default data'})"
                                f"{', held out' if g.held_out else ''}" for c, g in plan.retention],
            "new_task": f"{new.name} ({evaluated})",
            "max_new_tokens": new.generation.max_new_tokens,
            "postprocess": json.dumps(list(new.postprocess)), **preservation_settings(plan)}

def preservation_settings(plan: Plan) -> dict:
    """The preservation data and replay's mix, when a retention method used them."""
    settings = {}
    if plan.preservation is not None:
        settings["preservation"] = plan.preservation.describe()
    if plan.replay is not None:
        settings["replay"] = replaying.describe(plan.replay)
    return settings


def task_metrics(plan: Plan) -> dict:
    """Each retention task's metrics (what its scalars are resampled from)."""
    return {task.name: task.metrics for task, _ in plan.retention}


# --- an older results.json completed from its run's folders -------------------------------------------------

def results_gates(results: dict) -> list[rules.TaskGate]:
    """The gates results.json's `tasks` describe (rule point and confidence 0.95 where it names none)."""
    return [rules.TaskGate(t["name"], tuple(t["gate"]["metrics"]), t["gate"]["fraction"],
                           t["gate"].get("rule", rules.POINT), t["gate"].get("confidence", stats.LEVEL),
                           tuple(t["gate"].get("lower_is_better", ())))
            for t in results["tasks"] if t["role"] == "retention"]


def complete_uncertainty(results: dict, run: Path) -> bool:
    """Fill in what a results.json written before intervals existed lacks, from the run's evaluation folders (read
    only): each evaluation's `intervals`, each state's `retention_uncertainty` (under its gate's rule: point, at
    0.95, where the task names none, the only rule then) and `best_vs_runner_up`. Decisions are not changed. A
    part whose folders are gone is left out. Returns whether anything was added."""
    run, before = Path(run), json.dumps(results, sort_keys=True)
    gates = results_gates(results)
    states = [(results["baseline"], run / "baseline")]
    states += [(e, uncertainty.entry_state_folder(run, e)) for e in results["checkpoints"]]
    base = {t: e["scores"] for t, e in results["baseline"]["tasks"].items()}
    for entry, folder in states:
        _complete_state(entry, folder, run / "baseline", gates, None if entry is results["baseline"] else base)
    best = results.get("best")
    if best is not None:
        same = next((e for e in results["checkpoints"]
                     if e["step"] == best["step"] and e.get("scale", 1.0) == best.get("scale", 1.0)), {})
        for key in ("tasks", "retention_uncertainty"):
            if key in same:
                best[key] = same[key]
    if "best_vs_runner_up" not in results:
        new = next(t for t in results["tasks"] if t["role"] == "new")
        try:
            results["best_vs_runner_up"] = uncertainty.best_against_runner_up(
                run, results["checkpoints"], new["name"], new["accuracy"])
        except (DataError, FileNotFoundError):
            pass  # a state's folder is gone
    return json.dumps(results, sort_keys=True) != before


def _complete_state(entry: dict, folder: Path, baseline: Path, gates: list[rules.TaskGate],
                    base: dict | None) -> None:
    """One baseline or checkpoint entry: its evaluations' intervals and, a checkpoint's (`base`: the baseline's
    scores), the paired retention of its gated scalars."""
    for task, evaluation in entry["tasks"].items():
        if "intervals" not in evaluation and (folder / task / uncertainty.PREDICTIONS).is_file():
            evaluation["intervals"] = uncertainty.scalar_intervals(folder / task)
    if base is None or "retention_uncertainty" in entry:
        return
    if not all((folder / g.task / uncertainty.PREDICTIONS).is_file() for g in gates):
        return
    paired = uncertainty.state_retention(gates, baseline, folder)
    scores = {t: e["scores"] for t, e in entry["tasks"].items()}
    entry["retention_uncertainty"] = rules.judge(gates, scores, base, paired)["retention_uncertainty"]
