"""Retention while training: every K steps, the model being trained is evaluated
on small fixed subsets of both tasks with the same engine, and the scores are
logged beside the loss (RUN/train/log.jsonl). Optionally training stops as soon
as the subset's SQuAD F1 or EM falls below the gate; the checkpoints written
before stay, so the last passing one is still there to choose.

The gate compares with the base model on the same subset, taken from the
baseline's own predictions: no extra evaluation of the base model.
"""
from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

from keeptune.data.prompts import sequence_bos
from keeptune.evaluate.engine import evaluate
from keeptune.evaluate.generation import GenerationSettings
from keeptune.evaluate.tasks.math import MathTask
from keeptune.evaluate.tasks.squad import SquadTask
from keeptune.experiment.config import ExperimentConfig

PREFIX = "track_"


class Tracker:
    def __init__(self, config: ExperimentConfig, run: Path, tokenizer, squad_samples, math: MathTask):
        self.config, self.run, self.tokenizer = config, run, tokenizer
        self.squad = SquadTask(squad_samples[:config.tracking.squad], tokenizer)
        self.math = replace(math, samples=math.samples[:config.tracking.math])
        self.baseline = self._baseline_subset()

    def _baseline_subset(self) -> dict:
        """EmF1 of the base model on the tracked SQuAD subset, from the baseline's predictions."""
        path = self.run / "baseline" / "squad" / "predictions.jsonl"
        records = {r["id"]: r for r in map(json.loads, path.open(encoding="utf-8"))}
        return self.squad.aggregate([records[s.id] for s in self.squad.samples])["emf1"]

    def on_step(self, step: int, model) -> dict:
        """Evaluate the subsets; the returned keys are logged, `stop` ends training."""
        model.eval()
        out = self.run / "tracking" / f"step-{step:06d}"
        batch = self.config.batch_size
        squad = evaluate(self.squad, model, self.tokenizer, out / "squad", GenerationSettings(batch_size=batch),
                         {"state": f"training step {step}"})["emf1"]
        math = evaluate(self.math, model, self.tokenizer, out / "math",
                        GenerationSettings(max_new_tokens=self.config.new_task.max_new_tokens, batch_size=batch),
                        {"state": f"training step {step}"}, add_bos=sequence_bos(self.math.format))
        gate = self.config.gate
        passing = squad["F1"] >= gate * self.baseline["F1"] and squad["Em"] >= gate * self.baseline["Em"]
        metrics = {f"{PREFIX}squad_F1": squad["F1"], f"{PREFIX}squad_Em": squad["Em"],
                   f"{PREFIX}retention_F1": squad["F1"] / self.baseline["F1"] if self.baseline["F1"] else None,
                   f"{PREFIX}baseline_F1": self.baseline["F1"], f"{PREFIX}baseline_Em": self.baseline["Em"],
                   f"{PREFIX}math_accuracy": math["accuracy"][str(self.config.score_eps)],
                   f"{PREFIX}passes_gate": passing}
        if self.config.tracking.stop_below_gate and not passing:
            print(f"step {step}: the tracked SQuAD subset fell below the gate ({squad['F1']:.2f} F1, "
                  f"{squad['Em']:.2f} EM vs baseline {self.baseline['F1']:.2f} / {self.baseline['Em']:.2f}); stopping")
            metrics["stop"] = True
        return metrics


def tracking_history(run: Path) -> list[dict]:
    """The tracked scores logged during training, one entry per tracked step."""
    path = run / "train" / "log.jsonl"
    history = []
    for record in map(json.loads, path.open(encoding="utf-8")) if path.is_file() else []:
        if f"{PREFIX}squad_F1" in record:
            history.append({"step": record["step"], **{k[len(PREFIX):]: v for k, v in record.items()
                                                       if k.startswith(PREFIX)}})
    return history
