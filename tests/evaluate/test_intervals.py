"""Every scalar with its interval: metrics.json's intervals are keeptune.core.stats' bootstrap on the
per-sample scores (recomputed here from the pure metric functions), a corpus metric is resampled as
the corpus metric, the seed's printed line is unchanged, an old folder gets its intervals on resume,
and --sample-size reports the gate's detectable drop."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest

from keeptune.cli import main
from keeptune.core import stats
from keeptune.core.stats import Interval
from keeptune.evaluate import intervals
from keeptune.evaluate.metrics import emf1, registry, squad_v1
from keeptune.evaluate.metrics.registry import Aggregate, Metric, Resample
from keeptune.evaluate.samples import load_task_samples
from keeptune.evaluate.spec import load_spec
from keeptune.evaluate.task import SpecTask
from tests.tiny import byte_tokenizer, save_tiny

SPEC = """\
name: qa
data: {path: qa.jsonl}
prompt: "Q: {question}\\nA:"
reference: answer
references: answers
generation: {max_new_tokens: 3}
postprocess: [strip, first_line]
metrics: [emf1, squad_v1, exact_match]
gate: [emf1.F1, squad_v1.f1]
"""
N = 24
WORDS = ["red", "river", "stone", "bridge", "old", "north", "tower", "green", "hill", "gate"]


def answer(i: int) -> str:
    return " ".join(WORDS[(i + k) % len(WORDS)] for k in range(1 + i % 3))


def raw(i: int) -> str:
    """A spread of answers: exact, with extra words (partial F1), a wrong word."""
    return [answer(i), f"the {answer(i)} of the city", "nothing"][i % 3]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    """An evaluation of the tiny model on N questions whose predictions.jsonl is then rewritten with the scored
    records of `raw` (the same spec and samples, so the folder resumes), and its metrics.json written without
    intervals, as keeptune wrote it before they existed: (spec, model, out)."""
    tmp = tmp_path_factory.mktemp("qa")
    rows = [{"question": f"question {i}?", "answer": answer(i), "answers": [answer(i), "x"]} for i in range(N)]
    (tmp / "qa.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    spec = tmp / "qa.yaml"
    spec.write_text(SPEC, encoding="utf-8")
    model, out = save_tiny(tmp / "tiny"), tmp / "out"
    assert main(["eval", str(spec), "--model", str(model), "--out", str(out)]) == 0
    compiled = load_spec(spec)
    task = SpecTask(compiled, load_task_samples(compiled, tmp / "qa.jsonl"), byte_tokenizer())
    records = [task.score(s, raw(i)) for i, s in enumerate(task.samples)]
    (out / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    old = json.loads((out / "metrics.json").read_text())
    for key in ("intervals", "bootstrap"):
        del old[key]
    (out / "metrics.json").write_text(json.dumps(old), encoding="utf-8")
    return spec, model, out


def per_sample(i: int) -> dict[str, float]:
    """Sample i's scores in points, from the pure metric functions."""
    prediction, gold = raw(i), [answer(i), "x"]
    return {"emf1.F1": 100 * emf1.f1_score(prediction, answer(i)),
            "emf1.Em": 100 * emf1.exact_match(prediction, answer(i)),
            "squad_v1.f1": 100 * max(squad_v1.f1_score(prediction, g) for g in gold),
            "squad_v1.exact_match": 100.0 * max(squad_v1.exact_match_score(prediction, g) for g in gold),
            "exact_match.accuracy": float(raw(i) == answer(i))}


def test_a_resumed_old_folder_gets_intervals_equal_to_the_bootstrap_of_its_per_sample_scores(folder, capsys):
    spec, model, out = folder
    capsys.readouterr()
    assert main(["eval", str(spec), "--model", str(model), "--out", str(out), "--confidence", "0.9"]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["generated"] == 0  # nothing generated again: the intervals come from predictions.jsonl
    assert metrics["bootstrap"] == {"level": 0.9, "seed": 0, "resamples": 2000}
    values = {s: [per_sample(i)[s] for i in range(N)] for s in per_sample(0)}
    assert set(metrics["intervals"]) == set(metrics["scores"]) == set(values)
    for scalar, column in values.items():
        expected = stats.interval(column, level=0.9, seed=0)
        assert metrics["scores"][scalar] == pytest.approx(np.mean(column), abs=1e-9), scalar
        assert metrics["intervals"][scalar] == {"low": expected.low, "high": expected.high, "level": 0.9,
                                                "method": expected.method, "resampled": "mean"}, scalar
    assert metrics["intervals"]["emf1.F1"]["method"] == "BCa"
    assert 0 < metrics["intervals"]["emf1.F1"]["low"] < metrics["scores"]["emf1.F1"]
    # One printed line per gated scalar (qa gates emf1.F1 and squad_v1.f1), in points.
    printed = capsys.readouterr().out.splitlines()
    f1 = interval_from(metrics, "emf1.F1")
    assert f"emf1.F1 {metrics['scores']['emf1.F1']:.2f} [{f1.low:.2f}, {f1.high:.2f}] (90% BCa, {N} samples)" \
        in printed
    assert sum(line.startswith(("emf1.", "squad_v1.", "exact_match.")) for line in printed) == 2


def interval_from(metrics: dict, scalar: str) -> Interval:
    return intervals.interval_from_json(metrics["intervals"][scalar])


def test_sample_size_reports_the_gates_detectable_drop_from_the_base_scores(folder, capsys):
    spec, model, out = folder
    capsys.readouterr()
    assert main(["eval", str(spec), "--model", str(model), "--out", str(out), "--sample-size"]) == 0
    sizes = json.loads((out / "metrics.json").read_text())["sample_size"]
    assert (sizes["n"], sizes["confidence"], sizes["power"], sizes["drops"]) == (N, 0.95, 0.8, [0.05, 0.1])
    assert set(sizes["scalars"]) == {"emf1.F1", "squad_v1.f1"}
    f1 = [per_sample(i)["emf1.F1"] for i in range(N)]
    # By hand: (z_0.95 + z_0.8) x sd x sqrt(2) / (sqrt(n) x mean), the drop a one-sided paired test detects.
    z = 1.6448536269514722 + 0.8416212335729143
    drop = z * np.std(f1, ddof=1) * math.sqrt(2) / (math.sqrt(N) * np.mean(f1))
    entry = sizes["scalars"]["emf1.F1"]
    assert entry["detectable_drop"] == pytest.approx(drop, rel=1e-9)
    assert entry["samples_needed"] == {"0.05": math.ceil(N * (drop / 0.05) ** 2),
                                       "0.1": math.ceil(N * (drop / 0.1) ** 2)}
    printed = capsys.readouterr().out
    assert f"emf1.F1: detects a drop of {drop * 100:.1f}% or more; a 5% drop needs " \
           f"{entry['samples_needed']['0.05']:,}" in printed


def test_the_seed_line_is_printed_unchanged_before_the_intervals(tmp_path, capsys):
    model = save_tiny(tmp_path / "tiny")  # its 1024 positions hold the first 4 paragraphs (at most 923 bytes)
    out = tmp_path / "out"
    assert main(["eval", "squad", "--model", str(model), "--limit", "4", "--max-new-tokens", "2",
                 "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    printed = capsys.readouterr().out.splitlines()
    scores = metrics["metrics"]["emf1"]
    seed_line = f"F1 score: {scores['F1']}, Em score: {scores['Em']}, total_count: 4"
    official = f"SQuAD v1.1 official: exact_match {metrics['scores']['squad_v1.exact_match']}, " \
               f"f1 {metrics['scores']['squad_v1.f1']}"
    at = printed.index(seed_line)
    assert printed[at + 1] == official
    assert printed[at + 2].startswith("emf1.F1 ") and printed[at + 3].startswith("emf1.Em ")


def test_a_wrong_confidence_is_an_error_before_the_model_loads(tmp_path, capsys):
    assert main(["eval", "squad", "--model", str(tmp_path / "none"), "--confidence", "95"]) == 2
    assert capsys.readouterr().err == \
        "keeptune: error: --confidence is 95.0; it must be between 0 and 1 (0.95 for 95%)\n"


# ---- a corpus metric that is not a mean of per-sample values ------------------------------------

class PooledRecall(Metric):
    """Token recall pooled over the corpus: sum(matched) / sum(reference tokens), not the mean of the
    per-sample recalls, so a long answer weighs more."""

    type = "pooled"

    def scalars(self):
        return ["recall"]

    def score(self, record, fields):
        gold, said = record["label"].split(), set(record["prediction"].split())
        return {"matched": sum(w in said for w in gold), "total": len(gold)}

    def aggregate(self, records):
        matched = sum(r["scores"][self.name]["matched"] for r in records)
        return Aggregate({"recall": matched / sum(r["scores"][self.name]["total"] for r in records)})

    def resample(self, scalar, records):
        columns = ([r["scores"][self.name][k] for r in records] for k in ("matched", "total"))
        return Resample(tuple(columns), lambda matched, total: matched.sum() / total.sum())


def test_a_corpus_metric_is_resampled_as_the_corpus_metric():
    metric = PooledRecall("pooled")
    labels = ["a b c d e f g h"] * 6 + ["a"] * 14  # long answers half found, short ones never
    records = [{"prediction": "a b c d" if i < 6 else "z", "label": label} for i, label in enumerate(labels)]
    for r in records:
        r["scores"] = {"pooled": metric.score(r, {})}
    matched, total = [4] * 6 + [0] * 14, [8] * 6 + [1] * 14
    pooled = sum(matched) / sum(total)  # 24 / 62, against a mean of per-sample recalls of 0.15
    assert metric.aggregate(records).scores["recall"] == pytest.approx(pooled)
    assert np.mean(np.divide(matched, total)) == pytest.approx(0.15)

    got = intervals.uncertainty([metric], records, level=0.95)["intervals"]["pooled.recall"]
    expected = stats.corpus_interval([matched, total], lambda m, t: m.sum() / t.sum())
    assert got == {"low": expected.low, "high": expected.high, "level": 0.95, "method": expected.method,
                   "resampled": "corpus"}
    assert expected.contains(pooled) and not expected.contains(0.15)
    per_sample_mean = stats.interval(np.divide(matched, total))
    assert (got["low"], got["high"]) != pytest.approx((per_sample_mean.low, per_sample_mean.high))
    assert intervals.sample_size(metric.resample("recall", records), 0.95)["note"].startswith("a corpus metric")


def test_a_registered_corpus_metric_reaches_metrics_json_through_the_spec(monkeypatch, tmp_path):
    monkeypatch.setitem(registry.TYPES, "pooled", PooledRecall)
    (tmp_path / "qa.jsonl").write_text("".join(json.dumps({"question": "q", "answer": answer(i)}) + "\n"
                                               for i in range(N)), encoding="utf-8")
    (tmp_path / "qa.yaml").write_text("name: qa\ndata: {path: qa.jsonl}\nprompt: '{question}'\n"
                                      "metrics: [pooled]\n", encoding="utf-8")
    compiled = load_spec(tmp_path / "qa.yaml")
    task = SpecTask(compiled, load_task_samples(compiled, tmp_path / "qa.jsonl"), byte_tokenizer(), confidence=0.8)
    records = [task.score(s, raw(i)) for i, s in enumerate(task.samples)]
    columns = [[r["scores"]["pooled"][k] for r in records] for k in ("matched", "total")]
    expected = stats.corpus_interval(columns, lambda m, t: m.sum() / t.sum(), level=0.8)
    assert intervals.interval_from_json(task.uncertainty(records)["intervals"]["pooled.recall"]) == expected


# ---- the JSON form and the printed form ---------------------------------------------------------

def test_an_infinite_bound_is_null_in_json_and_infinite_again_when_read():
    entry = intervals.interval_json(Interval(0.5, math.inf, 0.95, "percentile"), "corpus")
    assert json.loads(json.dumps(entry)) == {"low": 0.5, "high": None, "level": 0.95, "method": "percentile",
                                             "resampled": "corpus"}
    assert intervals.interval_from_json(entry) == Interval(0.5, math.inf, 0.95, "percentile")
    assert intervals.interval_json(None, "mean") is None and intervals.interval_from_json(None) is None


def test_printed_lines_show_fractions_in_percent_and_say_when_there_is_no_spread():
    entry = intervals.interval_json(Interval(0.25, 0.5, 0.95, "BCa"), "mean")
    assert intervals.interval_line("j.accuracy@0.01", 0.375, entry, "fraction", 60) == \
        "j.accuracy@0.01 37.50% [25.00, 50.00] (95% BCa, 60 samples)"
    zero = intervals.interval_json(stats.interval([0.0] * 54), "mean")
    assert intervals.interval_line("emf1.Em", 0.0, zero, "points", 54) == \
        "emf1.Em 0.00 [0.00, 0.00] (95%: all 54 samples score the same, no spread to resample)"
    sizes = intervals.sample_size(Resample(([0.0] * 54,)), 0.95)
    assert sizes == {"detectable_drop": None, "samples_needed": {"0.05": None, "0.1": None},
                     "note": "the mean is 0: no drop can be detected, and a gate on it passes trivially"}
