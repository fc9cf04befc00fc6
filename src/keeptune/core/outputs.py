"""Output folders: claimed before any work, written through staging folders, locked while in use.

A directory a command writes is claimed first (`claim_output_dir`): keeptune never
replaces or writes into a folder it did not make (its `.keeptune-output.json`
says what made it), nor into its own input, unless told (--overwrite). A folder
is filled as `.NAME.tmp` beside its target and renamed in one `os.replace`
(`staging_dir`, `replace_dir`, `publish_dir`), so a reader never sees half of one.
`locked` holds FOLDER/.lock so that a second command into the same folder is
refused, not interleaved. A command notes what it has saved so far (`note_progress`),
so that an interrupted one (Ctrl-C) ends with one line saying what is kept and how
to go on (`interrupted_line`), not a traceback.
"""
from __future__ import annotations

import contextlib
import fcntl
import fnmatch
import json
import os
import shutil
import time
from pathlib import Path
from typing import Callable, Iterable, Optional, Sequence

from keeptune.core.errors import DataError, OutputError
from keeptune.core.io import atomic_write_json, unwritable

OWNER_FILE = ".keeptune-output.json"

STAGING = ".*.tmp"

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
def locked(folder: Path | str, busy: str, wait: bool = False):
    """Hold FOLDER/.lock while the body runs; DataError `FOLDER: BUSY` when another process holds it.

    Two commands writing the same folder at once are refused, not interleaved; the lock
    goes with the process, so a killed run leaves nothing to clean up. `wait`: wait for the
    other process instead (a step that two commands may share, one after the other)."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = open(folder / ".lock", "w")
    except OSError as err:
        raise unwritable(folder, err) from None
    with handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise DataError(f"{folder}: {busy}") from None
        yield


def staging_dir(target: Path) -> Path:
    """An empty `.NAME.tmp` directory beside `target`, to fill and then `replace_dir` onto it."""
    tmp = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        tmp.mkdir(parents=True)
    except OSError as err:
        raise unwritable(target, err) from None
    return tmp

def replace_dir(tmp: Path, target: Path) -> None:
    """Rename `tmp` to `target` in one step (an old `target` is moved aside first, then removed)."""
    old = target.with_name(f".{target.name}.old.tmp")
    try:
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        os.replace(tmp, target)
    except OSError as err:
        raise unwritable(target, err) from None
    shutil.rmtree(old, ignore_errors=True)

def publish_dir(tmp: Path, target: Path, kind: str, own: bool) -> None:
    """Put a filled staging directory in place: in one step when `target` is new or this command's, else
    (--overwrite of a folder keeptune did not make) file by file, leaving its other files alone."""
    files = [p.name for p in tmp.iterdir()]
    mark_output_dir(tmp, kind, files)
    if own or not target.exists():
        replace_dir(tmp, target)
        return
    for name in files:
        os.replace(tmp / name, target / name)
    mark_output_dir(target, kind, files)
    shutil.rmtree(tmp)

def claim_output(out: Path, kind: str, overwrite: bool, inputs) -> bool:
    """Whether `out` is new or this command's own (True) before any work; OutputError when it may not be
    written (--overwrite lets a folder keeptune did not make through, never one that holds an input)."""
    try:
        return check_output_dir(out, kind, inputs=inputs)
    except OutputError:
        if not overwrite:
            raise
        check_output_dir(out, kind, overwrite=True, inputs=inputs)
        return False

# --- what an interrupted command leaves ---------------------------------------------------

NOTHING_SAVED, RUN_AGAIN = "nothing was saved", "run the same command again"
_progress: dict = {"saved": NOTHING_SAVED, "resume": RUN_AGAIN}

def note_progress(saved: Optional[str | Callable[[], str]] = None, resume: Optional[str] = None) -> None:
    """Say what the running command has saved so far (`saved`: its last checkpoint, its predictions; a function
    is asked when the line is printed, so that it counts what is on disk then) and how to go on from there
    (`resume`); the CLI prints both in one line when the command is interrupted (Ctrl-C)."""
    if saved is not None:
        _progress["saved"] = saved
    if resume is not None:
        _progress["resume"] = resume

def reset_progress() -> None:
    """Forget the notes of an earlier command (the CLI calls it before each)."""
    _progress.update(saved=NOTHING_SAVED, resume=RUN_AGAIN)

def interrupted_line() -> str:
    """What the CLI prints when a command is interrupted: what was saved, and how to go on."""
    saved = _progress["saved"]
    if callable(saved):
        try:
            saved = saved()
        except (OSError, ValueError) as err:  # what is on disk cannot be read: say so rather than fail here
            saved = f"what was saved cannot be read ({err})"
    return f"keeptune: interrupted: {saved}; {_progress['resume']}"
