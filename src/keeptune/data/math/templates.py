"""The 11 Chinese problem templates of the math training file, as a data table.

Each `Template` holds the problem's shape (a regex and a format string), the
converters that turn the regex groups into parameters, the function computing
the answer from those parameters, the solution's format string and the seed
judge's answer pattern (the contest's 11 templates). The arithmetic is the real file's: Python
`decimal` with 28 significant digits for the two-decimal templates (so products
keep 4 decimals, roots and quotients 28 digits, large function values switch to
E notation) and Python floats for the others (mean, equation, discount, sales).

`classify` maps any problem to a template name, ``english`` (no CJK character)
or ``unknown``; `solve` formats the solution the real file would hold; `verify`
checks a given solution against the computed value at the precision it shows.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import MAX_EMAX, MIN_EMIN, Context, Decimal, InvalidOperation
from math import gcd
from typing import Any, Callable, Optional

DEC = Context(prec=28)  # Python's default decimal context, fixed here on purpose
# Differences of values of up to ~60 digits, exact; no overflow for absurd exponents.
EXACT = Context(prec=200, Emax=MAX_EMAX, Emin=MIN_EMIN)
NUM = r"-?\d+(?:\.\d+)?"
INT = r"-?\d+"
ENGLISH = "english"
UNKNOWN = "unknown"
_CJK = re.compile("[\u4e00-\u9fff]")


def _int_list(text: str) -> list[int]:
    return [int(item) for item in text.split(", ")]


@dataclass(frozen=True)
class Template:
    """One problem shape -> solution shape of the training file.

    Attributes:
        id: The contest's template number (0..10).
        name: Short name used everywhere in keeptune.
        problem_format: ``str.format`` pattern of the problem; fields are the params.
        problem_re: Full-match regex of the problem; its groups give the params.
        converters: One converter per regex group (str -> param).
        compute: The answer from the params, in the real file's arithmetic.
        solution_format: ``str.format`` pattern of the solution: params by position
            and the computed value as ``{v}``.
        answer_re: The seed judge's pattern; its last group (two for fractions) is
            the answer.
    """

    id: int
    name: str
    problem_format: str
    problem_re: re.Pattern[str]
    converters: tuple[Callable[[str], Any], ...]
    compute: Callable[..., Any]
    solution_format: str
    answer_re: re.Pattern[str]

    def parse(self, problem: str) -> Optional[tuple]:
        """The params of ``problem``, or None when it has another shape."""
        match = self.problem_re.fullmatch(problem)
        if match is None:
            return None
        return tuple(conv(group) for conv, group in zip(self.converters, match.groups()))

    def render(self, params: tuple) -> tuple[str, str]:
        """(problem, solution) for the given params."""
        value = self.compute(*params)
        return self.problem_format.format(*params), self.solution_format.format(*params, v=value)


_ARITH = {"+": DEC.add, "-": DEC.subtract, "*": DEC.multiply, "/": DEC.divide}

TEMPLATES: tuple[Template, ...] = (
    Template(
        0, "arithmetic", "计算 {0} {1} {2} 等于多少？",
        re.compile(rf"计算 ({NUM}) ([-+*/]) ({NUM}) 等于多少？"), (Decimal, str, Decimal),
        lambda a, op, b: _ARITH[op](a, b), "{0} {1} {2} = {v}",
        re.compile(r"([\d\. \+\-\*\/]+) = (-?[\d\.]+)"),
    ),
    Template(
        1, "power", "计算 {0} 的 {1} 次方？",
        re.compile(rf"计算 ({NUM}) 的 (\d+) 次方？"), (Decimal, int),
        lambda a, n: DEC.power(a, n), "{0}^{1} = {v}",
        re.compile(r"(-?[\d\.]+)\^(\d+) = (-?[\d\.]+)"),
    ),
    Template(
        2, "root", "计算 {0} 的平方根？",
        re.compile(rf"计算 ({NUM}) 的平方根？"), (Decimal,),
        DEC.sqrt, "√{0} = {v}",
        re.compile(r"√([\d\.]+) = ([\d\.]+)"),
    ),
    Template(
        3, "fraction", "将分数 {0}/{1} 进行简化。",
        re.compile(r"将分数 (\d+)/(\d+) 进行简化。"), (int, int),
        lambda a, b: (a // gcd(a, b), b // gcd(a, b)), "最简化的形式为：{v[0]}/{v[1]}",
        re.compile(r"最简化的形式为：(\d+)/(\d+)"),
    ),
    Template(
        4, "mean", "求以下数据的平均值：{0}",
        re.compile(r"求以下数据的平均值：\[(\d+(?:, \d+)*)\]"), (_int_list,),
        lambda xs: sum(xs) / len(xs), "平均值为 {v}",
        re.compile(r"平均值为 ([\d\.]+)"),
    ),
    Template(
        5, "equation", "解方程 {0}x + {1} = 0",
        re.compile(rf"解方程 ({INT})x \+ ({INT}) = 0"), (int, int),
        lambda k, b: -b / k, "方程的解为：{v}",
        re.compile(r"方程的解为：(-?[\d\.]+)"),
    ),
    Template(
        6, "function", "当 x = {0} 时，求函数 y = {1}x^{2} 的值",
        re.compile(rf"当 x = ({NUM}) 时，求函数 y = ({INT})x\^(\d+) 的值"), (Decimal, int, int),
        lambda x, k, n: DEC.multiply(Decimal(k), DEC.power(x, n)), "函数的值为：{v}",
        re.compile(r"函数的值为：([\d\.E\+\-]+)"),
    ),
    Template(
        7, "area", "一个长方形的长为 {0} 厘米，宽为 {1} 厘米，请计算其面积。",
        re.compile(r"一个长方形的长为 (\d+) 厘米，宽为 (\d+) 厘米，请计算其面积。"), (int, int),
        lambda a, b: a * b, "面积为 {v} 平方厘米",
        re.compile(r"面积为 (\d+) 平方厘米"),
    ),
    Template(
        8, "mass", "某物体的密度为 {0} 克/立方厘米，体积为 {1} 立方厘米，请计算该物体的质量。",
        re.compile(r"某物体的密度为 (\d+) 克/立方厘米，体积为 (\d+) 立方厘米，请计算该物体的质量。"),
        (int, int), lambda a, b: a * b, "{v} 克",
        re.compile(r"(\d+) 克"),
    ),
    Template(
        9, "discount", "商品原价为 {0} 元，打折后的价格为 {1} 元，请计算打折的折扣比例。",
        re.compile(r"商品原价为 (\d+) 元，打折后的价格为 (\d+) 元，请计算打折的折扣比例。"),
        (int, int), lambda a, b: (a - b) / a * 100, "{v}",
        re.compile(r"(-?[\d\.]+)"),
    ),
    Template(
        10, "sales", "去年销售额为 {0} 万元，今年销售额增加了 {1}%，请计算今年的销售额。",
        re.compile(r"去年销售额为 (\d+) 万元，今年销售额增加了 (\d+)%，请计算今年的销售额。"),
        (int, int), lambda a, p: a + (a * p / 100), "{v}",
        re.compile(r"(-?[\d\.]+)"),
    ),
)

TEMPLATE_NAMES: tuple[str, ...] = tuple(t.name for t in TEMPLATES)
ALL_NAMES: tuple[str, ...] = (*TEMPLATE_NAMES, ENGLISH, UNKNOWN)
BY_NAME: dict[str, Template] = {t.name: t for t in TEMPLATES}


def template(name: str) -> Template:
    """The template called ``name``; ValueError naming the choices otherwise."""
    if name not in BY_NAME:
        raise ValueError(f"unknown template {name!r}; choose from {', '.join(TEMPLATE_NAMES)}")
    return BY_NAME[name]


def match(problem: str) -> Optional[tuple[Template, tuple]]:
    """(template, params) of a Chinese template problem, else None."""
    for tmpl in TEMPLATES:
        params = tmpl.parse(problem)
        if params is not None:
            return tmpl, params
    return None


def classify(problem: str) -> str:
    """A template name, ``english`` (no CJK character) or ``unknown``."""
    found = match(problem)
    if found is not None:
        return found[0].name
    return UNKNOWN if _CJK.search(problem) else ENGLISH


def solve(problem: str) -> str:
    """The solution line the real file holds for a template problem.

    Raises:
        ValueError: The problem fits no template, or its answer is undefined
            (division by zero, 0^0).
    """
    found = match(problem)
    if found is None:
        raise ValueError(f"no template fits problem {problem!r}")
    tmpl, params = found
    try:
        return tmpl.render(params)[1]
    except (ZeroDivisionError, InvalidOperation) as err:
        raise ValueError(f"undefined answer for {problem!r}: {err!r}") from err


def half_unit(text: str) -> Decimal:
    """Half a unit of the last digit a decimal numeral shows ("1.25" -> 0.005)."""
    return Decimal(5).scaleb(Decimal(text).as_tuple().exponent - 1)


def verify(problem: str, solution: str) -> bool:
    """True when ``solution`` has the template's shape and shows the computed answer.

    The value is computed from the problem in the real file's arithmetic and must
    lie within half a unit of the last digit the solution shows (fractions and
    integers: exactly equal). False for problems that fit no template.
    """
    found = match(problem)
    if found is None:
        return False
    tmpl, params = found
    shape = tmpl.answer_re.fullmatch(solution)
    if shape is None:
        return False
    try:
        value = tmpl.compute(*params)
        if tmpl.name == "fraction":
            return value == (int(shape.group(1)), int(shape.group(2)))
        shown = shape.groups()[-1]
        diff = EXACT.subtract(Decimal(value), Decimal(shown)).copy_abs()
    except (ZeroDivisionError, InvalidOperation, ValueError):
        return False
    return diff <= half_unit(shown)
