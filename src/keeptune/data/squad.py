"""SQuAD v1.1 samples for the original task (the seed protocol: docs/tasks.md).

One sample per paragraph: the paragraph's FIRST question and that question's
FIRST answer text as the label; all answers are kept for the official metric.
The full dev set gives 2067 samples; the Super Bowl 50 article, shipped with
keeptune as the default's data (CC BY-SA 4.0, see data/files/NOTICE), gives 54.
"""
from __future__ import annotations

import hashlib
import json
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from keeptune.core.errors import DataError, MalformedLineError
from keeptune.core.io import cache_dir, read_text
from keeptune.data.shared import PACKAGED_SQUAD

OFFICIAL_DEV_URL = "https://rajpurkar.github.io/SQuAD-explorer/dataset/dev-v1.1.json"
# The official training set (87,599 questions on 442 articles, none of them an article of the dev set):
# a natural choice of preservation data (retention.preservation, docs/retention.md).
OFFICIAL_TRAIN_URL = "https://rajpurkar.github.io/SQuAD-explorer/dataset/train-v1.1.json"


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
    the same file name never share a copy."""
    digest = hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]
    target = cache_dir() / "data" / digest / url.rstrip("/").rsplit("/", 1)[-1]
    if not target.is_file():
        target.parent.mkdir(parents=True, exist_ok=True)
        print(f"keeptune: downloading {url} -> {target}")
        tmp = target.with_suffix(target.suffix + ".part")
        try:
            with urllib.request.urlopen(url, timeout=60) as response, open(tmp, "wb") as out:
                out.write(response.read())
        except OSError as err:  # URLError, HTTPError, timeouts: nothing is cached, a later run retries
            tmp.unlink(missing_ok=True)
            raise SquadDataError(f"could not download {url}: {err}") from None
        tmp.replace(target)
    return target


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
        paragraphs = article.get("paragraphs", []) if isinstance(article, dict) else None
        if not isinstance(paragraphs, list):
            raise SquadDataError(f"{path}: data[{a}] is not an article with a 'paragraphs' list")
        for p, paragraph in enumerate(paragraphs):
            where = f"{path}: data[{a}].paragraphs[{p}]"
            try:
                question = paragraph["qas"][0]
                answers = tuple(ans["text"] for ans in question["answers"])
                sample = SquadSample(id=question["id"], passage=paragraph["context"], question=question["question"],
                                     label=answers[0], answers=answers)
            except (KeyError, IndexError, TypeError) as err:
                raise SquadDataError(f"{where}: missing field {err} (need context, qas[0].question, "
                                     "qas[0].id and qas[0].answers[0].text)") from None
            for field, value in (("context", sample.passage), ("qas[0].question", sample.question),
                                 ("qas[0].id", sample.id), *((f"qas[0].answers[{i}].text", answer)
                                                             for i, answer in enumerate(answers))):
                if not isinstance(value, str):
                    raise SquadDataError(f"{where}.{field}: not a string ({type(value).__name__})")
            samples.append(sample)
    if not samples:
        raise SquadDataError(f"{path}: no paragraphs found")
    return samples
