"""The project's real sample data in ../shared/data, used in place when present.

A user's fresh clone has no ../shared: commands then ask for --data. The one
exception is the SQuAD article the default evaluates, which the package ships
(`PACKAGED_SQUAD`, byte for byte the shared file).
"""
from __future__ import annotations

from pathlib import Path

from keeptune.core.errors import DataError

SQUAD_SAMPLE = "squad/dev-v1.1-super-bowl-50.json"  # 54 paragraphs of SQuAD v1.1 dev
# The same file, shipped as package data (CC BY-SA 4.0; attribution in files/NOTICE).
PACKAGED_DIR = Path(__file__).resolve().parent / "files"
PACKAGED_SQUAD = PACKAGED_DIR / "squad-dev-v1.1-super-bowl-50.json"
MATH_SAMPLE = "math/train-sample-996.jsonl"  # 996 real lines of the math training file
# ../shared beside the working directory, or beside this source checkout.
SHARED_ROOTS = (Path.cwd().parent, Path(__file__).resolve().parents[4])


def shared_file(relative: str, hint: str) -> Path:
    """The file `shared/data/RELATIVE` beside the checkout, or a DataError ending with `hint` (one naming
    RELATIVE when it leads out of shared/data)."""
    for root in SHARED_ROOTS:
        path = inside(root / "shared" / "data", relative, "shared:")
        if path.is_file():
            return path
    raise DataError(f"no data given and ../shared/data/{relative} is not here. {hint}")


def packaged_file(name: str) -> Path:
    """The file keeptune ships as data/files/NAME; a DataError naming `package:NAME` when NAME leads out of
    that folder or is not a file there."""
    path = inside(PACKAGED_DIR, name, "package:")
    if not path.is_file():
        shipped = sorted(p.name for p in PACKAGED_DIR.iterdir() if p.suffix in (".json", ".jsonl"))
        raise DataError(f"package:{name}: keeptune ships no such file; it ships {', '.join(shipped)}")
    return path


def inside(folder: Path, relative: str, prefix: str) -> Path:
    """folder/RELATIVE, links resolved; a DataError naming PREFIX+RELATIVE when that leads out of `folder`
    (an absolute path, `..`)."""
    path = (folder / relative).resolve()
    if not path.is_relative_to(folder.resolve()):
        raise DataError(f"{prefix}{relative}: leads out of {folder}; give a path inside it")
    return path
