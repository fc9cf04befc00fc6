"""Training-set builder: strategies, records, prompts and worked-step answers."""
from __future__ import annotations

from collections import Counter

import pytest

from keeptune.data.math.build import build_records, select, split_counts
from keeptune.data.math.cot import worked_answer
from keeptune.data.math.generate import generate_pairs
from keeptune.data.math.loader import Pair
from keeptune.data.math.templates import TEMPLATE_NAMES
from keeptune.evaluate.metrics.math_judge import judge

MULTIPLY = "计算 1.00 * 2.00 等于多少？"
ADD = "计算 1.00 + 2.00 等于多少？"


def items(sizes):
    """Synthetic (index, template, pair) items: ``sizes[name]`` of each template."""
    out = []
    for name, size in sizes.items():
        for k in range(size):
            out.append((len(out), name, Pair(f"{name} {k}", "s")))
    return out


def test_uniform_pick_gives_the_seeds_17145():
    sizes = {name: 2_000 for name in TEMPLATE_NAMES}
    sizes.update(arithmetic=6_000, fraction=45, mass=100, english=50)
    picked = list(select(items(sizes), "uniform", seed=0))
    counts = Counter(name for _, name, _ in picked)
    # 5,000 + 8 * 1,500 + 45 + 100 = 17,145 (SPEC); no English.
    assert len(picked) == 17_145
    assert counts["arithmetic"] == 5_000 and counts["fraction"] == 45 and counts["mass"] == 100
    assert all(counts[n] == 1_500 for n in TEMPLATE_NAMES if n not in ("arithmetic", "fraction", "mass"))
    assert [i for i, _, _ in picked] == sorted(i for i, _, _ in picked)  # stream order


def test_uniform_with_n_caps_and_is_deterministic():
    data = items({name: 300 for name in TEMPLATE_NAMES})
    first = list(select(data, "uniform", n=100, seed=5))
    assert len(first) == 100 and first == list(select(data, "uniform", n=100, seed=5))
    assert first != list(select(data, "uniform", n=100, seed=6))


def test_easy_drops_hard_templates_and_multiplications():
    data = [(0, "arithmetic", Pair(MULTIPLY, "s")), (1, "arithmetic", Pair(ADD, "s"))]
    data += [(i + 2, name, Pair("p", "s")) for i, name in enumerate([*TEMPLATE_NAMES, "english"])]
    kept = {(name, pair.problem) for _, name, pair in select(data, "easy")}
    expected = {("arithmetic", ADD)} | {
        (name, "p") for name in ("arithmetic", "mean", "equation", "area", "mass", "discount", "sales")
    }
    assert kept == expected


def test_arithmetic_only_and_real_with_n():
    data = items({"arithmetic": 30, "root": 30, "english": 30})
    assert {name for _, name, _ in select(data, "arithmetic")} == {"arithmetic"}
    picked = list(select(data, "real", n=20, seed=1))
    assert len(picked) == 20 and len({name for _, name, _ in picked}) > 1
    assert list(select(data, "real")) == data


def test_custom_weights_and_counts():
    # 10 split over three equal weights: 3.33 each -> 3, 3, 3 and the left-over 1 to the first.
    assert split_counts(10, {"area": 1, "mass": 1, "sales": 1}) == {"area": 4, "mass": 3, "sales": 3}
    assert split_counts(7, {"area": 3, "mass": 1}) == {"area": 5, "mass": 2}  # 5.25, 1.75
    data = items({"area": 50, "mass": 50, "sales": 50})
    picked = Counter(n for _, n, _ in select(data, "custom", n=10, weights={"area": 1, "mass": 1, "sales": 1}))
    assert picked == {"area": 4, "mass": 3, "sales": 3}
    picked = Counter(n for _, n, _ in select(data, "custom", counts={"area": 2, "sales": 60}))
    assert picked == {"area": 2, "sales": 50}  # only 50 sales exist
    with pytest.raises(ValueError):
        list(select(data, "custom"))
    with pytest.raises(ValueError):
        list(select(data, "custom", counts={"nope": 1}))


def test_records_have_the_conversation_format_and_dedup():
    problem = "将分数 6/8 进行简化。"
    pairs = [Pair(problem, "最简化的形式为：3/4")] * 3
    records = list(build_records(pairs, strategy="real", prompt="math"))
    assert records == [{
        "id": "1",
        "conversations": [
            {"from": "human", "value": "Below is an instruction that describes a grade school math "
             "problem. Write a response that gives the correct answer.\n\n### Instruction:\n"
             "将分数 6/8 进行简化。\n\n### Response:"},
            {"from": "gpt", "value": "最简化的形式为：3/4"},
        ],
        "template": "fraction",
    }]
    assert len(list(build_records(pairs, strategy="real", dedup=False))) == 3


def test_chat_prompt_uses_the_callable():
    pairs = [Pair(ADD, "1.00 + 2.00 = 3.00")]
    records = list(build_records(pairs, "real", prompt="chat", chat_template=lambda p: f"<u>{p}</u>"))
    assert records[0]["conversations"][0]["value"] == f"<u>{ADD}</u>"
    with pytest.raises(ValueError, match="chat_template"):
        list(build_records(pairs, "real", prompt="chat"))


def test_worked_answer_of_a_mean_keeps_the_exact_value():
    # 1 + 2 + 2 = 5; 5 / 3 as a float prints 1.6666666666666667; final line unchanged.
    got = worked_answer("求以下数据的平均值：[1, 2, 2]", "平均值为 1.6666666666666667")
    assert got == "1 + 2 + 2 = 5\n5 / 3 = 1.6666666666666667\n平均值为 1.6666666666666667"


def test_worked_answer_of_a_negative_product():
    # 1.50 * 2.25 = 3.3750; signs differ so the product is negative.
    got = worked_answer("计算 1.50 * -2.25 等于多少？", "1.50 * -2.25 = -3.3750")
    assert got == "异号得负，1.50 * 2.25 得 3.3750\n1.50 * -2.25 = -3.3750"


def test_worked_answers_end_with_the_solution_and_pass_the_judge():
    """Final extraction reads every worked answer; the seed's first match fails only
    for the bare-number templates (it reads the first number of the steps)."""
    for name, pair in generate_pairs(440, seed=9, mix="uniform"):
        answer = worked_answer(*pair)
        assert answer.splitlines()[-1] == pair.solution
        assert judge(pair.problem, answer, pair.solution, extraction="final")["strict"]["1e-08"]
        seed = judge(pair.problem, answer, pair.solution)
        if name in ("discount", "sales"):
            assert seed["extracted"] == answer.split(" ")[0]  # the first number of the steps
        else:
            assert seed["strict"]["1e-08"], answer


def test_build_from_the_real_sample(math_sample):
    from keeptune.data.math.loader import PairReader

    records = list(build_records(PairReader(math_sample), "easy", prompt="none", cot=True))
    # Easy part of the sample: 649 arithmetic - 171 products + 30 mean + 86 equation
    # + 15 area + 8 discount + 10 sales = 627 (counts from the template test).
    assert len(records) == 627
    assert [r["id"] for r in records[:3]] == ["1", "2", "3"]
    assert not any(" * " in r["conversations"][0]["value"] for r in records if r["template"] == "arithmetic")
