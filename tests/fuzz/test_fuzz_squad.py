"""Fuzz the SQuAD v1.1 reader: `load_samples` and `resolve_data` on near-SQuAD JSON."""
from __future__ import annotations

import json

from hypothesis import given
from hypothesis import strategies as st

from keeptune.data.squad import SquadSample, load_samples, resolve_data
from tests.fuzz.helpers import damaged, encode, encodings, fuzz, json_values, long_fuzz, user_error_or_success, workdir

text = st.text(max_size=20)
answer = st.fixed_dictionaries({"text": text, "answer_start": st.integers(0, 100)})
question = st.fixed_dictionaries({"id": text, "question": text, "answers": st.lists(answer, max_size=2)})
paragraph = st.fixed_dictionaries({"context": text, "qas": st.lists(question, max_size=2)})
article = st.fixed_dictionaries({"title": text, "paragraphs": st.lists(paragraph, max_size=3)})
squad = st.fixed_dictionaries({"version": st.just("1.1"), "data": st.lists(article, max_size=3)})


@st.composite
def mutated(draw, value):
    """`value` with one node (maybe) replaced by any JSON value."""
    if not draw(st.integers(0, 3)):
        return draw(json_values)
    if isinstance(value, dict) and value:
        key = draw(st.sampled_from(sorted(value)))
        if draw(st.booleans()):
            return {k: v for k, v in value.items() if k != key}
        return {**value, key: draw(mutated(value[key]))}
    if isinstance(value, list) and value:
        i = draw(st.integers(0, len(value) - 1))
        return value[:i] + [draw(mutated(value[i]))] + value[i + 1:]
    return value


@st.composite
def squad_file(draw) -> bytes:
    value = draw(mutated(draw(squad)))
    body = json.dumps(value, ensure_ascii=draw(st.booleans()), indent=draw(st.sampled_from([None, 1])))
    return draw(damaged(encode(body, draw(encodings))))


def check_squad(content: bytes) -> None:
    with workdir() as folder:
        path = folder / "dev.json"
        path.write_bytes(content)
        assert resolve_data(str(path)) == path
        samples = user_error_or_success(lambda: load_samples(path), [str(path)])
        if samples is not None:
            assert samples and all(isinstance(s, SquadSample) for s in samples)
            for s in samples:
                assert all(isinstance(v, str) for v in (s.id, s.passage, s.question, s.label, *s.answers))


@fuzz(80)
@given(squad_file())
def test_squad_reader(content):
    check_squad(content)


@long_fuzz
@given(squad_file())
def test_squad_reader_long(content):
    check_squad(content)
