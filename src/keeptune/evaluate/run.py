"""Evaluations as the experiment and the retention methods use them: several tasks on one model
state, each resumable in its own folder and redone when its settings changed; and raw greedy
generations of given prompts (the base model writing or answering preservation data), through
the same engine."""
from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

from keeptune.core.resume import redo_on_mismatch, sha256_json
from keeptune.evaluate import lmeval
from keeptune.evaluate.engine import evaluate
from keeptune.evaluate.generation import GenerationSettings
from keeptune.evaluate.lmeval import LmEvalTask
from keeptune.evaluate.samples import Sample
from keeptune.evaluate.task import SpecTask


def evaluate_fresh(task, model, tokenizer, out: Path, settings: GenerationSettings, identity: dict,
                   add_bos: bool = False, skip_bad: bool = False) -> dict:
    """`evaluate`, resuming when OUT holds the same configuration, redoing it when not."""
    return redo_on_mismatch(lambda: evaluate(task, model, tokenizer, out, settings, identity, add_bos, skip_bad),
                            Path(out), f"{out}: settings changed, evaluating again")


def evaluate_tasks(tasks: list[SpecTask | LmEvalTask], model, tokenizer, out: Path, identity: dict, batch_size: int,
                   skip_bad: bool = False, timing=None, phase: str = "") -> dict[str, dict]:
    """Every task on one model state, each in OUT/TASK: {task: {"total_count", "scores", "breakdown"}}; each
    task's seconds go to `timing` (keeptune.experiment.timing.Timing) under `phase` when given. A task spec is
    generated and scored by keeptune's engine, an lm-eval task by lm-eval on the same model object."""
    results = {}
    for task in tasks:
        with timing.phase(phase, task.name) if timing else contextlib.nullcontext():
            if isinstance(task, LmEvalTask):
                metrics = redo_on_mismatch(lambda: lmeval.evaluate(task, model, tokenizer, out / task.name, identity),
                                           out / task.name, f"{out / task.name}: settings changed, evaluating again")
                breakdown = None
            else:
                metrics = evaluate_fresh(task, model, tokenizer, out / task.name, task.settings(batch_size),
                                         identity, task.add_bos, skip_bad)
                breakdown = metrics["breakdowns"].get(task.spec.breakdown)
        results[task.name] = {"total_count": metrics["total_count"], "scores": metrics["scores"],
                              "breakdown": breakdown}
    return results


@dataclass
class GenerationTask:
    """An engine task that only generates: each sample's prompt is given, its record is the raw text."""

    name: str
    samples: list[Sample]
    prompts: dict[str, str]  # sample id -> the text the model reads

    def prompt(self, sample: Sample) -> str:
        return self.prompts[sample.id]

    def score(self, sample: Sample, raw: str) -> dict:
        return {"id": sample.id, "raw": raw}

    def aggregate(self, records: list[dict]) -> dict:
        return {"scores": {}, "metrics": {}, "breakdowns": {}}

    def summary(self, metrics: dict) -> list[str]:
        return [f"{self.name}: {metrics['total_count']} generations"]

    def describe(self) -> dict:
        """Keys the cache on every prompt (with the model's name in the caller's identity)."""
        return {"prompts_sha256": sha256_json([[s.id, self.prompts[s.id]] for s in self.samples])}

def generate_raw(task: GenerationTask, model, tokenizer, out: Path, max_new_tokens: int, identity: dict,
                 batch_size: int = 64, add_bos: bool = False, min_new_tokens: int | None = None) -> dict[str, str]:
    """Greedy generations of every sample (keeptune's engine, resumable in OUT): sample id -> raw text."""
    settings = GenerationSettings(max_new_tokens, min_new_tokens, batch_size)
    evaluate_fresh(task, model, tokenizer, out, settings, identity, add_bos)
    return {r["id"]: r["raw"] for r in map(json.loads, (out / "predictions.jsonl").open(encoding="utf-8"))}
