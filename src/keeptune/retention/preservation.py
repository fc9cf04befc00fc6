"""Preservation data: samples of the old skills that retention methods train or measure on
(`corda`'s covariance prompts, `replay`'s self-distillation records), never the gate's own.

`retention.preservation` names where they come from:

- a SQuAD v1.1 file or an http(s) address (downloaded once into keeptune's cache), e.g. the
  official training set `OFFICIAL_TRAIN_URL`, which shares no article with the dev set;
- a task spec (a YAML file or a built-in name): its samples, read as `keeptune eval` reads them;
- null: the offline default, *self-written* data: the base model writes a short encyclopedia
  paragraph on each of a fixed list of topics that have nothing to do with the gate's article
  (`TOPICS`), then one question about it (docs/retention.md explains the choice). It needs the
  model, so it is made after the baseline and cached in the run directory.

`retention.preservation_samples` of the source's samples are used, evenly spaced over it (sample
floor(k x M / N) of M, k = 0..N-1: the whole file, not its first article). Each is rendered as a prompt
in the format of the retention task it preserves (`render_prompt` over the task's spec: squad-seed's
exact prompt), dealt in turn to the retention tasks whose prompt it can fill.

Leak check: a chosen sample that shares a passage (equal after folding case and whitespace, or one
containing the other) or its whole prompt with a sample a retention task evaluates is refused with a
ConfigError naming the source, how many overlap and which, unless `retention.allow_overlap` (the
report then says so).

For the other retention agents, the stable entry point:

    preservation_prompts(retention, gated_tasks, cache=None, model=None, tokenizer=None,
                         identity=None, batch_size=64) -> list[str]

`gated_tasks`: the retention tasks as `SpecTask`s over the samples they evaluate (the runner's
`tasks[:-1]`; with a tokenizer when a task's format is `chat`). Returns the text the model reads
before answering, one per preservation sample: the task's prompt in its sequence format (BOS not
included: add it where the task's `add_bos` says; squad-seed has none). `cache`, `model` and
`tokenizer` are needed by the offline default only (`identity` keys its cache, e.g. the model's name).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence

from keeptune.core.errors import ConfigError, DataError
from keeptune.core.io import write_jsonl
from keeptune.data.squad import OFFICIAL_TRAIN_URL, resolve_data
from keeptune.evaluate.samples import Sample, given_path, load_task_samples, resolve_data_path
from keeptune.evaluate.spec import ALIASES, builtin_names, load_spec, prompt_fields, prompt_template, render_prompt
from keeptune.evaluate.task import SpecTask
from keeptune.retention.selfwritten import FIELDS, self_written
from keeptune.train.config import RetentionConfig

FIELD = "retention.preservation"
# A passage inside another counts as shared from this many characters on (a SQuAD paragraph has ~700;
# shorter texts must be equal).
CONTAINED = 100


@dataclass(frozen=True)
class Preserved:
    """One preservation sample, rendered for the retention task it preserves."""

    sample: Sample  # the source's sample: id, fields (passage, question, ...), where
    task: str  # the retention task whose prompt renders it
    prompt: str  # render_prompt(task's spec, fields): before the task's sequence format


@dataclass
class Preservation:
    """The chosen preservation samples and where they came from."""

    source: str  # what retention.preservation named, in words
    available: int  # samples the source holds
    items: list[Preserved]
    overlap: list[str] = field(default_factory=list)  # ids sharing a passage or prompt with the gate (allowed)

    def describe(self) -> str:
        """One line for the report's settings."""
        leak = (f"{len(self.overlap)} overlap the gate's samples (allowed by retention.allow_overlap)"
                if self.overlap else "none overlaps the gate's samples")
        used = (f"all {self.available} samples" if len(self.items) == self.available
                else f"{len(self.items)} of {self.available} samples (evenly spaced)")
        return f"{self.source}: {used}; {leak}"

    def digest(self) -> str:
        """Of every item's task, id and prompt: what replay and corda depend on."""
        digest = hashlib.sha256()
        for item in self.items:
            digest.update(json.dumps([item.task, item.sample.id, item.prompt], ensure_ascii=False).encode())
        return digest.hexdigest()


def needs_preservation(retention: RetentionConfig) -> bool:
    return bool({"corda", "replay"} & set(retention.methods))


def preservation_prompts(retention: RetentionConfig, gated_tasks: Sequence[SpecTask], cache: Optional[Path] = None,
                         model=None, tokenizer=None, identity: Optional[dict] = None,
                         batch_size: int = 64) -> list[str]:
    """The text the model reads before answering, for every preservation sample (see the module's docstring)."""
    preservation = load_preservation(retention, gated_tasks, cache, model, tokenizer, identity, batch_size)
    return model_texts(preservation, gated_tasks)


def model_texts(preservation: Preservation, gated_tasks: Sequence[SpecTask]) -> list[str]:
    """Each item's prompt in the sequence format of its task (what the engine feeds the model)."""
    tasks = {t.name: t for t in gated_tasks}
    return [tasks[item.task].prompt(item.sample) for item in preservation.items]


def load_preservation(retention: RetentionConfig, gated_tasks: Sequence[SpecTask], cache: Optional[Path] = None,
                      model=None, tokenizer=None, identity: Optional[dict] = None,
                      batch_size: int = 64) -> Preservation:
    """The preservation samples, chosen, rendered and checked against the gate (ConfigError on overlap)."""
    if retention.preservation is not None:
        source, samples = read_source(retention.preservation)
    else:
        if model is None or tokenizer is None or cache is None:
            raise ValueError("the offline default (retention.preservation: null) is written by the base model: "
                             "pass cache, model and tokenizer")
        source, samples = self_written(retention.preservation_samples, model, tokenizer, cache,
                                       identity or {}, batch_size)
    return choose_and_check(retention, gated_tasks, source, samples)


def plan_preservation(retention: RetentionConfig, gated_tasks: Sequence[SpecTask]) -> Optional[Preservation]:
    """Before any model is loaded: a file or task spec is read, chosen and checked for leaks now (None when
    no method needs it); the offline default is only checked to fit the retention tasks' prompts."""
    if not needs_preservation(retention):
        return None
    if retention.preservation is None:
        renderable(gated_tasks, FIELDS, "the offline default (self-written passages and questions)")
        return None
    source, samples = read_source(retention.preservation)
    return choose_and_check(retention, gated_tasks, source, samples)


def choose_and_check(retention: RetentionConfig, gated_tasks: Sequence[SpecTask], source: str,
                     samples: list[Sample]) -> Preservation:
    chosen = evenly_spaced(samples, retention.preservation_samples)
    items = render(chosen, gated_tasks, source)
    found = overlaps(items, gated_tasks)
    if found and not retention.allow_overlap:
        raise overlap_error(source, len(items), found)
    return Preservation(source, len(samples), items, sorted({item.sample.id for item, _, _ in found}))


# --- the source -----------------------------------------------------------------------------

def is_task_spec(text: str) -> bool:
    """A YAML file or a built-in task's name; anything else (a .json file, an address) is SQuAD data."""
    if text.startswith(("http://", "https://")):
        return False
    return text.endswith((".yaml", ".yml")) or text in builtin_names() or text in ALIASES


def read_source(preservation: str) -> tuple[str, list[Sample]]:
    """(what it is, in words; its samples) of a SQuAD file or address, or of a task spec."""
    if is_task_spec(preservation):
        compiled = load_spec(given_path(preservation) if preservation.endswith((".yaml", ".yml")) else preservation)
        samples = load_task_samples(compiled, resolve_data_path(compiled.spec))
        return f"task {compiled.spec.name} ({Path(compiled.spec.data.path or '').name})", samples
    try:
        path = resolve_data(given_path(preservation))
    except DataError as err:
        raise ConfigError(f"field {FIELD!r}: {err} (a SQuAD v1.1 file or address such as {OFFICIAL_TRAIN_URL}, "
                          "or a task spec)") from None
    # Read as the squad-seed task reads its data: one sample per paragraph, fields id, passage, question, ...
    samples = load_task_samples(load_spec("squad-seed", {"data.path": str(path)}), path)
    return f"SQuAD file {path.name if not preservation.startswith('http') else preservation}", samples


def evenly_spaced(samples: list, n: int) -> list:
    """n of the samples, spread over all of them: index floor(k x M / n) for k = 0..n-1 (all when M <= n)."""
    m = len(samples)
    if m <= n:
        return list(samples)
    return [samples[k * m // n] for k in range(n)]


# --- rendering --------------------------------------------------------------------------------

def needed(task: SpecTask) -> list[str]:
    return prompt_fields(prompt_template(task.spec.prompt))


def renderable(gated_tasks: Sequence[SpecTask], fields, source: str) -> list[SpecTask]:
    """The retention tasks whose prompt reads only `fields`; ConfigError when none does."""
    fit = [t for t in gated_tasks if all(f in fields for f in needed(t))]
    if not fit:
        wants = "; ".join(f"{t.name} reads {', '.join(needed(t)) or 'no field'}" for t in gated_tasks)
        raise ConfigError(f"field {FIELD!r}: {source} has the fields {', '.join(sorted(fields))}, and no retention "
                          f"task's prompt can be filled from them ({wants}); give preservation data with those "
                          "fields (a task spec whose samples have them)")
    return fit


def render(samples: list[Sample], gated_tasks: Sequence[SpecTask], source: str) -> list[Preserved]:
    """Each sample rendered in the prompt of a retention task it fits, dealt to those tasks in turn."""
    if not samples:
        raise ConfigError(f"field {FIELD!r}: {source} holds no sample")
    fit = renderable(gated_tasks, samples[0].fields, source)
    items = []
    for i, sample in enumerate(samples):
        task = fit[i % len(fit)]
        missing = [f for f in needed(task) if f not in sample.fields]
        if missing:
            raise DataError(f"{sample.where}: field {missing[0]!r}: missing (the preservation sample is rendered in "
                            f"task {task.name}'s prompt)")
        items.append(Preserved(sample, task.name, render_prompt(task.spec, sample.fields)))
    return items


# --- the leak check ---------------------------------------------------------------------------

def folded(text) -> str:
    return " ".join(str(text).split()).casefold()


def shares(a: str, b: str) -> bool:
    """Equal passages, or one inside the other (from CONTAINED characters on)."""
    return a == b or (len(b) >= CONTAINED and b in a) or (len(a) >= CONTAINED and a in b)


def overlaps(items: list[Preserved], gated_tasks: Sequence[SpecTask]) -> list[tuple[Preserved, str, str]]:
    """(item, retention task, why) of every item that shares a passage or its prompt with an evaluated sample."""
    passages = {t.name: {folded(s.fields["passage"]) for s in t.samples if isinstance(s.fields.get("passage"), str)}
                for t in gated_tasks}
    prompts = {t.name: {render_prompt(t.spec, s.fields) for s in t.samples} for t in gated_tasks}
    found = []
    for item in items:
        passage = item.sample.fields.get("passage")
        for task in gated_tasks:
            if isinstance(passage, str) and any(shares(folded(passage), g) for g in passages[task.name]):
                found.append((item, task.name, "its passage"))
            elif item.task == task.name and item.prompt in prompts[task.name]:
                found.append((item, task.name, "its prompt"))
            else:
                continue
            break
    return found


def overlap_error(source: str, chosen: int, found: list[tuple[Preserved, str, str]]) -> ConfigError:
    by_task: dict[str, int] = {}
    for _, task, _ in found:
        by_task[task] = by_task.get(task, 0) + 1
    counts = ", ".join(f"{n} with {task}" for task, n in by_task.items())
    shown = "; ".join(f"{item.sample.where} (id {item.sample.id}: {why})" for item, _, why in found[:3])
    more = f"; and {len(found) - 3} more" if len(found) > 3 else ""
    return ConfigError(
        f"field {FIELD!r}: {len(found)} of the {chosen} preservation samples from {source} share a passage or a "
        f"prompt with what the retention gate evaluates ({counts}): {shown}{more}. Trained on, they would leak "
        "into the gate. Give preservation data without them (SQuAD v1.1's training set shares no article with "
        f"its dev set: retention.preservation={OFFICIAL_TRAIN_URL}; or null, the offline default), or set "
        "retention.allow_overlap=true to use them anyway (the report then says so)")


def write_items(path: Path, preservation: Preservation) -> None:
    """The chosen samples as JSON lines (task, id, fields, prompt), for a reader of the run directory."""
    write_jsonl(path, ({"task": i.task, "id": i.sample.id, "fields": i.sample.fields, "prompt": i.prompt}
                       for i in preservation.items))

