"""One evaluation engine for every task: prompts in, scored predictions out.

A task (see `Task`) is data and pure functions: its samples, how a sample
becomes a prompt, how one generation is scored, how scored records aggregate.
The engine does the rest, the same way for SQuAD and for math:

- encodes prompts (no BOS in the seed protocol) and generates greedily in
  batches (`keeptune.evaluate.generation`);
- appends one JSON line per sample to `OUT/predictions.jsonl` as soon as its
  group finishes, so a killed run resumes where it stopped: samples already
  in the file are not generated again;
- at the end rewrites `OUT/predictions.jsonl` in dataset order (atomically),
  so an interrupted run ends with the same file as an uninterrupted one, and
  writes `OUT/metrics.json` atomically, aggregated over the records in dataset
  order, so it ends with the same numbers too; a task that gives them adds each
  scalar's confidence interval, computed from the same records (a folder
  written before intervals existed gets them when it is resumed).

`OUT/eval.json` records what produced the predictions (task and its spec's
version, model, data, prompt, generation settings). Resuming with different
settings is refused (`keeptune.core.resume.check_same`, naming the changed
keys): predictions of two configurations must never mix. Batch sizes are left
out of that check because they do not change greedy outputs.

Under torchrun, inside `keeptune.evaluate.shard.sharded()`, every rank runs the
engine on its own copy of the model: rank 0 alone holds the lock, checks the
settings and reads what is done; each rank generates its share of the rest
(`shard.share` of the prompts, longest first) and appends it to its own
`OUT/predictions.rankR.jsonl`; the records are gathered, and rank 0 writes
predictions.jsonl and metrics.json as one process would (the same bytes, but
`seconds`) and removes the rank files. A resumed run of any world size, one
process included, folds every rank file it finds into predictions.jsonl first
(records are keyed by sample id), so a kill of any rank loses only the groups
it had not finished.
"""
from __future__ import annotations

import contextlib
import functools
import json
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from keeptune.core.errors import DataError, ResumeMismatchError
from keeptune.core.io import (
    append_jsonl,
    atomic_write_json,
    atomic_write_text,
    dumps,
    read_jsonl_prefix,
    write_jsonl,
    writing_to,
)
from keeptune.core.outputs import locked, note_progress
from keeptune.core.resume import check_same
from keeptune.evaluate import shard
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


class ScoringTask(Protocol):
    """A task that makes its records itself instead of generating (an lm-eval task, keeptune.evaluate.lmeval):
    the engine resumes, shards, gathers and writes them as it does generations."""

    name: str
    samples: Sequence[Any]

    def scorer(self, model, tokenizer) -> Any:
        """What `records` runs the samples through (built once per evaluation, only when there is work)."""

    def records(self, scorer: Any, samples: list) -> list[dict]:
        """The records of `samples`, in order (one chunk of them: what a kill may lose)."""

    def cost(self, sample: Any) -> int:
        """How long a sample takes, roughly: each rank gets long and short ones alike."""

    def run_settings(self) -> dict:
        """What metrics.json records of how it ran (batch sizes: they do not change a record)."""

    def aggregate(self, records: list[dict]) -> dict: ...

    def summary(self, metrics: dict) -> list[str]: ...


# A sharded run's per-rank predictions (the rank for *), folded into predictions.jsonl when it ends or resumes.
RANK_FILES = "predictions.rank*.jsonl"

# Records a ScoringTask makes between two appends: what a kill may lose (an lm-eval task: documents).
CHUNK = 64

# What an eval.json written before task specs had versions lacks: every spec then was version 1.
UNVERSIONED = {"task_version": 1}


def eos_token_ids(tokenizer, model) -> list[int]:
    """Every token that ends a generation: the tokenizer's and the model's EOS."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    return sorted(i for i in ids if i is not None)


def _resume(out: Path, identity: dict) -> dict[str, dict]:
    """Records already written for this configuration, keyed by sample id: predictions.jsonl's, and those a
    sharded run left in its ranks' files (of any world size), which join predictions.jsonl here."""
    eval_file, predictions = out / "eval.json", out / "predictions.jsonl"
    if eval_file.is_file():
        previous = json.loads(eval_file.read_text(encoding="utf-8"))
        previous = {**{k: v for k, v in UNVERSIONED.items() if k in identity}, **previous}
        check_same(previous, identity, f"{out} holds predictions made",
                   "use another --out, or delete the directory to start over")
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(eval_file, identity)
    done: dict[str, dict] = {}
    if predictions.is_file():
        records, complete = read_jsonl_prefix(predictions)
        with open(predictions, "r+b") as handle:  # drop a line torn by a kill
            handle.truncate(complete)
        done = {record["id"]: record for record in records}
    shards = sorted(out.glob(RANK_FILES))
    if shards:  # a torn last line is left out; a record in two files (a kill mid-merge) is the same record
        for path in shards:
            done.update((r["id"], r) for r in read_jsonl_prefix(path)[0] if r["id"] not in done)
        write_jsonl(predictions, done.values())  # first, so that a kill between the two steps loses nothing
        for path in shards:
            path.unlink()
    return done


def _written(out: Path) -> int:
    """Predictions on disk now: predictions.jsonl's and every rank file's."""
    return sum(len(read_jsonl_prefix(path)[0]) for path in [out / "predictions.jsonl", *out.glob(RANK_FILES)]
               if path.is_file())


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

    Inside `keeptune.evaluate.shard.sharded()` under torchrun, every rank calls it with its own
    copy of the model and generates its share of the samples (see the module's docstring).
    """
    with contextlib.ExitStack() as held:  # rank 0 holds OUT/.lock in it until the end
        return _evaluate(task, model, tokenizer, Path(out), settings, identity, add_bos, skip_bad, held)


def _encode(task, model, tokenizer, settings: GenerationSettings, add_bos: bool, skip_bad: bool):
    """Every prompt encoded and measured before anything is written or generated: (samples kept, their ids,
    ids of the skipped). Every rank does it alike, so a bad prompt stops them all at once."""
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
    if skipped and shard.rank_world()[0] == 0:
        print(f"skipped {len(skipped)} samples whose prompt does not fit the model's context of {room} tokens")
    return [s for s in task.samples if s.id in encoded], encoded, skipped


def _claim(step):
    """`shard.lead(step)`; on the other ranks, a ResumeMismatchError of rank 0 means that rank 0 deletes the
    folder and evaluates again (`evaluate_fresh`): they wait for that attempt instead of deleting it too."""
    while True:
        try:
            return shard.lead(step)
        except shard.RankFailed as err:
            if err.kind != ResumeMismatchError.__name__:
                raise


def _evaluate(task, model, tokenizer, out: Path, settings: GenerationSettings, identity: dict, add_bos: bool,
              skip_bad: bool, held: contextlib.ExitStack) -> dict:
    described = task.describe() if hasattr(task, "describe") else {}
    if hasattr(task, "records"):  # a ScoringTask: it makes each record itself, no generation
        def scored(mine: list, bar) -> Iterator[list[dict]]:
            scorer = task.scorer(model, tokenizer) if mine else None
            for start in range(0, len(mine), CHUNK):
                yield task.records(scorer, mine[start:start + CHUNK])

        return _run(task, out, {"task": task.name, **described, **identity}, task.samples, [], task.cost, scored,
                    task.run_settings(), described, identity, held)

    eos, pad = eos_token_ids(tokenizer, model), tokenizer.pad_token_id
    generation = settings.describe(eos, pad) | {"add_bos": add_bos}
    if shard.rank_world()[0] == 0:
        print("generation config:", json.dumps(generation))
    resumable = {k: v for k, v in generation.items() if k not in ("batch_size", "prefill_batch_size")}
    samples, encoded, skipped = _encode(task, model, tokenizer, settings, add_bos, skip_bad)

    def generated(mine: list, bar) -> Iterator[list[dict]]:
        for group in generate(model, [encoded[s.id] for s in mine], settings, eos, pad,
                              progress=bar.set_postfix_str):
            yield [task.score(mine[i], tokenizer.decode(tokens, skip_special_tokens=True)) for i, tokens in group]

    return _run(task, out, {"task": task.name, **described, **identity, "generation": resumable}, samples, skipped,
                lambda s: len(encoded[s.id]), generated, {"generation": generation}, described, identity, held)


def _run(task, out: Path, key: dict, samples: list, skipped: list, cost: Callable[[Any], int],
         produce: Callable[[list, Any], Iterator[list[dict]]], settings: dict, described: dict, identity: dict,
         held: contextlib.ExitStack) -> dict:
    """What every evaluation does around making its records: rank 0 locks OUT, checks `key` against eval.json and
    reads what is done; each rank `produce`s the records of its share of the rest (costliest first, dealt in
    turn) into its file; the records are gathered; rank 0 writes predictions.jsonl and metrics.json."""
    rank, world = shard.rank_world()
    done: dict[str, dict] = {}

    def claim() -> list[str]:  # rank 0: the lock, the settings check, what is already done
        held.enter_context(locked(out, "another evaluation is writing into this directory now; wait for it to "
                                       "finish or choose another --out"))
        done.update(_resume(out, key))
        if done:
            print(f"resuming: {sum(s.id in done for s in samples)} of {len(samples)} samples already in {out}")
        return list(done)

    finished = set(_claim(claim))
    todo = [s for s in samples if s.id not in finished]
    # Longest first, dealt in turn: every rank gets as many long prompts as short ones.
    mine = shard.share(sorted(todo, key=lambda s: -cost(s)))

    started = time.perf_counter()
    kept = out / ("predictions.jsonl" if world == 1 else RANK_FILES.replace("*", str(rank)))
    note_progress(saved=lambda: f"{_written(out)} of {len(samples)} predictions are in {out}" if world > 1 else
                  f"{len(read_jsonl_prefix(kept)[0])} of {len(samples)} predictions are in {kept}")
    new = []
    with writing_to(kept), open(kept, "a", encoding="utf-8") as handle, \
            tqdm(total=len(mine), unit="sample", desc=task.name, dynamic_ncols=True, disable=rank != 0) as bar:
        for records in produce(mine, bar):
            append_jsonl(handle, records)
            new.extend(records)
            bar.update(len(records))
    new = shard.gather(new)  # every rank's records (in one process: its own)

    def finish() -> dict:  # rank 0: predictions.jsonl in dataset order, metrics.json
        done.update((r["id"], r) for r in new)
        ordered = [done[s.id] for s in samples]
        _write_in_order(out, ordered)
        metrics = {**described, "task": task.name, **identity, "total_count": len(ordered),
                   **task.aggregate(ordered), **(task.uncertainty(ordered) if hasattr(task, "uncertainty") else {}),
                   **settings, "seconds": time.perf_counter() - started, "generated": len(todo),
                   "skipped": len(skipped)}
        atomic_write_json(out / "metrics.json", metrics)
        for line in task.summary(metrics):
            print(line)
        return metrics

    return shard.lead(finish)


def _write_in_order(out: Path, ordered: list[dict]) -> None:
    """predictions.jsonl as the records in dataset order (replacing the order they were generated in), so that
    every run of the same evaluation, interrupted or not, on any number of ranks, leaves the same file; the
    ranks' own files go once their records are in it."""
    predictions = out / "predictions.jsonl"
    text = "".join(dumps(r) + "\n" for r in ordered)
    if not predictions.is_file() or predictions.read_bytes() != text.encode("utf-8"):
        with writing_to(predictions):
            atomic_write_text(predictions, text)
    for path in out.glob(RANK_FILES):
        path.unlink()
