"""lm-eval tasks as keeptune tasks (keeptune.evaluate.lmeval): the same numbers as lm-eval's own evaluator on
the same model object, records per document, resume after a kill, refusals before any model runs."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

from keeptune.core.errors import ConfigError, DataError
from keeptune.evaluate import lmeval
from keeptune.evaluate.metrics import lm_eval as lm_metrics
from tests.conftest import shared_file
from tests.tiny import byte_tokenizer, tiny_llama


def write_arc(path: Path, n: int = 12) -> Path:
    """A small ARC file in the official jsonl layout (question.stem, question.choices[], answerKey)."""
    rng = np.random.default_rng(0)
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(n):
            labels = ["A", "B", "C", "D"] if i % 3 else ["1", "2", "3"]
            choices = [{"text": f"choice {j} of {i} {'x' * int(rng.integers(1, 9))}", "label": label}
                       for j, label in enumerate(labels)]
            handle.write(json.dumps({"id": f"q{i}", "question": {"stem": f"What is item {i}?", "choices": choices},
                                     "answerKey": labels[i % len(labels)]}) + "\n")
    return path


@pytest.fixture(scope="module")
def model():
    return tiny_llama().eval(), byte_tokenizer()


def lm_eval_reference(task: lmeval.LmEvalTask, model, tokenizer) -> tuple[dict, dict]:
    """lm-eval's own evaluator (simple_evaluate) on the same HFLM: {metric: value}, {doc_id: {metric: value}}."""
    from lm_eval.evaluator import simple_evaluate

    fresh = lmeval.load(task.task, data=task.data_path, limit=task.limit)  # lm-eval builds its own requests
    leaf = next(iter(fresh.leaves.values()))
    with lmeval.quiet_lm_eval():
        result = simple_evaluate(model=lmeval.language_model(model, tokenizer, task.batch_size), tasks=[leaf],
                                 log_samples=True, bootstrap_iters=0, random_seed=0, numpy_random_seed=0,
                                 torch_random_seed=0, fewshot_random_seed=1234)
    name = leaf.task_name
    totals = {k.split(",")[0]: v for k, v in result["results"][name].items() if k.endswith(",none")}
    samples = {s["doc_id"]: {m: s[m] for m in s["metrics"]} for s in result["samples"][name]}
    return totals, samples


def test_multiple_choice_matches_lm_eval(tmp_path, model):
    net, tokenizer = model
    task = lmeval.load("arc_easy_local", data=str(write_arc(tmp_path / "arc.jsonl")))
    metrics = lmeval.evaluate(task, net, tokenizer, tmp_path / "out", {"model": "tiny"})
    totals, samples = lm_eval_reference(task, net, tokenizer)
    assert metrics["scores"] == {"lmeval.acc": totals["acc"], "lmeval.acc_norm": totals["acc_norm"]}
    records = [json.loads(line) for line in (tmp_path / "out" / "predictions.jsonl").open()]
    assert len(records) == 12
    for r in records:
        assert r["scores"]["lmeval"] == {m: float(v) for m, v in samples[r["doc_id"]].items()}
    assert set(metrics["intervals"]) == {"lmeval.acc", "lmeval.acc_norm"}


def test_perplexity_matches_lm_eval(tmp_path, model):
    net, tokenizer = model
    raw = tmp_path / "wiki.test.raw"
    raw.write_text(" \n = First = \n \n The cat sat on the mat . \n \n = = Part = = \n \n It was 1 @,@ 000 cats . \n"
                   " = Second = \n \n Another page , with words . \n", encoding="utf-8")
    task = lmeval.load("wikitext_local", data=str(raw))
    assert [d.doc["page"].strip().split("\n")[0].strip() for d in task.documents] == ["= First =", "= Second ="]
    metrics = lmeval.evaluate(task, net, tokenizer, tmp_path / "out", {"model": "tiny"})
    totals, _ = lm_eval_reference(task, net, tokenizer)
    for name in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        assert metrics["scores"][f"lmeval.{name}"] == pytest.approx(totals[name], rel=1e-12)
    assert task.lower_is_better() == ["lmeval.word_perplexity", "lmeval.byte_perplexity", "lmeval.bits_per_byte"]


def test_squad_passages_score_a_files_paragraphs_as_wikitext_pages(tmp_path, model):
    """squad_passages: each paragraph of a SQuAD file once, in file order, scored as lm-eval scores wikitext
    (its evaluator gives the same totals; the word perplexity recomputed here from the records' log-likelihoods
    and the words counted on each paragraph); no data: the Super Bowl 50 article keeptune ships."""
    import re

    from keeptune.data.shared import PACKAGED_SQUAD

    contexts = ["The cat sat on the mat.", "It was 1,000 cats, or more.", "Another article; with words."]
    qas = [{"id": "q", "question": "Who?", "answers": [{"text": "cat", "answer_start": 4}]}]
    squad = {"data": [{"title": "A", "paragraphs": [{"context": c, "qas": qas} for c in contexts[:2]]},
                      {"title": "B", "paragraphs": [{"context": contexts[2], "qas": qas}]}]}
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(squad), encoding="utf-8")
    net, tokenizer = model
    task = lmeval.load("squad_passages", data=str(path))
    assert [d.doc["page"] for d in task.documents] == contexts
    metrics = lmeval.evaluate(task, net, tokenizer, tmp_path / "out", {"model": "tiny"})
    totals, _ = lm_eval_reference(task, net, tokenizer)
    for name in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        assert metrics["scores"][f"lmeval.{name}"] == pytest.approx(totals[name], rel=1e-12)
    ll = [json.loads(line)["responses"][0][0] for line in (tmp_path / "out" / "predictions.jsonl").open()]
    words = sum(len(re.split(r"\s+", c)) for c in contexts)
    assert metrics["scores"]["lmeval.word_perplexity"] == pytest.approx(math.exp(-sum(ll) / words), rel=1e-9)
    assert task.lower_is_better() == ["lmeval.word_perplexity", "lmeval.byte_perplexity", "lmeval.bits_per_byte"]

    shipped = [p["context"] for a in json.loads(PACKAGED_SQUAD.read_text(encoding="utf-8"))["data"]
               for p in a["paragraphs"]]
    assert [d.doc["page"] for d in lmeval.load("squad_passages").documents] == shipped and len(shipped) == 54
    squad["data"][1]["paragraphs"][0].pop("context")
    path.write_text(json.dumps(squad), encoding="utf-8")
    with pytest.raises(DataError, match=re.escape(f"{path}: data[1].paragraphs[0]")):
        lmeval.load("squad_passages", data=str(path), where="original[2]")


def test_resumes_after_a_kill_and_refuses_other_settings(tmp_path, model):
    net, tokenizer = model
    data = str(write_arc(tmp_path / "arc.jsonl", n=10))
    task = lmeval.load("arc_easy_local", data=data)
    first = lmeval.evaluate(task, net, tokenizer, tmp_path / "out", {"model": "tiny"})
    predictions = tmp_path / "out" / "predictions.jsonl"
    lines = predictions.read_text().splitlines(keepends=True)
    predictions.write_text("".join(lines[:4]) + lines[4][:20])  # four records and a torn fifth: a kill
    again = lmeval.evaluate(task, net, tokenizer, tmp_path / "out", {"model": "tiny"})
    assert again["generated"] == 6 and again["scores"] == first["scores"]
    assert sorted(predictions.read_text().splitlines()) == sorted(line.rstrip("\n") for line in lines)
    fewshot = lmeval.load("arc_easy_local", data=data, num_fewshot=1)
    with pytest.raises(Exception, match="num_fewshot"):
        lmeval.evaluate(fewshot, net, tokenizer, tmp_path / "out", {"model": "tiny"})


@pytest.mark.parametrize("loader, text, message", [
    ("arc_easy_local", '{"question": {"stem": "q", "choices": [{"text": "a", "label": "A"}]}}\n', "answerKey"),
    ("arc_easy_local", '{"question": {"stem": "q", "choices": [{"text": "a", "label": "A"}]}, "answerKey": "B"}\n',
     "answerKey"),
    ("boolq_local", '{"question": "q", "passage": "p", "label": "maybe"}\n', "label"),
    ("boolq_local", '{"question": "q", "passage": "p", "label": true}\nnot json\n', ":2: not valid JSON"),
])
def test_bad_records_name_file_line_and_field(tmp_path, loader, text, message):
    path = tmp_path / "data.jsonl"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(DataError, match=message) as caught:
        lmeval.load(loader, data=str(path), where="original[1]")
    assert str(path) in str(caught.value) and "original[1]" in str(caught.value)


def test_bad_mmlu_row_and_unknown_names(tmp_path):
    (tmp_path / "test").mkdir()
    (tmp_path / "test" / "anatomy_test.csv").write_text('"q",a,b,c,d,A\n"q2",a,b,c,E\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"anatomy_test.csv:2: 5 fields"):
        lmeval.load("mmlu_local", data=str(tmp_path))
    with pytest.raises(ConfigError, match="no task 'arc_easy_locl'"):
        lmeval.load("arc_easy_locl", data=str(tmp_path))
    with pytest.raises(DataError, match="no data given"):
        lmeval.load("arc_easy_local")


def test_local_tasks_are_lm_evals_own():
    """Each *_local YAML renders the prompt, choices and target of lm-eval's task for the same benchmark, with
    its metrics: compared with lm-eval's registered YAML on the same document."""
    import lm_eval.tasks as registered
    from lm_eval.tasks._yaml_loader import load_yaml  # lm-eval's reader, includes resolved

    root = Path(registered.__file__).parent
    pairs = {"arc_easy_local": root / "arc" / "arc_easy.yaml", "boolq_local": root / "super_glue" / "boolq" /
             "default.yaml", "mmlu_local": root / "mmlu" / "default" / "mmlu_anatomy.yaml"}
    docs = {"arc_easy_local": {"id": "1", "question": "Why?", "choices": {"text": ["a", "b"], "label": ["A", "B"]},
                               "answerKey": "B"},
            "boolq_local": {"question": "is it", "passage": "It is.", "idx": 0, "label": 1},
            "mmlu_local": {"question": " What? ", "subject": "anatomy", "choices": ["w", "x", "y", "z"],
                           "answer": 2}}
    for local, official in pairs.items():
        ours = load_yaml(lmeval.BUILTIN / f"{local}.yaml", resolve_func=False)
        theirs = load_yaml(official, resolve_func=False)
        assert ours["output_type"] == theirs["output_type"]
        assert [m["metric"] for m in ours["metric_list"]] == [m["metric"] for m in theirs["metric_list"]]
        doc = docs[local]
        for key in ("doc_to_text", "doc_to_choice", "doc_to_target", "description"):
            assert _render(ours.get(key), doc) == _render(theirs.get(key), doc), (local, key)


def _render(value, doc):
    from lm_eval import utils

    if value is None:
        return None
    if isinstance(value, list):
        return value
    if isinstance(value, str) and value in doc:
        return doc[value]
    return utils.apply_template(value, doc)


def test_statistics_are_lm_evals_aggregations():
    from lm_eval.api import metrics as theirs

    rng = np.random.default_rng(1)
    ll, count = -rng.uniform(1, 500, 40), rng.integers(5, 400, 40).astype(float)
    pairs = list(zip(ll, count))
    assert lm_metrics.STATISTICS["weighted_perplexity"](ll, count) == pytest.approx(theirs.weighted_perplexity(pairs),
                                                                                    rel=1e-12)
    assert lm_metrics.STATISTICS["bits_per_byte"](ll, count) == pytest.approx(theirs.bits_per_byte(pairs), rel=1e-12)
    assert lm_metrics.STATISTICS["perplexity"](ll / 100) == pytest.approx(theirs.perplexity(list(ll / 100)),
                                                                          rel=1e-12)
    assert math.isfinite(lm_metrics.STATISTICS["perplexity"](ll / 100))


@pytest.mark.parametrize("name, relative, documents", [
    ("arc_easy_local", "arc-easy/ARC-Easy-Dev.jsonl", 570),
    ("arc_easy_local", "arc-easy/ARC-Easy-Test.jsonl", 2376),
    ("boolq_local", "boolq/val.jsonl", 3270),
    ("wikitext_local", "wikitext-2/wiki.test.raw", 62),
])
def test_real_files_give_the_official_sizes(name, relative, documents):
    task = lmeval.load(name, data=str(shared_file(relative)))
    assert len(task.documents) == documents


def test_real_mmlu_gives_the_official_size():
    root = shared_file("mmlu/SHA256SUMS").parent
    task = lmeval.load("mmlu_local", data=str(root), limit=None)
    assert len(task.documents) == 14042


def lm_rank_main(store: str, rank: int, world: int, out: str, data: str) -> None:
    """One rank (WORLD 1: a single process) evaluating the tiny model on an ARC file into OUT."""
    import torch.distributed as dist

    from keeptune.evaluate import shard

    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=world)
    task = lmeval.load("arc_easy_local", data=data, batch_size=3)
    with shard.sharded():
        lmeval.evaluate(task, tiny_llama().eval(), byte_tokenizer(), Path(out), {"model": "tiny"})


def test_two_ranks_score_an_lm_eval_task_as_one_process_does(tmp_path):
    """Under torchrun each rank scores its share of the documents on its own model copy: the same files as one
    process (predictions.jsonl byte for byte, metrics but the wall time)."""
    import os
    import subprocess
    import sys

    from tests.conftest import REPO
    from tests.evaluate.test_sharded_engine import files

    data = str(write_arc(tmp_path / "arc.jsonl", n=11))
    command = ("import sys; from tests.evaluate.test_lmeval import lm_rank_main; "
               "lm_rank_main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5])")
    for world in (1, 2):
        env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")} | {"OMP_NUM_THREADS": "1"}
        env |= {"WORLD_SIZE": str(world)} if world > 1 else {}
        processes = [subprocess.Popen([sys.executable, "-c", command, str(tmp_path / f"store{world}"), str(rank),
                                       str(world), str(tmp_path / f"out{world}"), data], cwd=REPO,
                                      env=env | {"RANK": str(rank)}, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                      text=True) for rank in range(world)]
        outputs = [p.communicate(timeout=240) for p in processes]
        assert [p.returncode for p in processes] == [0] * world, [err[-2000:] for _, err in outputs]
    assert files(tmp_path / "out2") == files(tmp_path / "out1")
    assert len((tmp_path / "out2" / "predictions.jsonl").read_text().splitlines()) == 11


def test_keeptune_compare_reads_lm_eval_folders(tmp_path, model):
    """Two models' lm-eval folders compared per document (exact McNemar on acc, recomputed here from the
    records), as for any keeptune evaluation."""
    from scipy.stats import binomtest

    from keeptune.experiment.uncertainty import compare_folders

    net, tokenizer = model
    data = str(write_arc(tmp_path / "arc.jsonl", n=12))
    lmeval.evaluate(lmeval.load("arc_easy_local", data=data), net, tokenizer, tmp_path / "a", {"model": "a"})
    lmeval.evaluate(lmeval.load("arc_easy_local", data=data), tiny_llama(seed=3).eval(), tokenizer, tmp_path / "b",
                    {"model": "b"})
    result = compare_folders(tmp_path / "a", tmp_path / "b", "lmeval.acc")
    a, b = ({json.loads(line)["id"]: json.loads(line)["scores"]["lmeval"]["acc"]
             for line in (tmp_path / name / "predictions.jsonl").open()} for name in ("a", "b"))
    only_a, only_b = sum(a[i] > b[i] for i in a), sum(b[i] > a[i] for i in a)
    assert result["discordant"] == [only_a, only_b]
    assert result["difference"] == pytest.approx((sum(a.values()) - sum(b.values())) / 12)
    if only_a + only_b:
        assert result["p_value"] == pytest.approx(binomtest(only_a, only_a + only_b).pvalue)


def test_start_scores_a_later_part_numbered_as_in_the_whole_file(tmp_path, model):
    """start=4, limit=3 builds documents 4-6 under their own numbers (lm-eval numbers a chosen part from 0), so
    their records equal those documents' in an evaluation of the whole file and `keeptune compare` pairs them."""
    net, tokenizer = model
    data = str(write_arc(tmp_path / "arc.jsonl", n=9))
    part = lmeval.load("arc_easy_local", data=data, start=4, limit=3)
    assert [d.id for d in part.documents] == ["arc_easy_local:4", "arc_easy_local:5", "arc_easy_local:6"]
    whole = lmeval.load("arc_easy_local", data=data)
    assert [d.doc for d in part.documents] == [d.doc for d in whole.documents[4:7]]
    lmeval.evaluate(part, net, tokenizer, tmp_path / "part", {"model": "tiny"})
    lmeval.evaluate(whole, net, tokenizer, tmp_path / "whole", {"model": "tiny"})
    records = {name: {r["id"]: r for r in map(json.loads, (tmp_path / name / "predictions.jsonl").open())}
               for name in ("part", "whole")}
    assert list(records["part"]) == [d.id for d in part.documents]
    assert all(records["part"][key] == records["whole"][key] for key in records["part"])
    with pytest.raises(DataError, match=r"start is 9, but task arc_easy_local has 9 documents in .*arc.jsonl"):
        lmeval.load("arc_easy_local", data=data, start=9)
