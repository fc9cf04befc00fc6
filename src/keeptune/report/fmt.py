"""How the report and the runs registry write numbers, in one place so both agree.

- SQuAD F1 and EM, already percent (0..100) in results.json: two decimals, ``59.87``;
- accuracies and retention, fractions (0..1) in results.json: percent with two
  decimals, ``12.50%``;
- loss: four decimals; score: six decimals (the leaderboard's precision);
- ratio: eight significant digits in tables (``0.00042437872``), every digit
  (Python's repr) in the parameter accounting;
- counts: thousands separators, ``3,407,872``; a per-template cell ``c/t (p%)``;
- a missing value (null, absent): ``n/a``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MISSING = "n/a"


def _or_missing(value: float | None, spec: str) -> str:
    return MISSING if value is None else format(value, spec)


def points(value: float | None) -> str:
    """A score already in percent (SQuAD F1 / EM): ``59.87``."""
    return _or_missing(value, ".2f")


def percent(fraction: float | None) -> str:
    """A fraction as percent: ``0.125`` -> ``12.50%``."""
    return MISSING if fraction is None else f"{100 * fraction:.2f}%"


def loss(value: float | None) -> str:
    return _or_missing(value, ".4f")


def score(value: float | None) -> str:
    return _or_missing(value, ".6f")


def ratio(value: float | None) -> str:
    return _or_missing(value, ".8g")


def count(value: int | None) -> str:
    return _or_missing(value, ",")


def cell(pair: Sequence[int] | None) -> str:
    """A per-template ``[correct, total]``: ``3/8 (37.50%)``; ``0/0`` when there are no problems."""
    if pair is None:
        return MISSING
    correct, total = pair
    return f"{correct}/{total} ({percent(correct / total)})" if total else f"{correct}/{total}"


def setting(value: Any) -> str:
    """A setting's value: lists joined with commas, None as ``n/a``, the rest as Python prints it."""
    if value is None:
        return MISSING
    if isinstance(value, (list, tuple)):
        return ", ".join(setting(item) for item in value)
    return str(value)


def duration(seconds: float | None) -> str:
    """Wall time: ``4020.0 s (1 h 07 min)``."""
    if seconds is None:
        return MISSING
    minutes = round(seconds / 60)
    return f"{seconds:.1f} s ({minutes // 60} h {minutes % 60:02d} min)"
