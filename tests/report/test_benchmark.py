"""`keeptune benchmark`: methods against plain LoRA at matched new-task accuracy on held-out tasks, each number
recomputed here from the per-sample scores the runs were written with (numpy, scipy's binomial test, an exact
enumeration of the sign flips)."""
from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
from scipy import stats as scipy_stats

from keeptune.cli import main
from keeptune.core.errors import DataError
from keeptune.report import benchmark as bench
from keeptune.report.benchmark_doc import document
from tests.report.benchmark_runs import ACC, HELD, PERPLEXITY, WORDS, N, State, write_run

RNG = np.random.default_rng(29)


def right(k: int) -> list[bool]:
    """k of 12 new-task answers right."""
    return [i < k for i in range(12)]


def ones(*where: int) -> list[int]:
    return [int(i in where) for i in range(N)]


def ll(rate: float) -> list[float]:
    """Log-likelihoods of the held-out documents at about `rate` nats a word."""
    return list(-np.asarray(WORDS) * (rate + RNG.normal(0, 0.2, N)))


def noise() -> list[int]:
    return list(RNG.integers(0, 2, N))


BASE = State(right(2), ones(*range(9)), ll(2.0))
# Plain LoRA, seeds 1 and 2, at three steps; new-task accuracy 3, 6, 9 of 12 (seed 1) and 3, 5, 7 (seed 2).
PLAIN = {1: [State(right(3), noise(), ll(2.2), 10), State(right(6), ones(0, 1, 2), ll(2.6), 20),
             State(right(9), ones(0, 1), ll(3.0), 30)],
         2: [State(right(3), noise(), ll(2.2), 10), State(right(5), noise(), ll(2.5), 20),
             State(right(7), ones(0, 1, 2, 3), ll(2.9), 30)]}
# kl seed 1: its best is step 10 (5 of 12; step 20 fails) -> plain's nearest is step 20 (6 of 12).
# kl seed 2: its best is step 20 (6 of 12), as near plain's 5 as its 7 -> the later step, 30 (in floats 6/12 - 5/12
# is the smaller distance: ties are exact only after rounding).
KL = {1: [State(right(5), ones(*range(9)), ll(2.1), 10), State(right(8), noise(), ll(2.4), 20, passes=False)],
      2: [State(right(3), noise(), ll(2.0), 10), State(right(6), ones(0, 1, 2, 3, 4, 11), ll(2.7), 20)]}
# A run of [scale, intruders], seed 3: one training, so three methods. Plain LoRA: its checkpoints as trained,
# step 10 (4 of 12) the only one passing, its best. Scale: those and the scale-0.5 states, best step 20 scale 0.5
# (7 of 12) -> plain's nearest is step 30 (6 of 12). Intruders: those and the lambda-0.5 states, best step 20
# intruders 0.5 (8 of 12), also the run's own best over all its states -> plain's nearest is step 20 (9 of 12).
SCALED, REDUCED = {"scale": 0.5}, {"scale": 1.0, "intruders": 0.5}
SPLIT = {"plain": [State(right(4), ones(*range(8)), ll(2.1), 10), State(right(9), ones(0, 1), ll(3.0), 20, False),
                   State(right(6), ones(0, 1, 2, 3), ll(2.6), 30, False)],
         "scale": [State(right(3), ones(*range(8)), ll(2.0), 10, variant=SCALED),
                   State(right(7), ones(0, 1, 2, 3, 4, 5, 6), ll(2.3), 20, variant=SCALED)],
         "intruders": [State(right(5), noise(), ll(2.2), 10, False, REDUCED),
                       State(right(8), ones(*range(6)), ll(2.5), 20, variant=REDUCED)]}
SPLIT_STATES = [s for states in SPLIT.values() for s in states]
# mica seed 1: nothing passes -> its most accurate state, step 20 (10 of 12), flagged -> plain step 30 (9 of 12).
MICA = [State(right(2), noise(), ll(2.0), 10, passes=False), State(right(10), ones(0, 5), ll(3.1), 20, passes=False)]
# The pairs the matching rule must make: (method, seed) -> (the method's state, plain's state, plain's run).
PAIRS = {("kl", 1): (KL[1][0], PLAIN[1][1], "trial-plain1"), ("kl", 2): (KL[2][1], PLAIN[2][2], "trial-plain2"),
         ("scale", 3): (SPLIT["scale"][1], SPLIT["plain"][2], "split"),
         ("intruders", 3): (SPLIT["intruders"][1], SPLIT["plain"][1], "split"),
         ("mica", 1): (MICA[1], PLAIN[1][2], "trial-plain1")}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A sweep holding the plain and kl runs of lr 0.001, and three runs beside it: [scale, intruders] (seed 3),
    mica and a kl run of lr 0.002 (seed 1: no plain run of its recipe)."""
    root = tmp_path_factory.mktemp("benchmark")
    trials = root / "sweep" / "trials"
    for seed in (1, 2):  # wall and CPU seconds: plain 1000 + seed, 1900 + seed; kl 500 + seed, none recorded
        write_run(trials / f"trial-plain{seed}", BASE, PLAIN[seed], [], seed, wall=1000 + seed, cpu=1900 + seed)
        write_run(trials / f"trial-kl{seed}", BASE, KL[seed], ["kl"], seed, wall=500 + seed)
    (trials / "trial-killed").mkdir()  # a trial that never finished: no results.json
    others = [write_run(root / "split", BASE, SPLIT_STATES, ["scale", "intruders"], 3),
              write_run(root / "mica", BASE, MICA, [], 1, init="mica"),
              write_run(root / "kl-fast", BASE, KL[1], ["kl"], 1, lr=2e-3)]
    return root, [root / "sweep", *others]


@pytest.fixture(scope="module")
def result(runs):
    root, sources = runs
    out = root / "out"
    assert main(["benchmark", *map(str, sources), "--out", str(out)]) == 0
    return out, json.loads((out / "benchmark.json").read_text(encoding="utf-8"))


def expected_verdict(difference: float, p: float, lower: bool, method: str) -> str:
    if p >= 0.05:
        return "not distinguishable at 95%"
    return f"{method} better" if (difference < 0) == lower else "plain better"


def perplexity_difference(a: State, b: State) -> float:
    return a.perplexity() - b.perplexity()


def mcnemar(a: list[int], b: list[int]) -> float:
    a_only = sum(x == 1 and y == 0 for x, y in zip(a, b))
    b_only = sum(x == 0 and y == 1 for x, y in zip(a, b))
    return 1.0 if a_only + b_only == 0 else scipy_stats.binomtest(a_only, a_only + b_only, 0.5).pvalue


def exact_sign_flip(a: np.ndarray, b: np.ndarray) -> float:
    """The two-sided p of the paired permutation test by enumerating all 2^n sign flips of a - b (scipy's
    definition: twice the smaller tail, at most 1)."""
    d = a - b
    observed = d.mean()
    null = np.array([np.mean(np.array(signs) * d) for signs in itertools.product((1, -1), repeat=len(d))])
    gamma = abs(1e-14 * observed)
    tails = np.mean(null <= observed + gamma), np.mean(null >= observed - gamma)
    return min(2 * min(tails), 1.0)


def comparison(data: dict, method: str, seed: int, recipe: str = "lr 0.001") -> dict:
    return next(c for c in data["comparisons"] if (c["method"], c["seed"], c["recipe"]) == (method, seed, recipe))


def held_row(record: dict, scalar: str) -> dict:
    return next(r for r in record["held_out"] if r["scalar"] == scalar)


@pytest.mark.parametrize("method,seed", sorted(PAIRS))
def test_each_method_is_compared_with_plain_at_the_nearest_accuracy_on_the_held_out_samples(result, method, seed):
    _, data = result
    mine, plain, folder = PAIRS[method, seed]
    record = comparison(data, method, seed)
    assert (record["state"]["step"], record["state"]["scale"], record["state"]["intruders"]) == (
        mine.step, mine.variant.get("scale", 1.0), mine.variant.get("intruders"))
    assert record["state"]["passes_gate"] is (method != "mica")  # mica passes nowhere: its state is flagged
    assert record["plain_state"]["step"] == plain.step and record["plain_state"]["variant"] == ""
    assert record["plain"].endswith(folder)

    new = record["new_task"]
    assert new["difference"] == pytest.approx(mine.accuracy - plain.accuracy)
    assert new["p_value"] == pytest.approx(mcnemar([int(r) for r in mine.right], [int(r) for r in plain.right]))

    acc = held_row(record, ACC)
    assert acc["difference"] == pytest.approx(np.mean(mine.acc) - np.mean(plain.acc))
    p = mcnemar(mine.acc, plain.acc)
    assert acc["p_value"] == pytest.approx(p) and acc["test"] == "exact McNemar"
    assert acc["verdict"] == expected_verdict(acc["difference"], p, False, method)
    assert acc["low"] <= acc["difference"] <= acc["high"]

    perplexity = held_row(record, PERPLEXITY)
    assert perplexity["lower_is_better"] is True and perplexity["p_value"] is None
    assert perplexity["difference"] == pytest.approx(perplexity_difference(mine, plain))
    assert perplexity["low"] < perplexity["high"]
    excludes = perplexity["low"] > 0 or perplexity["high"] < 0
    better = method if perplexity["difference"] < 0 else "plain"
    assert perplexity["verdict"] == (f"{better} better" if excludes else "not distinguishable at 95%")


def test_the_seeds_are_pooled_per_sample_for_a_mean_and_by_their_differences_for_a_corpus_statistic(result):
    _, data = result
    pooled = {(r["method"], r["scalar"]): r for r in data["pooled"]}
    pairs = [PAIRS["kl", 1][:2], PAIRS["kl", 2][:2]]
    a = np.mean([m.acc for m, _ in pairs], axis=0)
    b = np.mean([p.acc for _, p in pairs], axis=0)
    acc = pooled["kl", ACC]
    assert acc["seeds"] == [1, 2] and acc["test"] == "paired permutation"
    assert acc["difference"] == pytest.approx(a.mean() - b.mean())
    p = exact_sign_flip(a, b)
    assert acc["p_value"] == pytest.approx(p)
    assert acc["verdict"] == expected_verdict(acc["difference"], p, False, "kl")

    differences = [perplexity_difference(m, p) for m, p in pairs]
    perplexity = pooled["kl", PERPLEXITY]
    assert perplexity["difference"] == pytest.approx(np.mean(differences))
    assert perplexity["range"] == pytest.approx([min(differences), max(differences)])
    assert perplexity["p_value"] is None and "corpus" in perplexity["pooled"]
    assert pooled["scale", ACC]["seeds"] == [3] and pooled["intruders", ACC]["seeds"] == [3]


def test_a_method_without_its_plain_run_is_reported_not_an_error(result):
    out, data = result
    record = comparison(data, "kl", 1, recipe="lr 0.002")  # plain lr 0.002 seed 1 does not exist
    assert record["plain"] is None and "no plain run of recipe 'lr 0.002' and seed 1" in record["note"]
    text = (out / "benchmark.md").read_text(encoding="utf-8")
    assert "no plain run of recipe 'lr 0.002' and seed 1" in text
    assert {r["method"] for r in data["runs"]} == {"plain", "kl", "scale", "intruders", "mica"}
    assert len(data["runs"]) == 9  # the killed trial has no results.json; the [scale, intruders] run is three


def test_the_curve_holds_every_state_once_with_its_held_out_change(result):
    _, data = result
    rows = [r for r in data["curve"] if r["run"].endswith("split")]
    # Each state once, under the method it belongs to, in step order (as trained first, then lambdas, factors).
    order = sorted(((m, s) for m, states in SPLIT.items() for s in states),
                   key=lambda ms: (ms[1].step, ms[0] != "plain", ms[0] != "intruders"))
    assert [(r["method"], r["step"], r["variant"], r["passes_gate"]) for r in rows] == [
        (m, s.step, f"{m} 0.5" if m != "plain" else "", s.passes) for m, s in order]
    chosen = {("plain", 10), ("scale", 20), ("intruders", 20)}  # each method's best (see SPLIT)
    assert [r["best_of"] for r in rows] == [[m] if (m, s.step) in chosen else [] for m, s in order]
    for row, (_, state) in zip(rows, order):
        kept = row["held_out"][HELD]
        assert kept[ACC]["ratio"] == pytest.approx(np.mean(state.acc) / np.mean(BASE.acc))
        assert kept[PERPLEXITY]["ratio"] == pytest.approx(BASE.perplexity() / state.perplexity())
        assert kept[ACC]["low"] < kept[ACC]["ratio"] < kept[ACC]["high"]
        assert row["accuracy"] == pytest.approx(state.accuracy) and row["accuracy_low"] is not None


def test_the_document_and_the_frontier_plots(result):
    out, data = result
    text = (out / "benchmark.md").read_text(encoding="utf-8")
    assert f"{HELD} {PERPLEXITY} (lower is better)" in text and "Level 95%" in text
    verdicts = [r["verdict"] for c in data["comparisons"] if c.get("note") is None for r in c["held_out"]]
    for verdict in verdicts:
        assert verdict in text
    assert "mica" in text and "none passes: most accurate" in text
    for scalar in (ACC, PERPLEXITY):
        png = out / f"frontier-{HELD}-{scalar}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_the_time_the_runs_took_is_summed_once_per_run_folder(result):
    """The [scale, intruders] run is three methods but one run; the runs that record no time count as none."""
    out, data = result
    assert data["cost"] == {"runs": 7, "wall_seconds": 1001 + 1002 + 501 + 502, "cpu_seconds": 1901 + 1902,
                            "cpu_runs": 2}
    text = (out / "benchmark.md").read_text(encoding="utf-8")
    assert "7 runs: wall time 3006.0 s (0 h 50 min) in all, CPU time 3803.0 s (1 h 03 min) (2 of the 7 runs" in text


def test_the_frontier_draws_plain_lora_in_black_and_each_method_in_its_own_colour(result):
    from matplotlib.colors import to_rgba

    from keeptune.report.benchmark_doc import frontier

    _, data = result
    axes = frontier(data, HELD, ACC, False).axes[0]
    colours = {h.get_label(): to_rgba(h.get_color()) for h in axes.get_legend().legend_handles
               if not h.get_label().startswith(("seed", "lr", "base"))}
    assert set(colours) == {r["method"] for r in data["curve"]}
    assert colours.pop("plain") == to_rgba("black") and len(set(colours.values())) == len(colours)
    assert to_rgba("black") not in colours.values()
    drawn = {to_rgba(line.get_color()) for line in axes.lines if len(line.get_xdata())}
    assert to_rgba("black") in drawn and set(colours.values()) <= drawn


def test_off_axis_is_beyond_three_interquartile_ranges():
    from keeptune.report.benchmark_doc import off_axis

    kept = [0.70, 0.83, 0.96, 1.10, 0.62, 0.75, 0.90, 0.85]
    assert off_axis(kept) == set()
    assert off_axis([*kept, 1e-9]) == {8}  # quartiles 0.70 and 0.90: fences 0.10 and 1.50
    assert off_axis([*kept, 0.2]) == set()  # the same fences
    assert off_axis([*kept, 1e-9, 2.5]) == {8, 9}  # quartiles 0.7125 and 0.945: fences 0.015 and 1.6425
    assert off_axis([*kept, 1.7]) == {8} and off_axis([*kept, 1.55]) == set()  # fences 0.12 and 1.59
    assert off_axis([1.0, 1e-9, 1.0]) == set() and off_axis([1.0] * 5 + [0.0]) == set()  # too few; no spread


def test_a_state_far_off_the_others_is_an_arrow_on_the_frontiers_edge_and_listed(result):
    """A state far off the others (kept 4000%, as from a base model that scores almost nothing) would squash them
    into a line: the y-axis spans the others, the state is an arrow on the upper edge, named under the plot; with
    the states as they are, nothing is listed."""
    import copy

    from keeptune.report.benchmark_doc import frontier

    _, data = result
    plain = frontier(data, HELD, ACC, False)
    assert not [t for t in plain.texts if "off the axis" in t.get_text()]
    assert not [line for line in plain.axes[0].lines if line.get_marker() in ("^", "v") and line.get_clip_on() is False]
    broken = copy.deepcopy(data)
    row = next(r for r in broken["curve"] if r["method"] == "kl" and not r["variant"])
    row["held_out"][HELD][ACC].update(ratio=40.0, low=30.0, high=50.0)
    figure = frontier(broken, HELD, ACC, False)
    (note,) = [t.get_text() for t in figure.texts if "off the axis" in t.get_text()]
    assert note == f"off the axis: kl seed {row['seed']} step {row['step']}: 4000.00%"
    _, y1 = figure.axes[0].get_ylim()
    others = [r["held_out"][HELD][ACC] for r in broken["curve"] if r is not row]
    assert max(o["high"] for o in others) <= y1 < 30.0
    (arrow,) = [line for line in figure.axes[0].lines if line.get_marker() == "^" and line.get_clip_on() is False]
    assert arrow.get_ydata()[0] == y1


def test_runs_that_do_not_share_their_held_out_tasks_are_refused_naming_the_run(runs, tmp_path):
    root, _ = runs
    odd = write_run(tmp_path / "odd", BASE, PLAIN[1], [], 3, measured=(ACC,))
    with pytest.raises(DataError, match=f"{odd}/results.json: its new task and held-out tasks"):
        bench.compute([root / "sweep", odd])


def test_a_source_that_is_neither_a_run_nor_a_sweep_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match=f"{tmp_path / 'empty'}: neither a run"):
        bench.compute([tmp_path / "empty"])
    (tmp_path / "sweep" / "trials" / "trial-killed").mkdir(parents=True)
    with pytest.raises(DataError, match=f"{tmp_path / 'sweep'}: a sweep with no finished trial"):
        bench.compute([tmp_path / "sweep"])


def test_plain_runs_alone_have_a_curve_and_nothing_to_compare(runs):
    root, _ = runs
    data = bench.compute([root / "sweep" / "trials" / "trial-plain1", root / "sweep" / "trials" / "trial-plain2"])
    assert data["comparisons"] == [] and data["pooled"] == []
    assert [(r["seed"], r["step"]) for r in data["curve"]] == [(s, st.step) for s in (1, 2) for st in PLAIN[s]]
    assert "nothing to compare" in document(data, [])


def test_a_recipe_is_the_settings_that_differ_besides_method_and_seed():
    settings = [{"name": "a", "train.lr": 0.001, "train.seed": 1, "lora.rank": 8, "retention.methods": []},
                {"name": "b", "train.lr": 0.002, "train.seed": 2, "lora.rank": 8, "retention.methods": ["kl"]}]
    assert [bench.recipe_text(r) for r in bench.recipes(settings)] == ["lr 0.001", "lr 0.002"]
    # a retention setting is part of a recipe only where the run's methods read it
    settings = [{"train.lr": 0.004, "retention.methods": [], "retention.scales": [0.5, 0.75]},
                {"train.lr": 0.004, "retention.methods": ["corda"], "retention.scales": [0.5]},
                {"train.lr": 0.004, "retention.methods": ["scale"], "retention.scales": [0.5]},
                {"train.lr": 0.002, "retention.methods": ["scale"], "retention.scales": [0.25]}]
    assert [bench.recipe_text(r) for r in bench.recipes(settings)] == ["lr 0.004", "lr 0.004", "scales 0.5, lr 0.004",
                                                                       "scales 0.25, lr 0.002"]
    assert bench.method_of({"lora.init": "mica", "retention.methods": ["kl"]}) == "mica+kl"
    assert bench.method_of({"retention.methods": []}) == "plain"


def test_each_part_of_a_post_training_run_has_the_best_a_run_of_that_method_alone_chooses(runs, tmp_path):
    root, _ = runs
    alone = write_run(tmp_path / "scale-alone", BASE, SPLIT["plain"] + SPLIT["scale"], ["scale"], 3)
    alone_best = json.loads((alone / "results.json").read_text(encoding="utf-8"))["best"]
    runs_read, _ = bench.load_runs([root / "split"])
    parts = {r.method: r for r in runs_read}
    assert sorted(parts) == ["intruders", "plain", "scale"] and {r.part for r in runs_read} == {
        "as trained", "as trained + scale", "as trained + intruders"}
    best = {m: bench.state_key(r.results["best"]) for m, r in parts.items()}
    assert best["scale"] == bench.state_key(alone_best) == (20, 0.5, None)
    assert best == {"plain": (10, 1.0, None), "scale": (20, 0.5, None), "intruders": (20, 1.0, 0.5)}
    whole = json.loads((root / "split" / "results.json").read_text(encoding="utf-8"))["best"]
    assert bench.state_key(whole) == (20, 1.0, 0.5)  # the run's own best is intruders': scale's is recomputed


def test_a_plain_run_beside_a_part_of_the_same_training_is_kept_once_when_identical(runs, tmp_path):
    root, _ = runs
    plain = root / "sweep" / "trials" / "trial-plain1"
    # [intruders] at seed 1, trained as trial-plain1 was; no lambda passes, so its best is plain's (step 30).
    reduced = [State(right(10), noise(), ll(3.2), s.step, False, REDUCED) for s in PLAIN[1]]
    same = write_run(tmp_path / "intruders", BASE, PLAIN[1] + reduced, ["intruders"], 1)
    data = bench.compute([plain, same])
    left = {r["run"]: r["left_out"] for r in data["runs"] if r["method"] == "plain"}
    assert left[str(same)] is None and f"identical to those of {same}" in left[str(plain)]
    assert len(data["notes"]) == 1 and data["notes"][0].startswith(f"{plain}: plain LoRA")
    (record,) = data["comparisons"]
    assert record["plain"] == str(same) and record["state"]["step"] == record["plain_state"]["step"] == 30
    assert all(r["difference"] == 0 for r in record["held_out"])
    assert {r["run"] for r in data["curve"]} == {str(same)}  # the plain run's states are the same: once
    best_rows = [r for r in data["curve"] if r["best"]]
    assert [(r["step"], r["best_of"]) for r in best_rows] == [(30, ["plain", "intruders"])]
    assert "(best of plain, intruders)" in document(data, [])


def test_a_plain_run_beside_a_part_of_another_training_is_refused_naming_both(runs, tmp_path):
    root, _ = runs
    plain = root / "sweep" / "trials" / "trial-plain1"
    other = [PLAIN[1][0], State(right(7), ones(0, 1, 2), ll(2.6), 20), PLAIN[1][2]]  # step 20 differs
    scaled = write_run(tmp_path / "scaled", BASE, other + [State(right(5), noise(), ll(2.3), 20, variant=SCALED)],
                       ["scale"], 1)
    with pytest.raises(DataError, match=f"{plain} and {scaled} are both plain LoRA .* differ at step 20"):
        bench.compute([plain, scaled])
