"""Answer post-processing: named steps that turn a decoded generation into the
prediction the metrics score. A task spec lists them in order (`postprocess:`);
each is a pure function of the text so far and the sample's fields.

    strip                          surrounding whitespace removed
    first_line                     the text before the first newline
    {regex: PATTERN}               the first match (its first group when it has one); "" when none;
                                   a search that takes over REGEX_SECONDS is an error naming the step
    {math_extract: seed|final|last, problem_field: problem}
                                   the math judge's extraction (metrics/math_judge.py): drop an echo of the
                                   problem, then the first (seed) or last (final) match of the
                                   problem's template answer shape, or the last number (last);
                                   None when nothing matches

The seed protocol for SQuAD is ``[strip, first_line]``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional

import regex  # re's syntax, plus a timeout: a user's pattern may backtrack for hours

from keeptune.core.errors import DataError
from keeptune.evaluate.metrics import math_judge

# The most seconds a user's regular expression may search one generation (regex checks the clock as it
# backtracks; a pattern that keeps to this finishes in microseconds on a few hundred tokens).
REGEX_SECONDS = 1.0
# Compiling, regex writes a counted repeat out ((?:ab){3} as ababab), 250 to 700 bytes an item: .{10000000} took
# 2.5 GB. A pattern may compile into this many items at most (35 MB at most).
REGEX_ITEMS = 50_000
COUNT = regex.compile(r"\{(\d*)(?:,(\d*))?\}")


class StepError(ValueError):
    """A post-processing step that does not exist or whose option is wrong (the spec reader adds where)."""


class StepTimeoutError(DataError):
    """A step that ran out of time on one generation (a regular expression that backtracks without end)."""


@dataclass(frozen=True)
class Step:
    name: str
    apply: Callable[[Optional[str], dict], Optional[str]]
    fields: tuple[str, ...] = ()  # sample fields the step reads


def _regex(pattern: str) -> Callable:
    if isinstance(pattern, str) and written_out(pattern) > REGEX_ITEMS:
        raise StepError(f"regex {pattern!r} would compile into {written_out(pattern)} items, over {REGEX_ITEMS} (the "
                        "regex engine writes counted repeats out in memory); use *, + or smaller counts")
    try:
        compiled = regex.compile(pattern)
    except (regex.error, TypeError, ValueError) as err:
        raise StepError(f"regex {pattern!r} does not compile ({err})") from None

    def apply(text: Optional[str], fields: dict) -> str:
        try:
            found = compiled.search(text or "", timeout=REGEX_SECONDS)
        except TimeoutError:
            raise StepTimeoutError(f"regex {pattern!r} searched for more than {REGEX_SECONDS:g} s on a generation of "
                                   f"{len(text or '')} characters ({(text or '')[:60]!r}...): it backtracks without "
                                   "end; simplify it (no nested repeats such as (.+)+)") from None
        if found is None:
            return ""
        return found.group(1) if compiled.groups else found.group(0)
    return apply


def written_out(pattern: str) -> int:
    """At least the items a pattern compiles into with its counted repeats written out: characters, classes and
    escapes count one, alternatives and neighbours add up, `{m,n}` multiplies what it repeats by its larger
    number. A count after whitespace or a quantifier repeats the larger of the item before them (verbose mode
    ignores whitespace) and one (the whitespace itself), so the bound holds in either mode."""
    frames = [[0, 0]]  # per open group: the items before the last one, the last one (what a count would repeat)
    i = 0
    while i < len(pattern):
        char, count = pattern[i], COUNT.match(pattern, i)
        if count and frames[-1][1]:
            frames[-1][1] *= max(int(count[1] or 0), int(count[2] or 0), 1)
            i = count.end()
            continue
        if char == "(":
            frames.append([0, 0])
            i += 1
            continue
        if char in "*+?" or char.isspace():  # a count after them repeats the item before, or whitespace
            frames[-1] = [frames[-1][0] + char.isspace(), max(frames[-1][1], char.isspace())]
            i += 1
            continue
        if char == "|" or (char == ")" and len(frames) == 1):  # an alternative starts; a stray ) is a character
            frames[-1] = [sum(frames[-1]) + (char == ")"), 0]
            i += 1
            continue
        if char == ")":
            item, i = sum(frames.pop()), i + 1
        else:
            item, i = 1, _item_end(pattern, i)
        frames[-1] = [sum(frames[-1]), item]
    return sum(sum(frame) for frame in frames)


def _item_end(pattern: str, i: int) -> int:
    """Where the character, escape (`\\p{...}` whole) or class (`[...]`) at `i` ends."""
    if pattern[i] == "\\":
        if pattern[i + 1:i + 2] in ("p", "P", "x", "N", "o") and pattern[i + 2:i + 3] == "{":
            close = pattern.find("}", i)
            return close + 1 if close > 0 else len(pattern)
        return i + 2
    if pattern[i] == "[":
        j = i + 1 + (pattern[i + 1:i + 2] == "^")
        j += pattern[j:j + 1] == "]"  # a first ] is a member
        while j < len(pattern) and pattern[j] != "]":
            j += 2 if pattern[j] == "\\" else 1
        return j + 1
    return i + 1


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


def run_steps(steps: list[Step], raw: str, fields: dict, sample: str = "") -> Optional[str]:
    """The prediction: each step applied in turn to the generation `raw` of a sample with `fields`.
    A StepTimeoutError names the step (`postprocess[i]`) and `sample` (its id and FILE:LINE, when given)."""
    text: Optional[str] = raw
    for i, step in enumerate(steps):
        try:
            text = step.apply(text, fields)
        except StepTimeoutError as err:
            raise StepTimeoutError(f"{sample + ': ' if sample else ''}postprocess[{i}]: {err}") from None
    return text
