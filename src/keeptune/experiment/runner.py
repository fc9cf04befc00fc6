"""One experiment, start to finish (baseline, fine-tune, evaluate every
checkpoint, gate, score, best; the report is the command's), read as its phases, over task specs: the retention tasks of
`original` and the new task's evaluation task. Every step leaves its result in
the run directory and is skipped when it is already there for the same settings
and the same data (keyed on content):

    RUN/data/train.jsonl (+ eval.jsonl)       the new task's training set (and generated evaluation set)
    RUN/baseline/TASK/                        evaluations of the base model, one folder per task
    RUN/preservation/ (retention corda/replay) the preservation samples (chosen.jsonl; the offline default's
                                              self-written passages and questions)
    RUN/replay/ (retention replay)            the base model's answers (answers/TASK/) and the mixed train.jsonl
    RUN/train/                                keeptune train's run (checkpoints/, log.jsonl, adapter/)
    RUN/checkpoints/step-N/TASK/              evaluations of every checkpoint
    RUN/checkpoints/step-N/scale-S/TASK/      ... at each scale S of retention method `scale`
    RUN/checkpoints/step-N/intruders-L/       ... at each lambda L of `intruders` (TASK/, and adapter/: the reduced one)
    RUN/best/adapter (+ merged/)              the best (checkpoint, scale) that passes the gate, S folded in
    RUN/results.json, report.md, report.html

The base model is loaded once: it is evaluated, then trained with LoRA in
place, and every checkpoint's adapter weights are loaded into the same model
for its evaluation. Under torchrun every rank trains, and every rank evaluates
its share of each task's samples on its own copy of the model (baseline,
tracking, checkpoints; keeptune.evaluate.shard): rank 0 writes the files one
process would write, and alone prepares the retention methods' data, picks the
best and writes the results. With FSDP, whose trained weights are sharded,
every rank loads the base model again, whole, to evaluate the checkpoints.
"""
from __future__ import annotations

import contextlib
import functools
import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

from keeptune.core import gate as rules
from keeptune.core.config import to_dict
from keeptune.core.io import atomic_write_json
from keeptune.core.outputs import claim_output_dir, locked
from keeptune.core.resume import redo_on_mismatch
from keeptune.evaluate import shard
from keeptune.evaluate.run import evaluate_tasks
from keeptune.evaluate.samples import load_task_samples, resolve_data_path
from keeptune.evaluate.task import SpecTask
from keeptune.experiment.config import ExperimentConfig
from keeptune.experiment.newdata import prepare_data, warn_if_answers_do_not_fit, warn_if_overlapping
from keeptune.experiment.plan import Plan, new_task_spec, plan_experiment
from keeptune.experiment.results import judge_state, settings_summary, task_entries, task_metrics
from keeptune.experiment.timing import Timing
from keeptune.experiment.uncertainty import best_against_runner_up, state_folder, state_retention, with_intervals
from keeptune.experiment.tracking import Tracker, tracking_history
from keeptune.model import adapter as adapters
from keeptune.model.commands import merge
from keeptune.model.load import load_model, model_name
from keeptune.model.lora import apply_lora
from keeptune.retention import replay as replaying
from keeptune.retention.config import training_retention
from keeptune.retention.preservation import load_preservation, model_texts, needs_preservation, write_items
from keeptune.retention.training import train
from keeptune.retention.variants import variants
from keeptune.train import checkpoint, distributed
from keeptune.train.config import Config, DataConfig
from keeptune.train.records import detect_prompt, read_conversations

# What `keeptune run` writes into its run directory: a folder holding only these is one of its runs.
RUN_OUTPUTS = ("data", "baseline", "preservation", "replay", "train", "tracking", "checkpoints", "best", "plots",
               "results.json", "report.md", "report.html", ".lock")


def run_dir(config: ExperimentConfig) -> Path:
    return Path(config.out or Path("runs") / "experiments" / config.name)


@dataclass
class Experiment:
    """One experiment as its phases fill it in (the plan is checked; the rest is made on the way)."""

    config: ExperimentConfig
    plan: Plan
    run: Path
    command: str
    started: float  # time.perf_counter() at the start: results.json's wall_seconds
    main: bool  # rank 0 (or a single process): it writes; every rank trains and evaluates its share
    on_track: Optional[Callable] = None
    cpu_started: float = 0.0  # time.process_time() at the start: results.json's cpu_seconds
    timing: Timing = field(default_factory=Timing)
    train_path: Optional[Path] = None  # the new task's training records
    train_for: Optional[Path] = None  # what training reads: those records, and replay's mixed in
    model: Any = None  # the base model, loaded once; trained in place
    tokenizer: Any = None
    tasks: list[SpecTask] = field(default_factory=list)  # the retention tasks, then the new task
    identity: dict = field(default_factory=dict)  # what every evaluation of this run is keyed on
    baseline: Optional[dict] = None  # {task: scores} of the base model (rank 0)

    def specs(self) -> list[SpecTask]:
        """The retention tasks that are keeptune specs: what preservation data (corda, replay) is drawn beside."""
        return [t for t in self.tasks[:-1] if isinstance(t, SpecTask)]

    def base_identity(self) -> dict:
        return {**self.identity, "state": "base"}


def run_experiment(config: ExperimentConfig, command: str, on_track=None) -> dict | None:
    """Run (or finish) the experiment; returns what RUN/results.json holds (None on ranks other than 0).

    `on_track(step, tracked)`, optional (keeptune sweep's pruning), sees each tracked record during training and
    returns a reason to stop training, or None."""
    started, cpu_started = time.perf_counter(), time.process_time()
    plan = plan_experiment(config)
    run = run_dir(config)
    inputs = (config.model.source, config.new_task.train_data, config.new_task.source, config.new_task.eval_data,
              config.retention.preservation, *(item.data for item in config.original))
    # Under torchrun: one process group for the whole run (evaluations before and after training share the
    # group training uses); on a GPU this also puts each rank's model on its own device.
    d = distributed.setup(config.model.device, config.distributed.backend)
    try:
        with exclusive(run, config.overwrite, inputs) if d.main else contextlib.nullcontext():
            return _run_experiment(Experiment(config, plan, run, command, started, d.main, on_track,
                                               cpu_started=cpu_started))
    finally:
        distributed.cleanup(d)


@contextlib.contextmanager
def exclusive(run: Path, overwrite: bool, inputs: tuple):
    """Claim RUN (never a folder keeptune did not make, unless told) and hold RUN/.lock: a second
    experiment into the same directory is refused, not interleaved."""
    claim_output_dir(run, "run", overwrite, inputs=inputs, outputs=RUN_OUTPUTS)
    with locked(run, "another keeptune run is working in this directory now; wait for it to finish, or give "
                     "this one another name= or out="):
        yield


def _run_experiment(e: Experiment) -> dict | None:
    """The phases, in order; each leaves its result in RUN and is skipped when it is already there."""
    e.run.mkdir(parents=True, exist_ok=True)
    prepare(e)
    with shard.sharded():
        evaluate_baseline(e)
    if e.main:
        prepare_retention(e)
        print("== training")
    result = fit(e)
    with shard.sharded():
        entries = evaluate_checkpoints(e, result)
    if not e.main:
        return None
    with e.timing.phase("export"):
        best = export_best(e.config, e.run, entries)
    return write_results(e, entries, best)


# --- the phases ------------------------------------------------------------------------

def prepare(e: Experiment) -> None:
    """The new task's data (every rank makes the same files), the model (loaded once) and the tasks."""
    with e.timing.phase("data"):
        e.train_path, eval_path = prepare_data(e.config, e.run, e.plan)
        e.train_for = e.train_path
        e.plan.new = new_task_spec(e.config, eval_path)
        new_samples = load_task_samples(e.plan.new, resolve_data_path(e.plan.new.spec), e.config.skip_bad)
    with e.timing.phase("model load"):
        e.model, e.tokenizer = load_model(e.config.model.source, e.config.model.dtype, e.config.model.device)
    e.tasks = [SpecTask(task, samples, e.tokenizer) if samples is not None else task  # an lm-eval task as it is
               for (task, _), samples in zip(e.plan.retention, e.plan.samples)]
    e.tasks.append(SpecTask(e.plan.new, new_samples, e.tokenizer))
    e.identity = {"model": model_name(e.config.model.source)}


def evaluate_baseline(e: Experiment) -> None:
    """The base model on every task (each rank its share), after the warnings about the new task's data."""
    if e.main:
        warn_if_answers_do_not_fit(e.train_path, e.tokenizer, e.plan.new.spec.generation.max_new_tokens,
                                   e.config.new_task.format)
        warn_if_overlapping(e.train_path, e.tasks[-1])
        print("== baseline: the base model on every task")
    scores = evaluate_tasks(e.tasks, e.model, e.tokenizer, e.run / "baseline", e.base_identity(),
                            e.config.batch_size, e.config.skip_bad, e.timing, "baseline")
    if e.main:
        e.baseline = with_intervals(scores, e.run / "baseline")


def prepare_retention(e: Experiment) -> None:
    """What retention methods corda and replay need from the base model before any training (rank 0):
    the preservation data (the offline default is self-written), and replay's answers mixed into training."""
    config = e.config
    if not needs_preservation(config.retention):
        return
    with e.timing.phase("preservation"):
        if e.plan.preservation is None:  # the offline default: self-written, cached in RUN/preservation
            e.plan.preservation = load_preservation(config.retention, e.specs(), e.run / "preservation", e.model,
                                                    e.tokenizer, e.base_identity(), config.batch_size)
        write_items(e.run / "preservation" / "chosen.jsonl", e.plan.preservation)
    if "replay" in config.retention.methods:
        print("== replay: the base model answers the preservation prompts")
        with e.timing.phase("replay"):
            e.train_for, e.plan.replay = replaying.mixed_training_set(
                config.retention.replay_share, e.train_path, e.plan.preservation, e.specs(), e.model,
                e.tokenizer, e.run / "replay", e.base_identity(), config.batch_size, config.new_task.format)


def fit(e: Experiment):
    """Train the loaded model (resuming when possible; again from scratch when its settings changed), with
    tracking when asked; returns keeptune.train.loop's Result. Its time is split into training, tracking and
    CorDA's one-off preparation."""
    on_step, tracker = None, None
    if e.config.tracking.every:  # every rank evaluates its share; rank 0 judges, the others vote nothing
        preserved = model_texts(e.plan.preservation, e.specs()) if e.plan.preservation else None
        tracker = Tracker(e.config, e.plan, e.run, e.tasks, e.baseline, e.on_track if e.main else None, preserved)
        on_step = tracker.on_step
    new_records = e.train_path if e.train_for != e.train_path else None
    settings = training_config(e.config, e.run, e.train_for, new_records)
    prompts = functools.partial(corda_prompts, e)
    started = time.perf_counter()
    result = redo_on_mismatch(
        lambda: train(settings, on_step, e.config.tracking.every or 1, model=e.model, tokenizer=e.tokenizer,
                      preservation=prompts),
        e.run / "train", f"{e.run / 'train'}: training settings changed, training again")
    tracked = tracker.seconds if tracker else 0.0
    if result.corda_seconds:  # CorDA's covariance and decomposition, once: not a cost of every step
        e.timing.add("corda", result.corda_seconds)
    e.timing.add("training", time.perf_counter() - started - tracked - result.corda_seconds,
                 steps=result.step - result.start)
    if tracker and tracker.count:
        e.timing.add("tracking", tracked, evaluations=tracker.count)
    return result


def corda_prompts(e: Experiment, model, tokenizer) -> list[str]:
    """CorDA's covariance prompts: rank 0 chose them before training, the other ranks read them."""
    chosen = e.plan.preservation or load_preservation(e.config.retention, e.specs(), e.run / "preservation",
                                                      model, tokenizer, e.base_identity(), e.config.batch_size)
    return model_texts(chosen, e.specs())


def evaluate_checkpoints(e: Experiment, result) -> list[dict]:
    """Every checkpoint's adapter loaded into the trained model and evaluated on every task, as trained and as each
    post-training variant (each factor of retention `scale`, each lambda of `intruders`: keeptune.retention.variants):
    one results.json entry per (checkpoint, variant), judged by the gate (each gated scalar's paired retention
    against the baseline's predictions beside it)."""
    config = e.config
    peft_model = result.model
    if shard.rank_world()[1] > 1 and config.distributed.strategy == "fsdp":  # sharded weights: each rank reloads
        peft_model = apply_lora(load_model(config.model.source, config.model.dtype, config.model.device)[0],
                                config.lora)
    if e.main:
        print("== evaluating every checkpoint")
    losses = {r["step"]: r["loss"] for r in map(json.loads, (e.run / "train" / "log.jsonl").open())}
    entries = []
    for ckpt in checkpoint.complete_checkpoints(e.run / "train"):
        adapters.load_adapter_weights(ckpt, peft_model)
        peft_model.eval()
        step, digest = checkpoint.step_of(ckpt), adapters.adapter_digest(ckpt)
        for variant in variants(config.retention):  # as trained first; each its own folder, keyed on its settings
            out = variant.evaluations(state_folder(e.run, step))
            state, phase = f"{ckpt.name} {digest}{variant.state()}", f"checkpoint {step}{variant.phase()}"
            with variant.applied(peft_model, ckpt, out, e.main) as (adapter, made):
                scores = evaluate_tasks(e.tasks, peft_model, e.tokenizer, out, {**e.identity, "state": state},
                                        config.batch_size, config.skip_bad, e.timing, phase)
            if not e.main:  # it evaluated its share; rank 0 judges
                continue
            paired = state_retention(e.plan.gates, e.run / "baseline", out, task_metrics(e.plan))
            entries.append({"step": step, **variant.fields(), "methods": variant.methods(config.retention.methods),
                            "loss": losses.get(step), "adapter": str(adapter), **made,
                            "tasks": with_intervals(scores, out), **judge_state(e.plan, scores, e.baseline, paired)})
    return entries


def export_best(config: ExperimentConfig, run: Path, entries: list[dict]) -> dict | None:
    """Copy the best passing (checkpoint, variant)'s adapter to RUN/best, a scale folded in (an intruder-reduced
    state's adapter is its own; and merge it on request)."""
    best = rules.best(entries)
    if best is None:
        return None
    adapter = adapters.export_adapter(Path(best["adapter"]), run / "best" / "adapter", best.get("scale", 1.0))
    merged = merge(adapter, out=run / "best" / "merged") if config.export_merged else None
    return {**best, "adapter": str(adapter), "merged": str(merged) if merged else None}


def write_results(e: Experiment, entries: list[dict], best: dict | None) -> dict:
    """RUN/results.json (atomically): everything the report and `keeptune runs` read."""
    checkpoints = checkpoint.complete_checkpoints(e.run / "train")
    plan = e.plan
    results = {
        "name": e.config.name, "command": e.command, "wall_seconds": time.perf_counter() - e.started,
        "cpu_seconds": time.process_time() - e.cpu_started,
        "settings": settings_summary(e.config, plan, checkpoint.step_of(checkpoints[-1]) if checkpoints else None),
        "config": to_dict(e.config), "params": plan.params.__dict__,
        "gate_rule": rules.gate_rule(plan.gates), "score_rule": f"{rules.SCORE_RULE}; accuracy = {plan.new.spec.name} "
                                                    f"{plan.accuracy}",
        "tasks": task_entries(plan, e.baseline), "baseline": {"tasks": e.baseline},
        "checkpoints": entries, "best": best, "tracking": tracking_history(e.run), "timing": e.timing.rows,
        "best_vs_runner_up": best_against_runner_up(e.run, entries, plan.new.spec.name, plan.accuracy),
    }
    atomic_write_json(e.run / "results.json", results)
    return results


# --- training settings -----------------------------------------------------------------

def training_config(config: ExperimentConfig, run: Path, train_path: Path, new_records: Path | None = None) -> Config:
    """`new_records`: the new task's own records when `train_path` mixes replay records in (the adapter's
    prompt is detected from them)."""
    recipe = config.new_task.train_data is None
    prompt = config.new_task.prompt if recipe else None
    if not recipe and new_records is not None:
        prompt = detect_prompt(read_conversations(new_records))
    data = DataConfig(path=str(train_path), format=config.new_task.format, seq_len=config.new_task.seq_len,
                      prompt=prompt)
    retention = training_retention(config.retention)  # kl and corda: replay is in the data, scale after training
    return Config(model=config.model, lora=config.lora, data=data, train=config.train,
                  distributed=config.distributed, retention=retention, out=str(run / "train"), resume=True)
