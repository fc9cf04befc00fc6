"""One evaluation engine for every task: prompts in, scored predictions out.

A task (see `Task`) is data and pure functions: its samples, how a sample
becomes a prompt, how one generation is scored, how scored records aggregate.
The engine does the rest, the same way for SQuAD and for math:

- encodes prompts (no BOS in the seed protocol) and generates greedily in
  batches (`keeptune.evaluate.generation`);
- appends one JSON line per sample to `OUT/predictions.jsonl` as soon as its
  group finishes, so a killed run resumes where it stopped: samples already
  in the file are not generated again;
- writes `OUT/metrics.json` atomically at the end, aggregated over the records
  in dataset order, so a resumed run ends with the same numbers as an
  uninterrupted one; a task that gives them adds each scalar's confidence
  interval, computed from the same records (a folder written before intervals
  existed gets them when it is resumed).

`OUT/eval.json` records what produced the predictions (task and its spec's
version, model, data, prompt, generation settings). Resuming with different
settings is refused (`keeptune.core.resume.check_same`, naming the changed
keys): predictions of two configurations must never mix. Batch sizes are left
out of that check because they do not change greedy outputs.
"""
from __future__ import annotations

import functools
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from keeptune.core.errors import DataError
from keeptune.core.io import append_jsonl, atomic_write_json, read_jsonl_prefix, writing_to
from keeptune.core.outputs import locked, note_progress
from keeptune.core.resume import check_same
from keeptune.evaluate.generation import GenerationSettings, generate


class Task(Protocol):
    """What the engine needs to know about a task."""

    name: str
    samples: Sequence[Any]  # each has a unique `.id`

    def prompt(self, sample: Any) -> str: ...

    def score(self, sample: Any, raw: str) -> dict:
        """The record of one sample, from its decoded generation."""

    def aggregate(self, records: list[dict]) -> dict:
        """Corpus metrics from the records, given in dataset order."""

    def summary(self, metrics: dict) -> list[str]:
        """Lines printed at the end of an evaluation."""

    # Optional: `describe() -> dict`, what else produced the predictions (eval.json and metrics.json);
    # `uncertainty(records) -> dict`, intervals beside the corpus metrics (metrics.json), records in dataset order.


# What an eval.json written before task specs had versions lacks: every spec then was version 1.
UNVERSIONED = {"task_version": 1}


def eos_token_ids(tokenizer, model) -> list[int]:
    """Every token that ends a generation: the tokenizer's and the model's EOS."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return sorted(i for i in ids if i is not None)


def _resume(out: Path, identity: dict) -> dict[str, dict]:
    """Records already written for this configuration, keyed by sample id."""
    eval_file, predictions = out / "eval.json", out / "predictions.jsonl"
    if eval_file.is_file():
        previous = json.loads(eval_file.read_text(encoding="utf-8"))
        previous = {**{k: v for k, v in UNVERSIONED.items() if k in identity}, **previous}
        check_same(previous, identity, f"{out} holds predictions made",
                   "use another --out, or delete the directory to start over")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(eval_file, identity)
    if not predictions.is_file():
        return {}
    records, complete = read_jsonl_prefix(predictions)
    with open(predictions, "r+b") as handle:  # drop a line torn by a kill
        handle.truncate(complete)
    return {record["id"]: record for record in records}


@functools.lru_cache(maxsize=4)  # per tokenizer: every tracked step evaluates with the same one
def widest_token(tokenizer) -> int:
    """The most characters one token stands for (vocabulary entries spell byte-level tokens with one
    character per byte, so an entry is at least as long as the text it decodes to)."""
    return max(len(token) for token in tokenizer.get_vocab())


def context_length(model) -> int | None:
    """The longest sequence the model's positions cover, when its config says."""
    return getattr(getattr(model, "config", None), "max_position_embeddings", None)


def evaluate(task: Task, model, tokenizer, out: Path, settings: GenerationSettings,
             identity: dict, add_bos: bool = False, skip_bad: bool = False) -> dict:
    """Evaluate `model` on `task`; resumable; returns the metrics written to OUT/metrics.json.

    A prompt that does not fit the model's context with `max_new_tokens` after it is an
    error naming its file and line, before anything is generated; with `skip_bad` it is
    left out and counted (`skipped` in metrics.json).
    """
    out = Path(out)
    with locked(out, "another evaluation is writing into this directory now; wait for it to finish or choose "
                     "another --out"):
        return _evaluate(task, model, tokenizer, out, settings, identity, add_bos, skip_bad)


def _evaluate(task, model, tokenizer, out: Path, settings: GenerationSettings, identity: dict, add_bos: bool,
              skip_bad: bool) -> dict:
    eos, pad = eos_token_ids(tokenizer, model), tokenizer.pad_token_id
    generation = settings.describe(eos, pad) | {"add_bos": add_bos}
    print("generation config:", json.dumps(generation))
    resumable = {k: v for k, v in generation.items() if k not in ("batch_size", "prefill_batch_size")}
    described = task.describe() if hasattr(task, "describe") else {}

    # Every prompt is encoded and measured before anything is written or generated.
    # BOS by id, as training puts it: not every tokenizer adds one with add_special_tokens.
    head = [tokenizer.bos_token_id] if add_bos else []
    if add_bos and tokenizer.bos_token_id is None:
        raise DataError("add_bos needs a BOS token, and this tokenizer has none")
    room, skipped, encoded = context_length(model), [], {}
    widest = widest_token(tokenizer) if room is not None else None
    for s in task.samples:
        text = task.prompt(s)
        # No token holds more than `widest` characters, so a text longer than room x widest
        # cannot fit: a 5 MB line is refused without tokenizing it.
        too_long = room is not None and len(text) > room * widest
        ids = [] if too_long else head + tokenizer(text, add_special_tokens=False).input_ids
        if too_long or (room is not None and len(ids) + settings.max_new_tokens > room):
            if not skip_bad:
                where = getattr(s, "where", f"sample {s.id}")
                size = f"{len(text)} characters, more than {room} tokens" if too_long else f"{len(ids)} tokens"
                raise DataError(f"{where}: the prompt is {size}; with max_new_tokens "
                                f"{settings.max_new_tokens} it does not fit the model's context of {room} tokens "
                                "(--skip-bad leaves such samples out and counts them)")
            skipped.append(s.id)
            continue
        encoded[s.id] = ids
    samples = [s for s in task.samples if s.id in encoded]

    done = _resume(out, {"task": task.name, **described, **identity, "generation": resumable})
    todo = [s for s in samples if s.id not in done]
    prompts = [encoded[s.id] for s in todo]
    if skipped:
        print(f"skipped {len(skipped)} samples whose prompt does not fit the model's context of {room} tokens")
    if done:
        print(f"resuming: {len(samples) - len(todo)} of {len(samples)} samples already in {out}")

    started = time.perf_counter()
    kept = out / "predictions.jsonl"
    note_progress(saved=lambda: f"{len(read_jsonl_prefix(kept)[0])} of {len(samples)} predictions are in {kept}")
    with writing_to(kept), open(kept, "a", encoding="utf-8") as handle, \
            tqdm(total=len(todo), unit="sample", desc=task.name, dynamic_ncols=True) as bar:
        for group in generate(model, prompts, settings, eos, pad, progress=bar.set_postfix_str):
            records = [task.score(todo[i], tokenizer.decode(tokens, skip_special_tokens=True))
                       for i, tokens in group]
            append_jsonl(handle, records)
            done.update((r["id"], r) for r in records)
            bar.update(len(records))
    seconds = time.perf_counter() - started

    ordered = [done[s.id] for s in samples]
    metrics = {**described, "task": task.name, **identity, "total_count": len(ordered), **task.aggregate(ordered),
               **(task.uncertainty(ordered) if hasattr(task, "uncertainty") else {}),
               "generation": generation, "seconds": seconds, "generated": len(todo), "skipped": len(skipped)}
    atomic_write_json(out / "metrics.json", metrics)
    for line in task.summary(metrics):
        print(line)
    return metrics
