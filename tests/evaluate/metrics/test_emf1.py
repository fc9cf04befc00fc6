"""The seed EmF1 metric, pinned to values worked out by hand from SPEC.md section 1.

jieba facts the expectations rely on (checked with jieba 0.42.1, default mode):
an ASCII word or digit run is one piece and every space is its own piece, e.g.
jieba.cut("denver broncos") -> ['denver', ' ', 'broncos'], jieba.cut("a  b") ->
['a', ' ', ' ', 'b']; ASCII punctuation and '…' are pieces of their own, e.g.
jieba.cut("x…y") -> ['x', '…', 'y'], jieba.cut("1-2") -> ['1', '-', '2'].
"""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from keeptune.evaluate.metrics.emf1 import PUNCTUATION, emf1, exact_match, f1_score, result_line, segment

# --- segmentation ------------------------------------------------------------

@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # lower-cased, stripped, then jieba: words and the space between them
        ("  Denver Broncos ", ["denver", " ", "broncos"]),
        # each CJK character is its own segment; jieba never sees them
        ("北京大学", ["北", "京", "大", "学"]),
        # the run "2016" is flushed when 年 arrives
        ("2016年超级碗", ["2016", "年", "超", "级", "碗"]),
        # full-width ， and 。 are in P and vanish
        ("你好，世界。", ["你", "好", "世", "界"]),
        # full-width brackets （ ） are in P
        ("（约翰）", ["约", "翰"]),
        # '-' is dropped without ending the run: jieba sees "12", not "1-2"
        ("1-2", ["12"]),
        # ':' likewise: "a:b" reaches jieba as "ab", one word
        ("a:b", ["ab"]),
        # '…' (U+2026) is not in P (only the 2-char "……" is), so jieba keeps it
        ("x…y", ["x", "…", "y"]),
        # ASCII '.' is not in P: jieba gives it its own piece
        ("Broncos.", ["broncos", "."]),
        # two spaces are two segments
        ("a  b", ["a", " ", " ", "b"]),
        ("", []),
        ("-—", ["—"]),  # '-' dropped; the em dash U+2014 is not in P
    ],
)
def test_segment(text: str, expected: list[str]) -> None:
    assert segment(text) == expected


def test_punctuation_set_keeps_the_two_char_ellipsis_entry() -> None:
    assert "……" in PUNCTUATION
    assert "…" not in PUNCTUATION
    for ascii_kept in ".,?!'\"":
        assert ascii_kept not in PUNCTUATION
    assert len(PUNCTUATION) == 33  # 11 ASCII + 22 full-width entries


# --- per-sample F1 -----------------------------------------------------------

@pytest.mark.parametrize(
    ("prediction", "label", "expected"),
    [
        # identical after lower-casing: L=3 of 3 and 3 -> P=R=1 -> 1
        ("Denver Broncos", "denver broncos", 1.0),
        # pred [the,' ',denver,' ',broncos] (5), label [denver,' ',broncos] (3)
        # L=3, P=3/5, R=1 -> F1 = 2*0.6/1.6 = 0.75
        ("the denver broncos", "denver broncos", 0.75),
        # longer prediction: 9 segs [denver,' ',broncos,' ',won,' ',the,' ',game],
        # label 3; L=3, P=1/3, R=1 -> F1 = (2/3)/(4/3) = 0.5
        ("Denver Broncos won the game", "Denver Broncos", 0.5),
        # contiguous run, not a bag: [broncos,' ',denver] vs [denver,' ',broncos]
        # share no 2-run, L=1, P=R=1/3 -> F1 = 1/3
        ("broncos denver", "denver broncos", 1 / 3),
        # CJK: pred [北,京,大,学] (4), label [北,京] (2); L=2, P=1/2, R=1 -> 2/3
        ("北京大学", "北京", 2 / 3),
        # pred [a,' ',' ',b] (4), label [a,' ',b] (3); L=2 ([a,' '])
        # P=1/2, R=2/3 -> F1 = (2/3)/(7/6) = 4/7
        ("a  b", "a b", 4 / 7),
        # 1-2 segments as [12], so it matches "12" fully
        ("1-2", "12", 1.0),
        # full-width punctuation is ignored: [你,好] vs [你,好]
        ("你好！", "你好", 1.0),
        # '.' stays a segment: pred [broncos,'.'] (2), label [broncos] (1)
        # L=1, P=1/2, R=1 -> 2/3
        ("Broncos.", "broncos", 2 / 3),
        # empty prediction: no segments, L=0 -> 0
        ("", "denver", 0.0),
        # both empty: L=0 -> 0 (while EM is 1, see below)
        ("", "", 0.0),
        # nothing in common
        ("carolina", "denver", 0.0),
    ],
)
def test_f1_score(prediction: str, label: str, expected: float) -> None:
    assert f1_score(prediction, label) == pytest.approx(expected, abs=1e-15)


# --- per-sample EM -----------------------------------------------------------

@pytest.mark.parametrize(
    ("prediction", "label", "expected"),
    [
        ("  Denver Broncos ", "denver broncos", 1.0),  # case and outer spaces
        ("DENVER", "denver", 1.0),
        ("1-2", "12", 1.0),  # '-' deleted
        ("你好，世界。", "你好世界", 1.0),  # full-width marks deleted
        ("levi’s", "levis", 1.0),  # right quote U+2019 is in P
        ("‘x", "x", 0.0),  # left quote U+2018 is not
        ("wait…", "wait", 0.0),  # '…' is never deleted
        ("wait。", "wait", 1.0),
        ("Broncos.", "broncos", 0.0),  # ASCII '.' is kept
        ("levi's", "levis", 0.0),  # ASCII apostrophe is kept
        ("denver  broncos", "denver broncos", 0.0),  # inner spaces are kept
        ("- a", "a", 0.0),  # strip happens before '-' is deleted: " a" != "a"
        ("", "", 1.0),
        ("", "denver", 0.0),
    ],
)
def test_exact_match(prediction: str, label: str, expected: float) -> None:
    assert exact_match(prediction, label) == expected


# --- corpus aggregate and result line ----------------------------------------

def test_emf1_averages_in_percent() -> None:
    # per sample F1: 1.0, 0.75, 0 -> sum 1.75 -> 100.0 * 1.75 / 3 = 175/3
    # per sample EM: 1, 0, 0 -> 100.0 * 1 / 3
    scores = emf1(
        ["denver broncos", "the denver broncos", ""],
        ["Denver Broncos", "denver broncos", "x"],
    )
    assert scores == {"F1": 175.0 / 3, "Em": 100.0 / 3, "total_count": 3}
    # 100.0 * 1 / 3 prints 33.333333333333336, whereas (1 / 3) * 100 would print
    # 33.33333333333333: the seed's order of operations is visible in the line.
    assert result_line(scores) == (
        "F1 score: 58.333333333333336, Em score: 33.333333333333336, total_count: 3"
    )
    # F1 1, 0, 0 (no shared segment) -> 100.0 * 1.0 / 3, not (1.0 / 3) * 100
    one_of_three = emf1(["a", "b", "c"], ["a", "x", "y"])
    assert result_line(one_of_three) == (
        "F1 score: 33.333333333333336, Em score: 33.333333333333336, total_count: 3"
    )


def test_emf1_reproduces_the_published_llama3_em() -> None:
    # The published Llama 3 EM, 44.17029511369134 on 2067 samples = 100.0 * 913 / 2067
    predictions = ["yes"] * 913 + ["no"] * (2067 - 913)
    scores = emf1(predictions, ["yes"] * 2067)
    assert scores["total_count"] == 2067
    assert scores["Em"] == 44.17029511369134
    assert scores["F1"] == 44.17029511369134  # F1 is 1 or 0 here, same sum


def test_result_line_uses_default_float_formatting() -> None:
    line = result_line({"F1": 59.87023775108988, "Em": 0.0, "total_count": 2067})
    assert line == "F1 score: 59.87023775108988, Em score: 0.0, total_count: 2067"
    assert result_line(emf1(["a", "b"], ["a", "b"])) == "F1 score: 100.0, Em score: 100.0, total_count: 2"


def test_emf1_rejects_bad_input() -> None:
    with pytest.raises(ValueError):
        emf1([], [])
    with pytest.raises(ValueError):
        emf1(["a"], ["a", "b"])


# --- properties --------------------------------------------------------------

_texts = st.text(alphabet="ab 北京-，…. A", max_size=8)


@settings(max_examples=150, deadline=None)
@given(_texts, _texts)
def test_f1_is_symmetric_and_bounded(a: str, b: str) -> None:
    # P and R swap when the arguments swap; 2PR/(P+R) is unchanged exactly.
    assert f1_score(a, b) == f1_score(b, a)
    assert 0.0 <= f1_score(a, b) <= 1.0


@settings(max_examples=150, deadline=None)
@given(_texts, _texts)
def test_exact_match_implies_same_segments(a: str, b: str) -> None:
    # Both start from lower().strip() and delete P, so equal strings segment alike.
    if exact_match(a, b) == 1.0:
        assert segment(a) == segment(b)
        assert f1_score(a, b) == (1.0 if segment(a) else 0.0)
