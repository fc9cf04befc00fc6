"""The official SQuAD v1.1 metric, pinned to values worked out by hand."""
from __future__ import annotations

import pytest

from keeptune.evaluate.metrics import emf1
from keeptune.evaluate.metrics.squad_v1 import (
    exact_match_score,
    f1_score,
    metric_max_over_ground_truths,
    normalize_answer,
    squad_v1,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Denver Broncos!", "denver broncos"),  # lower, '!' and article gone
        ("an apple a day", "apple day"),  # all three articles, as whole words
        ("Theater Anna", "theater anna"),  # not inside words
        ("Levi's Stadium", "levis stadium"),  # punctuation deleted, no space left
        ("a.m.", "am"),  # '.' goes first, then "am" is no article
        ("the-end", "theend"),  # '-' goes first, so "the" is no longer a word
        ("a", ""),
        ("  Santa\tClara \n", "santa clara"),  # whitespace collapsed
        ("“Broncos”", "“broncos”"),  # only ASCII punctuation is removed
        ("北京，大学", "北京，大学"),  # full-width comma kept; no segmentation
    ],
)
def test_normalize_answer(text: str, expected: str) -> None:
    assert normalize_answer(text) == expected


@pytest.mark.parametrize(
    ("prediction", "truth", "expected"),
    [
        # both normalise to "denver broncos" -> 1 (the seed metric gives 0.75)
        ("the denver broncos", "Denver Broncos", 1.0),
        # a bag, not a run: {broncos, denver} both shared -> 1 (seed gives 1/3)
        ("broncos denver", "denver broncos", 1.0),
        # pred {broncos: 2, denver: 1}, truth {denver: 1, broncos: 1}: common 2,
        # P=2/3, R=1 -> F1 = (4/3)/(5/3) = 0.8
        ("broncos broncos denver", "denver broncos", 0.8),
        # longer prediction: 4 tokens [denver, broncos, won, game] after "the" goes;
        # common 2, P=1/2, R=1 -> 2/3
        ("Denver Broncos won the game", "Denver Broncos", 2 / 3),
        # '.' is dropped, so "broncos." == "broncos" (the seed keeps '.' -> 2/3)
        ("Broncos.", "broncos", 1.0),
        ("", "denver", 0.0),  # no tokens in common
        ("", "", 0.0),  # num_same = 0 -> 0, as in evaluate-v1.1.py
        ("the", "a", 0.0),  # both normalise to "", so again 0
        ("carolina", "denver", 0.0),
    ],
)
def test_f1_score(prediction: str, truth: str, expected: float) -> None:
    assert f1_score(prediction, truth) == pytest.approx(expected, abs=1e-15)


@pytest.mark.parametrize(
    ("prediction", "truth", "expected"),
    [
        ("The Denver Broncos.", "denver broncos", True),
        ("DENVER  broncos", "denver broncos", True),  # case and inner spaces
        ("Broncos.", "broncos", True),  # seed EM gives 0 here
        ("the", "a", True),  # both become ""
        ("denver broncos", "broncos denver", False),
        ("1-2", "12", True),  # '-' is ASCII punctuation
        ("1–2", "12", False),  # the en dash U+2013 is not
    ],
)
def test_exact_match_score(prediction: str, truth: str, expected: bool) -> None:
    assert exact_match_score(prediction, truth) is expected


def test_seed_and_official_disagree_on_ascii_punctuation_and_articles() -> None:
    assert emf1.exact_match("Broncos.", "broncos") == 0.0
    assert exact_match_score("Broncos.", "broncos") is True
    assert emf1.exact_match("the Broncos", "Broncos") == 0.0
    assert exact_match_score("the Broncos", "Broncos") is True


def test_metric_max_over_ground_truths() -> None:
    truths = ["Denver Broncos", "Denver"]
    # "denver" vs "denver broncos": common 1, P=1, R=1/2 -> 2/3; vs "denver": 1
    assert metric_max_over_ground_truths(f1_score, "denver", truths) == 1.0
    assert metric_max_over_ground_truths(f1_score, "denver", truths[:1]) == pytest.approx(2 / 3)
    assert metric_max_over_ground_truths(exact_match_score, "denver", truths) is True
    assert metric_max_over_ground_truths(exact_match_score, "broncos", truths) is False


def test_squad_v1_corpus() -> None:
    # EM: 1, 0, 0 -> 100.0 * 1 / 3
    # F1: 1; max("carolina" vs "carolina panthers" = 2/3, vs "panthers" = 0); 0
    #     -> 100.0 * (1 + 2/3) / 3 = 500/9
    scores = squad_v1(
        ["Denver Broncos", "Carolina", "Santa Clara"],
        [["Denver Broncos"], ["Carolina Panthers", "Panthers"], ["Levi's Stadium"]],
    )
    assert scores["exact_match"] == 100.0 * 1 / 3
    assert scores["f1"] == pytest.approx(500 / 9, abs=1e-12)
    assert set(scores) == {"exact_match", "f1"}


def test_squad_v1_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        squad_v1([], [])
    with pytest.raises(ValueError):
        squad_v1(["a"], [["a"], ["b"]])
    with pytest.raises(ValueError):
        squad_v1(["a"], [[]])
