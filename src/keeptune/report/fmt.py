"""How the report and the runs registry write numbers, in one place so both agree.

- a metric in unit ``points`` (already 0..100 in results.json, e.g. an F1):
  two decimals, ``59.87``;
- a metric in unit ``fraction`` (0..1, e.g. an accuracy) and retention: percent
  with two decimals, ``12.50%``; a metric of another unit: the plain number
  (six significant digits);
- loss: four decimals; score: six decimals (the leaderboard's precision);
- ratio: eight significant digits in tables (``0.00042437872``), every digit
  (Python's repr) in the parameter accounting;
- counts: thousands separators, ``3,407,872``; a breakdown cell ``c/t (p%)``;
- a value with its confidence interval: the value as above, the bounds in the same unit with one
  decimal, ``21.59 [16.8, 26.4]``, ``45.00% [33.3, 58.3]``; an infinite bound (null) is ``inf``;
- a missing value (null, absent): ``n/a``.
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MISSING = "n/a"


def _or_missing(value: float | None, spec: str) -> str:
    return MISSING if value is None else format(value, spec)


POINTS, FRACTION = "points", "fraction"


def points(value: float | None) -> str:
    """A score already in percent (unit ``points``, e.g. an F1 score): ``59.87``."""
    return _or_missing(value, ".2f")


def percent(fraction: float | None) -> str:
    """A fraction as percent: ``0.125`` -> ``12.50%``."""
    return MISSING if fraction is None else f"{100 * fraction:.2f}%"


def plain(value: float | None) -> str:
    """A number of no known unit: six significant digits."""
    return _or_missing(value, ".6g")


def metric(value: float | None, unit: str | None) -> str:
    """A metric's value in its unit: ``points`` -> ``59.87``, ``fraction`` -> ``12.50%``, else `plain`."""
    if unit == POINTS:
        return points(value)
    if unit == FRACTION:
        return percent(value)
    return plain(value)


def shown(value: float | None, unit: str | None) -> float | None:
    """The number a plot draws for a metric: fractions in percent, the others as they are."""
    if value is None:
        return None
    return 100 * value if unit == FRACTION else value


def bounds(low: float | None, high: float | None, unit: str | None) -> str:
    """An interval's bounds in a metric's unit, one decimal: ``[16.8, 26.4]`` (a fraction in percent, without
    the sign); a missing bound (infinite) is ``inf``."""
    def one(value: float | None, missing: str) -> str:
        return missing if value is None else format(shown(value, unit), ".1f")
    return f"[{one(low, '-inf')}, {one(high, 'inf')}]"


def with_interval(value: float | None, unit: str | None, interval: dict | None) -> str:
    """A metric's value and its interval (results.json's INTERVAL): ``21.59 [16.8, 26.4]``; the value alone
    when there is no interval."""
    text = metric(value, unit)
    if value is None or not interval:
        return text
    return f"{text} {bounds(interval.get('low'), interval.get('high'), unit)}"


def retention_with_interval(ratio: float | None, low: float | None, high: float | None) -> str:
    """A retention (checkpoint / baseline) in percent with its paired interval: ``104.30% [85.1, 125.2]``."""
    text = percent(ratio)
    return text if ratio is None else f"{text} {bounds(low, high, FRACTION)}"


def loss(value: float | None) -> str:
    return _or_missing(value, ".4f")


def score(value: float | None) -> str:
    return _or_missing(value, ".6f")


def ratio(value: float | None) -> str:
    return _or_missing(value, ".8g")


def count(value: int | None) -> str:
    return _or_missing(value, ",")


def cell(pair: Sequence[int] | None) -> str:
    """A breakdown group's ``[correct, total]``: ``3/8 (37.50%)``; ``0/0`` when there are no problems."""
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
