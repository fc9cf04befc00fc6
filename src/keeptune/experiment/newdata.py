"""The new task's data: its training set (built by the arithmetic recipe, or read from a file) and its
evaluation samples (a file, or problems generated from the training set's templates and held out
from it), made once per recipe: RUN/data/data.json stamps what they were made from (the recipe's
fields and the sha256 of every input file), and a run with the same stamp reuses them."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from keeptune.core.config import to_dict
from keeptune.core.errors import DataError
from keeptune.core.io import atomic_write_json, iter_jsonl, write_jsonl
from keeptune.core.resume import file_digest
from keeptune.data.math.build import eligible, write_training_set
from keeptune.data.math.generate import generate_pairs
from keeptune.data.prompts import unwrap_prompt
from keeptune.evaluate.samples import given_path, load_task_samples, resolve_data_path
from keeptune.evaluate.spec import Compiled, render_prompt
from keeptune.evaluate.task import SpecTask
from keeptune.experiment.config import ExperimentConfig
from keeptune.experiment.plan import Plan
from keeptune.train.records import read_conversations, special_ids, texts

# The new-task fields that change the data files (the others only change training or evaluation).
DATA_FIELDS = ("task", "train_data", "source", "strategy", "n", "counts", "cot", "prompt", "seed", "eval_data",
               "eval_n", "eval_templates", "eval_seed")

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
    raise DataError(f"field 'new_task.eval_n': could not draw {n} held-out problems of the templates "
                    f"{', '.join(templates or seen_templates)} that the training set does not hold; lower eval_n, "
                    "train on fewer problems of them, or give new_task.eval_data")
