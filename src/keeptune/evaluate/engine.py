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
  uninterrupted one.

`OUT/eval.json` records what produced the predictions (task, model, data,
prompt, generation settings). Resuming with different settings is refused:
predictions of two configurations must never mix. Batch sizes are left out of
that check because they do not change greedy outputs.
"""
from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from keeptune.evaluate.generation import GenerationSettings, generate
from keeptune.io import DataError, append_jsonl, atomic_write_json, read_jsonl_prefix


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


class ResumeMismatchError(RuntimeError):
    """OUT already holds predictions made with other settings."""


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
        if previous != identity:
            changed = sorted(k for k in identity.keys() | previous.keys() if identity.get(k) != previous.get(k))
            raise ResumeMismatchError(
                f"{out} holds predictions made with other settings ({', '.join(changed)} differ); "
                "use another --out, or delete the directory to start over")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(eval_file, identity)
    if not predictions.is_file():
        return {}
    records, complete = read_jsonl_prefix(predictions)
    with open(predictions, "r+b") as handle:  # drop a line torn by a kill
        handle.truncate(complete)
    return {record["id"]: record for record in records}


def evaluate(task: Task, model, tokenizer, out: Path, settings: GenerationSettings,
             identity: dict, add_bos: bool = False) -> dict:
    """Evaluate `model` on `task`; resumable; returns the metrics written to OUT/metrics.json."""
    out = Path(out)
    eos, pad = eos_token_ids(tokenizer, model), tokenizer.pad_token_id
    generation = settings.describe(eos, pad) | {"add_bos": add_bos}
    print("generation config:", json.dumps(generation))
    resumable = {k: v for k, v in generation.items() if k not in ("batch_size", "prefill_batch_size")}
    done = _resume(out, {"task": task.name, **identity, "generation": resumable})
    todo = [s for s in task.samples if s.id not in done]
    if done:
        print(f"resuming: {len(task.samples) - len(todo)} of {len(task.samples)} samples already in {out}")

    started = time.perf_counter()
    # BOS by id, as training puts it: not every tokenizer adds one with add_special_tokens.
    head = [tokenizer.bos_token_id] if add_bos else []
    if add_bos and tokenizer.bos_token_id is None:
        raise DataError("add_bos needs a BOS token, and this tokenizer has none")
    prompts = [head + tokenizer(task.prompt(s), add_special_tokens=False).input_ids for s in todo]
    with open(out / "predictions.jsonl", "a", encoding="utf-8") as handle, \
            tqdm(total=len(todo), unit="sample", desc=task.name, dynamic_ncols=True) as bar:
        for group in generate(model, prompts, settings, eos, pad, progress=bar.set_postfix_str):
            records = [task.score(todo[i], tokenizer.decode(tokens, skip_special_tokens=True))
                       for i, tokens in group]
            append_jsonl(handle, records)
            done.update((r["id"], r) for r in records)
            bar.update(len(records))
    seconds = time.perf_counter() - started

    ordered = [done[s.id] for s in task.samples]
    metrics = {"task": task.name, **identity, "total_count": len(ordered), **task.aggregate(ordered),
               "generation": generation, "seconds": seconds, "generated": len(todo)}
    atomic_write_json(out / "metrics.json", metrics)
    for line in task.summary(metrics):
        print(line)
    return metrics
