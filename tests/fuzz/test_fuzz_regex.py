"""Fuzz a task spec's user regular expressions (`postprocess: [{regex: PATTERN}]`): nested and counted
repeats, alternations, groups and classes, over generations of up to 300 characters. Each pattern
is refused when the spec is read (a StepError: it does not compile, or its counted repeats would
be written out past the bound) or compiled and searched in bounded time and memory: a prediction,
or a StepTimeoutError (a user error) naming the step."""
from __future__ import annotations

import resource
import time

from hypothesis import given
from hypothesis import strategies as st

from keeptune.core.errors import USER_ERRORS
from keeptune.evaluate import steps
from keeptune.evaluate.steps import StepError, StepTimeoutError, make_step, run_steps
from tests.fuzz.helpers import fuzz, long_fuzz

SEARCH_SECONDS = 0.05  # the step's bound in this test (1 s in use)
SECONDS = 3  # compile and search of one pattern, on a busy 2-core machine; regex overruns its bound by up to 2x
MEGABYTES = 256  # growth of the process's peak memory over a whole example

ATOMS = ["a", "b", ".", r"\d", r"\w", r"\s", "[ab]", "[^a]", r"\p{Greek}", "x", " ", r"\1", "^", "$", r"\b"]
COUNTS = st.sampled_from([0, 1, 2, 3, 5, 12, 0, 1, 2, 3, 5, 12, 100, 999, 5000, 50_000, 10**7, 4294967294])


@st.composite
def pattern(draw, depth: int = 0) -> str:
    parts = []
    for _ in range(draw(st.integers(1, 4))):
        if depth < 3 and draw(st.integers(0, 2)) == 0:
            inner = "|".join(draw(pattern(depth + 1)) for _ in range(draw(st.integers(1, 3))))
            part = draw(st.sampled_from(["({})", "(?:{})", "(?P<g{}>{{}})".format(depth)])).format(inner)
        else:
            part = draw(st.sampled_from(ATOMS))
        quantifier = draw(st.sampled_from(["", "", "*", "+", "?", "*?", "+?", "{m}", "{m,}", "{m,n}", "{,n}"]))
        low, high = draw(COUNTS), draw(COUNTS)
        parts.append(part + quantifier.replace("m", str(low)).replace("n", str(max(low, high))))
    return "".join(parts)


@st.composite
def backtracking(draw) -> str:
    """A repeat of a repeat (or of overlapping alternatives) that must fail at the end: exponential in re."""
    atom = draw(st.sampled_from([".", "a", r"\w", "[ab ]", r"\S"]))
    loop = draw(st.sampled_from(["(?:{a}|{a}{a})+", "({a}+)+", "(?:{a}*)*", "({a}|{a}?)+", "(?:(.)|(..))+",
                                 "({a}+{a}+)+"])).format(a=atom)
    return loop + draw(st.sampled_from([r"\d{9}", r"\p{Greek}", r"\p{Han}", "$!", "#", r"\1{3}!"]))


KNOWN = ["(.+)+$!", "(a|aa)+$", "(?:(.)|(..))+\\p{Greek}", "(x+x+)+y", "(?:a{1000}){1000}", ".{10000000}",
         " {10000000}"]  # the issue's, the classic ones, and compile-time bombs
patterns = pattern() | backtracking() | st.text(max_size=20) | st.sampled_from(KNOWN)
generations = st.text(st.sampled_from("aabx 12,.αé\n"), max_size=300) | st.builds(
    lambda unit, times: unit * times, st.sampled_from(["ab, cd. ", "a", "aab", "x1 "]), st.integers(10, 40))


def check_user_regex(pattern_text: str, generation: str) -> None:
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    bound, steps.REGEX_SECONDS = steps.REGEX_SECONDS, SEARCH_SECONDS
    start = time.perf_counter()
    try:
        step = make_step({"regex": pattern_text})
    except StepError:  # refused when the spec is read, naming the pattern (the spec reader adds file and line)
        step = None
    try:
        if step is not None:
            prediction = run_steps([step], generation, {}, "sample s-0 (s.jsonl:1)")
            assert prediction is None or isinstance(prediction, str)  # None: a first group that took no part
    except StepTimeoutError as err:
        assert isinstance(err, USER_ERRORS) and str(err).startswith("sample s-0 (s.jsonl:1): postprocess[0]: regex")
    finally:
        steps.REGEX_SECONDS = bound
    took = time.perf_counter() - start
    assert took < SECONDS, f"{pattern_text!r} took {took:.1f} s"
    grown = (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss) / 1024
    assert grown < MEGABYTES, f"{pattern_text!r}: the process grew by {grown:.0f} MB"


@fuzz(60)
@given(patterns, generations)
def test_user_regex(pattern_text, generation):
    check_user_regex(pattern_text, generation)


@long_fuzz
@given(patterns, generations)
def test_user_regex_long(pattern_text, generation):
    check_user_regex(pattern_text, generation)
