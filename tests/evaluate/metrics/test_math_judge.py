"""Math judge: extraction and the seed / strict comparisons on hand-computed cases."""
from __future__ import annotations

import json

import pytest

from keeptune.evaluate.metrics.math_judge import aggregate, boxed, extract, judge

SUB = "计算 1.00 - 3.00 等于多少？"
SUB_REF = "1.00 - 3.00 = -2.00"  # 1 - 3 = -2
ALL_TRUE = {"1e-08": True, "0.0001": True, "0.01": True}
ALL_FALSE = {"1e-08": False, "0.0001": False, "0.01": False}


def verdict(result):
    return result["seed"], result["strict"]


def test_exact_answer_is_correct_everywhere():
    result = judge(SUB, SUB_REF, SUB_REF)
    assert result["template"] == "arithmetic" and result["extracted"] == "-2.00"
    assert verdict(result) == (ALL_TRUE, ALL_TRUE)


def test_wrong_sign_is_wrong():
    assert verdict(judge(SUB, "1.00 - 3.00 = 2.00", SUB_REF)) == (ALL_FALSE, ALL_FALSE)


def test_extra_text_around_the_answer():
    result = judge(SUB, "好的。1.00 - 3.00 = -2.00，这就是答案。", SUB_REF)
    assert result["extracted"] == "-2.00" and verdict(result) == (ALL_TRUE, ALL_TRUE)


@pytest.mark.parametrize("prediction", ["", None, "我不知道", "   \n"])
def test_empty_or_non_numeric_output(prediction):
    result = judge(SUB, prediction, SUB_REF)
    assert result["extracted"] is None and verdict(result) == (ALL_FALSE, ALL_FALSE)


def test_echo_of_the_problem_is_dropped():
    problem = "去年销售额为 50 万元，今年销售额增加了 10%，请计算今年的销售额。"
    reference = "55.0"  # 50 + 50 * 10 / 100
    echoed = judge(problem, problem + "\n55.0", reference)
    assert echoed["extracted"] == "55.0" and verdict(echoed) == (ALL_TRUE, ALL_TRUE)
    # Not starting with the problem: no echo to drop, the first number is 50.
    quoted = judge(problem, "题目：" + problem + "\n55.0", reference)
    assert quoted["extracted"] == "50" and verdict(quoted) == (ALL_FALSE, ALL_FALSE)


def test_echo_matters_for_the_mass_pattern():
    problem = "某物体的密度为 2 克/立方厘米，体积为 3 立方厘米，请计算该物体的质量。"
    result = judge(problem, problem + "6 克", "6 克")  # 2 * 3 = 6
    assert result["extracted"] == "6" and result["strict"]["1e-08"]


def test_e_notation():
    problem = "当 x = 10.00 时，求函数 y = 1x^30 的值"
    reference = "函数的值为：1.000000000000000000000000000E+30"
    assert verdict(judge(problem, "函数的值为：1E+30", reference)) == (ALL_TRUE, ALL_TRUE)
    # Off by 1e24: strict fails; seed passes as 1e24 <= 1e-5 * 1.000001e30 = 1.000001e25.
    near = judge(problem, "函数的值为：1.000001E+30", reference)
    assert verdict(near) == (ALL_TRUE, ALL_FALSE)


def test_large_product_passes_seed_by_rtol_but_not_strict():
    problem = "计算 9999.99 * 9999.99 等于多少？"
    reference = "9999.99 * 9999.99 = 99999800.0001"  # (1e4 - 0.01)^2 = 1e8 - 200 + 0.0001
    # Off by 800.0001, below rtol * |pred| = 1e-5 * 99999000 = 999.99.
    result = judge(problem, "9999.99 * 9999.99 = 99999000", reference)
    assert verdict(result) == (ALL_TRUE, ALL_FALSE)
    # Off by exactly 0.0001: strict passes at 1e-4 and 1e-2 only.
    close = judge(problem, "9999.99 * 9999.99 = 99999800", reference)
    assert close["strict"] == {"1e-08": False, "0.0001": True, "0.01": True}


def test_fraction_compares_numerator_and_denominator_exactly():
    problem, reference = "将分数 6/8 进行简化。", "最简化的形式为：3/4"
    assert verdict(judge(problem, "最简化的形式为：3/4", reference)) == (ALL_TRUE, ALL_TRUE)
    assert verdict(judge(problem, "最简化的形式为：6/8", reference)) == (ALL_FALSE, ALL_FALSE)
    assert judge(problem, "答：3/4", reference, extraction="last")["strict"]["1e-08"]


def test_small_tolerances_separate_the_eps():
    problem, reference = "解方程 3x + -1 = 0", "方程的解为：0.3333333333333333"  # 1/3
    result = judge(problem, "方程的解为：0.333", reference)  # off by 3.3e-4
    assert result["strict"] == {"1e-08": False, "0.0001": False, "0.01": True}
    # seed at 1e-4: 3.3e-4 > 1e-4 + 1e-5 * 0.333 = 1.033e-4, still wrong.
    assert result["seed"] == {"1e-08": False, "0.0001": False, "0.01": True}


def test_first_match_versus_last_number_versus_final():
    text = "1.00 - 3.00 = 2.00 不对，应为 -2.00"
    assert not judge(SUB, text, SUB_REF)["strict"]["0.01"]  # seed: first match 2.00
    assert judge(SUB, text, SUB_REF, extraction="last")["extracted"] == "-2.00"
    worked = "1.00 - 3.00 = 1.00 + -3.00\n1.00 - 3.00 = -2.00"
    assert judge(SUB, worked, SUB_REF, extraction="seed")["extracted"] == "1.00"
    assert judge(SUB, worked, SUB_REF, extraction="final")["extracted"] == "-2.00"
    with pytest.raises(ValueError):
        extract("x", "arithmetic", "middle")


def test_english_boxed():
    reference = r"so the sum is $\boxed{180^\circ}$."
    problem = "Find the number of degrees in the sum."
    assert judge(problem, r"The answer is \boxed{180}.", reference)["strict"]["1e-08"]
    assert not judge(problem, r"\boxed{18}", reference)["seed"]["0.01"]
    assert boxed(r"x \boxed{\frac{1}{2}} y") == r"\frac{1}{2}"
    half = r"\boxed{\dfrac{1}{2}}"
    assert judge(problem, r"\boxed{\frac{1}{2}}", half)["strict"]["1e-08"]
    assert judge(problem, "it is 7.0", r"\boxed{7}")["strict"]["1e-08"]  # last number, no box


def test_aggregate_accuracy_and_table():
    results = [
        judge(SUB, SUB_REF, SUB_REF),
        judge(SUB, "1.00 - 3.00 = 2.00", SUB_REF),
        judge("将分数 6/8 进行简化。", "最简化的形式为：3/4", "最简化的形式为：3/4"),
        judge("计算 9999.99 * 9999.99 等于多少？", "= 99999000", "9999.99 * 9999.99 = 99999800.0001"),
    ]
    # The last: "= 99999000" lacks the "A op B = R" shape, so nothing is extracted.
    summary = aggregate(results)
    assert summary["n"] == 4
    assert summary["accuracy"]["seed"]["0.01"] == 0.5 and summary["accuracy"]["strict"]["1e-08"] == 0.5
    assert summary["per_template"]["arithmetic"]["seed"]["1e-08"] == [1, 3]
    assert summary["per_template"]["fraction"]["strict"]["0.0001"] == [1, 1]
    assert list(summary["per_template"]) == ["arithmetic", "fraction"]
    assert aggregate([])["n"] == 0


def test_every_real_solution_is_judged_correct_against_itself(math_sample):
    for line in math_sample.read_text(encoding="utf-8").splitlines():
        record = json.loads(line)
        for extraction in ("seed", "final", "last"):
            result = judge(record["problem"], record["solution"], record["solution"], extraction=extraction)
            assert verdict(result) == (ALL_TRUE, ALL_TRUE), (extraction, record["solution"][-60:])


def test_absurd_exponent_is_wrong_not_an_error():
    problem = "当 x = 10.00 时，求函数 y = 1x^30 的值"
    reference = "函数的值为：1.000000000000000000000000000E+30"
    result = judge(problem, "函数的值为：1E+99999999", reference)
    assert verdict(result) == (ALL_FALSE, ALL_FALSE)
