"""Reading one experiment directory RUN: RUN/results.json (checked) and RUN/train/log.jsonl.

results.json is written by the experiment runner; the checks below cover every
field the report reads and name the file and the field when one is absent.
"""
from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from keeptune.io import DataError, read_jsonl_prefix

RESULTS = "results.json"
LOG = Path("train") / "log.jsonl"
DEFAULT_GATE = 0.9
DEFAULT_SCORE_EPS = "0.01"

_TOP = {"name": str, "command": str, "settings": dict, "params": dict, "baseline": dict, "checkpoints": list}
_PARAMS = ("trainable", "total", "ratio")
_SQUAD = ("F1", "Em")
_MATH = ("accuracy", "accuracy_strict", "per_template")
_CHECKPOINT = ("step", "squad", "math", "retention", "passes_gate", "score")
_TRACKING = ("step", "squad_F1", "squad_Em", "math_accuracy")


def load_results(path: Path) -> dict:
    """The checked content of a results.json file (or of RUN/results.json when `path` is a folder)."""
    path = Path(path)
    if path.is_dir():
        path = path / RESULTS
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such file (an experiment directory holds results.json)") from None
    except (OSError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot read ({err})") from None
    except json.JSONDecodeError as err:
        raise DataError(f"{path}: not valid JSON ({err.msg}, line {err.lineno})") from None
    check_results(data, path)
    return data


def check_results(data: Any, path: Path) -> None:
    """DataError naming `path` and the field when `data` lacks something the report reads."""
    _require(data, (), "the file", path)
    for key, kind in _TOP.items():
        if not isinstance(data.get(key), kind):
            raise DataError(f"{path}: field {key!r} missing or not a {kind.__name__}")
    _require(data["params"], _PARAMS, "params", path)
    _require(data["baseline"], ("squad", "math"), "baseline", path)
    _check_scores(data["baseline"], "baseline", path)
    for i, checkpoint in enumerate(data["checkpoints"]):
        _require(checkpoint, _CHECKPOINT, f"checkpoints[{i}]", path)
        _check_scores(checkpoint, f"checkpoints[{i}]", path)
    if data.get("best") is not None:
        _require(data["best"], _CHECKPOINT, "best", path)
    for i, row in enumerate(data.get("tracking") or []):
        _require(row, _TRACKING, f"tracking[{i}]", path)


def _check_scores(entry: dict, where: str, path: Path) -> None:
    _require(entry["squad"], _SQUAD, f"{where}.squad", path)
    _require(entry["math"], _MATH, f"{where}.math", path)


def _require(value: Any, keys: Iterable[str], where: str, path: Path) -> None:
    if not isinstance(value, dict):
        raise DataError(f"{path}: {where} is not a JSON object")
    missing = [key for key in keys if key not in value]
    if missing:
        raise DataError(f"{path}: {where} lacks {', '.join(map(repr, missing))}")


def read_log(run: Path) -> list[dict]:
    """The records of RUN/train/log.jsonl (empty when there is none); a torn last line is left out."""
    path = Path(run) / LOG
    if not path.is_file():
        return []
    records, _ = read_jsonl_prefix(path)
    return [record for record in records if isinstance(record, dict)]


def gate(results: dict) -> float:
    """The retention gate: a checkpoint keeps F1 and EM >= gate x baseline."""
    return float(results.get("gate", DEFAULT_GATE))


def score_eps(results: dict) -> str:
    """The EPS key whose (seed judge) accuracy enters the score."""
    return str(results.get("score_eps", DEFAULT_SCORE_EPS))


def eps_keys(results: dict) -> list[str]:
    """The EPS keys of the accuracies, in the order the baseline has them."""
    return list(results["baseline"]["math"]["accuracy"])


def accuracy(entry: dict, eps: str, judge: str = "accuracy") -> float | None:
    """An entry's math accuracy (fraction) at `eps`; judge ``accuracy`` (seed) or ``accuracy_strict``."""
    return entry["math"][judge].get(eps)
