"""Streaming reader of the math training file (`train.json`: JSON lines
``{"problem": str, "solution": str}``).

The real file has 809,993 lines; `PairReader` reads one line at a time. Blank
lines are passed over; extra keys are ignored. A malformed line raises
`MalformedLineError` naming the file, the line number and the wrong field, or,
with ``skip_bad=True``, is counted in ``reader.skipped`` and reported once at
the end through the ``keeptune`` logger. Deduplication keeps the first
occurrence of each (problem, solution) pair and remembers a 16-byte digest per
pair, not the text.
"""
from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

from keeptune.core.errors import MalformedLineError
from keeptune.core.io import decode_line, json_line, read_lines

log = logging.getLogger("keeptune")
FIELDS = ("problem", "solution")


class Pair(NamedTuple):
    """One problem and its reference solution."""

    problem: str
    solution: str


def parse_line(text: str, path: Path, line: int) -> Pair:
    """The pair on one line; MalformedLineError when the line is not one."""
    record = json_line(text, path, line)
    if not isinstance(record, dict):
        raise MalformedLineError(path, line, None, f"not a JSON object ({type(record).__name__})")
    for field in FIELDS:
        if field not in record:
            raise MalformedLineError(path, line, field, "missing")
        if not isinstance(record[field], str):
            kind = type(record[field]).__name__
            raise MalformedLineError(path, line, field, f"not a string ({kind})")
    return Pair(record["problem"], record["solution"])


def pair_key(pair: Pair) -> bytes:
    """A 16-byte digest identifying a (problem, solution) pair."""
    data = json.dumps(pair, ensure_ascii=False).encode()
    return hashlib.blake2b(data, digest_size=16).digest()


def dedup(pairs: Iterable[Pair]) -> Iterator[Pair]:
    """The pairs in order, each distinct (problem, solution) pair once."""
    seen: set[bytes] = set()
    for pair in pairs:
        key = pair_key(pair)
        if key not in seen:
            seen.add(key)
            yield pair


class PairReader:
    """Iterate the pairs of a JSON-lines file, one line at a time.

    Args:
        path: The file.
        dedup: Yield each distinct (problem, solution) pair once.
        skip_bad: Count and pass over malformed lines instead of raising.

    During and after iteration: ``lines`` non-blank lines read, ``skipped``
    malformed lines passed over, ``yielded`` pairs given out, ``duplicates``
    pairs dropped by ``dedup``.
    """

    def __init__(self, path: Path | str, *, dedup: bool = False, skip_bad: bool = False):
        self.path = Path(path)
        self.dedup = dedup
        self.skip_bad = skip_bad
        self.lines = self.skipped = self.yielded = 0

    def _parsed(self) -> Iterator[Pair]:
        # Bytes, decoded line by line: UTF-8 with or without a BOM; a line that is not
        # UTF-8 (a Windows-1252 export) is a malformed line like any other.
        for number, raw in read_lines(self.path):
            try:
                text = decode_line(raw, self.path, number)
                if not text.strip():
                    continue
                self.lines += 1
                pair = parse_line(text, self.path, number)
            except MalformedLineError as err:
                if not self.skip_bad:
                    raise
                if err.reason.startswith("not valid UTF-8"):
                    self.lines += 1
                self.skipped += 1
                if self.skipped == 1:
                    log.warning("skipping malformed lines; first: %s", err)
                continue
            yield pair
        if self.skipped:
            log.warning("skipped %d malformed line(s) of %s", self.skipped, self.path)

    @property
    def duplicates(self) -> int:
        """Pairs dropped as repeats so far (0 without ``dedup``)."""
        return self.lines - self.skipped - self.yielded if self.dedup else 0

    def __iter__(self) -> Iterator[Pair]:
        self.lines = self.skipped = self.yielded = 0
        pairs = self._parsed()
        for pair in dedup(pairs) if self.dedup else pairs:
            self.yielded += 1
            yield pair


def read_pairs(path: Path | str, *, dedup: bool = False, skip_bad: bool = False) -> list[Pair]:
    """All pairs of a file in memory (only when asked: the real file has 809,993)."""
    return list(PairReader(path, dedup=dedup, skip_bad=skip_bad))
