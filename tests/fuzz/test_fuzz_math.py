"""Fuzz the math data readers: PairReader, `keeptune data stats`, `keeptune data build --source`."""
from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from keeptune.data.math.loader import PairReader
from tests.fuzz.helpers import (
    cli_exit,
    damaged,
    dumps,
    encode,
    encodings,
    fuzz,
    json_values,
    long_fuzz,
    user_error_or_success,
    workdir,
)

PROBLEMS = ["计算 1.00 + 2.00 等于多少？", "将分数 6/8 进行简化。", "计算 3.5 的 2 次方？", "What is $1+1$?", ""]
SOLUTIONS = ["1.00 + 2.00 = 3.00", "最简化的形式为：3/4", "3.5^2 = 12.25", "$\\boxed{2}$", ""]

good_record = st.builds(lambda p, s: {"problem": p, "solution": s},
                        st.sampled_from(PROBLEMS) | st.text(max_size=30), st.sampled_from(SOLUTIONS) | st.text(max_size=30))
conversation = st.builds(lambda p, a, t: {"id": "1", "conversations": [{"from": "human", "value": p},
                                                                      {"from": "gpt", "value": a}], **t},
                         st.sampled_from(PROBLEMS), st.sampled_from(SOLUTIONS),
                         st.sampled_from([{}, {"template": "area"}, {"template": 3}]))
odd_record = st.dictionaries(st.sampled_from(["problem", "solution", "conversations", "template", "x"]),
                             json_values, max_size=3)
line = st.one_of(good_record.map(dumps), conversation.map(dumps), odd_record.map(dumps), json_values.map(dumps),
                 st.just(""), st.just("   "), st.text(max_size=40), st.just("[1, 2]"), st.just("{oops"))


@st.composite
def math_file(draw) -> bytes:
    lines = draw(st.lists(line, max_size=8))
    ending = draw(st.sampled_from(["\n", "\r\n"]))
    text = ending.join(lines) + draw(st.sampled_from([ending, ""]))
    if draw(st.booleans()) and lines:  # one JSON array, as the seed wrote conversation files
        text = "[" + ",".join(x for x in lines if x.strip()) + "]"
    return draw(damaged(encode(text, draw(encodings))))


def check_pair_reader(content: bytes) -> None:
    with workdir() as folder:
        path = folder / "train.json"
        path.write_bytes(content)
        pairs = user_error_or_success(lambda: list(PairReader(path)), [str(path)])
        assert pairs is None or all(isinstance(p.problem, str) and isinstance(p.solution, str) for p in pairs)
        reader = PairReader(path, skip_bad=True)
        pairs = list(reader)  # with --skip-bad a bad line never stops reading
        assert reader.lines == reader.skipped + reader.yielded == reader.skipped + len(pairs)


def check_stats_and_build(content: bytes, skip_bad: bool) -> None:
    with workdir() as folder:
        path = folder / "train.json"
        path.write_bytes(content)
        flag = ["--skip_bad", "true"] if skip_bad else []
        cli_exit(["data", "stats", str(path), *flag], [str(path)])
        out = folder / "out" / "built.jsonl"
        cli_exit(["data", "build", "--source", str(path), "--strategy", "real", "--out", str(out), *flag],
                 [str(path), str(out)], outputs=[out])


@fuzz(60)
@given(math_file())
def test_pair_reader(content):
    check_pair_reader(content)


@fuzz(25)
@given(math_file(), st.booleans())
def test_data_stats_and_build(content, skip_bad):
    check_stats_and_build(content, skip_bad)


@long_fuzz
@given(math_file())
def test_pair_reader_long(content):
    check_pair_reader(content)


@long_fuzz
@given(math_file(), st.booleans())
def test_data_stats_and_build_long(content, skip_bad):
    check_stats_and_build(content, skip_bad)
