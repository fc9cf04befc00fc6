"""Files keeptune reads and writes: JSON and JSON lines, never pickle.

Whole files are written atomically (a temporary file in the target's folder,
then `os.replace`), so a reader never sees half a file. Predictions are appended
line by line and flushed, so a killed run loses at most the line it was writing;
`read_jsonl_prefix` reads such a file back and drops that torn last line.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional


class DataError(ValueError):
    """Input data keeptune cannot use; the message names the file and what is wrong."""


class MalformedLineError(DataError):
    """A line of a data file that is not the record it should be."""

    def __init__(self, path: Path, line: int, field: Optional[str], reason: str):
        self.path, self.line, self.field, self.reason = path, line, field, reason
        where = f"field {field!r}: " if field else ""
        super().__init__(f"{path}:{line}: {where}{reason}")


def json_line(text: str, path: Path, line: int) -> Any:
    """The JSON value on one line; MalformedLineError when it is not valid JSON."""
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        raise MalformedLineError(path, line, None, f"not valid JSON ({err.msg})") from None


def dumps(record: Any) -> str:
    """One JSON line as the real data file writes it (UTF-8 text, default separators)."""
    return json.dumps(record, ensure_ascii=False)


def atomic_write_text(path: Path | str, text: str) -> None:
    """Replace `path` with `text` in one step."""
    write_lines(path, [text])


def atomic_write_json(path: Path | str, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, ensure_ascii=False, indent=2) + "\n")


def write_lines(path: Path | str, lines: Iterable[str]) -> int:
    """Write `lines` (each with its own line ending) to `path` atomically; returns the count."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for line in lines:
                handle.write(line)
                count += 1
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a data file is not
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise
    return count


def write_jsonl(path: Path | str, records: Iterable[Any]) -> int:
    """Write one JSON object per line to `path` atomically; returns the count."""
    return write_lines(path, (dumps(record) + "\n" for record in records))


def iter_jsonl(path: Path | str) -> Iterator[Any]:
    """The JSON value of every non-blank line, or the items of a file that is one JSON array."""
    with open(path, encoding="utf-8") as handle:
        first = handle.read(1)
        while first.isspace():
            first = handle.read(1)
        handle.seek(0)
        if first == "[":
            yield from json.load(handle)
            return
        for number, line in enumerate(handle, start=1):
            if line.strip():
                yield json_line(line, Path(path), number)


def read_jsonl_prefix(path: Path) -> tuple[list[dict], int]:
    """Records of an append-only JSONL file and the byte length of its complete lines.

    A last line without its newline was torn by a kill: it is left out, and the
    caller truncates the file to the returned length before appending again.
    """
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    records = [json_line(line, path, n) for n, line in enumerate(complete.decode("utf-8").splitlines(), 1) if line]
    return records, len(complete)


def append_jsonl(handle, records: Iterable[Any]) -> None:
    """Append records to an open file and push them to disk."""
    for record in records:
        handle.write(dumps(record) + "\n")
    handle.flush()
    os.fsync(handle.fileno())
