"""Post-processing steps (keeptune.evaluate.steps): a user's regular expression searches with a time bound."""
from __future__ import annotations

import re
import time

import pytest

from keeptune.cli import main
from keeptune.evaluate import steps
from keeptune.evaluate.steps import StepTimeoutError, make_step, run_steps
from tests.evaluate.test_spec import SPEC, write
from tests.tiny import save_tiny

# Backtracks exponentially on any text without the Greek letter it needs last: the regex engine
# tries every split of the text into one- and two-character pieces (Fibonacci(n) of them) before
# giving up; the stdlib's re does the same, without a clock.
BACKTRACKS = r"(?:(.)|(..))+\p{Greek}"


def test_a_regex_that_backtracks_without_end_is_stopped_naming_step_and_sample(monkeypatch):
    monkeypatch.setattr(steps, "REGEX_SECONDS", 0.05)
    chain = [make_step("strip"), make_step({"regex": BACKTRACKS})]
    start = time.perf_counter()
    with pytest.raises(StepTimeoutError) as info:
        run_steps(chain, "  " + "ab, cd. " * 25, {}, "sample qa-0 (qa.jsonl:1)")
    assert time.perf_counter() - start < 5
    message = str(info.value)
    assert message.startswith("sample qa-0 (qa.jsonl:1): postprocess[1]: regex '(?:(.)|(..))+\\\\p{Greek}' searched "
                              "for more than 0.05 s on a generation of 199 characters ('ab, cd. ab, cd."), message


def test_a_regex_keeps_re_semantics_first_match_and_first_group():
    assert run_steps([make_step({"regex": r"(\d+)\s*apples"})], "I have 12 apples and 3 apples", {}) == "12"
    assert run_steps([make_step({"regex": r"\d+"})], "x 7 y 8", {}) == "7"
    assert run_steps([make_step({"regex": r"(\d+)"})], "none", {}) == ""
    assert run_steps([make_step({"regex": "(.+)+$!"})], "a" * 200, {}) == ""  # the pattern: no match, at once


def test_eval_with_a_backtracking_regex_ends_with_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(steps, "REGEX_SECONDS", 0.05)
    spec = SPEC.replace("generation: {max_new_tokens: 4}", "generation: {max_new_tokens: 48}").replace(
        "postprocess: [strip, first_line]", f"postprocess: [{{regex: '{BACKTRACKS}'}}]")
    path = write(tmp_path, spec)
    model = save_tiny(tmp_path / "tiny")
    assert main(["eval", str(path), "--model", str(model), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err  # progress bars, then the error
    errors = [line for line in err.splitlines() if line.startswith("keeptune: error: ")]
    assert "Traceback" not in err and len(errors) == 1 and err.rstrip().endswith(errors[0])
    assert "postprocess[0]: regex" in errors[0] and "searched for more than 0.05 s" in errors[0]


# The scanner counts a group's `:` (of `(?:`) and `x` (of `(?x)`) as characters: an overcount, never an undercount.
@pytest.mark.parametrize("pattern,items", [(".{10000000}", 10000000), ("(x){100000}", 100000),
                                           ("x{0,4294967294}", 4294967294), ("(?:ab){3}(?:cd){40000,}", 9 + 120000),
                                           ("(?x)(?:abc) {20000}", 1 + 4 * 20000 + 1)])  # verbose: the space is none
def test_counted_repeats_that_compile_into_gigabytes_are_refused_before_compiling(pattern, items):
    """regex writes counted repeats out: .{10000000} took 2.5 GB and 5 s to compile before this check."""
    with pytest.raises(steps.StepError) as info:
        make_step({"regex": pattern})
    assert str(info.value).startswith(f"regex {pattern!r} would compile into {items} items, over {steps.REGEX_ITEMS}")


def test_counts_of_neighbours_and_alternatives_add_up():
    assert steps.written_out(r"\d{4}-\d{2}-\d{2}|.{0,500}") == 4 + 1 + 2 + 1 + 2 + 500
    assert steps.written_out(r"((a){10}[\]x]{7}){10}") == (10 + 7) * 10
    pattern, text = r"\d{4}-\d{2}-\d{2}|z.{0,500}", "on 2024-01-31, zone 4."
    assert make_step({"regex": pattern}).apply(text, {}) == re.search(pattern, text).group(0) == "2024-01-31"
