"""A task is data: a YAML spec says where its samples come from, how a sample
becomes a prompt, how a generation becomes a prediction, and which metrics
score it (in the manner of lm-evaluation-harness's YAML tasks):

    name: my-task
    description: what it measures
    metadata: {version: 1}                       # raise it when what the task measures changes
    data: {path: data.jsonl, layout: jsonl}      # or layout squad_v1; path: file, http(s), package:, shared:
    prompt: "Question: {question}\\nAnswer:"      # a format string over the sample's fields, or a name
    reference: answer                            # the field holding the label
    generation: {max_new_tokens: 32}
    postprocess: [strip, first_line]             # keeptune.evaluate.steps
    metrics: [exact_match]                       # keeptune.evaluate.metrics.registry
    gate: [exact_match.accuracy]                 # what a retention gate checks
    accuracy: exact_match.accuracy               # what enters the score when this is the new task

A spec may `include:` another (a file relative to it, or a built-in by name)
and give only what differs: the included spec's fields are the defaults, the
including spec's win, mappings are merged key by key, and errors name the file
that wrote the key. The built-ins (`squad-seed`, `math-contest`, `math-worked`)
are files of this format beside this module and go through the same code.
Everything a spec names is checked when it is read, and every record when the
samples are read, so a wrong field, metric or step is an error naming the file,
the line and the field before any model is loaded.

This module is the spec itself (its schema, reading, includes, compiling);
`keeptune.evaluate.samples` reads and checks a task's samples, and
`keeptune.evaluate.task` is the task the engine runs.
"""
from __future__ import annotations

import contextlib
import dataclasses
import os
import string
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Optional, Sequence

import yaml

from keeptune.core.config import build, parse_yaml, yaml_locations
from keeptune.core.errors import ConfigError, DataError
from keeptune.data.prompts import FORMATS, NAMED_PROMPTS
from keeptune.evaluate import steps as steps_module
from keeptune.evaluate.metrics import registry

BUILTIN_DIR = Path(__file__).resolve().parent / "tasks"
ALIASES = {"squad": "squad-seed", "math": "math-contest"}


class SpecError(DataError):
    """A task spec keeptune cannot use; the message names the file, the line and the field."""


# --- the spec ---------------------------------------------------------------------------

@dataclass(frozen=True)
class DataSpec:
    """Where the samples come from."""

    path: Optional[str] = None
    """A local file (relative to the spec's folder), an http(s) address (downloaded once into the cache),
    `package:NAME` (a file shipped in keeptune/data/files) or `shared:PATH` (../shared/data/PATH)."""
    layout: Literal["jsonl", "squad_v1"] = "jsonl"
    """jsonl: a JSON object per line, fields by name; squad_v1: the SQuAD v1.1 JSON, one sample per paragraph
    with fields id, passage, question, label (the first question's first answer) and answers (all of them)."""
    id_field: Optional[str] = None
    """jsonl: the field holding each sample's unique id; null: numbered in file order."""
    dedup: bool = False
    """jsonl: keep only the first of records equal in every field the task reads."""
    limit: Optional[int] = None
    """Evaluate the first N samples only; null: all."""
    start: int = 0
    """Skip the first N samples, then take `limit`: a part of a file that does not overlap another part (a held-out
    comparison set beside a gate's samples)."""


@dataclass(frozen=True)
class GenerationSpec:
    """Greedy decoding settings."""

    max_new_tokens: int = 20
    """Tokens generated at most."""
    min_new_tokens: Optional[int] = None
    """Forbid EOS before this many tokens; null: unset."""


@dataclass(frozen=True)
class MetadataSpec:
    """What the spec says about itself (as lm-evaluation-harness's task metadata)."""

    version: int = 1
    """The spec's version, from 1: raise it when a change alters what the task measures (samples, prompt,
    steps, metrics). metrics.json and results.json record it, predictions of another version are never
    resumed, and `keeptune runs` marks runs whose versions differ."""


@dataclass(frozen=True)
class TaskSpec:
    """One evaluation task."""

    name: str = ""
    """The task's name: output folders, tables and plots use it; never taken from an included spec (default: the
    file's name)."""
    description: str = ""
    """One line on what the task measures."""
    metadata: MetadataSpec = field(default_factory=MetadataSpec)
    """What the spec says about itself: its version."""
    data: DataSpec = field(default_factory=DataSpec)
    """Where the samples come from."""
    prompt: str = "none"
    """A named prompt (squad-seed, math, alpaca, none) or a Python format string over the sample's fields."""
    format: Literal["plain", "vicuna", "chat"] = "plain"
    """The sequence format the prompt is read in: plain, vicuna (BOS + the seed's wrapper) or chat (the model's
    chat template)."""
    add_bos: Optional[bool] = None
    """Put BOS before the prompt; null: only in the vicuna format."""
    adapter_prompt: bool = False
    """Evaluated with an adapter, use the prompt and sequence format the adapter was trained with (its
    keeptune.json): true for the task an adapter learns, false for a fixed protocol."""
    reference: str = "answer"
    """The field holding the label."""
    references: Optional[str] = None
    """The field holding every gold answer (a list), for metrics that take the best over them; null: the label."""
    roundtrip_reference: bool = False
    """Compare with the label encoded and decoded by the tokenizer, as the seed's SQuAD script did."""
    generation: GenerationSpec = field(default_factory=GenerationSpec)
    """Greedy decoding settings."""
    postprocess: tuple = ()
    """Steps from the generation to the prediction, in order (keeptune.evaluate.steps)."""
    metrics: tuple = ()
    """Metrics, each a type name or {type, name, options} (keeptune.evaluate.metrics.registry)."""
    gate: Sequence[str] = ()
    """The scalars (METRIC.SCALAR) a retention gate checks, each >= its fraction of the base model's."""
    accuracy: Optional[str] = None
    """The scalar that enters the score, (1 - ratio) x 0.3 + accuracy x 0.7, when this is the new task."""
    breakdown: Optional[str] = None
    """A scalar whose per-group [correct, total] table reports show (the math judge groups by template)."""
    source: str = "<spec>"
    """Where the spec was read from (set by the reader)."""


@dataclass
class Compiled:
    """A spec with its steps and metrics built: what evaluation runs."""

    spec: TaskSpec
    steps: list
    metrics: list

    def scalars(self) -> list[str]:
        return [f"{m.name}.{s}" for m in self.metrics for s in m.scalars()]

    def units(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for metric in self.metrics:
            out |= registry.units(metric)
        return out

    # What an experiment reads of any retention task, a spec's or an lm-eval task's (keeptune.evaluate.lmeval).
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def description(self) -> str:
        return self.spec.description

    @property
    def version(self) -> int:
        return self.spec.metadata.version

    @property
    def data_path(self):
        return self.spec.data.path

    def lower_is_better(self) -> list[str]:
        """The scalars whose loss is a rise: none of a spec's metrics."""
        return []


# --- reading ----------------------------------------------------------------------------

def builtin_names() -> list[str]:
    return sorted(p.stem for p in BUILTIN_DIR.glob("*.yaml"))


def spec_path(name_or_path: str | Path) -> Path:
    """The YAML file of a built-in name (or alias) or of a path."""
    text = str(name_or_path)
    candidate = Path(text).expanduser()
    if candidate.is_file():
        return candidate
    builtin = BUILTIN_DIR / f"{ALIASES.get(text, text)}.yaml"
    if builtin.is_file():
        return builtin
    if text.endswith((".yaml", ".yml")) or "/" in text:
        raise SpecError(f"task spec {text} does not exist")
    raise SpecError(f"unknown task {text!r}: not a file, and the built-in tasks are "
                    f"{', '.join(builtin_names())} (aliases: {', '.join(f'{k} = {v}' for k, v in ALIASES.items())})")


def _read(path: Path) -> tuple[dict, dict[str, str]]:
    """A spec file's mapping and the FILE:LINE of every key (dotted) and list item (``key[i]``)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
        tree, root = parse_yaml(text, path)  # aliases bounded, a repeated key refused
    except ConfigError as err:
        raise SpecError(str(err)) from None
    except UnicodeDecodeError as err:
        raise SpecError(f"{path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    except OSError as err:
        raise SpecError(f"{path}: cannot read ({err.strerror or err})") from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        raise SpecError(f"{path}{f':{mark.line + 1}' if mark else ''}: not valid YAML "
                        f"({getattr(err, 'problem', None) or err})") from None
    if not isinstance(tree, dict):
        raise SpecError(f"{path}: a task spec is a mapping of fields (name, data, prompt, metrics, ...)")
    return tree, yaml_locations(path, root)


def _included_path(name: Any, path: Path, where: str) -> Path:
    """The file `include: NAME` of the spec at `path` names: a file relative to it, else a built-in task."""
    if isinstance(name, str) and name:
        for candidate in (path.parent / name, BUILTIN_DIR / f"{ALIASES.get(name, name)}.yaml"):
            with contextlib.suppress(OSError):  # a name too long for a path is no file either
                if candidate.is_file():
                    return candidate
    raise SpecError(f"{where}: field 'include': {name!r} is neither a spec file (relative to {path}) nor a "
                    f"built-in task ({', '.join(builtin_names())})")


def read_spec(path: Path, including: tuple[Path, ...] = ()) -> tuple[dict, dict[str, str]]:
    """A spec's mapping with its `include:` (and theirs) merged under it, and each key's FILE:LINE in the
    file that wrote it. The including spec's keys win; mappings both give are merged key by key; the name
    is never inherited."""
    tree, where = _read(path)
    if "include" not in tree:
        return tree, where
    chain = (*including, path.resolve())
    base_path = _included_path(tree.pop("include"), path, where["include"])
    if base_path.resolve() in chain:
        cycle = " -> ".join(str(p) for p in (*chain, base_path.resolve()))
        raise SpecError(f"{where['include']}: field 'include': the specs include each other ({cycle})")
    base, base_where = read_spec(base_path, chain)
    base.pop("name", None)
    data = base.get("data")
    if isinstance(data, dict) and _local_relative(data.get("path")):  # relative to the file that wrote it
        base["data"] = {**data, "path": os.path.abspath(base_path.parent / data["path"])}
    return _merge(base, base_where, tree, where, "")


def _local_relative(path: Any) -> bool:
    """A relative path of a local file (not an address, `package:` or `shared:`)."""
    return (isinstance(path, str) and not path.startswith(("http://", "https://", "package:", "shared:", "~"))
            and not Path(path).is_absolute())


def _merge(base: dict, base_where: dict, top: dict, top_where: dict, prefix: str) -> tuple[dict, dict]:
    """`top` over `base` (both with their FILE:LINE maps): a key of `top` replaces the same key of `base`,
    and its locations those of `base`, unless both values are mappings, which merge key by key."""
    tree, where = dict(base), dict(base_where)
    for key, value in top.items():
        dotted = prefix + str(key)
        if isinstance(value, dict) and isinstance(tree.get(key), dict):
            tree[key], where = _merge(tree[key], where, value, {}, dotted + ".")
        else:
            tree[key] = value
            where = {k: v for k, v in where.items()
                     if not (k == dotted or k.startswith((dotted + ".", dotted + "[")))}
    return tree, {**where, **top_where}


def load_spec(name_or_path: str | Path, changes: Optional[dict] = None) -> Compiled:
    """Read, type-check and compile a task spec; `changes` (dotted field -> value) override it."""
    path = spec_path(name_or_path)
    tree, where = read_spec(path)
    for key in ("postprocess", "metrics"):  # free-form entries: checked by the step and metric builders
        if key in tree and not isinstance(tree[key], list):
            raise SpecError(f"{where.get(key, path)}: field {key!r} is a list")
    free = {k: tuple(tree.pop(k)) for k in ("postprocess", "metrics") if k in tree}
    try:
        spec = build(TaskSpec, tree, where, "", str(path))
    except ConfigError as err:
        raise SpecError(str(err)) from None
    spec = dataclasses.replace(spec, **free, source=str(path), name=spec.name or path.stem)
    for dotted, value in (changes or {}).items():
        spec = _change(spec, dotted, value)
    return compile_spec(spec, where)


def _change(spec: TaskSpec, dotted: str, value: Any) -> TaskSpec:
    """`spec` with one field changed; `extraction` names the option of its math_extract step."""
    if dotted == "extraction":
        steps = [{**s, "math_extract": value} if isinstance(s, dict) and "math_extract" in s else s
                 for s in spec.postprocess]
        if steps == list(spec.postprocess) and value not in [s.get("math_extract") for s in steps
                                                            if isinstance(s, dict)]:
            raise SpecError(f"{spec.source}: extraction {value!r} given, but the task has no math_extract step")
        return dataclasses.replace(spec, postprocess=tuple(steps))
    head, _, rest = dotted.partition(".")
    if rest:
        return dataclasses.replace(spec, **{head: dataclasses.replace(getattr(spec, head), **{rest: value})})
    return dataclasses.replace(spec, **{head: value})


def prompt_template(prompt: str) -> str:
    return NAMED_PROMPTS.get(prompt, prompt)


def render_prompt(spec: TaskSpec, fields: dict) -> str:
    """The spec's prompt over a sample's fields (before any sequence format wraps it)."""
    template = prompt_template(spec.prompt)
    return template.format_map({name: fields[name] for name in prompt_fields(template)})


def prompt_fields(template: str) -> list[str]:
    """The fields a format string reads; SpecError for anything but plain names."""
    names = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as err:
        raise SpecError(f"prompt {template!r} is not a valid format string ({err}); write a literal brace as "
                        "{{ or }}") from None
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if not name.isidentifier() or spec or conversion:
            raise SpecError(f"prompt field {{{name}}} must be a plain field name (no attribute, index, conversion "
                            "or format spec)")
        names.append(name)
    return names


def compile_spec(spec: TaskSpec, where: Optional[dict] = None) -> Compiled:
    """Build the steps and metrics and check every cross-reference of the spec."""
    where = where or {}

    def error(key: str, message: str) -> SpecError:
        return SpecError(f"{where.get(key, spec.source)}: field {key!r}: {message}")

    template = prompt_template(spec.prompt)
    try:
        fields = prompt_fields(template)
    except SpecError as err:
        raise error("prompt", str(err)) from None
    if not fields and spec.prompt not in NAMED_PROMPTS:
        raise error("prompt", f"{spec.prompt!r} is neither a named prompt ({', '.join(NAMED_PROMPTS)}) nor a "
                              "format string over the sample's fields such as 'Q: {question}\\nA:'")
    built_steps, metrics = [], []
    for i, entry in enumerate(spec.postprocess):
        try:
            built_steps.append(steps_module.make_step(entry))
        except steps_module.StepError as err:
            raise error(f"postprocess[{i}]", str(err)) from None
    for i, entry in enumerate(spec.metrics):
        try:
            metrics.append(registry.make_metric(entry))
        except (registry.MetricError, TypeError) as err:
            raise error(f"metrics[{i}]", str(err)) from None
    if not metrics:
        raise error("metrics", "a task needs at least one metric; the metrics: " + ", ".join(registry.TYPES))
    names = [m.name for m in metrics]
    if len(set(names)) != len(names):
        raise error("metrics", f"two metrics share a name ({names}); give one a `name:`")
    compiled = Compiled(spec, built_steps, metrics)
    scalars = compiled.scalars()
    for key, values in (("gate", spec.gate), ("accuracy", [spec.accuracy] if spec.accuracy else []),
                        ("breakdown", [spec.breakdown] if spec.breakdown else [])):
        for value in values:
            if value not in scalars:
                raise error(key, f"{value!r} is not a scalar of this task's metrics; they are: {', '.join(scalars)}")
    if spec.breakdown:
        metric = next(m for m in metrics if spec.breakdown.startswith(m.name + "."))
        if not isinstance(metric, registry.MathJudge):
            raise error("breakdown", f"metric {metric.name!r} ({metric.type}) has no per-group breakdown")
    if any(m.needs_references for m in metrics) and not spec.references:
        kinds = [m.type for m in metrics if m.needs_references]
        raise error("references", f"metrics {kinds} need a field of all gold answers (e.g. references: answers)")
    for key, value in (("data.limit", spec.data.limit), ("generation.max_new_tokens", spec.generation.max_new_tokens),
                       ("metadata.version", spec.metadata.version)):
        if value is not None and value < 1:
            raise error(key, f"is {value}; it must be at least 1")
    if spec.data.start < 0:
        raise error("data.start", f"is {spec.data.start}; it must be 0 or more")
    if spec.generation.min_new_tokens is not None and not 0 <= spec.generation.min_new_tokens <= \
            spec.generation.max_new_tokens:
        raise error("generation.min_new_tokens", "must be between 0 and max_new_tokens")
    if spec.format not in FORMATS:
        raise error("format", f"{spec.format!r}; choose one of {', '.join(FORMATS)}")
    return compiled
