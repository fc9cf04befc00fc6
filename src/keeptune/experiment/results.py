"""What RUN/results.json says of an experiment: each task's role and gate, each evaluated model
state's verdict and score, and the settings a reader compares runs by. Pure functions of the plan,
the config and the scores: the runner calls them, the report reads what they wrote."""
from __future__ import annotations

import json
from pathlib import Path

from keeptune.core import gate as rules
from keeptune.experiment.config import ExperimentConfig
from keeptune.experiment.plan import Plan
from keeptune.model.load import model_name
from keeptune.retention import replay as replaying


def task_entries(plan: Plan, baseline: dict) -> list[dict]:
    """results.json's `tasks`: what each task is, its gate or its score metric."""
    entries = []
    for compiled, task_gate in plan.retention:
        entries.append({"name": compiled.spec.name, "role": "retention", "description": compiled.spec.description,
                        "version": compiled.spec.metadata.version, "metrics": compiled.scalars(),
                        "units": compiled.units(),
                        "gate": task_gate.describe(baseline[compiled.spec.name]["scores"])})
    new = plan.new.spec
    entries.append({"name": new.name, "role": "new", "description": new.description,
                    "version": new.metadata.version, "metrics": plan.new.scalars(), "units": plan.new.units(),
                    "accuracy": plan.accuracy,
                    "breakdown": new.breakdown})
    return entries


def judge_state(plan: Plan, scores: dict[str, dict], baseline: dict[str, dict]) -> dict:
    """Gate, retention, accuracy and score of one evaluated model state."""
    verdict = rules.judge(plan.gates, {t: s["scores"] for t, s in scores.items()},
                          {t: b["scores"] for t, b in baseline.items()})
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
            "retention_tasks": [f"{c.spec.name} ({Path(c.spec.data.path or '').name})" for c, _ in plan.retention],
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
