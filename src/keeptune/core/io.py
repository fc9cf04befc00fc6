"""Files keeptune reads and writes: JSON and JSON lines, never pickle.

Whole files are written atomically (a temporary file in the target's folder,
then `os.replace`), so a reader never sees half a file. Predictions are appended
line by line and flushed, so a killed run loses at most the line it was writing;
`read_jsonl_prefix` reads such a file back and drops that torn last line. A full
disk while writing (`writing_to`) is an OutputError naming the file, not a traceback:
the work done so far stays, and the same command run again resumes it.

User files are read as UTF-8 with or without a byte-order mark (`utf-8-sig`),
line by line from bytes, so a line that is not UTF-8 (a Windows-1252 export, say)
is a `MalformedLineError` naming the file and the line, not a decoding traceback.
A directory a command writes is claimed first (`claim_output_dir`): keeptune never
replaces or writes into a folder it did not make, nor into its own input.
"""
from __future__ import annotations

import errno
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Callable, Iterable, Iterator, Optional

from keeptune.core.errors import DataError, MalformedLineError, OutputError

# OS errors that say the output path is unusable, not that keeptune is broken.
UNWRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOSPC,
              errno.EDQUOT, errno.ENAMETOOLONG, errno.ENOENT)
# OS errors that say the disk (or the user's quota) is full: nothing is wrong with the path itself.
NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
# How libraries that wrap the OS error in one of their own say it (safetensors: "... (os error 28)").
NO_SPACE_TEXT = (os.strerror(errno.ENOSPC), os.strerror(errno.EDQUOT), f"os error {errno.ENOSPC}",
                 f"os error {errno.EDQUOT}")


def unwritable(path: Path | str, err: OSError) -> Exception:
    """An OutputError naming `path` for the OS errors of UNWRITABLE; `err` itself otherwise."""
    if err.errno not in UNWRITABLE:
        return err
    if err.errno in NO_SPACE:
        return disk_full(path, err)
    what = {errno.ENOTDIR: "a file is in the way of its folder", errno.EEXIST: "a file is in the way of its folder",
            errno.EISDIR: "it is a directory"}.get(err.errno, err.strerror)
    culprit = f" ({err.filename})" if err.filename and str(err.filename) != str(path) else ""
    return OutputError(f"{path}: cannot write here: {what}{culprit}")


def disk_full(path: Path | str, err: BaseException) -> OutputError:
    """The OutputError of a write under `path` that found no space left (`err`: what said so)."""
    why = getattr(err, "strerror", None) or os.strerror(errno.ENOSPC)
    name = getattr(err, "filename", None)
    culprit = f" ({name})" if name and str(name) != str(path) else ""
    return OutputError(f"{path}: cannot write: {why}{culprit}; free some space, then run the same command again")


def no_space(err: BaseException) -> bool:
    """Whether `err` says the disk or the quota is full: an OSError of NO_SPACE, or another library's error
    whose text says so (safetensors raises its own SafetensorError); never keeptune's own OutputError."""
    if isinstance(err, OutputError):
        return False
    if isinstance(err, OSError):
        return err.errno in NO_SPACE
    return any(text in str(err) for text in NO_SPACE_TEXT)


@contextmanager
def writing_to(path: Path | str) -> Iterator[None]:
    """The body writes under `path`: a full disk there (see `no_space`) is an OutputError naming `path` (and the
    file the OS error names, when another), so that no writer, keeptune's or a library's, ends in a traceback.
    Other errors pass through as they are."""
    try:
        yield
    except Exception as err:
        if not no_space(err):
            raise
        raise disk_full(path, err) from None


def decode_line(raw: bytes, path: Path, line: int) -> str:
    """One line of a user file as text (a UTF-8 byte-order mark on line 1 dropped)."""
    if line == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        bad = raw[err.start:err.start + 1].hex()
        raise MalformedLineError(path, line, None, f"not valid UTF-8 (byte 0x{bad} at column {err.start + 1}; "
                                 "a Windows-1252 or Latin-1 file? save it as UTF-8)") from None


def unreadable(path: Path | str, err: OSError) -> Exception:
    """A DataError naming `path` for a directory or an unreadable file given as input; `err` otherwise
    (FileNotFoundError is a user error of its own)."""
    if isinstance(err, IsADirectoryError):
        return DataError(f"{path}: is a directory; give a file")
    if isinstance(err, PermissionError):
        return DataError(f"{path}: cannot read it: permission denied")
    return err


def open_input(path: Path | str):
    """A user file opened for reading bytes; a directory or an unreadable file is a DataError naming it."""
    try:
        return open(path, "rb")
    except OSError as err:
        raise unreadable(path, err) from None


def read_lines(path: Path | str) -> Iterator[tuple[int, bytes]]:
    """(line number, raw bytes) of every line of a file, read one line at a time; decode with `decode_line`."""
    with open_input(path) as handle:
        yield from enumerate(handle, start=1)


def read_text(path: Path | str) -> str:
    """A whole user file as text: UTF-8 with or without a BOM; DataError naming the file, line and column if not."""
    with open_input(path) as handle:
        data = handle.read()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        column = err.start - (data.rfind(b"\n", 0, err.start) + 1) + 1
        raise MalformedLineError(Path(path), line, None, f"not valid UTF-8 (byte 0x{data[err.start:err.start + 1].hex()} "
                                 f"at column {column}; a Windows-1252 or Latin-1 file? save it as UTF-8)") from None


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
    with atomic_writer(path, "w") as handle:
        handle.write(text)


def atomic_write_json(path: Path | str, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, ensure_ascii=False, indent=2) + "\n")


@contextmanager
def atomic_writer(path: Path | str, mode: str = "wb") -> Iterator[IO]:
    """An open file whose content replaces `path` in one step when the block ends without an error.

    The file is a temporary one in the target's folder (`.NAME.XXXXXXXX.tmp`), renamed over
    `path` at the end and removed on an error, so a reader sees the old file or the whole new
    one, never half of one. `mode`: "wb" for bytes, "w" for UTF-8 text. An unusable `path`
    (a directory, a read-only folder, a file in the way of its folder) is an OutputError naming it.
    """
    path = Path(path)
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise unwritable(path, err) from None
    try:
        with writing_to(path), os.fdopen(fd, mode, encoding=None if "b" in mode else "utf-8") as handle:
            yield handle
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a data file is not
        try:
            os.replace(tmp, path)
        except OSError as err:
            raise unwritable(path, err) from None
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def write_lines(path: Path | str, lines: Iterable[str]) -> int:
    """Write `lines` (each with its own line ending) to `path` atomically; returns the count."""
    count = 0
    with atomic_writer(path, "w") as handle:
        for line in lines:
            handle.write(line)
            count += 1
    return count


def write_jsonl(path: Path | str, records: Iterable[Any]) -> int:
    """Write one JSON object per line to `path` atomically; returns the count."""
    return write_lines(path, (dumps(record) + "\n" for record in records))


def iter_jsonl(path: Path | str) -> Iterator[Any]:
    """The JSON value of every non-blank line, or the items of a file that is one JSON array.

    UTF-8 with or without a BOM; MalformedLineError (file and line) for text that is not."""
    for _, value in located_jsonl(path):
        yield value


def located_jsonl(path: Path | str, on_error: Optional[Callable[[MalformedLineError], None]] = None
                  ) -> Iterator[tuple[str, Any]]:
    """`iter_jsonl` with where each value is: `FILE:LINE`, or `FILE: item N` (from 1) in a JSON array.

    `on_error`: called with the MalformedLineError of a line that is not UTF-8 or not JSON,
    and reading goes on (`--skip-bad`); without it the error is raised."""
    path = Path(path)
    with open_input(path) as handle:
        head = handle.read(64).removeprefix(b"\xef\xbb\xbf").lstrip()
    if head.startswith(b"["):
        text = read_text(path)
        try:
            items = json.loads(text)
        except json.JSONDecodeError as err:
            raise MalformedLineError(path, err.lineno, None, f"not a valid JSON array ({err.msg})") from None
        for number, item in enumerate(items, start=1):
            yield f"{path}: item {number}", item
        return
    for number, raw in read_lines(path):
        try:
            line = decode_line(raw, path, number)
            value = json_line(line, path, number) if line.strip() else None
        except MalformedLineError as err:
            if on_error is None:
                raise
            on_error(err)
            continue
        if line.strip():
            yield f"{path}:{number}", value


def read_jsonl_prefix(path: Path) -> tuple[list[dict], int]:
    """Records of an append-only JSONL file and the byte length of its complete lines.

    A last line without its newline was torn by a kill: it is left out, and the
    caller truncates the file to the returned length before appending again.
    """
    data = path.read_bytes()
    complete = data[: data.rfind(b"\n") + 1]
    lines = [decode_line(raw, path, n) for n, raw in enumerate(complete.split(b"\n")[:-1], 1)]
    records = [json_line(line, path, n) for n, line in enumerate(lines, 1) if line.strip()]
    return records, len(complete)


def append_jsonl(handle, records: Iterable[Any]) -> None:
    """Append records to an open file and push them to disk; a full disk is an OutputError naming the file
    (a torn last line is what `read_jsonl_prefix` drops on resume)."""
    with writing_to(handle.name):
        for record in records:
            handle.write(dumps(record) + "\n")
        handle.flush()
        os.fsync(handle.fileno())


# --- output directories ------------------------------------------------------------------

"""The marker `claim_output_dir` leaves in a directory keeptune made: which command, when."""
"""keeptune's own half-written files and folders (atomic writes, checkpoint staging): never foreign."""


def cache_dir() -> Path:
    """keeptune's cache: $KEEPTUNE_CACHE, else $XDG_CACHE_HOME/keeptune, else ~/.cache/keeptune."""
    if os.environ.get("KEEPTUNE_CACHE"):
        return Path(os.environ["KEEPTUNE_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "keeptune"
