"""Worked-step answers (chain of thought) for the template problems.

Each answer is a few step lines followed by the reference solution itself,
unchanged, as the final line: the value stays exact (unlike the seed, which
rounded it) and the final line has the shape the judge pattern matches (the
seed ended means with ``平均值为: R``, which its own pattern missed). Steps use
the real file's arithmetic, so every intermediate value is the one the solution
was computed from.

Steps never have the shape of the solution line, so the seed judge's
first-match extraction reads the final line, except for discount and sales,
whose solution is a bare number: there it reads the first number of the
steps. Judge worked-step outputs with the judge's ``final`` extraction (last
match of the solution shape), which reads the final line for every template.
"""
from __future__ import annotations

from decimal import Decimal
from math import gcd, isqrt
from typing import Callable

from keeptune.data.math.templates import DEC, match


def _arithmetic(a: Decimal, op: str, b: Decimal) -> list[str]:
    # No " = " in these steps: the seed's first-match pattern must reach the final line.
    if op in "+-":
        if b >= 0:
            return []
        flipped = "-" if op == "+" else "+"
        return [f"{a} {op} {b} 即 {a} {flipped} {b.copy_abs()}"]
    if a >= 0 and b >= 0:
        return []
    sign = "同号得正" if (a < 0) == (b < 0) else "异号得负"
    magnitude = (DEC.multiply if op == "*" else DEC.divide)(a.copy_abs(), b.copy_abs())
    return [f"{sign}，{a.copy_abs()} {op} {b.copy_abs()} 得 {magnitude}"]


def _power(a: Decimal, n: int) -> list[str]:
    if n == 0:
        return ["任何非零数的 0 次方都等于 1"]
    steps, value = [], a
    for _ in range(n - 1):
        product = DEC.multiply(value, a)
        steps.append(f"{value} * {a} = {product}")
        value = product
    return steps


def _root(a: Decimal) -> list[str]:
    low = isqrt(int(a))
    high = low + 1
    return [f"{low}^2 = {low * low}，{high}^2 = {high * high}，所以 √{a} 在 {low} 和 {high} 之间"]


def _fraction(a: int, b: int) -> list[str]:
    g = gcd(a, b)
    return [f"{a} 和 {b} 的最大公约数是 {g}", f"{a} ÷ {g} = {a // g}，{b} ÷ {g} = {b // g}"]


def _mean(xs: list[int]) -> list[str]:
    total = sum(xs)
    return [" + ".join(map(str, xs)) + f" = {total}", f"{total} / {len(xs)} = {total / len(xs)}"]


def _equation(k: int, b: int) -> list[str]:
    return [f"{k}x = {-b}", f"x = {-b} / {k} = {-b / k}"]


def _function(x: Decimal, k: int, n: int) -> list[str]:
    power = DEC.power(x, n)
    value = DEC.multiply(Decimal(k), power)
    return [f"y = {k} * {x}^{n}", f"{x}^{n} = {power}", f"y = {k} * {power} = {value}"]


def _product(a: int, b: int) -> list[str]:
    return [f"{a} * {b} = {a * b}"]


def _discount(a: int, b: int) -> list[str]:
    return [f"{a} - {b} = {a - b}", f"{a - b} / {a} * 100 = {(a - b) / a * 100}"]


def _sales(a: int, p: int) -> list[str]:
    increase = a * p / 100
    return [f"{a} * {p} / 100 = {increase}", f"{a} + {increase} = {a + increase}"]


STEPS: dict[str, Callable[..., list[str]]] = {
    "arithmetic": _arithmetic, "power": _power, "root": _root, "fraction": _fraction,
    "mean": _mean, "equation": _equation, "function": _function, "area": _product,
    "mass": _product, "discount": _discount, "sales": _sales,
}


def worked_answer(problem: str, solution: str) -> str:
    """Step lines then ``solution`` unchanged; the bare solution for non-template problems."""
    found = match(problem)
    if found is None:
        return solution
    tmpl, params = found
    return "\n".join([*STEPS[tmpl.name](*params), solution])
