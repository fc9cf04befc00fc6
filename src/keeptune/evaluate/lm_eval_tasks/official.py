"""Readers of the official layouts of ARC, BoolQ, MMLU and WikiText-2 raw, each returning the documents
lm-eval's own task for that benchmark reads from the Hugging Face Hub, field for field, so that its prompt
templates apply unchanged; and of SQuAD v1.1, whose paragraphs become pages that lm-eval's wikitext
scoring reads (squad_passages, keeptune's own task). lm-eval calls them as `custom_dataset` with the task's
metadata as keyword arguments (`path`: the local file or folder; `version`, and others, are ignored); each
returns {split: datasets.Dataset}.

A malformed record is a ValueError naming the file, the line and the field, before any model runs.
"""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

from keeptune.data.squad import load_samples, resolve_data


def _path(path, what: str, official: str) -> Path:
    if not path:
        raise ValueError(f"{what}: no data given; point `data:` (or --data) at {official}")
    path = Path(path)
    if not path.exists():
        raise ValueError(f"{path}: no such file or folder ({what}: {official})")
    return path


def _jsonl(path: Path):
    """(line number, object) of a JSON-lines file; blank lines skipped."""
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{number}: not valid JSON ({err.msg})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{path}:{number}: a JSON object was expected")
            yield number, record


def _field(record: dict, name: str, kind, where: str):
    value = record
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            raise ValueError(f"{where}: field {name!r} is missing")
        value = value[part]
    if not isinstance(value, kind):
        raise ValueError(f"{where}: field {name!r} is {type(value).__name__}, not {getattr(kind, '__name__', kind)}")
    return value


def _dataset(rows: list[dict], split: str):
    import datasets  # lm-eval's own dependency

    return {split: datasets.Dataset.from_list(rows)}


def arc(path=None, split: str = "test", **_) -> dict:
    """ARC (Clark et al. 2018), official jsonl: {id, question: {stem, choices: [{text, label}]}, answerKey}
    -> allenai/ai2_arc's {id, question, choices: {text, label}, answerKey}."""
    path = _path(path, "ARC", "ARC-Easy-Test.jsonl or ARC-Easy-Dev.jsonl of ARC-V1-Feb2018")
    rows = []
    for number, record in _jsonl(path):
        where = f"{path}:{number}"
        choices = _field(record, "question.choices", list, where)
        for i, choice in enumerate(choices):
            _field(choice, "text", str, f"{where}: question.choices[{i}]")
            _field(choice, "label", str, f"{where}: question.choices[{i}]")
        labels = [c["label"] for c in choices]
        answer = _field(record, "answerKey", str, where)
        if answer not in labels:
            raise ValueError(f"{where}: field 'answerKey' is {answer!r}, not one of the labels {labels}")
        rows.append({"id": str(record.get("id", number)), "question": _field(record, "question.stem", str, where),
                     "choices": {"text": [c["text"] for c in choices], "label": labels}, "answerKey": answer})
    return _dataset(rows, split)


def boolq(path=None, split: str = "validation", **_) -> dict:
    """BoolQ (Clark et al. 2019), SuperGLUE jsonl: {question, passage, idx, label: true/false, as
    JSON booleans or strings} -> super_glue
    boolq's {question, passage, idx, label: 0/1}."""
    path = _path(path, "BoolQ", "val.jsonl of SuperGLUE's BoolQ.zip")
    rows = []
    for number, record in _jsonl(path):
        where = f"{path}:{number}"
        label = _field(record, "label", (bool, int, str), where)
        label = {"true": 1, "false": 0}.get(label.lower(), label) if isinstance(label, str) else label
        if label not in (0, 1) or isinstance(label, str):
            raise ValueError(f"{where}: field 'label' is {record['label']!r}; true or false (or 1/0)")
        rows.append({"question": _field(record, "question", str, where),
                     "passage": _field(record, "passage", str, where),
                     "idx": int(record.get("idx", number - 1)), "label": int(label)})
    return _dataset(rows, split)


LETTERS = ("A", "B", "C", "D")


def mmlu(path=None, split: str = "test", **_) -> dict:
    """MMLU (Hendrycks et al. 2021), the original headerless CSVs PATH/SPLIT/SUBJECT_SPLIT.csv (question, four
    choices, answer letter) -> cais/mmlu's {question, subject, choices, answer: 0-3}, subjects in name order,
    rows in file order (lm-eval's mmlu runs the 57 subjects as subtasks; one task over all of them gives its
    size-weighted average, the mmlu group's own)."""
    root = _path(path, "MMLU", "the data/ folder of the official data.tar (with test/, dev/, val/)")
    files = sorted((root / split).glob(f"*_{split}.csv"))
    if not files:
        raise ValueError(f"{root / split}: no SUBJECT_{split}.csv files (MMLU's official layout)")
    rows = []
    for file in files:
        subject = file.name[: -len(f"_{split}.csv")]
        with open(file, encoding="utf-8", newline="") as handle:
            for number, row in enumerate(csv.reader(handle), 1):
                where = f"{file}:{number}"
                if len(row) != 6:
                    raise ValueError(f"{where}: {len(row)} fields; MMLU rows have 6 (question, A, B, C, D, answer)")
                if row[5] not in LETTERS:
                    raise ValueError(f"{where}: field 'answer' (the 6th) is {row[5]!r}; one of A, B, C, D")
                rows.append({"question": row[0], "subject": subject, "choices": row[1:5],
                             "answer": LETTERS.index(row[5])})
    return _dataset(rows, split)


HEADING = re.compile(r"^= .* =$")  # an article's title line; its sections are "= = ... = =" and deeper


def wikitext_pages(text: str) -> list[str]:
    """WikiText's raw text split into articles, as EleutherAI/wikitext_document_level splits it (lm-eval's
    wikitext task reads those pages): a page starts at each title line " = Title = " (after folding "= = =" and
    "= =", section headings no longer match) and keeps every line up to the next, newlines included."""
    pages, lines = [], []
    for line in text.split("\n"):
        folded = line.replace("= = =", "===").replace("= =", "==").strip()
        if HEADING.match(folded) and not folded.startswith("=="):
            page = "\n".join(lines)
            if page.strip():
                pages.append(page)
            lines = []
        lines.append(line)
    page = "\n".join(lines)
    if page.strip():
        pages.append(page)
    return pages


def wikitext(path=None, split: str = "test", **_) -> dict:
    """WikiText-2 raw (Merity et al. 2016), wiki.test.raw -> wikitext_document_level's {page}."""
    path = _path(path, "WikiText", "wiki.test.raw of wikitext-2-raw-v1.zip")
    if not path.is_file():
        raise ValueError(f"{path}: a file (wiki.test.raw) was expected")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        line = path.read_bytes()[: err.start].count(b"\n") + 1
        raise ValueError(f"{path}:{line}: not UTF-8 text") from None
    return _dataset([{"page": page} for page in wikitext_pages(text)], split)


def squad_passages(path=None, split: str = "test", **_) -> dict:
    """The paragraphs of a SQuAD v1.1 JSON file, each once, in file order -> {page} documents, the field
    lm-eval's wikitext scoring reads (words and bytes counted on it). No path: the Super Bowl 50 article
    keeptune ships (54 paragraphs). A file not in SQuAD's layout is a ValueError naming it and the place."""
    return _dataset([{"page": sample.passage} for sample in load_samples(resolve_data(path))], split)


def wikitext_detokenizer(doc: dict) -> str:
    """lm-eval's own (lm_eval/tasks/wikitext/preprocess_wikitext.py), not a copy."""
    from lm_eval.tasks.wikitext.preprocess_wikitext import wikitext_detokenizer as detokenize

    return detokenize(doc)


def wikitext_process_results(doc: dict, results) -> dict:
    """lm-eval's own: (log-likelihood, words) and (log-likelihood, bytes) of the page before detokenizing."""
    from lm_eval.tasks.wikitext.preprocess_wikitext import process_results

    return process_results(doc, results)
