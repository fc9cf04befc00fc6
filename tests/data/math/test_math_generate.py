"""Generator: determinism, format and ranges of the real file, mixes."""
from __future__ import annotations

import re
from collections import Counter
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keeptune.data.math.generate import generate_pairs, mix_weights
from keeptune.data.math.templates import TEMPLATE_NAMES, classify, solve, verify


@settings(max_examples=150, deadline=None)
@given(seed=st.integers(0, 2**63), name=st.sampled_from(TEMPLATE_NAMES))
def test_generated_lines_classify_and_recompute(seed, name):
    for made, pair in generate_pairs(3, seed=seed, templates=[name]):
        assert made == name
        assert classify(pair.problem) == name
        assert verify(pair.problem, pair.solution)
        assert solve(pair.problem) == pair.solution


def test_same_seed_same_lines_other_seed_other_lines():
    first = list(generate_pairs(300, seed=7))
    assert first == list(generate_pairs(300, seed=7))
    assert first != list(generate_pairs(300, seed=8))


def test_real_mix_follows_the_distinct_counts():
    counts = Counter(name for name, _ in generate_pairs(20_000, seed=1))
    # 359,347 / 538,949 = 0.6668 arithmetic; 39,207 / 538,949 = 0.0727 power.
    assert counts["arithmetic"] / 20_000 == pytest.approx(0.6668, abs=0.015)
    assert counts["power"] / 20_000 == pytest.approx(0.0727, abs=0.01)
    assert counts["fraction"] < 20  # weight 45 / 538,949: about 1.7 expected


def test_uniform_mix_and_subset():
    counts = Counter(name for name, _ in generate_pairs(11_000, seed=2, mix="uniform"))
    assert set(counts) == set(TEMPLATE_NAMES)
    assert all(800 <= c <= 1200 for c in counts.values())  # 1,000 expected each
    subset = Counter(name for name, _ in generate_pairs(500, seed=2, templates=["area", "mass"]))
    assert set(subset) == {"area", "mass"}


@pytest.mark.parametrize("bad", [dict(mix="nope"), dict(templates=["nope"]), dict(mix={"area": 0})])
def test_bad_mix_or_template_fails_early(bad):
    with pytest.raises(ValueError):
        mix_weights(**bad)


def numbers(text):
    return [Decimal(x) for x in re.findall(r"-?\d+(?:\.\d+)?", text)]


def two_decimals(text):
    return all(re.fullmatch(r"-?\d+\.\d\d", x) for x in re.findall(r"-?\d+\.\d+", text))


def test_number_ranges_and_shapes_of_the_real_file():
    """Ranges read off the real sample and the SPEC, per template."""
    seen = {name: [] for name in TEMPLATE_NAMES}
    for name, pair in generate_pairs(4_400, seed=3, mix="uniform"):
        seen[name].append(pair.problem)
    for problem in seen["arithmetic"]:
        a, b = numbers(problem)
        assert two_decimals(problem) and abs(a) <= 10000 and abs(b) <= 10000
    assert {p.split()[2] for p in seen["arithmetic"]} == set("+-*/")
    for problem in seen["power"]:
        base, n = numbers(problem)
        assert two_decimals(problem) and abs(base) <= 1000 and 0 <= n <= 5
    assert all(0 <= numbers(p)[0] <= 10000 and two_decimals(p) for p in seen["root"])
    for problem in seen["fraction"]:
        a, b = numbers(problem.replace("/", " "))
        assert 1 <= a < b <= 10
    for problem in seen["mean"]:
        values = numbers(problem)
        assert 3 <= len(values) <= 10 and all(1 <= v <= 100 for v in values)
    for problem in seen["equation"]:
        k, b, zero = numbers(problem)
        assert k != 0 and -100 <= k <= 100 and -100 <= b <= 100 and zero == 0
    for problem in seen["function"]:
        x, k, n = numbers(problem)
        assert 0.1 <= x <= 10 and 1 <= k <= 100 and 1 <= n <= 100
    for name, high in (("area", 100), ("mass", 10), ("discount", 100), ("sales", 100)):
        assert all(1 <= v <= high for p in seen[name] for v in numbers(p))


def test_all_45_fractions_and_100_masses_appear():
    # SPEC: 45 distinct fraction pairs and 100 distinct mass pairs in the real file.
    fractions = {p for _, p in generate_pairs(3_000, seed=4, templates=["fraction"])}
    masses = {p for _, p in generate_pairs(3_000, seed=4, templates=["mass"])}
    assert len(fractions) == 45 and len(masses) == 100
