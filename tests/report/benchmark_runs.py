"""Run directories for `keeptune benchmark`, written by hand with the per-sample scores a test chooses: a new task
NEW (exact_match.accuracy, 0/1 per sample) and a held-out lm-eval task HELD measuring lmeval.acc (0/1 per document)
and lmeval.word_perplexity (a corpus statistic over [log-likelihood, words] pairs, better lower). Each state's
results.json entry carries the held-out change against the base model as the runner computes it
(keeptune.experiment.uncertainty.state_retention and keeptune.core.gate.judge); the gate verdict is the test's."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from keeptune.core import gate as rules
from keeptune.experiment import uncertainty
from tests.experiment.evalfolders import answers, write_evaluation

NEW, HELD = "math", "arc-held"
ACCURACY, ACC, PERPLEXITY = "exact_match.accuracy", "lmeval.acc", "lmeval.word_perplexity"
LM_EVAL = {"type": "lm_eval", "name": "lmeval",
           "metrics": [["acc", "mean", True], ["word_perplexity", "weighted_perplexity", False]]}
N = 12  # held-out documents: 2^12 sign flips, so the permutation test is exact
WORDS = [10.0 + i for i in range(N)]  # each document's word count


@dataclass
class State:
    """One evaluated state: the new task's answers right or wrong, the held-out acc and log-likelihood per
    document; step, a variant (scale or intruders share), and whether it passes the gate (for a checkpoint)."""

    right: list[bool]
    acc: list[int]
    ll: list[float]
    step: int = 0
    passes: bool = True
    variant: dict = field(default_factory=dict)  # {"scale": 0.5} or {"intruders": 0.75}

    @property
    def accuracy(self) -> float:
        return float(np.mean(self.right))

    def perplexity(self) -> float:
        return float(np.exp(-np.sum(self.ll) / np.sum(WORDS)))


def write_held_out(folder: Path, state: State) -> dict:
    """FOLDER as an lm-eval evaluation (eval.json, predictions.jsonl, metrics.json); returns its scores."""
    folder.mkdir(parents=True, exist_ok=True)
    ids = [f"arc:{i:02d}" for i in range(N)]
    identity = {"task": HELD, "metrics": json.dumps([LM_EVAL]), "samples_sha256": "held"}
    (folder / "eval.json").write_text(json.dumps(identity), encoding="utf-8")
    records = [{"id": i, "scores": {"lmeval": {"acc": float(a), "word_perplexity": [ll, w]}}}
               for i, a, ll, w in zip(ids, state.acc, state.ll, WORDS)]
    (folder / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in reversed(records)),
                                              encoding="utf-8")
    scores = {ACC: float(np.mean(state.acc)), PERPLEXITY: state.perplexity()}
    (folder / "metrics.json").write_text(json.dumps({**identity, "scores": scores}), encoding="utf-8")
    return {"total_count": N, "scores": scores, "breakdown": None}


def write_state(folder: Path, state: State) -> dict:
    """FOLDER/NEW and FOLDER/HELD; returns {task: EVAL} as results.json holds it."""
    new = write_evaluation(folder / NEW, NEW, answers(state.right))
    metrics = json.loads((new / "metrics.json").read_text(encoding="utf-8"))
    return {NEW: {"total_count": len(state.right), "scores": metrics["scores"], "breakdown": None,
                  "intervals": metrics["intervals"]},
            HELD: write_held_out(folder / HELD, state)}


def write_run(run: Path, base: State, states: list[State], methods: list[str], seed: int, lr: float = 1e-3,
              init: str = "default", measured: tuple[str, ...] = (ACC, PERPLEXITY), wall: float | None = None,
              cpu: float | None = None) -> Path:
    """RUN/results.json, RUN/baseline and RUN/checkpoints/step-N[/VARIANT] of a run with these states; `cpu`
    None: a run written before results.json held cpu_seconds."""
    gate = rules.TaskGate(HELD, measured, 0.9, lower_is_better=tuple(m for m in measured if m == PERPLEXITY),
                          held_out=True)
    base_tasks = write_state(run / "baseline", base)
    base_scores = {HELD: base_tasks[HELD]["scores"]}
    entries = []
    for state in states:
        entry = {"step": state.step, "loss": None, "adapter": str(run / "adapter"), **state.variant}
        folder = uncertainty.entry_state_folder(run, entry)
        tasks = write_state(folder, state)
        paired = uncertainty.state_retention([gate], run / "baseline", folder)
        judged = rules.judge([gate], {HELD: tasks[HELD]["scores"]}, base_scores, paired)
        entry |= {"tasks": tasks, "retention": {}, "gate": {}, "passes_gate": state.passes,
                  "accuracy": state.accuracy, "score": 0.3 + 0.7 * state.accuracy if state.passes else None,
                  "methods": methods, "held_out": judged["held_out"],
                  "held_out_uncertainty": judged["held_out_uncertainty"]}
        entries.append(entry)
    best = rules.best(entries)
    content = {
        "name": run.name, "command": f"keeptune run out={run}", "wall_seconds": wall, "settings": {},
        **({} if cpu is None else {"cpu_seconds": cpu}),
        "config": {"name": run.name, "out": str(run), "lora": {"init": init, "rank": 8},
                   "train": {"lr": lr, "seed": seed}, "retention": {"methods": methods, "kl_weight": 0.1}},
        "params": {"trainable": 1, "total": 1000, "ratio": 0.001}, "score_rule": "score", "gate_rule": "gate",
        "tasks": [{"name": HELD, "role": "held_out", "description": "held out", "metrics": [ACC, PERPLEXITY],
                   "units": {ACC: "fraction", PERPLEXITY: "value"}, "measured": gate.describe(base_scores[HELD])},
                  {"name": NEW, "role": "new", "description": "new", "metrics": [ACCURACY],
                   "units": {ACCURACY: "fraction"}, "accuracy": ACCURACY, "breakdown": None}],
        "baseline": {"tasks": base_tasks}, "checkpoints": entries,
        "best": None if best is None else {**best, "merged": None}, "tracking": [],
    }
    (run / "results.json").write_text(json.dumps(content), encoding="utf-8")
    return run
