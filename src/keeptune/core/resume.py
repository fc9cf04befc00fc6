"""Resuming, keyed on content: what a folder of work was made from, and whether it may be continued.

Every resumable piece of work (an evaluation's eval.json, a training run's keeptune.json, an
experiment's data stamp, a sweep's study, CorDA's cached decomposition) records an *identity*:
a JSON mapping of its settings and of the sha256 of every input it read. Re-run with the same
identity, the work continues; with another, `check_same` refuses it naming each changed key
(nested keys dotted), and `redo_on_mismatch` starts that folder over where redoing is the
intended behaviour. Digests are of content, never of paths or modification times, so a changed
file at the same path is noticed and a copied one is not.
"""
from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any, Callable, Iterable, Optional, TypeVar

from keeptune.core.errors import ResumeMismatchError

T = TypeVar("T")
CHUNK = 1 << 20


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path | str) -> str:
    """The sha256 of a file's bytes, read in 1 MiB chunks (a model file need not fit in memory)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def sha256_json(value: Any) -> str:
    """The sha256 of a JSON value written canonically (sorted keys, UTF-8): equal values, equal digests."""
    return sha256_bytes(json.dumps(value, sort_keys=True, ensure_ascii=False).encode("utf-8"))


def file_digest(path: Optional[str | Path]) -> Optional[str]:
    """A local file's sha256; an http(s) address stands for itself (it is downloaded once, then cached); None."""
    if path is None or str(path).startswith(("http://", "https://")):
        return None if path is None else str(path)
    return sha256_file(path)


def flatten(tree: dict, prefix: str = "") -> dict:
    """{"a": {"b": 1}} -> {"a.b": 1}: nested settings compared key by key."""
    flat = {}
    for key, value in tree.items():
        flat.update(flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {prefix + key: value})
    return flat


def changed_keys(saved: dict, now: dict, ignore: Iterable[str] = ()) -> list[str]:
    """The dotted keys whose values differ between two identities (`ignore`: keys not compared)."""
    flat_saved, flat_now = flatten(saved), flatten(now)
    skip = set(ignore)
    return sorted(k for k in flat_saved.keys() | flat_now.keys()
                  if k not in skip and flat_saved.get(k) != flat_now.get(k))


def check_same(saved: dict, now: dict, what: str, advice: str, ignore: Iterable[str] = ()) -> None:
    """Refuse to continue `what` (e.g. "OUT holds predictions made") with another identity:
    ResumeMismatchError "WHAT with other settings (KEYS differ); ADVICE"."""
    changed = changed_keys(saved, now, ignore)
    if changed:
        raise ResumeMismatchError(f"{what} with other settings ({', '.join(changed)} differ); {advice}")


def redo_on_mismatch(work: Callable[[], T], folder: Path, message: str) -> T:
    """`work()`; when it refuses to resume (ResumeMismatchError), print `message`, delete `folder` and
    run it once more from scratch. For work whose settings are meant to change between runs (an
    experiment re-run with another lr trains and evaluates again)."""
    try:
        return work()
    except ResumeMismatchError:
        print(message)
        shutil.rmtree(folder)
        return work()
