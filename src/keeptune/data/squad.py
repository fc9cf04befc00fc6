"""SQuAD v1.1 samples for the original task (the seed protocol: docs/tasks.md).

One sample per paragraph: the paragraph's FIRST question and that question's
FIRST answer text as the label; all answers are kept for the official metric.
The full dev set gives 2067 samples; the Super Bowl 50 article, shipped with
keeptune as the default's data (CC BY-SA 4.0, see data/files/NOTICE), gives 54.
"""
from __future__ import annotations

import http.client
import json
import re
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from keeptune.core.errors import DataError, MalformedLineError
from keeptune.core.io import cache_dir, read_text
from keeptune.core.resume import sha256_bytes
from keeptune.data.shared import PACKAGED_SQUAD

OFFICIAL_DEV_URL = "https://rajpurkar.github.io/SQuAD-explorer/dataset/dev-v1.1.json"
# The official training set (87,599 questions on 442 articles, none of them an article of the dev set):
# a natural choice of preservation data (retention.preservation, docs/retention.md).
OFFICIAL_TRAIN_URL = "https://rajpurkar.github.io/SQuAD-explorer/dataset/train-v1.1.json"
NEEDED = "a paragraph needs context and qas[0] with id, question and answers[0].text"  # said by every layout error


class SquadDataError(DataError):
    """A SQuAD file that does not have the official v1.1 layout."""


@dataclass(frozen=True)
class SquadSample:
    id: str
    passage: str
    question: str
    label: str  # first answer text of the first question, as in the seed
    answers: tuple[str, ...]  # every gold answer text, for the official metric


def default_data_path() -> Path:
    """The 54-paragraph Super Bowl 50 article shipped inside the package (the first of the dev set)."""
    return PACKAGED_SQUAD


def fetch(url: str) -> Path:
    """Download a data file once into keeptune's cache and return its path.

    The cache folder is named by a hash of the address, so two addresses that end in
    the same file name never share a copy. An address urllib cannot use is a DataError
    before anything is downloaded."""
    digest = sha256_bytes(url.encode("utf-8"))[:16]
    target = cache_dir() / "data" / digest / download_name(url)
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        print(f"keeptune: downloading {url} -> {target}")
        tmp = target.with_name(target.name + ".part")
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
                out.write(response.read())
        except (OSError, ValueError, http.client.HTTPException) as err:  # URLError, HTTPError, timeouts, a cut
            tmp.unlink(missing_ok=True)  # nothing is cached: a later run retries
            raise SquadDataError(f"could not download {url}: {err}") from None
        tmp.replace(target)
    return target


def download_name(url: str) -> str:
    """The file name a download of `url` is cached under: the last part of its path, in safe characters
    ("download" when that is empty); SquadDataError for an address that is not http(s)://HOST/..."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018 (a port that is no number in 0-65535 raises here)
    except ValueError as err:
        raise SquadDataError(f"{url}: not a valid address ({err})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SquadDataError(f"{url}: not a valid address (give http(s)://HOST/PATH)")
    name = re.sub(r"[^\w.-]", "_", parts.path.rstrip("/").rsplit("/", 1)[-1]).strip(".")
    return name or "download"


def resolve_data(data: str | Path | None) -> Path:
    """A local path, an http(s) address (downloaded once), or the packaged default."""
    if data is None:
        return default_data_path()
    if str(data).startswith(("http://", "https://")):
        return fetch(str(data))
    path = Path(data).expanduser()
    if path.is_dir():
        raise SquadDataError(f"SQuAD file {path} is a directory; give the JSON file")
    if not path.is_file():
        raise SquadDataError(f"SQuAD file {path} does not exist")
    return path


def load_samples(path: Path) -> list[SquadSample]:
    """Parse an official SQuAD v1.1 JSON file into one sample per paragraph.

    UTF-8 with or without a BOM. What is not SQuAD v1.1 (not UTF-8, not JSON, a field
    missing or of the wrong type) is a DataError naming the file and the line or the
    place in the layout (`data[0].paragraphs[3].qas[0].id`)."""
    path = Path(path)
    try:
        root = json.loads(read_text(path))
    except MalformedLineError as err:  # not UTF-8 (a Windows-1252 export): line and column
        raise SquadDataError(f"{err.path}:{err.line}: not SQuAD v1.1 JSON: {err.reason}") from None
    except json.JSONDecodeError as err:
        raise SquadDataError(f"{path}:{err.lineno}: not SQuAD v1.1 JSON: not valid JSON "
                             f"({err.msg}, column {err.colno})") from None
    articles = root.get("data") if isinstance(root, dict) else None
    if not isinstance(articles, list):
        raise SquadDataError(f"{path}: not SQuAD v1.1 JSON: it needs a top-level object with a 'data' list")
    samples = []
    for a, article in enumerate(articles):
        paragraphs = article.get("paragraphs") if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise SquadDataError(f"{path}: data[{a}] is not an article with a 'paragraphs' list")
        for p, paragraph in enumerate(paragraphs):
            where = f"{path}: data[{a}].paragraphs[{p}]"
            sample = _sample(paragraph, where)
            for field, value in (("context", sample.passage), ("qas[0].question", sample.question),
                                 ("qas[0].id", sample.id), *((f"qas[0].answers[{i}].text", answer)
                                                             for i, answer in enumerate(sample.answers))):
                if not isinstance(value, str):
                    raise SquadDataError(f"{where}.{field}: not a string ({type(value).__name__})")
            samples.append(sample)
    if not samples:
        raise SquadDataError(f"{path}: no paragraphs found")
    return samples


def _sample(paragraph, where: str) -> SquadSample:
    """The sample of one paragraph (`where`: its place): its first question and that question's answers."""
    qas = _field(paragraph, "qas", where)
    question = _first(qas, f"{where}.qas")
    answer_list = _field(question, "answers", f"{where}.qas[0]")
    _first(answer_list, f"{where}.qas[0].answers")
    answers = tuple(_field(answer, "text", f"{where}.qas[0].answers[{i}]") for i, answer in enumerate(answer_list))
    return SquadSample(id=_field(question, "id", f"{where}.qas[0]"), passage=_field(paragraph, "context", where),
                       question=_field(question, "question", f"{where}.qas[0]"), label=answers[0], answers=answers)


def _field(item, key: str, place: str):
    """item[key]; SquadDataError naming `place` when item is no object or has no such key."""
    if not isinstance(item, dict):
        raise SquadDataError(f"{place}: not a JSON object ({type(item).__name__}); {NEEDED}")
    if key not in item:
        raise SquadDataError(f"{place}: no {key!r}; {NEEDED}")
    return item[key]


def _first(items, place: str):
    """items[0]; SquadDataError naming `place` when items is no list or an empty one."""
    if not isinstance(items, list):
        raise SquadDataError(f"{place}: not a list ({type(items).__name__}); {NEEDED}")
    if not items:
        raise SquadDataError(f"{place}: an empty list; {NEEDED}")
    return items[0]
