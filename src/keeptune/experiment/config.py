"""The experiment's configuration: typed dataclasses, one docstring per field,
read from YAML with `key=value` overrides (`keeptune run CONFIG train.lr=5e-4`).

The model, LoRA, training and multi-device sections are the training
configuration's own (keeptune.train.config); the rest says which tasks are
kept (`original`, task specs with their gates), what is learned (`new_task`),
and what is tracked during training.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from keeptune.train.config import DistributedConfig, LoraConfig, ModelConfig, RetentionConfig, TrainConfig


@dataclass(frozen=True)
class RetentionTaskConfig:
    """One old skill to keep: a task spec and its gate."""

    task: str = "squad-seed"
    """A built-in task (squad-seed, math-contest, math-worked) or a task spec YAML file."""
    name: Optional[str] = None
    """The task's name in the run (folders, tables); null: the spec's. Needed when one spec is used twice."""
    data: Optional[str] = None
    """The task's samples instead of the spec's: a file or an http(s) address (downloaded once)."""
    limit: Optional[int] = None
    """Evaluate the first N samples only; null: all (2067 on the full SQuAD dev set)."""
    gate: Optional[list[str]] = None
    """The scalars (METRIC.SCALAR) the gate checks; null: the spec's (squad-seed: emf1.F1 and emf1.Em)."""
    fraction: Optional[float] = None
    """Each gated scalar must stay >= fraction x the base model's; null: the experiment's `gate`."""


# The default recipe (docs/experiments.md): the templates whose arithmetic a 135M model
# can learn in minutes on a CPU. Mass and fraction have only 100 and 45 distinct problems;
# these counts leave 30 and 15 of them unseen for the held-out evaluation set.
DEFAULT_COUNTS = {"mass": 70, "fraction": 30, "area": 300}


@dataclass(frozen=True)
class NewTaskConfig:
    """The new task: its training set (a file, or the arithmetic generator's recipe) and its evaluation task."""

    task: str = "math-worked"
    """The evaluation task: a built-in (math-worked, math-contest) or a task spec YAML file."""
    train_data: Optional[str] = None
    """Training records, JSON lines: conversation records, or samples in the task's layout (the task's prompt
    rendered from their fields, its reference field as the answer); null: the arithmetic recipe below."""
    source: Optional[str] = None
    """The real train.json (JSON lines problem/solution); null: generated problems."""
    strategy: str = "custom"
    """Training set strategy of `keeptune data build`: real, uniform, easy, arithmetic or custom."""
    n: Optional[int] = None
    """Training records at most; null: all the strategy selects (with a generated source, from a 200,000 pool)."""
    counts: Optional[dict[str, int]] = field(default_factory=lambda: dict(DEFAULT_COUNTS))
    """custom strategy only (ignored by the others): template -> number of records."""
    cot: bool = True
    """Worked-step answers that end with the exact reference solution."""
    prompt: str = "math"
    """Arithmetic recipe: prompt template for training and evaluation (math, alpaca or none)."""
    format: Literal["plain", "vicuna", "chat"] = "plain"
    """How a record becomes a training sequence (see keeptune.train.config.DataConfig)."""
    seq_len: int = 256
    """Training sequence length in predicted tokens; longer samples are cut (and counted)."""
    seed: int = 0
    """Seed of the training set's generation and picks."""
    eval_data: Optional[str] = None
    """The task's evaluation samples; null: with the recipe, generated problems held out from the training set;
    with train_data, the task spec's own data."""
    eval_n: int = 60
    """Generated evaluation problems (when eval_data is null)."""
    eval_templates: Optional[list[str]] = None
    """Templates of the generated evaluation set; null: those of the training set."""
    eval_seed: int = 1
    """Seed of the generated evaluation set."""
    max_new_tokens: Optional[int] = None
    """Tokens generated per sample; null: the task's (math-worked: 64, math-contest: the seed's 20)."""
    extraction: Optional[Literal["seed", "final", "last"]] = None
    """The math judge's extraction (seed: first match, final: last match, last: last number); null: the task's."""
    accuracy: Optional[str] = None
    """The scalar (METRIC.SCALAR) that enters the score; null: the task's (math-worked: judge.accuracy@0.01)."""


@dataclass(frozen=True)
class TrackingConfig:
    """Retention measured during training, on small fixed subsets of both tasks."""

    every: int = 50
    """Evaluate every K optimizer steps; 0: off."""
    retention: int = 16
    """Samples of each retention task's subset (its first N)."""
    new_task: int = 16
    """Samples of the new task's subset (the first N of its evaluation set)."""
    stop_below_gate: bool = False
    """Stop training when a subset falls below its gate (against the base model on the same subset); the
    checkpoints written before are kept."""


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment: baseline, LoRA fine-tuning, evaluation of every checkpoint, gate, score, report."""

    name: str = "smollm2-135m-default"
    """Experiment name: the run directory and the runs table use it."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The base model."""
    original: list[RetentionTaskConfig] = field(default_factory=lambda: [RetentionTaskConfig()])
    """The old skills to keep, each a task spec with its gate; a checkpoint passes when every one passes.
    A mapping (original.data=FILE) changes the only one."""
    new_task: NewTaskConfig = field(default_factory=NewTaskConfig)
    """The new task (the skill to add)."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """LoRA adapter settings."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=5, max_steps=None, lr=5e-4))
    """Optimisation, schedule, batching and checkpoints."""
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    """Multi-device settings (under torchrun)."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """Retention tracking during training."""
    retention: RetentionConfig = field(default_factory=RetentionConfig)
    """Methods that prevent forgetting (kl, corda, replay, scale), chosen by the gate like everything else."""
    gate: float = 0.9
    """The retention tasks' fraction by default: each gated scalar >= gate x the base model's (the seed: SQuAD
    F1 AND EM >= 0.9 x baseline)."""
    batch_size: int = 64
    """Rows decoded together in every evaluation."""
    export_merged: bool = False
    """Also write the best checkpoint as merged full weights (safetensors)."""
    out: Optional[str] = None
    """Run directory; null: runs/experiments/NAME."""
    skip_bad: bool = False
    """Leave out (and count) malformed evaluation records and samples whose prompt does not fit the model's context."""
    overwrite: bool = False
    """Write into `out` even when it exists and keeptune did not make it (the same as --overwrite)."""
