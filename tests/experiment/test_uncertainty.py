"""keeptune.experiment.uncertainty and results.complete_uncertainty: evaluations paired by sample id, the paired
retention of each gated scalar recomputed here from the predictions, a corpus metric resampled as itself, and an
older results.json completed from its run's folders."""
from __future__ import annotations

import json

import numpy as np
import pytest

from keeptune.core import stats
from keeptune.core.errors import DataError
from keeptune.core.gate import TaskGate
from keeptune.evaluate.metrics.registry import Resample
from keeptune.experiment import uncertainty
from keeptune.experiment.results import complete_uncertainty
from tests.experiment.evalfolders import answers, record, write_evaluation

WORDS = "the quick brown fox jumps over the lazy dog".split()


def partial(n: int, keep: list[int], prefix: str = "s") -> list[dict]:
    """Records whose label is the nine words and whose prediction keeps the first keep[i] of them (F1 0..1)."""
    return [record(f"{prefix}{i:02d}", " ".join(WORDS[:keep[i]]) or "nothing", " ".join(WORDS)) for i in range(n)]


def by_id(folder):
    rows = [json.loads(line) for line in (folder / "predictions.jsonl").read_text().splitlines()]
    return {r["id"]: r for r in rows}


def test_paired_retention_is_stats_retention_of_the_predictions_paired_by_id(tmp_path):
    rng = np.random.default_rng(3)
    base = write_evaluation(tmp_path / "base" / "squad", "squad", partial(30, list(rng.integers(0, 10, 30))), shuffle=1)
    tuned = write_evaluation(tmp_path / "ckpt" / "squad", "squad", partial(30, list(rng.integers(0, 10, 30))),
                             shuffle=2)
    gate = TaskGate("squad", ("emf1.F1", "exact_match.accuracy"), 0.9, "confident", 0.9)
    got = uncertainty.state_retention([gate], tmp_path / "base", tmp_path / "ckpt")["squad"]
    # Independently: read both files, pair by id (sorted), the seed's F1 is 100 x the per-sample f1.
    b, t = by_id(base), by_id(tuned)
    ids = sorted(b)
    f1 = stats.retention([100 * b[i]["scores"]["emf1"]["f1"] for i in ids],
                         [100 * t[i]["scores"]["emf1"]["f1"] for i in ids], 0.9, level=0.9, seed=0)
    exact = stats.retention([b[i]["scores"]["exact_match"]["correct"] for i in ids],
                            [t[i]["scores"]["exact_match"]["correct"] for i in ids], 0.9, level=0.9, seed=0)
    assert got["emf1.F1"] == f1 and got["exact_match.accuracy"] == exact
    metrics = json.loads((tuned / "metrics.json").read_text())["scores"]
    base_metrics = json.loads((base / "metrics.json").read_text())["scores"]
    assert f1.ratio == pytest.approx(metrics["emf1.F1"] / base_metrics["emf1.F1"])  # the same ratio as the gate's


def test_evaluations_of_different_samples_are_refused(tmp_path):
    write_evaluation(tmp_path / "a", "squad", answers([True, False, True]))
    write_evaluation(tmp_path / "b", "squad", answers([True, False, True], prefix="t"))
    with pytest.raises(DataError, match="hold different samples"):
        uncertainty.paired_records(tmp_path / "a", tmp_path / "b")
    write_evaluation(tmp_path / "c", "squad", answers([True, True, True]), samples="other")
    with pytest.raises(DataError, match="evaluated on different samples"):
        uncertainty.compare_folders(tmp_path / "a", tmp_path / "c", "exact_match.accuracy")


def test_a_corpus_metric_is_resampled_as_itself():
    """A pooled recall, sum(matched) / sum(reference): its paired ratio is the pooled ratio, and every replicate
    recomputes it on one draw of rows applied to both models."""
    rng = np.random.default_rng(5)
    reference = rng.integers(1, 20, 25).astype(float)
    matched_base = np.floor(reference * rng.uniform(0.2, 1.0, 25))
    matched_tuned = np.floor(reference * rng.uniform(0.1, 1.0, 25))

    def pooled(matched, ref):
        return float(np.sum(matched) / np.sum(ref))

    base = Resample((list(matched_base), list(reference)), pooled)
    tuned = Resample((list(matched_tuned), list(reference)), pooled)
    r = uncertainty.retention_of(base, tuned, 0.9, 0.95)
    assert r.ratio == pytest.approx(pooled(matched_tuned, reference) / pooled(matched_base, reference))
    assert r.interval.low < r.ratio < r.interval.high and r.lower > r.interval.low
    # Not the ratio of per-sample means: pooling weighs long references more.
    assert r.ratio != pytest.approx(np.mean(matched_tuned / reference) / np.mean(matched_base / reference))


def test_the_best_against_the_runner_up_on_the_new_tasks_accuracy(tmp_path):
    run = tmp_path / "run"
    right_a = [True] * 12 + [False] * 8  # step 2: right on 12 of 20
    right_b = [True] * 4 + [False] * 16  # step 4: right on 4, each also right for step 2: 8 discordant pairs
    write_evaluation(uncertainty.state_folder(run, 2) / "math", "math", answers(right_a))
    write_evaluation(uncertainty.state_folder(run, 4) / "math", "math", answers(right_b))
    entries = [{"step": 2, "passes_gate": True, "score": 0.6}, {"step": 4, "passes_gate": True, "score": 0.4}]
    c = uncertainty.best_against_runner_up(run, entries, "math", "exact_match.accuracy")
    assert c["best"] == {"step": 2, "scale": 1.0} and c["runner_up"] == {"step": 4, "scale": 1.0}
    assert c["discordant"] == [8, 0] and c["p_value"] == pytest.approx(2 / 2 ** 8)  # exact McNemar, two-sided
    assert c["difference"] == pytest.approx(0.4) and c["verdict"] == "A is better"
    assert uncertainty.best_against_runner_up(run, entries[:1], "math", "exact_match.accuracy") is None


def old_run(tmp_path):
    """A run folder as an older keeptune left it: evaluations without intervals, results.json without them."""
    run = tmp_path / "run"
    base = write_evaluation(run / "baseline" / "squad", "squad", partial(12, [9, 5, 7, 9, 3, 8, 9, 6, 9, 4, 9, 7]))
    write_evaluation(run / "baseline" / "math", "math", answers([False] * 10))
    tuned = write_evaluation(uncertainty.state_folder(run, 5) / "squad", "squad",
                             partial(12, [9, 4, 7, 9, 2, 8, 9, 6, 9, 5, 8, 7]))
    write_evaluation(uncertainty.state_folder(run, 5) / "math", "math", answers([True] * 4 + [False] * 6))
    for folder in (base, tuned):  # no intervals: written before they existed
        metrics = json.loads((folder / "metrics.json").read_text())
        del metrics["intervals"]
        (folder / "metrics.json").write_text(json.dumps(metrics))
    scores = {f: json.loads((f / "metrics.json").read_text())["scores"] for f in (base, tuned)}
    entry = {"step": 5,
             "tasks": {"squad": {"scores": scores[tuned]}, "math": {"scores": {"exact_match.accuracy": 0.4}}},
             "retention": {"squad": {"emf1.F1": scores[tuned]["emf1.F1"] / scores[base]["emf1.F1"]}},
             "gate": {"squad": True}, "passes_gate": True, "accuracy": 0.4, "score": 0.5}
    results = {"tasks": [{"name": "squad", "role": "retention", "metrics": ["emf1.F1"],
                          "gate": {"metrics": ["emf1.F1"], "fraction": 0.9, "thresholds": {}}},
                         {"name": "math", "role": "new", "metrics": ["exact_match.accuracy"],
                          "accuracy": "exact_match.accuracy", "units": {"exact_match.accuracy": "fraction"}}],
               "baseline": {"tasks": {"squad": {"scores": scores[base]}, "math": {"scores": {}}}},
               "checkpoints": [entry], "best": json.loads(json.dumps(entry))}
    return run, results


def test_an_older_results_json_is_completed_from_its_folders(tmp_path):
    run, results = old_run(tmp_path)
    passed = results["checkpoints"][0]["passes_gate"]
    assert complete_uncertainty(results, run)
    entry = results["checkpoints"][0]
    assert entry["passes_gate"] is passed  # decisions are not changed
    decision = entry["retention_uncertainty"]["squad"]
    assert decision["rule"] == "point" and decision["passed"] is True
    expected = uncertainty.state_retention([TaskGate("squad", ("emf1.F1",), 0.9)], run / "baseline",
                                           uncertainty.state_folder(run, 5))["squad"]["emf1.F1"]
    assert decision["scalars"]["emf1.F1"]["lower"] == expected.lower
    assert results["baseline"]["tasks"]["squad"]["intervals"]["emf1.F1"]["method"] in ("BCa", "percentile")
    assert results["best"]["retention_uncertainty"] == entry["retention_uncertainty"]
    assert results["best_vs_runner_up"] is None  # one passing state
    assert not complete_uncertainty(results, run)  # nothing left to add


def test_a_results_json_without_its_folders_is_left_as_it_is(tmp_path):
    run, results = old_run(tmp_path)
    results["checkpoints"].append({**results["checkpoints"][0], "step": 6})  # two pass: a runner-up to compare
    before = json.dumps(results)
    assert not complete_uncertainty(results, tmp_path / "elsewhere")
    assert json.dumps(results) == before


def test_an_entry_names_the_folder_its_state_was_evaluated_in(tmp_path):
    """As trained, a scale factor and an intruder reduction each have their own folder: a comparison of two
    entries reads the predictions of the states they name (issue 29's intruders)."""
    from keeptune.experiment.uncertainty import entry_state_folder
    from keeptune.train.checkpoint import step_dir

    step = step_dir(tmp_path, 2)
    assert entry_state_folder(tmp_path, {"step": 2, "scale": 1.0}) == step
    assert entry_state_folder(tmp_path, {"step": 2, "scale": 0.5}) == step / "scale-0.5"
    assert entry_state_folder(tmp_path, {"step": 2, "scale": 1.0, "intruders": 0.75}) == step / "intruders-0.75"
