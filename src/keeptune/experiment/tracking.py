"""Retention while training: every K steps, the model being trained is evaluated
on small fixed subsets of every task (the first N samples of each) with the same
engine, and the scores are logged beside the loss (RUN/train/log.jsonl, under
the key ``track``). Optionally training stops as soon as a retention task's
subset falls below its gate; the checkpoints written before stay, so the last
passing one is still there to choose.

Each subset is gated against the base model on the same subset, taken from the
baseline's own predictions: no extra evaluation of the base model.

Under torchrun every rank calls `on_step`: each evaluates its share of the
subsets (keeptune.evaluate.shard), and rank 0 alone judges them and asks
`on_track`; the other ranks add nothing to the log and vote no stop.

With `tracking.drift` each tracked step also logs how far the model has moved
from its base: KL(base || tuned) per token on fixed held-out prompts
(keeptune.evaluate.drift), under ``track.drift`` and as ``drift_kl`` beside
the loss (TensorBoard's train/drift_kl). The prompts: the new task's tracked
subset (held out from training) and, when corda or replay chose them, the
preservation prompts; never the gate's own samples.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from keeptune.core import gate as rules
from keeptune.evaluate import shard
from keeptune.evaluate.drift import token_kl
from keeptune.evaluate.run import evaluate_tasks
from keeptune.evaluate.task import SpecTask
from keeptune.experiment.config import ExperimentConfig
from keeptune.train.distributed import rank_and_world

KEY = "track"


class Tracker:
    def __init__(self, config: ExperimentConfig, plan, run: Path, tasks: list[SpecTask], baseline: dict,
                 on_track=None, preservation: list[str] | None = None):
        """`on_track(step, record)`, optional, sees each tracked record and returns a reason to stop, or None;
        `preservation`: the preservation prompts as the model reads them (drift is measured on them too)."""
        self.config, self.plan, self.run, self.on_track = config, plan, run, on_track
        self.seconds, self.count = 0.0, 0  # spent evaluating, and how often: the run's timing table
        # The point rule on every gated task (a confident bound on a subset of a few samples would fail nearly any
        # state); a held-out task decides nothing and is not tracked.
        self.gates = [g.as_point() for g in plan.gates if not g.held_out]
        gated = {g.task for g in self.gates}
        tasks = [t for t in tasks[:-1] if t.name in gated] + tasks[-1:]
        sizes = {t.name: config.tracking.retention for t in tasks[:-1]} | {tasks[-1].name: config.tracking.new_task}
        self.tasks = [t.subset(sizes[t.name]) for t in tasks]
        self.baseline = {t.name: self._baseline_subset(t) for t in self.tasks}
        # Under FSDP a forward needs every rank, and only rank 0 measures drift: none is measured there.
        # (torchrun's world: this runs outside shard.sharded(), where rank_world() is (0, 1) on every rank)
        sharded_weights = rank_and_world()[1] > 1 and config.distributed.strategy == "fsdp"
        self.drift_texts = drift_texts(self.tasks[-1], preservation or []) \
            if config.tracking.drift and not sharded_weights else []

    def _baseline_subset(self, task: SpecTask) -> dict:
        """The base model's scalars on the subset, from the baseline's predictions."""
        path = self.run / "baseline" / task.name / "predictions.jsonl"
        records = {r["id"]: r for r in map(json.loads, path.open(encoding="utf-8"))}
        return task.aggregate([records[s.id] for s in task.samples])["scores"]

    def on_step(self, step: int, model) -> dict:
        """Evaluate the subsets; the returned keys are logged, `stop` ends training."""
        started = time.perf_counter()
        try:
            with shard.sharded():
                return self._track(step, model)
        finally:
            self.seconds += time.perf_counter() - started
            self.count += 1

    def _track(self, step: int, model) -> dict:
        model.eval()
        out = self.run / "tracking" / f"step-{step:06d}"
        results = evaluate_tasks(self.tasks, model, self.tasks[0].tokenizer, out, {"state": f"training step {step}"},
                                 self.config.batch_size, self.config.skip_bad)
        if shard.rank_world()[0] != 0:
            return {}
        # Rank 0 alone, on the model inside DDP (its forward needs no other rank); none under FSDP (see __init__).
        kl = token_kl(model, self.drift_texts, self.tasks[-1].tokenizer.pad_token_id or 0) \
            if self.drift_texts else None
        scores = {name: result["scores"] for name, result in results.items()}
        verdict = rules.judge(self.gates, scores, self.baseline)
        record = {KEY: {"tasks": {name: {"scores": s} for name, s in scores.items()},
                        "retention": verdict["retention"], "gate": verdict["gate"],
                        "passes_gate": verdict["passes_gate"], "subset": {t.name: len(t.samples) for t in self.tasks},
                        "baseline": self.baseline}}
        if kl is not None:
            record[KEY]["drift"] = {"kl": kl, "texts": len(self.drift_texts)}
            record["drift_kl"] = kl  # beside the loss: TensorBoard's train/drift_kl
        if self.config.tracking.stop_below_gate and not verdict["passes_gate"]:
            failed = [name for name, passed in verdict["gate"].items() if not passed]
            print(f"step {step}: the tracked subset of {', '.join(failed)} fell below its gate; stopping")
            record["stop"] = True
        reason = self.on_track(step, record[KEY]) if self.on_track is not None else None
        if reason:
            print(f"step {step}: {reason}; stopping")
            record[KEY]["stopped"] = reason
            record["stop"] = True
        return record


def drift_texts(new_task: SpecTask, preservation: list[str], most: int = 16) -> list[list[int]]:
    """The token ids drift is measured on: the new task's tracked prompts and up to `most` preservation prompts,
    each as the engine feeds it (BOS when the task's format has one)."""
    tokenizer = new_task.tokenizer
    head = [tokenizer.bos_token_id] if new_task.add_bos and tokenizer.bos_token_id is not None else []
    texts = [new_task.prompt(s) for s in new_task.samples] + list(preservation[:most])
    return [head + tokenizer(text, add_special_tokens=False).input_ids for text in texts]


def tracking_history(run: Path) -> list[dict]:
    """The tracked scores logged during training, one entry per tracked step."""
    path = run / "train" / "log.jsonl"
    history = []
    for record in map(json.loads, path.open(encoding="utf-8")) if path.is_file() else []:
        if KEY in record:
            history.append({"step": record["step"], **record[KEY]})
    return history
