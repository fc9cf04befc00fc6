"""Records per template of a math data file: raw ``problem``/``solution`` lines or
conversation records (JSON lines, or one JSON array as the seed wrote them)."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from keeptune.io import iter_jsonl
from keeptune.data.math.loader import Pair, pair_key
from keeptune.data.math.templates import ALL_NAMES, classify
from keeptune.data.prompts import unwrap_prompt


def record_pair(record: Any) -> tuple[Pair, str]:
    """(problem, answer) of a raw or conversation record, and its template name.

    A conversation record's name is its ``template`` key when present, else the
    class of its problem (the human turn without a known prompt template).
    """
    if isinstance(record, dict) and isinstance(record.get("problem"), str):
        pair = Pair(record["problem"], str(record.get("solution", "")))
        return pair, classify(pair.problem)
    if isinstance(record, dict) and isinstance(record.get("conversations"), list):
        turns = record["conversations"]
        human = next((t["value"] for t in turns if t.get("from") == "human"), "")
        answer = next((t["value"] for t in turns if t.get("from") == "gpt"), "")
        problem = unwrap_prompt(human)
        return Pair(problem, answer), record.get("template") or classify(problem)
    raise ValueError(f"neither a problem/solution nor a conversation record: {str(record)[:80]}")


def count_templates(path: Path | str, dedup: bool = False) -> dict[str, int]:
    """Records per template name (every name of `ALL_NAMES`, zeros included).

    Args:
        path: A JSON-lines file of raw pairs or conversation records.
        dedup: Count each distinct (problem, answer) pair once.
    """
    counts = dict.fromkeys(ALL_NAMES, 0)
    seen: set[bytes] = set()
    for record in iter_jsonl(path):
        pair, name = record_pair(record)
        if dedup:
            key = pair_key(pair)
            if key in seen:
                continue
            seen.add(key)
        counts[name] = counts.get(name, 0) + 1
    return counts
