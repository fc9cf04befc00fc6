"""One experiment, start to finish (SPEC: baseline, fine-tune, evaluate every
checkpoint, gate, score, best, report), over task specs: the retention tasks of
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
    RUN/best/adapter (+ merged/)              the best (checkpoint, scale) that passes the gate, S folded in
    RUN/results.json, report.md, report.html

The base model is loaded once: it is evaluated, then trained with LoRA in
place, and every checkpoint's adapter weights are loaded into the same model
for its evaluation. Under torchrun every rank trains and rank 0 alone
evaluates (with FSDP it loads the base model again, unsharded, to evaluate).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path

from keeptune.core import gate as rules
from keeptune.core.config import to_dict
from keeptune.core.errors import ConfigError, ResumeMismatchError
from keeptune.core.io import atomic_write_json, iter_jsonl, write_jsonl
from keeptune.core.outputs import claim_output_dir, locked
from keeptune.data.math.build import eligible, write_training_set
from keeptune.data.math.generate import generate_pairs
from keeptune.data.prompts import PROMPTS, unwrap_prompt
from keeptune.evaluate.run import evaluate_tasks
from keeptune.evaluate.spec import (
    Compiled,
    SpecTask,
    given_path,
    load_spec,
    load_task_samples,
    render_prompt,
    resolve_data_path,
)
from keeptune.experiment.config import ExperimentConfig
from keeptune.experiment.timing import Timing
from keeptune.model import adapter as adapters
from keeptune.model.load import load_model, model_name, resolve_device
from keeptune.model.params import lora_accounting, source_config
from keeptune.retention import replay as replaying
from keeptune.retention import scale as scaling
from keeptune.retention.preservation import (
    load_preservation,
    model_texts,
    needs_preservation,
    plan_preservation,
    write_items,
)
from keeptune.train import checkpoint
from keeptune.train.config import Config, DataConfig
from keeptune.train.loop import train
from keeptune.train.records import detect_prompt, read_conversations, special_ids, texts

# The new-task fields that change the data files (the others only change training or evaluation).
DATA_FIELDS = ("task", "train_data", "source", "strategy", "n", "counts", "cot", "prompt", "seed", "eval_data",
               "eval_n", "eval_templates", "eval_seed")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def run_dir(config: ExperimentConfig) -> Path:
    return Path(config.out or Path("runs") / "experiments" / config.name)


def rank() -> tuple[int, int]:
    """(rank, world size) under torchrun; (0, 1) in a single process."""
    return int(os.environ.get("RANK", "0")), int(os.environ.get("WORLD_SIZE", "1"))


# --- the plan: every task spec and choice checked before data is built or a model loaded ---------

@dataclass
class Plan:
    retention: list[tuple[Compiled, rules.TaskGate]]
    samples: list[list]  # each retention task's samples, read (and checked) by the plan
    new: Compiled  # data.path is set once the data is prepared
    accuracy: str
    ratio: float
    params: object
    preservation: object = None  # retention methods corda/replay: keeptune.retention.preservation.Preservation
    replay: dict | None = None  # retention method replay: what the mixed training set holds

    @property
    def gates(self) -> list[rules.TaskGate]:
        return [g for _, g in self.retention]


def fail(field: str, message: str) -> ConfigError:
    return ConfigError(f"field {field!r}: {message}")


def plan_experiment(config: ExperimentConfig) -> Plan:
    """Load and cross-check every task spec, gate, name and choice, read the retention tasks' samples
    (downloading an address once) and count the LoRA parameters on the meta device (so targets that
    match nothing fail here). No data is built and no model is loaded."""
    if not SAFE_NAME.match(config.name):
        raise fail("name", f"{config.name!r}: use letters, digits, '.', '_' and '-' (it names a folder)")
    if not 0 < config.gate <= 1:
        raise fail("gate", f"{config.gate}; a fraction in (0, 1]")
    if config.batch_size < 1:
        raise fail("batch_size", f"{config.batch_size}; it must be at least 1")
    tracking = config.tracking
    if tracking.every < 0 or tracking.retention < 1 or tracking.new_task < 1:
        raise fail("tracking", "every must be >= 0 (0: off), retention and new_task >= 1")
    if rank()[1] > 1 and tracking.every and config.distributed.strategy == "fsdp":
        raise fail("tracking.every", "tracking evaluates on rank 0 alone, which a sharded (fsdp) model cannot; "
                                     "set tracking.every=0 or distributed.strategy=ddp")
    retention, names = [], []
    for i, item in enumerate(config.original):
        where = f"original[{i}]"
        changes = {k: v for k, v in (("data.path", given_path(item.data)), ("data.limit", item.limit)) if v is not None}
        if item.name is not None:
            changes["name"] = item.name
        compiled = load_spec(item.task, changes)
        metrics = tuple(item.gate) if item.gate is not None else tuple(compiled.spec.gate)
        unknown = [m for m in metrics if m not in compiled.scalars()]
        if unknown or not metrics:
            raise fail(f"{where}.gate", f"{list(metrics)}: name one or more of the task's scalars: "
                                        f"{', '.join(compiled.scalars())}")
        fraction = item.fraction if item.fraction is not None else config.gate
        if not 0 < fraction <= 1:
            raise fail(f"{where}.fraction", f"{fraction}; a fraction in (0, 1]")
        retention.append((compiled, rules.TaskGate(compiled.spec.name, metrics, fraction)))
        names.append(compiled.spec.name)
    task = config.new_task
    if task.train_data is None and task.prompt not in PROMPTS:
        raise fail("new_task.prompt", f"{task.prompt!r}; the arithmetic recipe's prompts: {', '.join(PROMPTS)}")
    new = new_task_spec(config, None)
    names.append(new.spec.name)
    for name in names:
        if not SAFE_NAME.match(name):
            raise fail("original", f"task name {name!r}: use letters, digits, '.', '_' and '-' (it names a folder)")
    if len(set(names)) != len(names):
        raise fail("original", f"two tasks share a name ({names}); give one a `name:`")
    scaling.check(config.retention, names)
    accuracy = config.new_task.accuracy or new.spec.accuracy
    if accuracy not in new.scalars():
        raise fail("new_task.accuracy", f"{accuracy!r} is not a scalar of task {new.spec.name}: "
                                        f"{', '.join(new.scalars())}")
    samples = [load_task_samples(compiled, resolve_data_path(compiled.spec), config.skip_bad)
               for compiled, _ in retention]  # read now: a bad file fails before any work
    if "replay" in config.retention.methods and rank()[1] > 1:
        raise fail("retention.methods", "replay is not supported under torchrun yet (rank 0 generates the base "
                                        "model's answers before training); run it in a single process")
    # Preservation data (corda, replay) read and checked for leaks into the gate now; the offline default later.
    preservation = plan_preservation(config.retention, [SpecTask(c, s) for (c, _), s in zip(retention, samples)])
    resolve_device(config.model.device)  # a device this machine lacks fails now, not after the data is built
    params = lora_accounting(source_config(config.model.source), config.lora)[1]
    return Plan(retention, samples, new, accuracy, params.ratio, params, preservation)


def new_task_spec(config: ExperimentConfig, eval_path: Path | None) -> Compiled:
    """The new task's evaluation task as training shapes it: the recipe's prompt, the training format."""
    task = config.new_task
    changes = {"format": task.format}
    if task.train_data is None:
        changes["prompt"] = task.prompt
    if eval_path is not None:
        changes["data.path"] = str(eval_path)
    elif task.eval_data is not None:
        changes["data.path"] = given_path(task.eval_data)
    if task.max_new_tokens is not None:
        changes["generation.max_new_tokens"] = task.max_new_tokens
    if task.extraction is not None:
        changes["extraction"] = task.extraction
    return load_spec(task.task, changes)


# --- data ------------------------------------------------------------------------------

def file_digest(path: str | None) -> str | None:
    if path is None or str(path).startswith(("http://", "https://")):
        return path
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def prepare_data(config: ExperimentConfig, run: Path, plan: Plan) -> tuple[Path, Path]:
    """The training set (conversation records) and the new task's evaluation samples."""
    task = config.new_task
    folder = run / "data"
    stamp = folder / "data.json"
    train_path, eval_path = folder / "train.jsonl", folder / "eval.jsonl"
    recipe = {k: v for k, v in to_dict(task).items() if k in DATA_FIELDS}
    recipe["sha256"] = {k: file_digest(given_path(getattr(task, k))) for k in ("train_data", "source", "eval_data")}
    if task.train_data is not None:  # evaluated on eval_data (hashed above) or the file the spec names
        eval_path = resolve_data_path(plan.new.spec)
        if task.eval_data is None:
            recipe["sha256"]["eval"] = file_digest(str(eval_path))
    if stamp.is_file() and json.loads(stamp.read_text()) == recipe:
        return train_path, eval_path
    folder.mkdir(parents=True, exist_ok=True)
    if task.train_data is not None:
        write_jsonl(train_path, conversations_from(Path(given_path(task.train_data)), plan.new))
    else:
        write_training_set(source=Path(task.source) if task.source else None, strategy=task.strategy, n=task.n,
                           cot=task.cot, prompt=task.prompt, seed=task.seed, out=train_path, counts=task.counts)
        if task.eval_data:
            shutil.copyfile(task.eval_data, eval_path)
        else:
            write_jsonl(eval_path, held_out_problems(train_path, task.eval_n, task.eval_seed, task.eval_templates,
                                                     task.strategy))
    atomic_write_json(stamp, recipe)
    return train_path, eval_path


def conversations_from(path: Path, new: Compiled) -> list[dict]:
    """Training records from a file of conversation records, or of samples in the task's layout (the
    task's prompt rendered from their fields, its reference field as the answer)."""
    first = next(iter(iter_jsonl(path)), None)
    if isinstance(first, dict) and "conversations" in first:
        return [{"id": str(i), "conversations": [{"from": "human", "value": c.prompt},
                                                  {"from": "gpt", "value": c.answer}]}
                for i, c in enumerate(read_conversations(path), 1)]
    return [{"id": str(i), "conversations": [{"from": "human", "value": render_prompt(new.spec, sample.fields)},
                                             {"from": "gpt", "value": sample.fields[new.spec.reference]}]}
            for i, sample in enumerate(load_task_samples(new, path), 1)]


def training_templates_and_problems(train_path: Path) -> tuple[list[str], set[str]]:
    """The templates (in order of appearance) and raw problems of a conversation-format training set."""
    templates, problems = [], set()
    for line in train_path.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        problems.add(unwrap_prompt(record["conversations"][0]["value"]))
        if record["template"] not in templates:
            templates.append(record["template"])
    return templates, problems


def longest_answer(train_path: Path, tokenizer, fmt: str = "plain") -> int:
    """Tokens of the longest answer a training set teaches in sequence format ``fmt``, EOS included."""
    answers = [texts(c, fmt, tokenizer)[1] for c in read_conversations(train_path)]
    tail = len(special_ids(tokenizer, fmt, None)[1])  # EOS, unless the chat template writes its own
    return tail + max(len(ids) for ids in tokenizer(answers, add_special_tokens=False).input_ids)


def warn_if_answers_do_not_fit(train_path: Path, tokenizer, max_new_tokens: int, fmt: str = "plain") -> None:
    longest = longest_answer(train_path, tokenizer, fmt)
    if longest > max_new_tokens:
        print(f"warning: the longest training answer is {longest} tokens (EOS included) but the new task "
              f"generates {max_new_tokens}: answers that long are cut before their final line and judged wrong; "
              f"set new_task.max_new_tokens={longest} or more", file=sys.stderr)


def warn_if_overlapping(train_path: Path, new_task: SpecTask) -> None:
    trained = {c.prompt for c in read_conversations(train_path)}
    shared = sum(render_prompt(new_task.spec, s.fields) in trained for s in new_task.samples)
    if shared:
        print(f"warning: {shared} of the new task's {len(new_task.samples)} evaluation samples are also in its "
              "training set", file=sys.stderr)


def held_out_problems(train_path: Path, n: int, seed: int, templates: list[str] | None,
                      strategy: str = "real") -> list[dict]:
    """`n` generated problems of the training set's templates that the training set does not contain.

    They obey the training strategy's filter too: `easy` trains on no multiplication of the
    arithmetic template, so none is evaluated.
    """
    seen_templates, seen = training_templates_and_problems(train_path)
    chosen: list[dict] = []
    for name, pair in generate_pairs(50 * n, seed, templates or seen_templates, "uniform"):
        if pair.problem not in seen and eligible(strategy, name, pair.problem):
            seen.add(pair.problem)
            chosen.append(pair._asdict())
            if len(chosen) == n:
                return chosen
    raise ValueError(f"could not draw {n} held-out problems (templates {templates or seen_templates})")


# --- evaluations -----------------------------------------------------------------------


# --- the experiment --------------------------------------------------------------------

def training_config(config: ExperimentConfig, run: Path, train_path: Path, new_records: Path | None = None) -> Config:
    """`new_records`: the new task's own records when `train_path` mixes replay records in (the adapter's
    prompt is detected from them)."""
    recipe = config.new_task.train_data is None
    prompt = config.new_task.prompt if recipe else None
    if not recipe and new_records is not None:
        prompt = detect_prompt(read_conversations(new_records))
    data = DataConfig(path=str(train_path), format=config.new_task.format, seq_len=config.new_task.seq_len,
                      prompt=prompt)
    retention = scaling.training_retention(config.retention)
    # replay is in the training set itself (its digest is in the training's identity), not a training step
    retention = replace(retention, methods=tuple(m for m in retention.methods if m != "replay"))
    return Config(model=config.model, lora=config.lora, data=data, train=config.train,
                  distributed=config.distributed, retention=retention, out=str(run / "train"), resume=True)


def run_training(config: ExperimentConfig, run: Path, train_path: Path, on_step, every: int, model, tokenizer,
                 new_records: Path | None = None, preservation=None):
    """Train (resuming when possible) the loaded model; returns keeptune.train.loop's Result.
    `preservation`: corda's prompts (keeptune.train.loop.train)."""
    settings = training_config(config, run, train_path, new_records)
    try:
        return train(settings, on_step, every, model=model, tokenizer=tokenizer, preservation=preservation)
    except ResumeMismatchError:
        print(f"{run / 'train'}: training settings changed, training again")
        shutil.rmtree(run / "train")
        return train(settings, on_step, every, model=model, tokenizer=tokenizer, preservation=preservation)


def task_entries(plan: Plan, baseline: dict) -> list[dict]:
    """results.json's `tasks`: what each task is, its gate or its score metric."""
    entries = []
    for compiled, task_gate in plan.retention:
        entries.append({"name": compiled.spec.name, "role": "retention", "description": compiled.spec.description,
                        "metrics": compiled.scalars(), "units": compiled.units(),
                        "gate": task_gate.describe(baseline[compiled.spec.name]["scores"])})
    new = plan.new.spec
    entries.append({"name": new.name, "role": "new", "description": new.description,
                    "metrics": plan.new.scalars(), "units": plan.new.units(), "accuracy": plan.accuracy,
                    "breakdown": new.breakdown})
    return entries


def judge_state(plan: Plan, scores: dict[str, dict], baseline: dict[str, dict]) -> dict:
    """Gate, retention, accuracy and score of one evaluated model state."""
    verdict = rules.judge(plan.gates, {t: s["scores"] for t, s in scores.items()},
                          {t: b["scores"] for t, b in baseline.items()})
    accuracy = scores[plan.new.spec.name]["scores"][plan.accuracy]
    return {**verdict, "accuracy": accuracy,
            "score": rules.score(accuracy, plan.ratio) if verdict["passes_gate"] else None}


def run_experiment(config: ExperimentConfig, command: str, on_track=None) -> dict | None:
    """Run (or finish) the experiment; returns what RUN/results.json holds (None on ranks other than 0).

    `on_track(step, tracked)`, optional (keeptune sweep's pruning), sees each tracked record during training and
    returns a reason to stop training, or None."""
    started = time.perf_counter()
    plan = plan_experiment(config)
    main = rank()[0] == 0
    run = run_dir(config)
    inputs = (config.model.source, config.new_task.train_data, config.new_task.source, config.new_task.eval_data,
              config.retention.preservation, *(item.data for item in config.original))
    with exclusive(run, config.overwrite, inputs) if main else contextlib.nullcontext():
        return _run_experiment(config, command, plan, run, main, started, on_track)


# What `keeptune run` writes into its run directory: a folder holding only these is one of its runs.
RUN_OUTPUTS = ("data", "baseline", "preservation", "replay", "train", "tracking", "checkpoints", "best", "plots",
               "results.json", "report.md", "report.html", ".lock")


@contextlib.contextmanager
def exclusive(run: Path, overwrite: bool, inputs: tuple):
    """Claim RUN (never a folder keeptune did not make, unless told) and hold RUN/.lock: a second
    experiment into the same directory is refused, not interleaved."""
    claim_output_dir(run, "run", overwrite, inputs=inputs, outputs=RUN_OUTPUTS)
    with locked(run, "another keeptune run is working in this directory now; wait for it to finish, or give "
                     "this one another name= or out="):
        yield


def _run_experiment(config: ExperimentConfig, command: str, plan: Plan, run: Path, main: bool,
                    started: float, on_track=None) -> dict | None:
    from keeptune.experiment.tracking import Tracker, tracking_history

    run.mkdir(parents=True, exist_ok=True)
    timing = Timing()
    with timing.phase("data"):
        train_path, eval_path = prepare_data(config, run, plan)  # deterministic: every rank makes the same files
        plan.new = new_task_spec(config, eval_path)
        new_samples = load_task_samples(plan.new, resolve_data_path(plan.new.spec), config.skip_bad)
    source = config.model.source
    with timing.phase("model load"):
        model, tokenizer = load_model(source, config.model.dtype, config.model.device)  # the one load of the run
    tasks = [SpecTask(compiled, samples, tokenizer) for (compiled, _), samples in zip(plan.retention, plan.samples)]
    tasks.append(SpecTask(plan.new, new_samples, tokenizer))
    identity = {"model": model_name(source)}
    baseline = None
    if main:
        warn_if_answers_do_not_fit(train_path, tokenizer, plan.new.spec.generation.max_new_tokens,
                                   config.new_task.format)
        warn_if_overlapping(train_path, tasks[-1])
        print("== baseline: the base model on every task")
        baseline = evaluate_tasks(tasks, model, tokenizer, run / "baseline", {**identity, "state": "base"},
                                  config.batch_size, config.skip_bad, timing, "baseline")
    train_for = train_path  # the training set: the new task's records (and replay's, mixed in)
    if main and needs_preservation(config.retention):  # the base model writes / answers, before any training
        with timing.phase("preservation"):
            if plan.preservation is None:  # the offline default: self-written, cached in RUN/preservation
                plan.preservation = load_preservation(config.retention, tasks[:-1], run / "preservation", model,
                                                      tokenizer, {**identity, "state": "base"}, config.batch_size)
            write_items(run / "preservation" / "chosen.jsonl", plan.preservation)
        if "replay" in config.retention.methods:
            print("== replay: the base model answers the preservation prompts")
            with timing.phase("replay"):
                train_for, plan.replay = replaying.mixed_training_set(
                    config.retention.replay_share, train_path, plan.preservation, tasks[:-1], model, tokenizer,
                    run / "replay", {**identity, "state": "base"}, config.batch_size, config.new_task.format)

    print("== training")
    on_step, tracker = None, None
    if config.tracking.every:  # rank 0 evaluates; the others take part in the loop's stop vote with nothing
        tracker = Tracker(config, plan, run, tasks, baseline, on_track) if main else None
        on_step = tracker.on_step if main else (lambda step, model: {})
    def corda_prompts(model, tokenizer):  # CorDA's covariance prompts: rank 0 chose them above, the others read them
        chosen = plan.preservation or load_preservation(config.retention, tasks[:-1], run / "preservation", model,
                                                        tokenizer, {**identity, "state": "base"}, config.batch_size)
        return model_texts(chosen, tasks[:-1])

    started_training = time.perf_counter()
    result = run_training(config, run, train_for, on_step, config.tracking.every or 1, model, tokenizer,
                          train_path if train_for != train_path else None, corda_prompts)
    tracked = tracker.seconds if tracker else 0.0
    if result.corda_seconds:  # CorDA's covariance and decomposition, once: not a cost of every step
        timing.add("corda", result.corda_seconds)
    timing.add("training", time.perf_counter() - started_training - tracked - result.corda_seconds,
               steps=result.step - result.start)
    if tracker and tracker.count:
        timing.add("tracking", tracked, evaluations=tracker.count)
    if not main:
        return None
    checkpoints = checkpoint.complete_checkpoints(run / "train")

    print("== evaluating every checkpoint")
    peft_model = result.model
    if rank()[1] > 1 and config.distributed.strategy == "fsdp":  # sharded weights: rank 0 reloads them whole
        from keeptune.model.lora import apply_lora

        peft_model = apply_lora(load_model(source, config.model.dtype, config.model.device)[0], config.lora)
    losses = {r["step"]: r["loss"] for r in map(json.loads, (run / "train" / "log.jsonl").open())}
    entries = []
    for ckpt in checkpoints:
        adapters.load_adapter_weights(ckpt, peft_model)
        peft_model.eval()
        step, digest = checkpoint.step_of(ckpt), adapters.adapter_digest(ckpt)
        for factor in scaling.factors(config.retention):  # 1 (as trained) first; more with retention `scale`
            out, state, phase = run / "checkpoints" / ckpt.name, f"{ckpt.name} {digest}", f"checkpoint {step}"
            if factor != 1:  # its own folder, keyed on the factor too
                out, state = out / scaling.folder(factor), f"{state} scale {factor!r}"
                phase = f"{phase} scale {factor:g}"
            with scaling.scaled(peft_model, factor):
                scores = evaluate_tasks(tasks, peft_model, tokenizer, out, {**identity, "state": state},
                                        config.batch_size, config.skip_bad, timing, phase)
            entries.append({"step": step, "scale": factor,
                            "methods": scaling.state_methods(config.retention.methods, factor),
                            "loss": losses.get(step), "adapter": str(ckpt), "tasks": scores,
                            **judge_state(plan, scores, baseline)})

    with timing.phase("export"):
        best = export_best(config, run, entries)
    results = {
        "name": config.name, "command": command, "wall_seconds": time.perf_counter() - started,
        "settings": settings_summary(config, plan, checkpoint.step_of(checkpoints[-1]) if checkpoints else None),
        "config": to_dict(config), "params": plan.params.__dict__,
        "gate_rule": rules.GATE_RULE, "score_rule": f"{rules.SCORE_RULE}; accuracy = {plan.new.spec.name} "
                                                    f"{plan.accuracy}",
        "tasks": task_entries(plan, baseline), "baseline": {"tasks": baseline},
        "checkpoints": entries, "best": best, "tracking": tracking_history(run), "timing": timing.rows,
    }
    atomic_write_json(run / "results.json", results)
    return results


def export_best(config: ExperimentConfig, run: Path, entries: list[dict]) -> dict | None:
    """Copy the best passing (checkpoint, scale)'s adapter to RUN/best, its scale folded in (and merge it on
    request)."""
    best = rules.best(entries)
    if best is None:
        return None
    adapter = adapters.export_adapter(Path(best["adapter"]), run / "best" / "adapter", best.get("scale", 1.0))
    merged = None
    if config.export_merged:
        from keeptune.model.commands import merge

        merged = merge(adapter, out=run / "best" / "merged")
    return {**best, "adapter": str(adapter), "merged": str(merged) if merged else None}


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
