"""Deterministic generator of template problems in the real file's format.

Number ranges follow the real file: two-decimal numbers are a uniform float
rounded to cents with `decimal` (arithmetic in (-10000, 10000), power base in
(-1000, 1000) with exponent 0..5, root in (0, 10000), function x in (0.1, 10)
with k and n in 1..100); integers are uniform: equation k, b in -100..100
(k != 0), mean 3..10 values in 1..100, area sides, discount prices and sales
(amount, percent) in 1..100, mass density and volume in 1..10, fraction
numerator 1..9 over a larger denominator up to 10 (the 45 distinct fractions).
The template of each line is drawn from a mix: ``real`` (the distinct counts of
the real file) or ``uniform``, optionally restricted to a subset of templates.
"""
from __future__ import annotations

import bisect
import itertools
import random
from decimal import Decimal
from typing import Callable, Iterator, Mapping, Optional, Sequence

from keeptune.data.math.loader import Pair
from keeptune.data.math.templates import BY_NAME, DEC, TEMPLATE_NAMES, template

CENT = Decimal("0.01")

# Distinct (problem, solution) pairs per template in the real file (counted once from the contest's train.json).
DISTINCT_COUNTS: dict[str, int] = {
    "arithmetic": 359_347, "power": 39_207, "root": 39_227, "fraction": 45,
    "mean": 19_709, "equation": 40_080, "function": 20_028, "area": 8_665,
    "mass": 100, "discount": 6_275, "sales": 6_266,
}
MIXES: dict[str, Mapping[str, float]] = {
    "real": DISTINCT_COUNTS,
    "uniform": {name: 1.0 for name in TEMPLATE_NAMES},
}


def cents(rng: random.Random, low: float, high: float) -> Decimal:
    """A uniform float in [low, high] rounded to two decimals, as the real file did."""
    return Decimal(rng.uniform(low, high)).quantize(CENT, context=DEC)


def _arithmetic(rng: random.Random) -> tuple:
    a, op, b = cents(rng, -10000, 10000), rng.choice("+-*/"), cents(rng, -10000, 10000)
    while op == "/" and not b:
        b = cents(rng, -10000, 10000)
    return a, op, b


def _power(rng: random.Random) -> tuple:
    base, n = cents(rng, -1000, 1000), rng.randint(0, 5)
    while n == 0 and not base:  # 0^0 is undefined
        base = cents(rng, -1000, 1000)
    return base, n


def _fraction(rng: random.Random) -> tuple:
    numerator = rng.randint(1, 9)
    return numerator, rng.randint(numerator + 1, 10)


def _equation(rng: random.Random) -> tuple:
    k = 0
    while k == 0:
        k = rng.randint(-100, 100)
    return k, rng.randint(-100, 100)


def _ints(low: int, high: int) -> Callable[[random.Random], tuple]:
    return lambda rng: (rng.randint(low, high), rng.randint(low, high))


SAMPLERS: dict[str, Callable[[random.Random], tuple]] = {
    "arithmetic": _arithmetic,
    "power": _power,
    "root": lambda rng: (cents(rng, 0, 10000),),
    "fraction": _fraction,
    "mean": lambda rng: ([rng.randint(1, 100) for _ in range(rng.randint(3, 10))],),
    "equation": _equation,
    "function": lambda rng: (cents(rng, 0.1, 10.0), rng.randint(1, 100), rng.randint(1, 100)),
    "area": _ints(1, 100),
    "mass": _ints(1, 10),
    "discount": _ints(1, 100),
    "sales": _ints(1, 100),
}


def mix_weights(
    mix: str | Mapping[str, float] = "real", templates: Optional[Sequence[str]] = None
) -> dict[str, float]:
    """Template -> weight of a named mix (or a given mapping), restricted to ``templates``."""
    if isinstance(mix, str):
        if mix not in MIXES:
            raise ValueError(f"unknown mix {mix!r}; choose from {', '.join(MIXES)}")
        mix = MIXES[mix]
    for name in mix:
        template(name)  # fail early on a misspelt name
    chosen = TEMPLATE_NAMES if templates is None else [template(n).name for n in templates]
    weights = {name: float(mix.get(name, 0.0)) for name in chosen}
    if not any(w > 0 for w in weights.values()):
        raise ValueError(f"mix gives no weight to any of {', '.join(chosen)}")
    return weights


def generate_one(name: str, rng: random.Random) -> Pair:
    """One (problem, solution) pair of the named template."""
    return Pair(*BY_NAME[name].render(SAMPLERS[name](rng)))


def generate_pairs(
    n: int,
    seed: int = 0,
    templates: Optional[Sequence[str]] = None,
    mix: str | Mapping[str, float] = "real",
) -> Iterator[tuple[str, Pair]]:
    """``n`` (template name, pair) items, the same for the same arguments.

    Args:
        n: How many lines.
        seed: Random seed.
        templates: Restrict to these template names (default: all 11).
        mix: ``real``, ``uniform`` or a mapping template -> weight.
    """
    weights = mix_weights(mix, templates)
    names = list(weights)
    cumulative = list(itertools.accumulate(weights.values()))
    rng = random.Random(seed)
    for _ in range(n):
        name = names[bisect.bisect_right(cumulative, rng.random() * cumulative[-1])]
        yield name, generate_one(name, rng)
