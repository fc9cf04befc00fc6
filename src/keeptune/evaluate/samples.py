"""A task's samples: where its data file is (a local file relative to the spec, an address downloaded
once, a packaged or shared file), and every record read and checked for the fields the task reads,
so a missing or malformed field is an error naming the file, the line and the field before any model
is loaded (or, with `skip_bad`, a record left out and counted)."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from keeptune.core.errors import DataError, MalformedLineError
from keeptune.core.io import decode_line, json_line, read_lines
from keeptune.data.shared import packaged_file, shared_file
from keeptune.data.squad import fetch, load_samples
from keeptune.evaluate.spec import Compiled, SpecError, TaskSpec, prompt_fields, prompt_template


@dataclass(frozen=True)
class Sample:
    id: str
    fields: dict
    where: str  # FILE:LINE (or FILE: data[a].paragraphs[p]) for error messages


def given_path(path: str | None) -> str | None:
    """A path given on the command line or in a config, made absolute against the working directory
    (a spec's own `data.path` is relative to the spec); an http(s) address as it is."""
    if path is None or path.startswith(("http://", "https://")):
        return path
    return str(Path(path).expanduser().resolve())


def resolve_data_path(spec: TaskSpec) -> Path:
    """The local file of the spec's data (downloaded once when it is an address)."""
    path = spec.data.path
    if path is None:
        raise SpecError(f"{spec.source}: field 'data.path' is not set; give the task's samples")
    if path.startswith(("http://", "https://")):
        return fetch(path)
    try:
        if path.startswith("package:"):
            return packaged_file(path.removeprefix("package:"))
        if path.startswith("shared:"):
            return shared_file(path.removeprefix("shared:"), f"Pass --data (or set data.path in {spec.source}).")
    except DataError as err:
        raise SpecError(f"{spec.source}: field 'data.path': {err}") from None
    local = Path(path).expanduser()
    if not local.is_absolute() and spec.source != "<spec>" and not local.is_file():
        beside = Path(spec.source).parent / local
        local = beside if beside.is_file() else local
    if not local.is_file():
        raise SpecError(f"{spec.source}: field 'data.path': {local} does not exist")
    return local


def needed_fields(compiled: Compiled) -> list[str]:
    """Every field the task reads from a sample: the prompt's, the reference(s), the steps' and the metrics'."""
    spec = compiled.spec
    wanted = [*prompt_fields(prompt_template(spec.prompt)), spec.reference]
    wanted += [spec.references] if spec.references else []
    wanted += [f for step in compiled.steps for f in step.fields] + [f for m in compiled.metrics for f in m.fields()]
    return list(dict.fromkeys(wanted))


def load_task_samples(compiled: Compiled, path: Path, skip_bad: bool = False) -> list[Sample]:
    """Every sample of the task, each checked for the fields the spec reads (file, line, field).

    With `skip_bad`, a JSON-lines record that is not UTF-8, not JSON or lacks a field is left out
    and counted instead (the first one is printed)."""
    spec = compiled.spec
    wanted = needed_fields(compiled)
    if spec.data.layout == "squad_v1":
        samples = [Sample(s.id, {"id": s.id, "passage": s.passage, "question": s.question, "label": s.label,
                                 "answers": list(s.answers)}, f"{path}: paragraph {i}")
                   for i, s in enumerate(load_samples(path))]
        missing = [f for f in wanted if f not in samples[0].fields]
        if missing:
            raise SpecError(f"{spec.source}: the squad_v1 layout has fields id, passage, question, label, answers; "
                            f"the spec reads {', '.join(map(repr, missing))}")
    else:
        samples = _jsonl_samples(spec, path, wanted, skip_bad)
    if not samples:
        raise DataError(f"{path}: no samples")
    if spec.data.start >= len(samples):
        raise DataError(f"{path}: data.start is {spec.data.start}, but the file has {len(samples)} samples")
    return samples[spec.data.start:][:spec.data.limit]


def _jsonl_samples(spec: TaskSpec, path: Path, wanted: list[str], skip_bad: bool) -> list[Sample]:
    samples, seen, ids, bad = [], set(), set(), []
    for number, raw in read_lines(path):
        try:
            text = decode_line(raw, path, number)
            if not text.strip():
                continue
            record = _check_record(spec, json_line(text, path, number), path, number, wanted)
        except MalformedLineError as err:
            if not skip_bad:
                raise
            bad.append(err)
            continue
        if spec.data.dedup:
            key = json.dumps([record[f] for f in wanted], ensure_ascii=False)
            if key in seen:
                continue
            seen.add(key)
        sample_id = str(record[spec.data.id_field]) if spec.data.id_field else f"{spec.name}-{len(samples)}"
        if sample_id in ids:
            raise MalformedLineError(path, number, spec.data.id_field, f"id {sample_id!r} repeats an earlier one")
        ids.add(sample_id)
        samples.append(Sample(sample_id, record, f"{path}:{number}"))
    if bad:
        print(f"skipped {len(bad)} malformed lines of {path}; the first: {bad[0]}")
    return samples


def _check_record(spec: TaskSpec, record: Any, path: Path, number: int, wanted: list[str]) -> dict:
    if not isinstance(record, dict):
        raise MalformedLineError(path, number, None, f"not a JSON object ({type(record).__name__})")
    for name in wanted + ([spec.data.id_field] if spec.data.id_field else []):
        if name not in record:
            raise MalformedLineError(path, number, name, f"missing (the task {spec.name} reads it)")
    if spec.references and not (isinstance(record[spec.references], list)
                                and all(isinstance(a, str) for a in record[spec.references])):
        raise MalformedLineError(path, number, spec.references, "not a list of strings")
    if not isinstance(record[spec.reference], str):
        raise MalformedLineError(path, number, spec.reference, "not a string")
    return record
