"""The template table against the real sample and against hand-computed cases."""
from __future__ import annotations

import json
from collections import Counter

import pytest

from keeptune.data.math.templates import ENGLISH, TEMPLATE_NAMES, UNKNOWN, classify, solve, verify

# Counted in the sample with ad-hoc regexes while studying it (not with this code):
# 649 arithmetic (153 +, 158 -, 171 *, 167 /), 80 power, 72 root, 30 mean,
# 86 equation, 30 function, 15 area, 8 discount, 10 sales, 16 English; no fraction or mass.
SAMPLE_COUNTS = {"arithmetic": 649, "power": 80, "root": 72, "mean": 30, "equation": 86,
                 "function": 30, "area": 15, "discount": 8, "sales": 10, ENGLISH: 16}


def test_every_line_of_the_real_sample_classifies_and_recomputes(math_sample):
    names = Counter()
    for number, line in enumerate(math_sample.read_text(encoding="utf-8").splitlines(), 1):
        record = json.loads(line)
        name = classify(record["problem"])
        names[name] += 1
        assert name != UNKNOWN, f"line {number} fits no template"
        if name != ENGLISH:
            assert verify(record["problem"], record["solution"]), f"line {number}"
            assert solve(record["problem"]) == record["solution"], f"line {number}"
    assert dict(names) == SAMPLE_COUNTS


@pytest.mark.parametrize(
    "problem, solution",
    [
        # 150 * 225 = 33750 -> 3.3750, negative; products keep 4 decimals.
        ("计算 1.50 * -2.25 等于多少？", "1.50 * -2.25 = -3.3750"),
        ("计算 5.00 - -2.50 等于多少？", "5.00 - -2.50 = 7.50"),
        # 1/3 to 28 significant digits.
        ("计算 1.00 / 3.00 等于多少？", "1.00 / 3.00 = 0.3333333333333333333333333333"),
        # A negative base means (-A)^n: (-2.5)^3 = -15.625 with 2*3 decimals.
        ("计算 -2.50 的 3 次方？", "-2.50^3 = -15.625000"),
        ("计算 -2.50 的 2 次方？", "-2.50^2 = 6.2500"),
        ("计算 7.25 的 0 次方？", "7.25^0 = 1"),
        ("计算 -711.31 的 4 次方？", "-711.31^4 = 255997460543.58343921"),  # from SPEC
        # sqrt(2) = 1.41421356237309504880168872420969..., 28 significant digits.
        ("计算 2.00 的平方根？", "√2.00 = 1.414213562373095048801688724"),
        ("计算 4.00 的平方根？", "√4.00 = 2.0"),  # exact root keeps the ideal exponent -2/2
        ("将分数 6/8 进行简化。", "最简化的形式为：3/4"),
        ("将分数 5/6 进行简化。", "最简化的形式为：5/6"),
        ("求以下数据的平均值：[1, 2]", "平均值为 1.5"),
        ("求以下数据的平均值：[1, 2, 2]", "平均值为 1.6666666666666667"),  # float 5/3
        ("求以下数据的平均值：[79, 69, 19, 3, 23, 93]", "平均值为 47.666666666666664"),  # public example
        ("解方程 4x + -2 = 0", "方程的解为：0.5"),
        ("解方程 -5x + 0 = 0", "方程的解为：-0.0"),  # 0 / -5 is float -0.0
        ("解方程 -81x + -45 = 0", "方程的解为：-0.5555555555555556"),  # public example
        ("当 x = 2.00 时，求函数 y = 3x^2 的值", "函数的值为：12.0000"),  # 3 * 4.0000
        # 10.00^30 = 10^30 needs 91 digits at exponent -60: rounded to 28 digits, E notation.
        ("当 x = 10.00 时，求函数 y = 1x^30 的值", "函数的值为：1.000000000000000000000000000E+30"),
        ("一个长方形的长为 3 厘米，宽为 4 厘米，请计算其面积。", "面积为 12 平方厘米"),
        ("某物体的密度为 10 克/立方厘米，体积为 3 立方厘米，请计算该物体的质量。", "30 克"),
        ("商品原价为 80 元，打折后的价格为 60 元，请计算打折的折扣比例。", "25.0"),  # 20/80*100
        ("商品原价为 51 元，打折后的价格为 28 元，请计算打折的折扣比例。", "45.09803921568628"),
        ("去年销售额为 50 万元，今年销售额增加了 10%，请计算今年的销售额。", "55.0"),  # 50 + 5
    ],
)
def test_solve_and_verify_hand_computed(problem, solution):
    assert solve(problem) == solution
    assert verify(problem, solution)


@pytest.mark.parametrize(
    "problem, solution, ok",
    [
        ("计算 1.00 * 2.00 等于多少？", "1.00 * 2.00 = 2.0001", False),
        # sqrt(2) = 1.414213...: shown to 4 decimals 1.4142 is within 0.00005, 1.4143 is not.
        ("计算 2.00 的平方根？", "√2.00 = 1.4142", True),
        ("计算 2.00 的平方根？", "√2.00 = 1.4143", False),
        ("计算 2.00 的平方根？", "√2.00 = 1.41421", True),  # 3.6e-6 <= 5e-6
        ("求以下数据的平均值：[1, 2, 2]", "平均值为 1.67", True),  # 5/3 - 1.67 = -0.0033
        ("求以下数据的平均值：[1, 2, 2]", "平均值为 1.66", False),
        ("将分数 6/8 进行简化。", "最简化的形式为：6/8", False),
        ("计算 1.00 * 2.00 等于多少？", "结果是 2", False),  # not the solution's shape
        ("What is 1 + 1?", "2", False),
    ],
)
def test_verify_at_the_precision_shown(problem, solution, ok):
    assert verify(problem, solution) is ok


def test_classify_names():
    assert classify("What is $1+1$?") == ENGLISH
    assert classify("计算 1 加 1 等于多少？") == UNKNOWN
    assert classify("计算 -1.25 的 3 次方？") == "power"
    assert len(TEMPLATE_NAMES) == 11


def test_solve_rejects_undefined_and_unknown():
    with pytest.raises(ValueError, match="undefined"):
        solve("计算 1.00 / 0.00 等于多少？")
    with pytest.raises(ValueError, match="no template"):
        solve("hello")
