"""Judge of the contest's arithmetic as the seed's judge function does it: pure
functions, one sample at a time, and an aggregate over a corpus.

Extraction of the answer from a prediction (after dropping an echo of the
problem at its start):

- ``seed``: the seed's way: the FIRST match of the template's solution pattern
  (for discount and sales, whose solution is a bare number: the first number);
- ``final``: the LAST match of the same pattern, for worked-step outputs that end
  with the solution line;
- ``last``: the last number of the output (the last ``a/b`` for fractions).

English problems are judged by the last ``\\boxed{}`` value (the last number when
the prediction has none); problems that fit no template by the last number. The
reference value is read from the reference solution with the ``final`` rule.

Two comparisons at every EPS of ``EPSILONS``: ``seed`` is NumPy's
``isclose(ref, pred, atol=EPS)`` on floats, whose default rtol=1e-5 lets large
values pass with errors far above EPS; ``strict`` is ``|ref - pred| <= EPS``
computed exactly on the decimal numerals. Fractions compare numerator and
denominator exactly; non-numeric English answers compare as normalized text.
"""
from __future__ import annotations

import re
from decimal import Decimal, InvalidOperation
from typing import Iterable, Optional

import numpy as np

from keeptune.data.math.templates import BY_NAME, ENGLISH, EXACT, TEMPLATE_NAMES, classify

EPSILONS: tuple[float, ...] = (1e-8, 1e-4, 1e-2)
EXTRACTIONS: tuple[str, ...] = ("seed", "final", "last")
JUDGES: tuple[str, ...] = ("seed", "strict")
NUMBER = re.compile(r"(-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)")
FRACTION = re.compile(r"(\d+)/(\d+)")
_LATEX_NOISE = re.compile(r"\s+|\\left|\\right|\\!|\\,|\^\{?\\circ\}?|\\%|%|\\\$|\$")


def eps_key(eps: float) -> str:
    """The key of an EPS in results, Python's own spelling: ``1e-08``, ``0.0001``, ``0.01``."""
    return str(eps)


def drop_echo(problem: str, prediction: str) -> str:
    """The prediction without a leading copy of the problem text."""
    text = prediction.lstrip()
    if problem and text.startswith(problem):
        return text[len(problem) :]
    return text


def boxed(text: str) -> Optional[str]:
    """Content of the last ``\\boxed{...}`` (braces balanced), else None."""
    start = text.rfind("\\boxed{")
    if start < 0:
        return None
    depth, begin = 0, start + len("\\boxed{")
    for pos in range(begin - 1, len(text)):
        depth += {"{": 1, "}": -1}.get(text[pos], 0)
        if depth == 0:
            return text[begin:pos]
    return None


def _last(pattern: re.Pattern[str], text: str) -> Optional[re.Match[str]]:
    found = None
    for found in pattern.finditer(text):
        pass
    return found


def _answer(found: Optional[re.Match[str]], fraction: bool) -> Optional[str]:
    if found is None:
        return None
    return "/".join(found.groups()[-2:]) if fraction else found.groups()[-1]


def extract(text: str, template: str, extraction: str = "seed") -> Optional[str]:
    """The answer a text gives for a problem of ``template``, as a string (``a/b`` for fractions).

    Args:
        text: Prediction (echo already dropped) or reference solution.
        template: Template name, ``english`` or ``unknown``.
        extraction: One of `EXTRACTIONS`.
    """
    if extraction not in EXTRACTIONS:
        raise ValueError(f"unknown extraction {extraction!r}; choose from {', '.join(EXTRACTIONS)}")
    fraction = template == "fraction"
    if template == ENGLISH:
        inside = boxed(text)
        if inside is not None:
            return inside
    elif template in BY_NAME and extraction != "last":
        pattern = BY_NAME[template].answer_re
        found = pattern.search(text) if extraction == "seed" else _last(pattern, text)
        return _answer(found, fraction)
    return _answer(_last(FRACTION if fraction else NUMBER, text), fraction)


def _normalize_latex(text: str) -> str:
    text = _LATEX_NOISE.sub("", text).replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    return text.rstrip(".")


def _fraction(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split("/"))


def _numbers(ref: str, pred: str) -> Optional[tuple[Decimal, Decimal]]:
    try:
        values = Decimal(ref), Decimal(pred)
    except InvalidOperation:
        return None
    return values if all(v.is_finite() for v in values) else None


def compare(
    reference: Optional[str],
    predicted: Optional[str],
    template: str,
    epsilons: Iterable[float] = EPSILONS,
) -> dict[str, dict[str, bool]]:
    """{judge: {eps key: correct}} for two extracted answers."""
    epsilons = tuple(epsilons)
    keys = [eps_key(eps) for eps in epsilons]

    def flat(correct: bool) -> dict[str, dict[str, bool]]:
        return {name: dict.fromkeys(keys, correct) for name in JUDGES}

    if reference is None or predicted is None:
        return flat(False)
    if template == "fraction":
        return flat(_fraction(reference) == _fraction(predicted))
    if template == ENGLISH:
        reference, predicted = _normalize_latex(reference), _normalize_latex(predicted)
    numbers = _numbers(reference, predicted)
    if numbers is None:
        return flat(template == ENGLISH and reference == predicted)
    ref, pred = numbers
    gap = EXACT.subtract(ref, pred).copy_abs()
    ref_f, pred_f = float(ref), float(pred)
    return {
        "seed": {k: bool(np.isclose(ref_f, pred_f, atol=e)) for k, e in zip(keys, epsilons)},
        "strict": {k: gap <= Decimal(repr(e)) for k, e in zip(keys, epsilons)},
    }


def judge(
    problem: str,
    prediction: Optional[str],
    reference_solution: str,
    template: Optional[str] = None,
    extraction: str = "seed",
    epsilons: Iterable[float] = EPSILONS,
) -> dict:
    """Score one prediction.

    Args:
        problem: The raw problem text (no prompt).
        prediction: The model's output (None counts as empty).
        reference_solution: The reference solution line.
        template: Template name; classified from the problem when None.
        extraction: ``seed``, ``final`` or ``last`` (see the module docstring).
        epsilons: Absolute tolerances.

    Returns:
        ``{"template", "extraction", "extracted", "reference", "seed": {eps: bool},
        "strict": {eps: bool}}`` with eps keys from `eps_key`.
    """
    name = template or classify(problem)
    predicted = extract(drop_echo(problem, prediction or ""), name, extraction)
    reference = extract(reference_solution, name, "final")
    verdict = compare(reference, predicted, name, epsilons)
    return {"template": name, "extraction": extraction, "extracted": predicted,
            "reference": reference, **verdict}


def aggregate(results: Iterable[dict]) -> dict:
    """Accuracy per judge and EPS, and a per-template ``[correct, total]`` table.

    Returns:
        ``{"n": N, "accuracy": {judge: {eps: share}},
        "per_template": {template: {judge: {eps: [correct, total]}}}}``;
        templates in the order of `TEMPLATE_NAMES`, then the others.
    """
    table: dict[str, dict[str, dict[str, list[int]]]] = {}
    totals: dict[str, dict[str, int]] = {j: {} for j in JUDGES}
    n = 0
    for result in results:
        n += 1
        row = table.setdefault(result["template"], {j: {} for j in JUDGES})
        for j in JUDGES:
            for key, correct in result[j].items():
                cell = row[j].setdefault(key, [0, 0])
                cell[0] += int(correct)
                cell[1] += 1
                totals[j][key] = totals[j].get(key, 0) + int(correct)
    order = [name for name in TEMPLATE_NAMES if name in table] + sorted(
        name for name in table if name not in TEMPLATE_NAMES
    )
    accuracy = {j: {k: (c / n if n else 0.0) for k, c in totals[j].items()} for j in JUDGES}
    return {"n": n, "accuracy": accuracy, "per_template": {name: table[name] for name in order}}
