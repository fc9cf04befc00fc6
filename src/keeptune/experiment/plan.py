"""The plan of an experiment: every task spec, gate, name and choice checked before any data is
built or a model loaded (a mistake costs a second, not the baseline's minutes)."""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn

from keeptune.core import gate as rules
from keeptune.core.errors import ConfigError, DataError
from keeptune.data.prompts import PROMPTS
from keeptune.evaluate import lmeval
from keeptune.evaluate.lmeval import LmEvalTask
from keeptune.evaluate.samples import given_path, load_task_samples, resolve_data_path
from keeptune.evaluate.spec import Compiled, load_spec
from keeptune.evaluate.task import SpecTask
from keeptune.experiment.config import ExperimentConfig
from keeptune.model.load import resolve_device
from keeptune.model.params import lora_accounting, source_config
from keeptune.retention import variants
from keeptune.retention.preservation import needs_preservation, plan_preservation
from keeptune.train.distributed import rank_and_world

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass
class Plan:
    retention: list[tuple[Compiled | LmEvalTask, rules.TaskGate]]  # a task spec, or an lm-eval task
    samples: list[list | None]  # each spec's samples, read (and checked) by the plan; None: an lm-eval task's own
    new: Compiled  # data.path is set once the data is prepared
    accuracy: str
    ratio: float
    params: object
    preservation: object = None  # retention methods corda/replay: keeptune.retention.preservation.Preservation
    replay: dict | None = None  # retention method replay: what the mixed training set holds

    @property
    def gates(self) -> list[rules.TaskGate]:
        return [g for _, g in self.retention]

def invalid(field: str, message: str) -> NoReturn:
    """Refuse the experiment: ConfigError "field FIELD: MESSAGE"."""
    raise ConfigError(f"field {field!r}: {message}")

def plan_experiment(config: ExperimentConfig) -> Plan:
    """Load and cross-check every task spec, gate, name and choice, read the retention tasks' samples
    (downloading an address once) and count the LoRA parameters on the meta device (so targets that
    match nothing fail here). No data is built and no model is loaded."""
    if not SAFE_NAME.match(config.name):
        invalid("name", f"{config.name!r}: use letters, digits, '.', '_' and '-' (it names a folder)")
    if not 0 < config.gate <= 1:
        invalid("gate", f"{config.gate}; a fraction in (0, 1]")
    if config.batch_size < 1:
        invalid("batch_size", f"{config.batch_size}; it must be at least 1")
    tracking = config.tracking
    if tracking.every < 0 or tracking.retention < 1 or tracking.new_task < 1:
        invalid("tracking", "every must be >= 0 (0: off), retention and new_task >= 1")
    if rank_and_world()[1] > 1 and tracking.every and config.distributed.strategy == "fsdp":
        invalid("tracking.every", "tracking evaluates on every rank, each its share, which a sharded (fsdp) model "
                                  "cannot; set tracking.every=0 or distributed.strategy=ddp")
    retention, samples, names = [], [], []
    for i, item in enumerate(config.original):
        where = f"original[{i}]"
        if item.lm_eval is not None:
            task, task_gate = lm_eval_task(config, item, where)
            retention.append((task, task_gate))
            samples.append(None)  # the task holds its documents
            names.append(task.name)
            continue
        check_part(item, where)
        changes = {k: v for k, v in (("data.path", given_path(item.data)), ("data.limit", item.limit),
                                     ("data.start", item.start)) if v is not None}
        if item.name is not None:
            changes["name"] = item.name
        compiled = load_spec(item.task, changes)
        metrics = tuple(item.gate) if item.gate is not None else tuple(compiled.spec.gate)
        unknown = [m for m in metrics if m not in compiled.scalars()]
        if unknown or not metrics:
            invalid(f"{where}.gate", f"{list(metrics)}: name one or more of the task's scalars: "
                                        f"{', '.join(compiled.scalars())}")
        fraction = item.fraction if item.fraction is not None else config.gate
        if not 0 < fraction <= 1:
            invalid(f"{where}.fraction", f"{fraction}; a fraction in (0, 1]")
        if not 0 < item.confidence < 1:
            invalid(f"{where}.confidence", f"{item.confidence}; a level between 0 and 1 (0.95 for 95%)")
        retention.append((compiled, rules.TaskGate(compiled.spec.name, metrics, fraction, item.rule, item.confidence,
                                                   held_out=item.held_out)))
        samples.append(load_task_samples(compiled, resolve_data_path(compiled.spec), config.skip_bad))  # a bad file
        names.append(compiled.spec.name)  # fails here, before any work
    if config.original and all(g.held_out for _, g in retention):
        invalid("original", "every task is held_out, so nothing is gated and every checkpoint would pass; gate at "
                            "least one (the seed's: squad-seed)")
    check_held_out_apart(retention, samples)
    task = config.new_task
    if task.train_data is None and task.prompt not in PROMPTS:
        invalid("new_task.prompt", f"{task.prompt!r}; the arithmetic recipe's prompts: {', '.join(PROMPTS)}")
    new = new_task_spec(config, None)
    check_new_task_files(config, new)
    names.append(new.spec.name)
    for name in names:
        if not SAFE_NAME.match(name):
            invalid("original", f"task name {name!r}: use letters, digits, '.', '_' and '-' (it names a folder)")
    if len(set(names)) != len(names):
        invalid("original", f"two tasks share a name ({names}); give one a `name:`")
    variants.check(config.retention, names)  # scale's and intruders' folders must not clash with a task's
    accuracy = config.new_task.accuracy or new.spec.accuracy
    if accuracy not in new.scalars():
        invalid("new_task.accuracy", f"{accuracy!r} is not a scalar of task {new.spec.name}: "
                                        f"{', '.join(new.scalars())}")
    if "replay" in config.retention.methods and rank_and_world()[1] > 1:
        invalid("retention.methods", "replay is not supported under torchrun yet (rank 0 generates the base "
                                        "model's answers before training); run it in a single process")
    # Preservation data (corda, replay) read and checked for leaks into the gate now; the offline default later.
    if needs_preservation(config.retention) and all(s is None for s in samples):
        invalid("retention.methods", f"{', '.join(config.retention.methods)}: corda and replay render preservation "
                                     "data in a retention task spec's prompt; every retention task here is an "
                                     "lm-eval task: add a spec (e.g. squad-seed) or use kl or scale")
    preservation = plan_preservation(config.retention, [SpecTask(c, s) for (c, _), s in zip(retention, samples)
                                                        if s is not None])
    resolve_device(config.model.device)  # a device this machine lacks fails now, not after the data is built
    model_config = source_config(config.model.source)
    specs = [c for (c, _), s in zip(retention, samples) if s is not None]  # an lm-eval task generates nothing here
    check_generation_fits(model_config, specs + [new])
    params = lora_accounting(model_config, config.lora)[1]
    return Plan(retention, samples, new, accuracy, params.ratio, params, preservation)

def lm_eval_task(config: ExperimentConfig, item, where: str) -> tuple[LmEvalTask, rules.TaskGate]:
    """An lm-eval retention task, its documents read and requests built (a bad file or an unknown name fails now),
    and its gate: the named scalars (bare metric names allowed), the fraction or max_rise, the direction of each."""
    if item.num_fewshot is not None and item.num_fewshot < 0:
        invalid(f"{where}.num_fewshot", f"{item.num_fewshot}; 0 or more")
    if item.batch_size is not None and item.batch_size < 1:
        invalid(f"{where}.batch_size", f"{item.batch_size}; at least 1")
    check_part(item, where)
    task = lmeval.load(item.lm_eval, name=item.name, include=item.include,
                       data=given_path(item.data) if item.data else None, limit=item.limit, start=item.start or 0,
                       num_fewshot=item.num_fewshot, batch_size=item.batch_size, where=f"{where}.lm_eval")
    prefix = task.metric.name + "."
    metrics = tuple(m if m.startswith(prefix) else prefix + m for m in item.gate) if item.gate else task.scalars()[:1]
    unknown = [m for m in metrics if m not in task.scalars()]
    if unknown or not metrics:
        invalid(f"{where}.gate", f"{list(item.gate or [])}: name one or more of the task's metrics: "
                                 f"{', '.join(s.removeprefix(prefix) for s in task.scalars())}")
    lower = tuple(m for m in metrics if m in task.lower_is_better())
    if item.max_rise is not None:
        if item.fraction is not None:
            invalid(f"{where}.max_rise", "give fraction or max_rise, not both")
        if not item.max_rise >= 0:
            invalid(f"{where}.max_rise", f"{item.max_rise}; a share >= 0 (0.05: 5%)")
        if len(lower) != len(metrics):
            higher = ", ".join(sorted(set(metrics) - set(lower)))
            invalid(f"{where}.max_rise", f"applies to scalars that are better lower; {higher} is better higher: "
                                         "use fraction")
        fraction = 1 / (1 + item.max_rise)
    else:
        fraction = item.fraction if item.fraction is not None else config.gate
    if not 0 < fraction <= 1:
        invalid(f"{where}.fraction", f"{fraction}; a fraction in (0, 1]")
    if not 0 < item.confidence < 1:
        invalid(f"{where}.confidence", f"{item.confidence}; a level between 0 and 1 (0.95 for 95%)")
    return task, rules.TaskGate(task.name, metrics, fraction, item.rule, item.confidence, lower, item.held_out)


def check_part(item, where: str) -> None:
    """`limit` and `start` name a part of the data; a held-out task has no rule to follow."""
    if item.limit is not None and item.limit < 1:
        invalid(f"{where}.limit", f"{item.limit}; at least 1 (null: all)")
    if item.start is not None and item.start < 0:
        invalid(f"{where}.start", f"{item.start}; 0 or more (null: 0)")
    if item.held_out and item.rule != rules.POINT:
        invalid(f"{where}.rule", f"{item.rule}: a held-out task is never gated, so it follows no rule (drop `rule`, "
                                 "or `held_out` to gate it)")


def check_held_out_apart(retention: list, samples: list) -> None:
    """No held-out task shares a sample with a gated task: what compares methods must not be what chose their
    checkpoints. Samples are compared by content (every field but a spec's numbering id; an lm-eval document
    whole), so the same paragraph or question in two files, or two overlapping parts of one file, is found."""
    def contents(task, task_samples) -> dict[str, str]:
        if task_samples is None:  # an lm-eval task: its documents
            return {json.dumps(d.doc, sort_keys=True, default=str): d.where for d in task.documents}
        return {json.dumps({k: v for k, v in s.fields.items() if k != "id"}, sort_keys=True, default=str): s.where
                for s in task_samples}
    if not any(g.held_out for _, g in retention):  # nothing to keep apart: no sample is serialised
        return
    gated = [(g.task, contents(t, s)) for (t, g), s in zip(retention, samples) if not g.held_out]
    for i, ((task, gate), task_samples) in enumerate(zip(retention, samples)):
        if not gate.held_out:
            continue
        mine = contents(task, task_samples)
        for name, theirs in gated:
            shared = next((key for key in mine if key in theirs), None)
            if shared is not None:
                count = len(mine.keys() & theirs.keys())
                invalid(f"original[{i}].held_out",
                        f"task {gate.task} shares {count} samples with gated task {name}, e.g. {mine[shared]} is "
                        f"{theirs[shared]}: held-out data must be apart from what the gate sees (use `start` to "
                        "take another part of the file)")


def check_new_task_files(config: ExperimentConfig, new: Compiled) -> None:
    """The new task's files exist: train_data, and with the arithmetic recipe source and eval_data, as local files
    (the recipe reads and copies them); with train_data, the evaluation data the task reads (an address is
    downloaded now, once)."""
    task = config.new_task
    local = ("train_data",) if task.train_data is not None else ("source", "eval_data")
    for name in local:
        given = getattr(task, name)
        if given is None:
            continue
        if given.startswith(("http://", "https://")):
            invalid(f"new_task.{name}", f"{given!r} is an address; give a local file")
        path = Path(given_path(given))
        if not path.is_file():
            invalid(f"new_task.{name}", f"{path} {'is a directory' if path.is_dir() else 'does not exist'}")
    if task.train_data is not None:  # the task's own evaluation data: new_task.eval_data is where to give another
        try:
            resolve_data_path(new.spec)
        except (ConfigError, DataError) as err:
            invalid("new_task.eval_data", f"null, so the new task {new.spec.name} is evaluated on its spec's data, "
                                          f"and {err}; give new_task.eval_data")

def check_generation_fits(model_config, tasks: list[Compiled]) -> None:
    """Each task generates fewer tokens than the model's context holds (a prompt needs room too), found out
    otherwise only when that task's first evaluation starts; the new task is the last of `tasks`."""
    context = getattr(model_config, "max_position_embeddings", None)
    for compiled in tasks if context else ():
        tokens = compiled.spec.generation.max_new_tokens
        if tokens >= context:
            hint = "; lower new_task.max_new_tokens" if compiled is tasks[-1] else ""
            raise ConfigError(f"task {compiled.spec.name}: generation.max_new_tokens is {tokens}, but the model's "
                              f"context holds {context} tokens, its prompt included{hint}")

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
