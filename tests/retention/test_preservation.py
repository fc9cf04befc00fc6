"""Preservation data (keeptune.retention.preservation): from a SQuAD file or address, a task spec or the
self-written offline default; chosen evenly; rendered in the retention task's prompt; refused when it
shares a passage or a prompt with what the gate evaluates (both outcomes). Nothing touches the network."""
from __future__ import annotations

import json
import urllib.request

import pytest

from keeptune.core.errors import ConfigError
from keeptune.evaluate.samples import load_task_samples, resolve_data_path
from keeptune.evaluate.spec import load_spec
from keeptune.evaluate.task import SpecTask
from keeptune.retention.preservation import evenly_spaced, load_preservation, plan_preservation, preservation_prompts
from keeptune.train.config import RetentionConfig

# The seed's SQuAD prompt (squad-seed's, docs/eval.md), written out here byte for byte.
SEED = ("Read the passage and answer the question below.\n\n### Instruction:\n{passage}\n\n### Input:\n{question}"
        "\n\n### Response:")
LONG = ("The Danube is the second-longest river in Europe. It rises in the Black Forest and flows east for some "
        "2,850 kilometres through ten countries before it empties into the Black Sea.")


def squad(*paragraphs: tuple[str, str, str]) -> dict:
    """A SQuAD v1.1 document of (id, context, question) paragraphs, each answered by its first word."""
    return {"version": "1.1", "data": [{"title": "T", "paragraphs": [
        {"context": c, "qas": [{"id": i, "question": q, "answers": [{"text": c.split()[0], "answer_start": 0}]}]}
        for i, c, q in paragraphs]}]}


def write(path, document) -> str:
    path.write_text(json.dumps(document), encoding="utf-8")
    return str(path)


@pytest.fixture
def gate(tmp_path):
    """squad-seed over a 3-paragraph file: what the gate evaluates."""
    path = write(tmp_path / "gate.json", squad(("g0", "Ada wrote the first program.", "Who wrote it?"),
                                               ("g1", LONG, "Where does the Danube rise?"),
                                               ("g2", "Bob built a bridge.", "What did Bob build?")))
    compiled = load_spec("squad-seed", {"data.path": path})
    return [SpecTask(compiled, load_task_samples(compiled, compiled.spec.data.path))]


def retention(preservation, n=256, **kw) -> RetentionConfig:
    return RetentionConfig(methods=("replay",), preservation=preservation, preservation_samples=n, **kw)


def test_a_disjoint_squad_file_is_chosen_evenly_and_rendered_in_the_seed_prompt(tmp_path, gate):
    rows = [(f"p{i}", f"Paragraph {i} is about owls number {i}.", f"What is paragraph {i} about?") for i in range(10)]
    path = write(tmp_path / "train.json", squad(*rows))
    chosen = plan_preservation(retention(path, n=4), gate)
    # floor(k x 10 / 4) for k = 0..3
    assert [i.sample.id for i in chosen.items] == ["p0", "p2", "p5", "p7"]
    assert [i.prompt for i in chosen.items] == [SEED.format(passage=rows[k][1], question=rows[k][2])
                                                for k in (0, 2, 5, 7)]
    assert chosen.overlap == [] and chosen.available == 10
    assert chosen.describe() == ("SQuAD file train.json: 4 of 10 samples (evenly spaced); none overlaps the "
                                 "gate's samples")
    # squad-seed reads plain prompts: the text the model reads is the prompt itself
    assert preservation_prompts(retention(path, n=4), gate) == [i.prompt for i in chosen.items]
    every = plan_preservation(retention(path, n=50), gate)  # fewer than asked: all of them
    assert len(every.items) == 10 and every.describe().startswith("SQuAD file train.json: all 10 samples; none")


def test_evenly_spaced_covers_the_whole_source():
    assert evenly_spaced(list(range(1001)), 4) == [0, 250, 500, 750]  # floor(k x 1001 / 4)
    assert evenly_spaced([1, 2], 5) == [1, 2]


def test_a_shared_passage_is_refused_naming_the_file_and_the_samples(tmp_path, gate):
    # g1's passage with other whitespace and case, under another question and id: still the gate's text
    shared = "  " + LONG.upper().replace(" ", "\n ", 3)
    path = write(tmp_path / "mine.json", squad(("m0", "Cats purr.", "Who purrs?"), ("m1", shared, "How long?")))
    with pytest.raises(ConfigError) as info:
        plan_preservation(retention(path), gate)
    message = str(info.value)
    assert "retention.preservation" in message and "mine.json" in message
    assert "1 of the 2 preservation samples" in message and "id m1: its passage" in message
    assert "retention.allow_overlap=true" in message and "train-v1.1.json" in message
    allowed = plan_preservation(retention(path, allow_overlap=True), gate)
    assert allowed.overlap == ["m1"] and "1 overlap the gate's samples (allowed" in allowed.describe()


def test_a_passage_that_contains_a_gate_passage_is_refused(tmp_path, gate):
    path = write(tmp_path / "mine.json", squad(("m0", "Intro. " + LONG + " More text.", "What?")))
    with pytest.raises(ConfigError, match="1 of the 1 preservation samples"):
        plan_preservation(retention(path), gate)
    # a short gate passage inside a longer text is no leak (only equal short passages count)
    path = write(tmp_path / "short.json", squad(("m0", "Bob built a bridge. Then he rested for a long time.", "?")))
    assert plan_preservation(retention(path), gate).overlap == []


def test_the_gate_file_itself_as_preservation_is_refused_whole(tmp_path, gate):
    with pytest.raises(ConfigError, match="3 of the 3 preservation samples .* \\(3 with squad-seed\\)"):
        plan_preservation(retention(str(tmp_path / "gate.json")), gate)


def test_a_task_spec_as_preservation(tmp_path, gate):
    records = [{"passage": f"Text {i} about tides.", "question": f"Question {i}?", "answer": "x"} for i in range(3)]
    (tmp_path / "keep.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    spec = tmp_path / "keep.yaml"
    spec.write_text("name: keep\ndata: {path: keep.jsonl}\nprompt: 'P: {passage} Q: {question}'\n"
                    "reference: answer\nmetrics: [exact_match]\n", encoding="utf-8")
    chosen = plan_preservation(retention(str(spec)), gate)
    # rendered in the prompt of the task it preserves (squad-seed), not in the spec's own
    assert [i.prompt for i in chosen.items] == [SEED.format(**r) for r in records]
    assert chosen.source == "task keep (keep.jsonl)" and chosen.overlap == []
    # an identical prompt is a leak even without a passage: a question-only task kept by the gate
    spec.write_text("name: keep\ndata: {path: keep.jsonl}\nprompt: 'Q: {question}'\nreference: answer\n"
                    "metrics: [exact_match]\n", encoding="utf-8")
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps({"question": r["question"], "answer": "y"}) + "\n"
                                               for r in records), encoding="utf-8")
    kept = load_spec(str(spec), {"data.path": str(tmp_path / "qa.jsonl"), "name": "qa"})
    questions = [SpecTask(kept, load_task_samples(kept, tmp_path / "qa.jsonl"))]
    with pytest.raises(ConfigError, match="3 of the 3 .*id keep-0: its prompt"):
        plan_preservation(retention(str(spec)), questions)


def test_the_built_in_squad_seed_task_as_preservation_overlaps_the_default_gate():
    compiled = load_spec("squad-seed")
    default = [SpecTask(compiled, load_task_samples(compiled, resolve_data_path(compiled.spec)))]
    with pytest.raises(ConfigError, match="54 of the 54"):
        plan_preservation(retention("squad-seed"), default)


def test_preservation_that_fits_no_retention_prompt_is_a_config_error(tmp_path):
    math = load_spec("math-contest", {"data.path": str(tmp_path / "m.jsonl")})
    (tmp_path / "m.jsonl").write_text(json.dumps({"problem": "1 + 1", "solution": "2"}) + "\n", encoding="utf-8")
    tasks = [SpecTask(math, load_task_samples(math, tmp_path / "m.jsonl"))]
    path = write(tmp_path / "p.json", squad(("p0", "Owls hoot.", "Who hoots?")))
    with pytest.raises(ConfigError, match="math-contest reads problem"):
        plan_preservation(retention(path), tasks)
    with pytest.raises(ConfigError, match="offline default"):
        plan_preservation(retention(None), tasks)


def test_a_missing_file_names_the_field_and_the_training_set_address(tmp_path, gate):
    with pytest.raises(ConfigError, match="retention.preservation.*does not exist.*train-v1.1.json"):
        plan_preservation(retention(str(tmp_path / "nope.json")), gate)


def test_an_address_is_downloaded_once_through_the_cache(tmp_path, gate, monkeypatch):
    monkeypatch.setenv("KEEPTUNE_CACHE", str(tmp_path / "cache"))
    body = json.dumps(squad(("t0", "Glaciers move slowly.", "What moves?"))).encode()
    calls = []

    class Response:
        def read(self):
            return body

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

    monkeypatch.setattr(urllib.request, "urlopen", lambda url, *a, **k: calls.append(url) or Response())
    url = "https://example.invalid/train-v1.1.json"
    for _ in range(2):
        chosen = plan_preservation(retention(url), gate)
        assert [i.sample.id for i in chosen.items] == ["t0"] and chosen.source == f"SQuAD file {url}"
    assert calls == [url]


def test_no_method_that_needs_preservation_reads_nothing(gate):
    assert plan_preservation(RetentionConfig(methods=("scale",), preservation="/does/not/exist.json"), gate) is None


# --- the offline default ------------------------------------------------------------------------

def test_the_offline_default_is_self_written_cached_deterministic_and_checked(tmp_path, gate):
    from keeptune.retention import selfwritten
    from tests.tiny import byte_tokenizer, tiny_llama

    model, tokenizer = tiny_llama(), byte_tokenizer()
    config = retention(None, n=3)
    assert plan_preservation(config, gate) is None  # written after the baseline, by the model
    first = load_preservation(config, gate, tmp_path / "cache", model, tokenizer, {"model": "tiny"}, 4)
    assert [i.sample.id for i in first.items] == ["self-000", "self-001", "self-002"]
    assert first.source.startswith("self-written by the base model (3 passages on 3 topics")
    raw = {r["id"]: r["raw"] for r in map(json.loads, open(tmp_path / "cache" / "passages" / "predictions.jsonl"))}
    for k, item in enumerate(first.items):
        fields = item.sample.fields
        assert fields["topic"] == selfwritten.TOPICS[k]
        assert fields["passage"] == selfwritten.tidy_passage(raw[fields["id"]])
        assert item.prompt == SEED.format(passage=fields["passage"], question=fields["question"])
    cached = [json.loads(line) for line in open(tmp_path / "cache" / "samples.jsonl")]
    assert cached == [i.sample.fields for i in first.items]
    # again: nothing generated, the same samples; a larger N keeps the first ones
    again = load_preservation(config, gate, tmp_path / "cache", model, tokenizer, {"model": "tiny"}, 2)
    assert json.loads((tmp_path / "cache" / "passages" / "metrics.json").read_text())["generated"] == 0
    assert [i.prompt for i in again.items] == [i.prompt for i in first.items]
    more = load_preservation(retention(None, n=4), gate, tmp_path / "more", model, tokenizer, {"model": "tiny"})
    assert [i.prompt for i in more.items[:3]] == [i.prompt for i in first.items]


def test_the_offline_default_is_leak_checked_too(tmp_path, gate, monkeypatch):
    from keeptune.retention import selfwritten
    from tests.tiny import byte_tokenizer, tiny_llama

    monkeypatch.setattr(selfwritten, "tidy_passage", lambda raw: LONG)  # as if the model wrote the gate's text
    with pytest.raises(ConfigError, match="2 of the 2 preservation samples from self-written"):
        load_preservation(retention(None, n=2), gate, tmp_path / "c", tiny_llama(), byte_tokenizer(), {})


def test_passages_and_questions_are_tidied():
    from keeptune.retention.selfwritten import tidy_passage, tidy_question

    assert tidy_passage("# Owls\n\n**Owls** are birds.\nThey hunt at night. They can tu") == \
        "Owls Owls are birds. They hunt at night."
    assert tidy_passage("no full stop at all") == "no full stop at all"
    assert tidy_question("Question: Why do owls hunt at night? Because", "owls") == "Why do owls hunt at night?"
    assert tidy_question("I cannot.", "owls") == "What does the passage say about owls?"


def test_the_topics_avoid_the_gate_article():
    """No topic word (of 4 letters or more, but a few plain ones) is a word of the packaged Super Bowl 50 article."""
    import re

    from keeptune.data.shared import PACKAGED_SQUAD
    from keeptune.retention.selfwritten import TOPICS

    article = json.loads(PACKAGED_SQUAD.read_text(encoding="utf-8"))
    words = set(re.findall(r"[a-z]+", json.dumps(article).lower()))
    plain = {"press", "cycle", "road", "great", "making", "blue", "system", "glass", "black", "death", "natural"}
    assert len(TOPICS) == len(set(TOPICS)) == 128
    assert [w for t in TOPICS for w in re.findall(r"[a-z]+", t.lower()) if len(w) > 3 and w in words
            and w not in plain] == []
