"""Files keeptune reads and writes: JSON and JSON lines, never pickle.

Whole files are written atomically (a temporary file in the target's folder,
then `os.replace`), so a reader never sees half a file. Predictions are appended
line by line and flushed, so a killed run loses at most the line it was writing;
`read_jsonl_prefix` reads such a file back and drops that torn last line.

User files are read as UTF-8 with or without a byte-order mark (`utf-8-sig`),
line by line from bytes, so a line that is not UTF-8 (a Windows-1252 export, say)
is a `MalformedLineError` naming the file and the line, not a decoding traceback.
A directory a command writes is claimed first (`claim_output_dir`): keeptune never
replaces or writes into a folder it did not make, nor into its own input.
"""
from __future__ import annotations

import contextlib
import errno
import fcntl
import fnmatch
import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Optional, Sequence


class DataError(ValueError):
    """Input data keeptune cannot use; the message names the file and what is wrong."""


class MalformedLineError(DataError):
    """A line of a data file that is not the record it should be."""

    def __init__(self, path: Path, line: int, field: Optional[str], reason: str):
        self.path, self.line, self.field, self.reason = path, line, field, reason
        where = f"field {field!r}: " if field else ""
        super().__init__(f"{path}:{line}: {where}{reason}")


class OutputError(DataError):
    """A place keeptune cannot or will not write to (not writable, a file in the way, a foreign folder)."""


# OS errors that say the output path is unusable, not that keeptune is broken.
UNWRITABLE = (errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EISDIR, errno.EEXIST, errno.ENOSPC,
              errno.ENAMETOOLONG, errno.ENOENT)


def unwritable(path: Path | str, err: OSError) -> Exception:
    """An OutputError naming `path` for the OS errors of UNWRITABLE; `err` itself otherwise."""
    if err.errno not in UNWRITABLE:
        return err
    what = {errno.ENOTDIR: "a file is in the way of its folder", errno.EEXIST: "a file is in the way of its folder",
            errno.EISDIR: "it is a directory"}.get(err.errno, err.strerror)
    culprit = f" ({err.filename})" if err.filename and str(err.filename) != str(path) else ""
    return OutputError(f"{path}: cannot write here: {what}{culprit}")


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
    write_lines(path, [text])


def atomic_write_json(path: Path | str, value: Any) -> None:
    atomic_write_text(path, json.dumps(value, ensure_ascii=False, indent=2) + "\n")


def write_lines(path: Path | str, lines: Iterable[str]) -> int:
    """Write `lines` (each with its own line ending) to `path` atomically; returns the count."""
    path = Path(path)
    try:
        if path.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(path))
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as err:
        raise unwritable(path, err) from None
    count = 0
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            for line in lines:
                handle.write(line)
                count += 1
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a data file is not
        try:
            os.replace(tmp, path)
        except OSError as err:
            raise unwritable(path, err) from None
    except BaseException:
        os.unlink(tmp)
        raise
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
    """Append records to an open file and push them to disk."""
    for record in records:
        handle.write(dumps(record) + "\n")
    handle.flush()
    os.fsync(handle.fileno())


# --- output directories ------------------------------------------------------------------

OWNER_FILE = ".keeptune-output.json"
"""The marker `claim_output_dir` leaves in a directory keeptune made: which command, when."""
STAGING = ".*.tmp"
"""keeptune's own half-written files and folders (atomic writes, checkpoint staging): never foreign."""


def _inside(child: Path, parent: Path) -> bool:
    return child == parent or parent in child.parents


def _owner(path: Path) -> Optional[dict]:
    try:
        owner = json.loads((path / OWNER_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return owner if isinstance(owner, dict) and isinstance(owner.get("kind"), str) else None


def check_output_dir(path: Path | str, kind: str, overwrite: bool = False, inputs: Iterable = (),
                     outputs: Optional[Sequence[str]] = None) -> bool:
    """Refuse an output directory a command must not write; True when it exists already.

    See `claim_output_dir`, which calls this and then creates and marks the directory.
    This alone writes nothing: use it where the directory is filled elsewhere first
    (a staging directory renamed onto it, see `mark_output_dir`).
    """
    path = Path(path)
    target = Path(os.path.abspath(path.expanduser())).resolve()
    for item in inputs:
        if item is None or str(item).startswith(("http://", "https://")):
            continue
        source = Path(os.path.abspath(Path(item).expanduser())).resolve()
        if _inside(target, source) or _inside(source, target):
            how = ("is" if target == source else "is inside" if _inside(target, source) else "contains")
            raise OutputError(f"{path}: the output directory {how} this command's input {item}; "
                              "choose another output directory (--out)")
    if not os.path.lexists(path):
        return False
    if not path.is_dir():
        raise OutputError(f"{path}: cannot write a directory here: a file of that name exists")
    try:
        entries = sorted(p.name for p in path.iterdir())
    except OSError as err:
        raise unwritable(path, err) from None
    if overwrite:
        return True
    owner = _owner(path)
    own = set(owner.get("files") or ()) if owner else set()
    foreign = [name for name in entries if name != OWNER_FILE and name not in own
               and not any(fnmatch.fnmatchcase(name, pattern) for pattern in (STAGING, *(outputs or ())))]
    if owner is not None and owner["kind"] != kind:
        raise OutputError(f"{path}: this directory holds the output of `keeptune {owner['kind']}`, not of "
                          f"`keeptune {kind}`; choose another output directory, or pass --overwrite to write into it")
    if owner is None and entries and (outputs is None or foreign):
        listed = ", ".join((foreign or entries)[:5]) + (", ..." if len(foreign or entries) > 5 else "")
        raise OutputError(f"{path}: the output directory exists and keeptune did not create it (it holds {listed}); "
                          "choose another output directory, or pass --overwrite to write into it anyway")
    if foreign:
        listed = ", ".join(foreign[:5]) + (", ..." if len(foreign) > 5 else "")
        raise OutputError(f"{path}: the output directory holds files keeptune did not write ({listed}); "
                          "move them away, choose another output directory, or pass --overwrite")
    return True


def mark_output_dir(path: Path | str, kind: str, files: Optional[Iterable[str]] = None) -> None:
    """Write (or refresh) the ownership marker of a directory keeptune made.

    `files`: the names this command wrote into it; later claims treat only those
    (and the command's `outputs` patterns) as its own. An earlier marker's `created`
    time is kept."""
    path = Path(path)
    owner = _owner(path) or {}
    record = {"kind": kind, "created": owner.get("created") or time.strftime("%Y-%m-%dT%H:%M:%S%z"),
              "note": "made by keeptune: a later keeptune command may replace this directory's contents"}
    if files is not None:
        record["files"] = sorted(set(files) - {OWNER_FILE})
    atomic_write_json(path / OWNER_FILE, record)


def claim_output_dir(path: Path | str, kind: str, overwrite: bool = False, inputs: Iterable = (),
                     outputs: Optional[Sequence[str]] = None) -> Path:
    """Make sure a command may write the directory `path`, create it and mark it as that command's.

    The guard every command that writes a directory goes through, so that keeptune
    never overwrites a folder it did not make, nor writes into its own input.

    Args:
        path: the output directory (`--out`).
        kind: the command, as a user types it after `keeptune` (`merge`, `train`,
            `eval squad`, `run`): recorded in the marker file `OWNER_FILE`.
        overwrite: the user's `--overwrite`: accept a directory that exists
            with other contents (the contents stay; the caller decides what to replace).
            Even then an output that is, is inside or contains an input is refused.
        inputs: paths the command reads (adapter, model directory, data files);
            None entries and http(s) addresses are ignored.
        outputs: glob patterns of the top-level names the command writes
            (e.g. `("predictions.jsonl", "metrics.json", "eval.json")`); they
            count as its own even without the marker (directories from before the
            marker existed). None: only the marker's recorded `files`; an
            unmarked non-empty directory is then always foreign.

    Refused (OutputError, a DataError: `keeptune: error: DIR: ...`, exit 2):
    - the path is, is inside, or contains one of `inputs` (even with overwrite);
    - a file (not a directory) is in the way, or the directory cannot be created;
    - without overwrite: a non-empty directory without the marker whose entries
      are not all matched by `outputs`; a marked directory of another `kind`;
      a marked directory holding names neither recorded nor matched by `outputs`.
    An empty directory, or one this same command made, is accepted. keeptune's
    staging names (`.*.tmp`) are never foreign.

    Returns the path; the directory exists and holds the marker.
    """
    path = Path(path)
    check_output_dir(path, kind, overwrite, inputs, outputs)
    try:
        path.mkdir(parents=True, exist_ok=True)
        if _owner(path) is None or _owner(path)["kind"] != kind:
            mark_output_dir(path, kind)
    except OSError as err:
        raise unwritable(path, err) from None
    return path


@contextlib.contextmanager
def locked(folder: Path | str, busy: str):
    """Hold FOLDER/.lock while the body runs; DataError `FOLDER: BUSY` when another process holds it.

    Two commands writing the same folder at once are refused, not interleaved; the lock
    goes with the process, so a killed run leaves nothing to clean up."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".lock", "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise DataError(f"{folder}: {busy}") from None
        yield
