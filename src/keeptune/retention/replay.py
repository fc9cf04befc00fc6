"""Retention method `replay`: preservation prompts answered by the base model itself
(self-distillation data), mixed into the new task's training set.

The answers are generated once, right after the baseline and before any training, by keeptune's
engine with each retention task's own generation settings (greedy, squad-seed: 20 tokens, no BOS),
and cached in RUN/replay/answers/TASK/ (resumable, redone when the model, the prompts or the settings
change). The answer is the base model's raw generation: training on it teaches the tuned model to
say what the base said on prompts of the old skill.

How many: `retention.replay_share` is the share of the final training set, so with n_new records
of the new task, n_replay / (n_new + n_replay) = share, i.e.

    n_replay = round(share x n_new / (1 - share))        (share 0.2, 400 new records: 100)

taken in order from the preservation samples (cycled when more are needed than there are). The
mixed set, RUN/replay/train.jsonl, is the new task's records followed by the replay records
(training shuffles every epoch); its digest is in the training's identity, so a change of the replay
data retrains. The leak check of keeptune.retention.preservation has refused any sample that shares a
passage or a prompt with what the gate evaluates (unless retention.allow_overlap).
"""
from __future__ import annotations

import sys
from pathlib import Path

from keeptune.core.io import iter_jsonl, write_jsonl
from keeptune.data.prompts import sequence_bos
from keeptune.evaluate.run import GenerationTask, generate_raw
from keeptune.evaluate.task import SpecTask
from keeptune.retention.preservation import Preservation


def replay_count(share: float, n_new: int) -> int:
    """Replay records that make `share` of a training set with `n_new` other records."""
    return round(share * n_new / (1 - share))


def replay_records(preservation: Preservation, tasks: list[SpecTask], n: int, answers: dict, fmt: str) -> list[dict]:
    """`n` conversation records: preservation item k mod len(items), its base model's answer."""
    by_name = {t.name: t for t in tasks}
    records = []
    for k in range(n):
        item = preservation.items[k % len(preservation.items)]
        records.append({"id": f"replay-{k + 1}",
                        "conversations": [{"from": "human", "value": item_prompt(by_name[item.task], item, fmt)},
                                          {"from": "gpt", "value": answers[(item.task, item.sample.id)]}],
                        "replay": {"task": item.task, "sample": item.sample.id}})
    return records


def item_prompt(task: SpecTask, item, fmt: str) -> str:
    """The human turn of a replay record, so that training puts before the answer the text the gate reads: the
    rendered prompt when training is in the task's own sequence format; the task's whole prompt (its format
    applied) when training is plain; else the rendered prompt, read in the training's format (warned)."""
    if task.spec.format != fmt and fmt == "plain":
        return task.prompt(item.sample)
    return item.prompt


def base_answers(preservation: Preservation, tasks: list[SpecTask], n: int, model, tokenizer, out: Path,
                 identity: dict, batch_size: int) -> dict:
    """(task, sample id) -> the base model's raw answer, for the first min(n, items) preservation items."""
    needed = preservation.items[:min(n, len(preservation.items))]
    answers = {}
    for task in tasks:
        items = [i for i in needed if i.task == task.name]
        if not items:
            continue
        generation = GenerationTask(f"replay-{task.name}", [i.sample for i in items],
                                    {i.sample.id: task.prompt(i.sample) for i in items})
        raw = generate_raw(generation, model, tokenizer, out / task.name, task.spec.generation.max_new_tokens,
                           identity, batch_size, task.add_bos, task.spec.generation.min_new_tokens)
        answers |= {(task.name, i.sample.id): raw[i.sample.id] for i in items}
    return answers


def warn_if_formats_differ(preservation: Preservation, tasks: list[SpecTask], fmt: str, add_bos) -> None:
    """Replay records are trained in the new task's sequence format; say so where a task reads another."""
    used = {i.task for i in preservation.items}
    for task in tasks:
        if task.name not in used:
            continue
        if task.spec.format != fmt and fmt != "plain":
            print(f"warning: replay: {task.name} is read in format {task.spec.format} but the training set is "
                  f"trained in {fmt}: its replay records are trained after another prompt than the gate reads",
                  file=sys.stderr)
        if task.add_bos != sequence_bos(fmt, add_bos):
            print(f"warning: replay: {task.name} is read {'with' if task.add_bos else 'without'} BOS, the "
                  f"training set is trained {'with' if sequence_bos(fmt, add_bos) else 'without'} it",
                  file=sys.stderr)


def mixed_training_set(share: float, train_path: Path, preservation: Preservation, tasks: list[SpecTask],
                       model, tokenizer, folder: Path, identity: dict, batch_size: int, fmt: str) -> tuple[Path, dict]:
    """RUN/replay/train.jsonl (the new task's records, then the replay records) and a summary of it."""
    new = list(iter_jsonl(train_path))
    n = replay_count(share, len(new))
    warn_if_formats_differ(preservation, tasks, fmt, None)
    answers = base_answers(preservation, tasks, n, model, tokenizer, folder / "answers", identity, batch_size)
    records = replay_records(preservation, tasks, n, answers, fmt)
    path = folder / "train.jsonl"
    write_jsonl(path, new + records)
    distinct = min(n, len(preservation.items))
    summary = {"new": len(new), "replay": n, "distinct": distinct, "share": n / (len(new) + n) if new or n else 0.0}
    return path, summary


def describe(summary: dict) -> str:
    """One line for the report's settings."""
    return (f"{summary['replay']} records answered by the base model ({summary['distinct']} distinct prompts) "
            f"+ {summary['new']} new-task records: share {summary['share']:.3f}")
