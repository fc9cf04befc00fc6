"""The official SQuAD v1.1 metric (``evaluate-v1.1.py``), as pure functions.

Answers are normalised (lower-case, ASCII punctuation removed, the articles
``a``/``an``/``the`` removed as whole words, whitespace collapsed); F1 is over
token bags; each question takes the best score over all of its gold answers.
"""
from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TypedDict

_PUNCTUATION = frozenset(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b")


class SquadScores(TypedDict):
    """Corpus result in percent."""

    exact_match: float
    f1: float


def normalize_answer(s: str) -> str:
    """Lower-case, drop ASCII punctuation and articles, collapse whitespace."""
    text = "".join(ch for ch in s.lower() if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def f1_score(prediction: str, ground_truth: str) -> float:
    """Token-bag F1 in 0..1 of the normalised answers."""
    prediction_tokens = normalize_answer(prediction).split()
    ground_truth_tokens = normalize_answer(ground_truth).split()
    common = Counter(prediction_tokens) & Counter(ground_truth_tokens)
    num_same = sum(common.values())
    if num_same == 0:
        return 0.0
    precision = 1.0 * num_same / len(prediction_tokens)
    recall = 1.0 * num_same / len(ground_truth_tokens)
    return (2 * precision * recall) / (precision + recall)


def exact_match_score(prediction: str, ground_truth: str) -> bool:
    """True if the normalised answers are equal."""
    return normalize_answer(prediction) == normalize_answer(ground_truth)


def metric_max_over_ground_truths(
    metric_fn: Callable[[str, str], float], prediction: str, ground_truths: Sequence[str]
) -> float:
    """Best score of ``prediction`` over all gold answers of one question."""
    return max(metric_fn(prediction, ground_truth) for ground_truth in ground_truths)


def squad_v1(predictions: Sequence[str], gold_answer_lists: Sequence[Sequence[str]]) -> SquadScores:
    """Corpus scores in percent: ``100.0 * total / count`` as the official script.

    Per-question scores are added left to right, as the official loop does.
    Raises ``ValueError`` on empty input, lists of different lengths, or a
    question without gold answers.
    """
    if len(predictions) != len(gold_answer_lists):
        raise ValueError(f"{len(predictions)} predictions but {len(gold_answer_lists)} answer lists")
    if not predictions:
        raise ValueError("no questions to score")
    exact_match = 0.0
    f1 = 0.0
    for prediction, ground_truths in zip(predictions, gold_answer_lists):
        if not ground_truths:
            raise ValueError("a question has no gold answers")
        exact_match += metric_max_over_ground_truths(exact_match_score, prediction, ground_truths)
        f1 += metric_max_over_ground_truths(f1_score, prediction, ground_truths)
    total = len(predictions)
    return {"exact_match": 100.0 * exact_match / total, "f1": 100.0 * f1 / total}
