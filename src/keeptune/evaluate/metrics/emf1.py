"""The seed metric "EmF1" (MindFormers' ``EmF1Metric``), as pure functions.

Per-sample scoring (:func:`segment`, :func:`f1_score`, :func:`exact_match`) is
kept apart from corpus aggregation (:func:`emf1`, :func:`result_line`), in the
style of lm-evaluation-harness. The behaviour mirrors MindFormers byte for byte:

* F1 is the longest common *contiguous* run of segments (not a token bag), where
  every CJK character is a segment and other text is cut by ``jieba.cut``;
* EM compares the two strings after lower-casing, stripping and deleting the
  characters of :data:`PUNCTUATION` (ASCII ``. , ? ! ' "`` are kept);
* ``"……"`` is one two-character entry of the set while membership is tested
  per character, so ``…`` (U+2026) is never removed.
"""
from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import TypedDict

#: MindFormers' ``sp_char`` list, verbatim (including the 2-char ``"……"``).
PUNCTUATION: frozenset[str] = frozenset([
    "-", ":", "_", "*", "^", "/", "\\", "~", "`", "+", "=",
    "，", "。", "：", "？", "！", "“", "”", "；", "’", "《", "》", "……", "·", "、",
    "「", "」", "（", "）", "－", "～", "『", "』",
])


class EmF1Scores(TypedDict):
    """Corpus result: scores in percent and the number of samples."""

    F1: float
    Em: float
    total_count: int


@functools.cache
def _jieba_cut() -> Callable[[str], Iterator[str]]:
    """Import jieba on first use, silence its start-up log, return ``jieba.cut``."""
    import jieba

    jieba.setLogLevel(logging.WARNING)
    return jieba.cut


def _is_cjk(char: str) -> bool:
    """True for a CJK unified ideograph in U+4E00..U+9FA5 (the seed's regex)."""
    return "\u4e00" <= char <= "\u9fa5"


def segment(text: str) -> list[str]:
    """MindFormers' ``mixed_segmentation(text, rm_punc=True)``.

    Lower-case and strip; drop characters in :data:`PUNCTUATION` without ending
    the current run; each CJK character is its own segment; each maximal run of
    other characters is cut with ``jieba.cut`` (default mode) and every piece,
    whitespace included, is a segment.
    """
    cut = _jieba_cut()
    segments: list[str] = []
    run = ""
    for char in text.lower().strip():
        if char in PUNCTUATION:
            continue
        if _is_cjk(char):
            if run:
                segments.extend(cut(run))
                run = ""
            segments.append(char)
        else:
            run += char
    if run:
        segments.extend(cut(run))
    return segments


def _longest_common_run(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common contiguous run (substring) of two lists."""
    best = 0
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0] * (len(b) + 1)
        for j, y in enumerate(b):
            if x == y:
                current[j + 1] = previous[j] + 1
                best = max(best, current[j + 1])
        previous = current
    return best


def f1_score(prediction: str, label: str) -> float:
    """Per-sample F1 in 0..1 over segments, by longest common contiguous run."""
    label_segs = segment(label)
    pred_segs = segment(prediction)
    common = _longest_common_run(label_segs, pred_segs)
    if common == 0:
        return 0.0
    precision = 1.0 * common / len(pred_segs)
    recall = 1.0 * common / len(label_segs)
    return (2 * precision * recall) / (precision + recall)


def _strip_punctuation(text: str) -> str:
    """MindFormers' ``remove_punctuation``: lower, strip, delete chars in P."""
    return "".join(c for c in text.lower().strip() if c not in PUNCTUATION)


def exact_match(prediction: str, label: str) -> float:
    """1.0 if the strings agree after :func:`_strip_punctuation`, else 0.0."""
    return 1.0 if _strip_punctuation(prediction) == _strip_punctuation(label) else 0.0


def emf1(predictions: Sequence[str], labels: Sequence[str]) -> EmF1Scores:
    """Corpus EmF1 in percent, computed in the seed's order of operations.

    The seed adds per-sample scores one by one (a plain left-to-right loop, not
    ``sum``, whose float algorithm changed in Python 3.12) and then evaluates
    ``100.0 * total / count``. Raises ``ValueError`` on empty input or on
    lists of different lengths (the seed silently zipped them).
    """
    if len(predictions) != len(labels):
        raise ValueError(f"{len(predictions)} predictions but {len(labels)} labels")
    if not labels:
        raise ValueError("no samples to score")
    f1_total = 0.0
    em_total = 0.0
    for prediction, label in zip(predictions, labels):
        f1_total += f1_score(prediction, label)
        em_total += exact_match(prediction, label)
    count = len(labels)
    return {"F1": 100.0 * f1_total / count, "Em": 100.0 * em_total / count, "total_count": count}


def result_line(scores: EmF1Scores) -> str:
    """The seed's result line, with Python's default float formatting."""
    return f"F1 score: {scores['F1']}, Em score: {scores['Em']}, total_count: {scores['total_count']}"
