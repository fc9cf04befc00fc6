"""The experiment's configuration: typed dataclasses, one docstring per field,
read from YAML with `key=value` overrides (`keeptune run CONFIG train.lr=5e-4`).

The model, LoRA, training and multi-device sections are the training
configuration's own (keeptune.train.config); the rest says which data the two
tasks use, how checkpoints are judged and what is tracked during training.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from keeptune.train.config import DistributedConfig, LoraConfig, ModelConfig, TrainConfig


@dataclass(frozen=True)
class OriginalTaskConfig:
    """The original task: SQuAD v1.1 under the seed protocol."""

    data: Optional[str] = None
    """SQuAD v1.1 JSON file or its http(s) address; null: ../shared's 54-paragraph article."""
    limit: Optional[int] = None
    """Evaluate the first N samples only; null: all (2067 on the full dev set)."""


# The default recipe (docs/experiments.md): the templates whose arithmetic a 135M model
# can learn in minutes on a CPU. Mass and fraction have only 100 and 45 distinct problems;
# these counts leave 30 and 15 of them unseen for the held-out evaluation set.
DEFAULT_COUNTS = {"mass": 70, "fraction": 30, "area": 300}


@dataclass(frozen=True)
class NewTaskConfig:
    """The new task: how the training set is made, and what it is evaluated on."""

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
    """Prompt template for training and evaluation: math, alpaca or none."""
    format: Literal["plain", "vicuna", "chat"] = "plain"
    """How a record becomes a training sequence (see keeptune.train.config.DataConfig)."""
    seq_len: int = 256
    """Training sequence length in predicted tokens; longer samples are cut (and counted)."""
    seed: int = 0
    """Seed of the training set's generation and picks."""
    eval_data: Optional[str] = None
    """Evaluation problems (JSON lines problem/solution); null: generated, held out from the training set."""
    eval_n: int = 60
    """Generated evaluation problems (when eval_data is null)."""
    eval_templates: Optional[list[str]] = None
    """Templates of the generated evaluation set; null: those of the training set."""
    eval_seed: int = 1
    """Seed of the generated evaluation set."""
    max_new_tokens: int = 64
    """Tokens generated per problem (the seed used 20 for bare answers; worked steps need more)."""
    extraction: Literal["seed", "final", "last"] = "final"
    """Answer extraction: seed (first match), final (last match: worked steps), last (last number)."""


@dataclass(frozen=True)
class TrackingConfig:
    """Retention measured during training, on small fixed subsets of both tasks."""

    every: int = 25
    """Evaluate every K optimizer steps; 0: off."""
    squad: int = 16
    """SQuAD samples of the subset (the first N)."""
    math: int = 16
    """Math problems of the subset (the first N of the evaluation set)."""
    stop_below_gate: bool = False
    """Stop training when the subset's F1 or EM falls below gate x its baseline; the last passing checkpoint is kept."""


@dataclass(frozen=True)
class ExperimentConfig:
    """One experiment: baseline, LoRA fine-tuning, evaluation of every checkpoint, gate, score, report."""

    name: str = "smollm2-135m-default"
    """Experiment name: the run directory and the runs table use it."""
    model: ModelConfig = field(default_factory=ModelConfig)
    """The base model."""
    original: OriginalTaskConfig = field(default_factory=OriginalTaskConfig)
    """The original task (retention)."""
    new_task: NewTaskConfig = field(default_factory=NewTaskConfig)
    """The new task (the skill to add)."""
    lora: LoraConfig = field(default_factory=LoraConfig)
    """LoRA adapter settings."""
    train: TrainConfig = field(default_factory=lambda: TrainConfig(epochs=5, max_steps=None, lr=3e-4))
    """Optimisation, schedule, batching and checkpoints."""
    distributed: DistributedConfig = field(default_factory=DistributedConfig)
    """Multi-device settings (under torchrun)."""
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    """Retention tracking during training."""
    gate: float = 0.9
    """A checkpoint passes when its SQuAD F1 AND EM are both >= gate x the base model's."""
    score_eps: float = 0.01
    """EPS of the accuracy that enters the score (seed judge): score = (1 - ratio) x 0.3 + accuracy x 0.7."""
    batch_size: int = 64
    """Rows decoded together in every evaluation."""
    export_merged: bool = False
    """Also write the best checkpoint as merged full weights (safetensors)."""
    out: Optional[str] = None
    """Run directory; null: runs/experiments/NAME."""
