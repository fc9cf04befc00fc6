"""Records per template of a math data file: raw ``problem``/``solution`` lines or
conversation records (JSON lines, or one JSON array as the seed wrote them)."""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from keeptune.core.errors import DataError
from keeptune.core.io import located_jsonl
from keeptune.data.math.loader import Pair, pair_key
from keeptune.data.math.templates import ALL_NAMES, classify
from keeptune.data.prompts import unwrap_prompt

log = logging.getLogger("keeptune")


class BadRecordError(DataError):
    """A record of a math data file that is neither a problem/solution pair nor a conversation."""


def record_pair(record: Any, where: str = "record") -> tuple[Pair, str]:
    """(problem, answer) of a raw or conversation record, and its template name.

    A conversation record's name is its ``template`` key when present, else the
    class of its problem (the human turn without a known prompt template). A record
    without its answer (no ``solution``, no gpt turn) or with a field of the wrong
    type is a BadRecordError naming `where` (``FILE:LINE``) and the field: it is not
    counted under the template its problem looks like.
    """
    def bad(field: str | None, why: str) -> BadRecordError:
        return BadRecordError(f"{where}: {f'field {field!r}: ' if field else ''}{why}")

    if not isinstance(record, dict):
        raise bad(None, f"not a JSON object ({type(record).__name__})")
    if "problem" in record:
        for field in ("problem", "solution"):
            if field not in record:
                raise bad(field, "missing")
            if not isinstance(record[field], str):
                raise bad(field, f"not a string ({type(record[field]).__name__})")
        pair = Pair(record["problem"], record["solution"])
        return pair, classify(pair.problem)
    if "conversations" in record:
        turns = record["conversations"]
        if not isinstance(turns, list) or not all(isinstance(t, dict) for t in turns):
            raise bad("conversations", "not a list of turns")
        values = {}
        for role in ("human", "gpt"):
            value = next((t.get("value") for t in turns if t.get("from") == role), None)
            if not isinstance(value, str):
                raise bad("conversations", f"no {role} turn with a string value")
            values[role] = value
        template = record.get("template")
        if template is not None and not isinstance(template, str):
            raise bad("template", f"not a string ({type(template).__name__})")
        problem = unwrap_prompt(values["human"])
        return Pair(problem, values["gpt"]), template or classify(problem)
    raise bad(None, "neither a problem/solution pair nor a conversation record")


def count_templates(path: Path | str, dedup: bool = False, skip_bad: bool = False) -> dict[str, int]:
    """Records per template name (every name of `ALL_NAMES`, zeros included).

    Args:
        path: A JSON-lines file of raw pairs or conversation records (or one JSON array of them).
        dedup: Count each distinct (problem, answer) pair once.
        skip_bad: Pass over records that are not a pair or a conversation (logged once, then
            counted) instead of failing at the first.
    """
    counts = dict.fromkeys(ALL_NAMES, 0)
    seen: set[bytes] = set()
    skipped = 0

    def skip(err: DataError) -> None:
        nonlocal skipped
        skipped += 1
        if skipped == 1:
            log.warning("skipping malformed records; first: %s", err)

    for where, record in located_jsonl(path, on_error=skip if skip_bad else None):
        try:
            pair, name = record_pair(record, where)
        except BadRecordError as err:
            if not skip_bad:
                raise
            skip(err)
            continue
        if dedup:
            key = pair_key(pair)
            if key in seen:
                continue
            seen.add(key)
        counts[name] = counts.get(name, 0) + 1
    if skipped:
        log.warning("skipped %d malformed record(s) of %s", skipped, path)
    return counts
