"""The experiment's configuration: typed dataclasses, one docstring per field,
read from YAML with `key=value` overrides (`keeptune run CONFIG train.lr=5e-4`).

The model, LoRA, training and multi-device sections are the training
configuration's own (keeptune.train.config); the rest says which tasks are
kept (`original`, task specs with their gates), what is learned (`new_task`),
and what is tracked during training.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable, Literal, Optional

from keeptune.core.errors import ConfigError
from keeptune.data.math.build import STRATEGIES, UNIFORM_COUNTS, eligible, write_training_set
from keeptune.data.math.generate import DISTINCT_COUNTS
from keeptune.data.math.templates import TEMPLATE_NAMES
from keeptune.train.config import DistributedConfig, LoraConfig, ModelConfig, RetentionConfig, TrainConfig


@dataclass(frozen=True)
class RetentionTaskConfig:
    """One old skill to keep: a keeptune task spec, or an lm-evaluation-harness task, and its gate (or, held out,
    measured and never gated)."""

    task: str = "squad-seed"
    """A built-in task (squad-seed, math-contest, math-worked) or a task spec YAML file (ignored with lm_eval)."""
    lm_eval: Optional[str] = None
    """An lm-evaluation-harness task instead of a spec: a registered name (arc_easy, hellaswag, ...), keeptune's
    tasks for local copies (arc_easy_local, boolq_local, mmlu_local, wikitext_local: `data` names the file), a
    task on `include`, or a task YAML file. Run on the model in memory through lm-eval's API (docs/lm-eval.md)."""
    include: Optional[list[str]] = None
    """lm_eval only: folders (or files) of task YAMLs to search besides lm-eval's own (its include_path)."""
    num_fewshot: Optional[int] = None
    """lm_eval only: few-shot examples per prompt; null: the task's default (0 when it has none)."""
    batch_size: Optional[int] = None
    """lm_eval only: rows HFLM scores together; null: 8, and 1 for rolling log-likelihood (perplexity)."""
    name: Optional[str] = None
    """The task's name in the run (folders, tables); null: the spec's (lm_eval: the task's). Needed when one task
    is used twice."""
    data: Optional[str] = None
    """The task's samples instead of the spec's: a file or an http(s) address (downloaded once); lm_eval: the file
    or folder a *_local task reads."""
    limit: Optional[int] = None
    """Evaluate the first N samples (lm_eval: documents) only, after `start`; null: all (2067 on the full SQuAD dev
    set)."""
    start: Optional[int] = None
    """Skip the first N samples (lm_eval: documents of each leaf task), then take `limit`: a part of a file that
    does not overlap another part (a held-out set beside a gate's); null: 0."""
    held_out: bool = False
    """Measure, never gate: the task is evaluated at the baseline and every checkpoint and its `gate` scalars get
    their paired change against the base model, but it decides nothing (neither the gate nor the best checkpoint).
    Comparison data for claims about methods and recipes, kept apart from what chose them: its samples must not
    overlap a gated task's (refused before any model loads). fraction/max_rise only set the P(>= fraction) shown."""
    gate: Optional[list[str]] = None
    """The scalars (METRIC.SCALAR) the gate checks; null: the spec's (squad-seed: emf1.F1 and emf1.Em); lm_eval:
    its metric names (acc, acc_norm, word_perplexity, ...; or lmeval.acc), null: the task's first metric."""
    fraction: Optional[float] = None
    """Each gated scalar must stay >= fraction x the base model's (one better lower, such as a perplexity: <= the
    base model's / fraction); null: the experiment's `gate`."""
    max_rise: Optional[float] = None
    """For gated scalars that are better lower (perplexity, bits per byte): they may rise by at most this share of
    the base model's (0.05: 5%); the same as fraction = 1 / (1 + max_rise). Give fraction or max_rise."""
    rule: Literal["point", "confident"] = "point"
    """How the gate decides: point (the seed's: each gated scalar >= fraction x the base model's) or confident (the
    one-sided lower bound of each gated scalar's paired retention at `confidence` >= fraction)."""
    confidence: float = 0.95
    """The level of each gated scalar's paired retention interval; with rule confident, of the lower bound the gate
    demands."""


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
    drift: bool = True
    """Also log KL(base || tuned) per token on fixed held-out prompts (the new task's tracked subset, and the
    preservation prompts when a method uses them): a cheap forgetting signal (keeptune.evaluate.drift)."""


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

    def validate(self, at: Callable[..., str]) -> None:
        """The checks of this root's own sections, beside the training sections' (keeptune.train.config.validate
        calls it with `at`, where a dotted field was set)."""
        check_recipe(self.new_task, at)


# The generated pool a recipe without `source` draws from (uniform over the templates for custom and uniform),
# and the templates whose every problem it holds (each drawn at least 20 times per distinct problem).
POOL = inspect.signature(write_training_set).parameters["pool"].default
EXHAUSTED = frozenset(t for t in TEMPLATE_NAMES if DISTINCT_COUNTS[t] * 20 <= POOL / len(TEMPLATE_NAMES))


def check_recipe(task: NewTaskConfig, at: Callable[..., str]) -> None:
    """The new task's recipe: values its types allow but the data build cannot use, each a ConfigError naming where
    it was set (FILE:LINE, the override, or defaults) and the field, before any work. Strategies and template
    names are keeptune.data.math's."""
    def refuse(name: str, message: str):
        raise ConfigError(f"{at('new_task.' + name)}: field 'new_task.{name}' {message}")

    if task.strategy not in STRATEGIES:
        refuse("strategy", f"is {task.strategy!r}; choose one of {', '.join(STRATEGIES)}")
    for name, count in (task.counts or {}).items():
        if name not in TEMPLATE_NAMES:
            refuse("counts", f"names no template {name!r}; the templates: {', '.join(TEMPLATE_NAMES)}")
        if count < 0:
            refuse("counts", f"gives {name!r} {count} records; a count is at least 0")
    if task.train_data is None and task.strategy == "custom" and not sum((task.counts or {}).values()):
        given = "null" if task.counts is None else task.counts
        refuse("counts", f"is {given}; the custom strategy needs one or more records, e.g. {{area: 300}}")
    unknown = [t for t in task.eval_templates or () if t not in TEMPLATE_NAMES]
    if unknown or task.eval_templates == ():
        refuse("eval_templates", f"is {list(task.eval_templates)}; name one or more templates (null: the training "
                                 f"set's): {', '.join(TEMPLATE_NAMES)}")
    if task.train_data is None and task.eval_data is None and task.eval_n >= 1:
        check_held_out_room(task, refuse)


def check_held_out_room(task: NewTaskConfig, refuse: Callable[[str, str], None]) -> None:
    """A generated evaluation set draws `eval_n` problems of its templates that the training set lacks and that
    the strategy admits: refuse the recipes for which there can be no such problems, or too few."""
    custom = [t for t, c in (task.counts or {}).items() if c > 0]
    trained = {"custom": custom, "arithmetic": ["arithmetic"]}.get(task.strategy, TEMPLATE_NAMES)
    templates = [t for t in task.eval_templates or trained if eligible(task.strategy, t, "")]
    if not templates:
        refuse("eval_templates", f"is {list(task.eval_templates)}: the {task.strategy} strategy admits none of its "
                                 "problems; name templates it trains on")
    used: dict = {}  # distinct problems every training set of the recipe certainly holds (a generated pool, no n)
    if task.source is None and task.n is None and task.strategy in ("custom", "uniform"):
        quota = task.counts or {} if task.strategy == "custom" else UNIFORM_COUNTS
        used = {t: DISTINCT_COUNTS[t] if quota.get(t, 0) is None else min(quota.get(t, 0), DISTINCT_COUNTS[t])
                for t in EXHAUSTED}
    room = sum(DISTINCT_COUNTS[t] - used.get(t, 0) for t in templates)
    if task.eval_n > room:
        refuse("eval_n", f"is {task.eval_n}, but templates {', '.join(templates)} leave at most {room} distinct "
                         "problems outside the training set; lower eval_n, train on fewer of them (counts) or "
                         "evaluate more templates (eval_templates)")
