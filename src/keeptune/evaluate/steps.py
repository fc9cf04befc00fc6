"""Answer post-processing: named steps that turn a decoded generation into the
prediction the metrics score. A task spec lists them in order (`postprocess:`);
each is a pure function of the text so far and the sample's fields.

    strip                          surrounding whitespace removed
    first_line                     the text before the first newline
    {regex: PATTERN}               the first match (its first group when it has one); "" when none
    {math_extract: seed|final|last, problem_field: problem}
                                   the math judge's extraction (metrics/math_judge.py): drop an echo of the
                                   problem, then the first (seed) or last (final) match of the
                                   problem's template answer shape, or the last number (last);
                                   None when nothing matches

The seed protocol for SQuAD is ``[strip, first_line]``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Callable, Optional

from keeptune.evaluate.metrics import math_judge


class StepError(ValueError):
    """A post-processing step that does not exist or whose option is wrong (the spec reader adds where)."""


@dataclass(frozen=True)
class Step:
    name: str
    apply: Callable[[Optional[str], dict], Optional[str]]
    fields: tuple[str, ...] = ()  # sample fields the step reads


def _regex(pattern: str) -> Callable:
    try:
        compiled = re.compile(pattern)
    except (re.error, TypeError) as err:
        raise StepError(f"regex {pattern!r} does not compile ({err})") from None

    def apply(text: Optional[str], fields: dict) -> str:
        found = compiled.search(text or "")
        if found is None:
            return ""
        return found.group(1) if compiled.groups else found.group(0)
    return apply


def _math_extract(extraction: str, problem_field: str) -> Callable:
    if extraction not in math_judge.EXTRACTIONS:
        raise StepError(f"math_extract is {extraction!r}; choose one of {', '.join(math_judge.EXTRACTIONS)}")

    def apply(text: Optional[str], fields: dict) -> Optional[str]:
        problem = str(fields.get(problem_field, ""))
        return math_judge.extract(math_judge.drop_echo(problem, text or ""), math_judge.classify(problem), extraction)
    return apply


SIMPLE = {
    "strip": lambda text, fields: (text or "").strip(),
    "first_line": lambda text, fields: (text or "").split("\n", 1)[0],
}
NAMES = (*SIMPLE, "regex", "math_extract")


def make_step(entry: Any) -> Step:
    """A step from its spec entry: a name, or a one-key mapping {name: option} (plus named options)."""
    if isinstance(entry, str):
        if entry in SIMPLE:
            return Step(entry, SIMPLE[entry])
        if entry in NAMES:
            raise StepError(f"step {entry!r} needs an option, e.g. {{{entry}: ...}}")
        raise StepError(f"unknown step {entry!r}; the steps: {', '.join(NAMES)}")
    if not isinstance(entry, dict) or not entry:
        raise StepError(f"a step is a name or a mapping such as {{regex: '(\\\\d+)'}}, not {entry!r}")
    name = next(iter(entry))
    options = {k: v for k, v in entry.items() if k != name}
    if name == "regex" and not options:
        return Step("regex", _regex(entry[name]))
    if name == "math_extract" and set(options) <= {"problem_field"}:
        field = options.get("problem_field", "problem")
        if not isinstance(field, str):
            raise StepError(f"math_extract's problem_field is {field!r}; give a field name")
        return Step("math_extract", _math_extract(entry[name], field), (field,))
    if name in NAMES:
        raise StepError(f"step {name!r} takes no options {sorted(options)}")
    raise StepError(f"unknown step {name!r}; the steps: {', '.join(NAMES)}")


def run_steps(steps: list[Step], raw: str, fields: dict) -> Optional[str]:
    text: Optional[str] = raw
    for step in steps:
        text = step.apply(text, fields)
    return text
