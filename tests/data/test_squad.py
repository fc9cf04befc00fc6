"""SQuAD v1.1 samples (SPEC section 1): one per paragraph, its first question and
that question's first answer. No test touches the network: downloads go through
a fake `urllib.request.urlopen`, into a cache under tmp_path."""
from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from keeptune.data import shared
from keeptune.data.squad import SquadDataError, default_data_path, load_samples, resolve_data

OFFICIAL_URL = "https://rajpurkar.github.io/SQuAD-explorer/dataset/dev-v1.1.json"


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KEEPTUNE_CACHE", str(tmp_path / "cache"))


def tiny_squad(paragraphs: list[dict]) -> dict:
    return {"version": "1.1", "data": [{"title": "T", "paragraphs": paragraphs}]}


def paragraph(context: str, *qas: tuple[str, str, list[str]]) -> dict:
    return {"context": context, "qas": [
        {"id": qid, "question": q, "answers": [{"answer_start": 0, "text": a} for a in answers]}
        for qid, q, answers in qas]}


TINY = tiny_squad([
    paragraph("Paris is the capital of France.",
              ("p1", "What is the capital of France?", ["Paris", "the city of Paris"]),
              ("p1b", "Which country?", ["France"])),
    paragraph("Water boils at 100 degrees.", ("p2", "At what temperature does water boil?", ["100 degrees"])),
])


# --- the real shared file ---------------------------------------------------------

def test_shared_file_gives_54_samples(squad_sample):
    samples = load_samples(squad_sample)
    assert len(samples) == 54
    assert len({s.id for s in samples}) == 54


def test_first_sample_is_first_question_and_first_answer(squad_sample):
    first = load_samples(squad_sample)[0]
    # read by hand from dev-v1.1-super-bowl-50.json, data[0].paragraphs[0].qas[0]
    assert first.id == "56be4db0acb8001400a502ec"
    assert first.question == "Which NFL team represented the AFC at Super Bowl 50?"
    assert first.label == "Denver Broncos"
    assert first.answers == ("Denver Broncos", "Denver Broncos", "Denver Broncos")
    assert first.passage.startswith("Super Bowl 50 was an American football game")


def test_every_sample_matches_the_json(squad_sample):
    raw = json.loads(squad_sample.read_text(encoding="utf-8"))
    paragraphs = [p for article in raw["data"] for p in article["paragraphs"]]
    samples = load_samples(squad_sample)
    assert len(samples) == len(paragraphs)
    for sample, para in zip(samples, paragraphs):
        qa = para["qas"][0]
        assert sample.id == qa["id"]
        assert sample.question == qa["question"]
        assert sample.passage == para["context"]
        assert sample.answers == tuple(a["text"] for a in qa["answers"])
        assert sample.label == sample.answers[0]
    # last paragraph, also read by hand
    assert samples[-1].id == "56becb823aeaaa14008c948b"
    assert samples[-1].label == "194"


def test_only_the_first_question_of_a_paragraph_is_used(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY), encoding="utf-8")
    samples = load_samples(path)
    assert [s.id for s in samples] == ["p1", "p2"]
    assert samples[0].label == "Paris"
    assert samples[0].answers == ("Paris", "the city of Paris")
    assert samples[1].passage == "Water boils at 100 degrees."


# --- malformed files --------------------------------------------------------------

def _error(tmp_path, content: str | bytes) -> str:
    path = tmp_path / "bad.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(SquadDataError) as info:
        load_samples(path)
    message = str(info.value)
    assert str(path) in message
    return message


def test_not_json(tmp_path):
    assert "not SQuAD v1.1 JSON" in _error(tmp_path, "{this is not json")


def test_not_utf8(tmp_path):
    assert "not SQuAD v1.1 JSON" in _error(tmp_path, b"\xff\xfe{")


def test_windows_1252_names_line_and_column(tmp_path):
    """Issue 11.6: a cp1252 export was a raw traceback or an error without a place."""
    text = json.dumps(TINY, indent=1, ensure_ascii=False).replace('"context": "', '"context": "caf\u00e9 ', 1)
    line = text[:text.index("caf\u00e9")].count("\n") + 1
    message = _error(tmp_path, text.encode("cp1252"))
    assert f"bad.json:{line}: not SQuAD v1.1 JSON: not valid UTF-8 (byte 0xe9 at column" in message


def test_bom_prefixed_file_loads(tmp_path):
    path = tmp_path / "bom.json"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(TINY).encode())
    assert len(load_samples(path)) == len(load_samples(tmp_path / "bom.json"))
    assert load_samples(path)[0].id == TINY["data"][0]["paragraphs"][0]["qas"][0]["id"]


@pytest.mark.parametrize(("field", "value"), [("context", 5), ("id", None), ("question", ["q"]), ("text", 1.5)])
def test_fields_of_the_wrong_type_name_their_place(tmp_path, field, value):
    data = json.loads(json.dumps(TINY))
    para = data["data"][0]["paragraphs"][0]
    target = para if field == "context" else para["qas"][0] if field != "text" else para["qas"][0]["answers"][0]
    target[field] = value
    message = _error(tmp_path, json.dumps(data))
    assert "data[0].paragraphs[0]." in message and "not a string" in message


def test_json_error_names_its_line(tmp_path):
    assert "bad.json:3: not SQuAD v1.1 JSON: not valid JSON" in _error(tmp_path, '{\n"data":\n [}')


def test_no_data_key(tmp_path):
    assert "'data'" in _error(tmp_path, json.dumps({"version": "1.1", "articles": []}))


def test_top_level_list(tmp_path):
    assert "'data'" in _error(tmp_path, json.dumps([{"paragraphs": []}]))


@pytest.mark.parametrize("data", [{"a": 1}, 5, "text"])
def test_data_not_a_list(tmp_path, data):
    assert "'data' list" in _error(tmp_path, json.dumps({"data": data}))


@pytest.mark.parametrize("article", ["x", {"paragraphs": 3}])
def test_article_without_a_paragraph_list(tmp_path, article):
    good = TINY["data"][0]
    message = _error(tmp_path, json.dumps({"data": [good, article]}))
    assert "data[1]" in message and "paragraphs" in message


def test_paragraph_with_empty_qas_names_its_place(tmp_path):
    data = tiny_squad([paragraph("ok", ("a", "q?", ["x"])), {"context": "no questions", "qas": []}])
    data["data"].insert(0, tiny_squad([paragraph("first", ("b", "q?", ["y"]))])["data"][0])
    message = _error(tmp_path, json.dumps(data))
    assert "data[1].paragraphs[1]" in message


NEEDED = "a paragraph needs context and qas[0] with id, question and answers[0].text"


@pytest.mark.parametrize("paragraph_json,place,what", [
    ({"context": "c"}, "data[0].paragraphs[0]", "no 'qas'"),
    ({"context": "c", "qas": []}, "data[0].paragraphs[0].qas", "an empty list"),
    ({"context": "c", "qas": {"id": "a"}}, "data[0].paragraphs[0].qas", "not a list (dict)"),
    ({"context": "c", "qas": ["q?"]}, "data[0].paragraphs[0].qas[0]", "not a JSON object (str)"),
    ({"context": "c", "qas": [{"id": "a", "question": "q?"}]}, "data[0].paragraphs[0].qas[0]", "no 'answers'"),
    ({"context": "c", "qas": [{"id": "a", "question": "q?", "answers": []}]}, "data[0].paragraphs[0].qas[0].answers",
     "an empty list"),
    ({"context": "c", "qas": [{"id": "a", "question": "q?", "answers": [{"answer_start": 0}]}]},
     "data[0].paragraphs[0].qas[0].answers[0]", "no 'text'"),
    ({"qas": [{"id": "a", "question": "q?", "answers": [{"text": "x"}]}]}, "data[0].paragraphs[0]", "no 'context'"),
])
def test_a_paragraph_missing_part_of_the_layout_names_the_part(tmp_path, paragraph_json, place, what):
    """Issue 28: an empty `qas` read "missing field list index out of range"."""
    message = _error(tmp_path, json.dumps(tiny_squad([paragraph_json])))
    assert message == f"{tmp_path / 'bad.json'}: {place}: {what}; {NEEDED}"


def test_an_article_without_paragraphs_is_no_article(tmp_path):
    message = _error(tmp_path, json.dumps({"data": [TINY["data"][0], {"title": "T", "qas": []}]}))
    assert message == f"{tmp_path / 'bad.json'}: data[1] is not an article with a 'paragraphs' list"


def test_question_without_answers(tmp_path):
    data = tiny_squad([{"context": "c", "qas": [{"id": "a", "question": "q?", "answers": []}]}])
    assert "data[0].paragraphs[0]" in _error(tmp_path, json.dumps(data))


def test_paragraph_without_context(tmp_path):
    data = tiny_squad([{"qas": [{"id": "a", "question": "q?", "answers": [{"text": "x"}]}]}])
    message = _error(tmp_path, json.dumps(data))
    assert "data[0].paragraphs[0]" in message and "context" in message


def test_no_paragraphs_at_all(tmp_path):
    assert "no paragraphs" in _error(tmp_path, json.dumps({"data": [{"title": "empty", "paragraphs": []}]}))


# --- resolve_data -------------------------------------------------------------------

def test_local_file_is_returned_as_is(tmp_path):
    path = tmp_path / "tiny.json"
    path.write_text(json.dumps(TINY), encoding="utf-8")
    assert resolve_data(str(path)) == path
    assert resolve_data(path) == path


def test_missing_local_file(tmp_path):
    missing = tmp_path / "nope.json"
    with pytest.raises(SquadDataError) as info:
        resolve_data(str(missing))
    assert str(missing) in str(info.value) and "does not exist" in str(info.value)


class FakeResponse:
    def __init__(self, body: bytes):
        self.body = body

    def read(self, *args) -> bytes:
        return self.body

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        return None


def test_url_is_downloaded_once_into_the_cache(tmp_path, monkeypatch):
    body = json.dumps(TINY).encode("utf-8")
    calls = []

    def fake_urlopen(url, *args, **kwargs):
        calls.append(url)
        return FakeResponse(body)

    monkeypatch.setattr(urllib.request, "urlopen", fake_urlopen)
    url = "https://example.invalid/squad/dev-v1.1.json"

    first = resolve_data(url)
    assert calls == [url]
    assert first.name == "dev-v1.1.json" and first.parent.parent == tmp_path / "cache" / "data"
    assert first.read_bytes() == body
    assert [s.id for s in load_samples(first)] == ["p1", "p2"]
    assert not list(first.parent.glob("*.part"))

    second = resolve_data(url)
    assert second == first
    assert calls == [url]  # served from the cache, no second download
    other = resolve_data("https://elsewhere.invalid/dev-v1.1.json")  # the same name, another address
    assert other != first and calls[-1] == "https://elsewhere.invalid/dev-v1.1.json"


def test_failed_download_is_a_data_error_and_caches_nothing(tmp_path, monkeypatch):
    def offline(url, *args, **kwargs):
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(urllib.request, "urlopen", offline)
    with pytest.raises(SquadDataError) as info:
        resolve_data(OFFICIAL_URL)
    assert OFFICIAL_URL in str(info.value) and "no route to host" in str(info.value)
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))


@pytest.mark.parametrize("url,why", [
    ("http://[::1", "not a valid address (Invalid IPv6 URL)"),
    ("http://example.invalid:99999/x.json", "not a valid address (Port out of range 0-65535)"),
    ("http://example.invalid:port/x.json", "not a valid address (Port could not be cast to integer value as 'port')"),
    ("http:///x.json", "not a valid address (give http(s)://HOST/PATH)"),
])
def test_an_address_urllib_cannot_use_is_a_data_error_before_any_download(tmp_path, monkeypatch, url, why):
    """Issue 28: `--data "http://[::1"` ended in ValueError: Invalid IPv6 URL."""
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: pytest.fail("no download of a bad address"))
    with pytest.raises(SquadDataError) as info:
        resolve_data(url)
    assert str(info.value) == f"{url}: {why}"
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("url,name", [("https://example.invalid/a/..", "download"),
                                      ("https://example.invalid/", "download"),
                                      ("https://example.invalid/d.json?x=1#f", "d.json"),
                                      ("https://example.invalid/%2e%2e", "_2e_2e")])
def test_a_download_is_cached_under_a_plain_name_inside_its_folder(tmp_path, monkeypatch, url, name):
    monkeypatch.setattr(urllib.request, "urlopen", lambda *a, **k: FakeResponse(b"{}"))
    path = resolve_data(url)
    assert path.name == name and path.parent.parent == tmp_path / "cache" / "data" and path.read_bytes() == b"{}"


def test_a_connection_cut_mid_download_is_a_data_error(tmp_path, monkeypatch):
    def cut(url, *args, **kwargs):
        raise http.client.IncompleteRead(b"{", 10)

    monkeypatch.setattr(urllib.request, "urlopen", cut)
    with pytest.raises(SquadDataError, match=f"could not download {OFFICIAL_URL}: IncompleteRead"):
        resolve_data(OFFICIAL_URL)
    assert not any(p.is_file() for p in (tmp_path / "cache").rglob("*"))


# --- the default ------------------------------------------------------------------

def test_default_is_the_packaged_article_wherever_the_checkout_is(tmp_path, monkeypatch):
    # No ../shared anywhere: the default still resolves, to the file inside the package.
    monkeypatch.setattr(shared, "SHARED_ROOTS", (tmp_path,))
    path = resolve_data(None)
    assert path == default_data_path() == shared.PACKAGED_SQUAD
    assert path.is_relative_to(Path(shared.__file__).parent)
    samples = load_samples(path)
    assert len(samples) == 54 and samples[0].question == "Which NFL team represented the AFC at Super Bowl 50?"
    notice = (path.parent / "NOTICE").read_text(encoding="utf-8")
    assert "CC BY-SA 4.0" in notice and path.name in notice


def test_packaged_article_is_the_shared_file_byte_for_byte(squad_sample):
    assert shared.PACKAGED_SQUAD.read_bytes() == squad_sample.read_bytes()
