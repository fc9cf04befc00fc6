"""keeptune.core.stats against scipy, against hand-computed values, and by simulation.

Every simulation is seeded, so each test is deterministic; its acceptance band is what makes
it sound. A rate estimated from R independent repetitions has binomial standard error
sqrt(p (1 - p) / R); each band below is about 3 such errors either side of the rate the method
should have (the chance that a correct method lands outside is then about 0.3%), stated next
to the test. The slow tests repeat the simulations with more repetitions (`-m slow`).
"""
from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as sp

from keeptune.core import stats
from keeptune.core.stats import Interval

N = 54  # the default gate's SQuAD paragraphs


def f1_like(rng: np.random.Generator, size) -> np.ndarray:
    """Per-sample scores shaped like SQuAD F1 on 0..100: 30% zeros, the rest Beta(2, 2) x 100.
    True mean 0.7 x 50 = 35."""
    return np.where(rng.random(size) < 0.3, 0.0, rng.beta(2, 2, size) * 100)


F1_MEAN = 35.0


def band(p: float, repetitions: int, k: float = 3.0) -> tuple[float, float]:
    """p +- k binomial standard errors of a rate estimated from `repetitions` trials."""
    se = math.sqrt(p * (1 - p) / repetitions)
    return p - k * se, p + k * se


# ---- intervals ---------------------------------------------------------------------------------

def test_format_is_compact():
    assert Interval(16.8, 26.4, 0.95, "BCa").format(21.59) == "21.59 [16.80, 26.40]"
    assert Interval(0.168, 0.264, 0.95, "BCa").scaled(100).format(21.59, digits=1) == "21.6 [16.8, 26.4]"


@pytest.mark.parametrize("method", ["BCa", "percentile"])
def test_interval_is_scipys_bootstrap_with_the_same_seed(method):
    x = np.random.default_rng(1).normal(10, 2, 80)
    ours = stats.interval(x, level=0.9, seed=7, method=method)
    theirs = sp.bootstrap((x,), np.mean, n_resamples=2000, confidence_level=0.9, method=method,
                          rng=np.random.default_rng(7)).confidence_interval
    assert ours.method == method
    assert (ours.low, ours.high) == pytest.approx((theirs.low, theirs.high), rel=1e-12)
    # and near the normal-theory interval mean +- t x s / sqrt(n) of a normal sample
    t = sp.t.interval(0.9, len(x) - 1, loc=x.mean(), scale=sp.sem(x))
    assert (ours.low, ours.high) == pytest.approx(t, abs=0.1)


def test_bernoulli_interval_is_close_to_the_binomial_intervals():
    x = np.r_[np.ones(60), np.zeros(140)]  # 60 of 200
    ours = stats.interval(x)
    for method in ("wilson", "exact"):  # Wilson; Clopper-Pearson
        ci = sp.binomtest(60, 200).proportion_ci(0.95, method=method)
        assert (ours.low, ours.high) == pytest.approx((ci.low, ci.high), abs=0.015), method


def test_degenerate_inputs_give_none_or_a_point():
    assert stats.interval([]) is None
    assert stats.interval([3.0]) == Interval(3.0, 3.0, 0.95, "degenerate")
    assert stats.interval([0.0] * 54) == Interval(0.0, 0.0, 0.95, "degenerate")
    assert stats.corpus_interval([[], []], lambda a, b: 0.0) is None
    assert stats.corpus_interval([[2, 2], [4, 4]], lambda a, b: a.sum() / b.sum()) == Interval(0.5, 0.5, 0.95,
                                                                                              "degenerate")


def test_bca_falls_back_to_percentile_where_it_is_undefined():
    # BCa needs a bootstrap distribution and a jackknife with some spread; a statistic that is
    # the same on (almost) every resample, the max of 0/1 data that is almost all ones, has none,
    # and scipy returns nan: the percentile interval over the same resamples stands instead.
    x = np.r_[np.ones(50), 0.0]
    iv = stats.corpus_interval([x], lambda c: c.max())
    assert iv.method == "percentile" and (iv.low, iv.high) == (1.0, 1.0)


def test_corpus_interval_resamples_the_corpus_by_sample_index():
    rng = np.random.default_rng(2)
    matched, predicted = rng.integers(0, 5, 60).astype(float), rng.integers(5, 9, 60).astype(float)

    def precision(m, p):
        return m.sum() / p.sum()  # a micro-averaged precision: not a mean of per-sample values

    ours = stats.corpus_interval([matched, predicted], precision, seed=3)
    theirs = sp.bootstrap((matched, predicted), precision, paired=True, vectorized=False, n_resamples=2000,
                          rng=np.random.default_rng(3)).confidence_interval
    assert (ours.low, ours.high) == pytest.approx((theirs.low, theirs.high), rel=1e-12)
    assert ours.contains(precision(matched, predicted))
    # A corpus statistic that is a mean gives `interval`'s numbers: the same resampled indices.
    mean = stats.corpus_interval([matched], lambda m: m.mean(), seed=3)
    assert (mean.low, mean.high) == pytest.approx(astuple(stats.interval(matched, seed=3)), rel=1e-12)


def astuple(iv: Interval) -> tuple[float, float]:
    return iv.low, iv.high


def test_bernoulli_coverage_computed_exactly():
    """The coverage of the 95% interval for n = 54 Bernoulli(0.3) scores without sampling error:
    the interval depends on the data only through the count k of ones, so its coverage is
    sum over k of P(K = k) x P(interval(k) covers 0.3). The last factor is 0 or 1 except where
    an end of the interval lies near 0.3 (k = 9, 10), where the bootstrap's own resampling decides;
    it is averaged over 10 seeds. Counts with P(K = k) < 1e-7 are left out. Measured: 0.955."""
    p = 0.3
    coverage = 0.0
    for k in range(N + 1):
        if sp.binom.pmf(k, N, p) >= 1e-7:
            ones = np.r_[np.ones(k), np.zeros(N - k)]
            covered = np.mean([stats.interval(ones, seed=s).contains(p) for s in range(10)])
            coverage += sp.binom.pmf(k, N, p) * covered
    assert 0.93 <= coverage <= 0.97


def test_coverage_simulation_on_f1_like_scores():
    """1000 repetitions of n = 54 F1-like scores (true mean 35): the 95% interval covers the true
    mean in 93-97% of them. With 1000 repetitions the coverage estimate has standard error
    sqrt(0.95 x 0.05 / 1000) = 0.69 points, so 93-97% is +-2.9 standard errors around 95%.
    Measured: 94.6% (1000 resamples each; the slow test uses 2000 resamples and 4000 repetitions)."""
    rng = np.random.default_rng(123)
    covered = [stats.interval(f1_like(rng, N), seed=i, n_resamples=1000).contains(F1_MEAN) for i in range(1000)]
    assert 0.93 <= np.mean(covered) <= 0.97


@pytest.mark.slow
@pytest.mark.parametrize("population", ["f1-like", "bernoulli"])
def test_coverage_simulation_long(population):
    """4000 repetitions, 2000 resamples each: standard error 0.34 points, so 93-97% is +-5.8
    standard errors around 95% and the band tests the method, not the simulation noise.
    Measured: 94.9% (F1-like), 95.3% (Bernoulli(0.3))."""
    rng = np.random.default_rng(321)
    draw, truth = ((lambda: f1_like(rng, N)), F1_MEAN) if population == "f1-like" else \
        ((lambda: rng.binomial(1, 0.3, N).astype(float)), 0.3)
    covered = [stats.interval(draw(), seed=i).contains(truth) for i in range(4000)]
    assert 0.93 <= np.mean(covered) <= 0.97


# ---- paired retention --------------------------------------------------------------------------

def test_identical_base_and_tuned_keep_everything():
    base = f1_like(np.random.default_rng(4), N)
    r = stats.retention(base, base.copy(), 0.9)
    assert r.ratio == 1.0 and r.interval.contains(1.0) and r.p_at_least == 1.0
    assert stats.confident_pass(r, 0.9, 0.95)


def test_the_same_indices_resample_base_and_tuned():
    """tuned = 0.95 x base sample by sample: every paired replicate has ratio 0.95 exactly, so the
    interval is the point 0.95; resampled independently it would span the data's spread."""
    base = f1_like(np.random.default_rng(5), N)
    r = stats.retention(base, 0.95 * base, 0.9)
    assert (r.interval.low, r.interval.high) == pytest.approx((0.95, 0.95))
    assert r.lower == pytest.approx(0.95) and r.p_at_least == 1.0


def test_a_real_drop_is_seen_below_one():
    rng = np.random.default_rng(6)
    base = f1_like(rng, N)
    tuned = np.clip(0.7 * base + rng.normal(0, 5, N), 0, 100)  # keeps about 70%
    r = stats.retention(base, tuned, 0.9)
    assert r.interval.high < 1 and r.interval.contains(r.ratio)
    assert r.p_at_least < 0.05
    assert r.lower < r.ratio and not stats.confident_pass(r, 0.9, 0.95)
    # The one-sided 95% bound lies inside the two-sided 95% interval (it is a 90% two-sided end).
    assert r.interval.low <= r.lower


def test_a_zero_baseline_is_flagged_not_hidden():
    r = stats.retention([0.0] * N, [0.0] * 50 + [1.0] * 4, 0.9)
    assert r.base_zero and r.ratio is None and r.interval is None and r.p_at_least is None
    assert "passes trivially" in r.note and "0.9 x 0" in r.note
    assert stats.confident_pass(r, 0.9, 0.95)  # as the point rule: 0.074 >= 0.9 x 0


def test_replicates_with_a_zero_baseline_do_not_break_the_interval():
    """Exact match with one hit of 54 in the base: a third of the resamples have no hit at all, so
    their ratio is undefined; they count as passing (inf, or 1 when tuned is 0 too), as the gate
    tuned >= fraction x 0 does, and the interval stays defined."""
    base = np.r_[1.0, np.zeros(N - 1)]
    tuned = np.r_[0.0, 1.0, np.zeros(N - 2)]
    r = stats.retention(base, tuned, 0.9)
    assert r.ratio == 1.0 and r.interval.low == 0.0 and r.interval.high == math.inf
    assert 0 < r.p_at_least < 1 and r.lower == 0.0


def test_confident_pass_needs_the_level_it_was_computed_at():
    r = stats.retention([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], 0.9, level=0.9)
    with pytest.raises(ValueError, match="level"):
        stats.confident_pass(r, 0.9, 0.95)


# ---- comparisons -------------------------------------------------------------------------------

def table(a_only: int, b_only: int, both: int, neither: int) -> tuple[list[float], list[float]]:
    """Per-sample 0/1 scores of A and B with the given 2x2 table."""
    a = [1.0] * a_only + [0.0] * b_only + [1.0] * both + [0.0] * neither
    b = [0.0] * a_only + [1.0] * b_only + [1.0] * both + [0.0] * neither
    return a, b


@pytest.mark.parametrize("a_only,b_only,verdict", [
    (9, 2, "not distinguishable at 95%"),
    (10, 1, "A is better"),
    (1, 10, "B is better"),
])
def test_mcnemar_on_a_hand_computed_table(a_only, b_only, verdict):
    """Exact McNemar: the discordant pairs split Binomial(11, 1/2) under H0; two-sided
    p = 2 x P(X <= min) = 2 x sum_{j <= min} C(11, j) / 2^11: 134/2048 for 9-2, 24/2048 for 10-1."""
    a, b = table(a_only, b_only, both=20, neither=23)
    d, low = a_only + b_only, min(a_only, b_only)
    expected = 2 * sum(math.comb(d, j) for j in range(low + 1)) / 2 ** d
    c = stats.compare(a, b)
    assert c.test == "exact McNemar" and c.discordant == (a_only, b_only)
    assert c.p_value == pytest.approx(expected, rel=1e-12)
    assert c.verdict == verdict
    assert c.difference == pytest.approx((a_only - b_only) / len(a))
    assert c.interval.contains(c.difference)


def test_paired_permutation_is_exact_on_few_samples():
    """Five F1-like pairs: 2^5 = 32 sign flips of the differences, all enumerated here; the p-value
    is the share whose |mean| is at least the observed one."""
    a, b = np.array([80.0, 55.0, 100.0, 40.0, 66.7]), np.array([60.0, 50.0, 90.0, 45.0, 50.0])
    d = a - b
    flips = [abs(np.mean(d * signs)) >= abs(d.mean()) - 1e-12 for signs in itertools.product([1, -1], repeat=5)]
    c = stats.compare(a, b)
    assert c.test == "paired permutation"
    assert c.p_value == pytest.approx(sum(flips) / 32)
    assert c.verdict == "not distinguishable at 95%"


def test_compare_finds_a_real_difference_and_checks_its_arguments():
    rng = np.random.default_rng(8)
    b = f1_like(rng, N)
    a = b + rng.normal(6, 5, N)
    c = stats.compare(a, b, level=0.99)
    assert c.verdict == "A is better" and c.p_value < 0.01 and c.interval.low > 0
    assert stats.compare(b, a).verdict == "B is better"
    assert stats.compare(b, b).verdict == "not distinguishable at 95%"
    with pytest.raises(ValueError, match="0/1"):
        stats.compare([0.5, 1.0], [1.0, 0.0], kind="binary")
    with pytest.raises(ValueError, match="length"):
        stats.compare([1.0, 0.0], [1.0])


def mcnemar_size(n: int, discordant_p: float, alpha: float) -> float:
    """The exact false-positive rate of exact McNemar at `alpha` when each of n samples is discordant
    with probability discordant_p and H0 holds: sum over the discordant count D ~ Binomial(n, q)
    of P(the binomial test on D rejects)."""
    size = 0.0
    for d in range(1, n + 1):
        rejects = sum(sp.binom.pmf(j, d, 0.5) for j in range(d + 1) if sp.binomtest(j, d).pvalue < alpha)
        size += sp.binom.pmf(d, n, discordant_p) * rejects
    return size


def test_identical_models_are_rarely_called_different_binary():
    """Two 'identical models' on 0/1 scores: each sample has a difficulty p ~ Beta(2, 3) and each
    model gets it right with probability p, with its own noise. A sample is discordant with
    probability E[2p(1-p)] = 2 (E p - E p^2) = 2 (0.4 - 0.2) = 0.4, so the exact rate at which
    exact McNemar rejects is computable (mcnemar_size: 2.9%, below 5% because the binomial test is
    discrete). 2000 repetitions must land within 3 standard errors of it. Measured: 3.1%."""
    rng = np.random.default_rng(9)
    expected = mcnemar_size(N, 0.4, 0.05)
    assert 0.02 < expected <= 0.05
    rejected = []
    for _ in range(2000):
        p = rng.beta(2, 3, N)
        a, b = (rng.random(N) < p).astype(float), (rng.random(N) < p).astype(float)
        rejected.append(stats.compare(a, b, n_resamples=200).verdict != "not distinguishable at 95%")
    low, high = band(expected, 2000)
    assert low <= np.mean(rejected) <= high


def identical_scores(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Two 'identical models' on F1-like scores: a shared per-sample difficulty, independent noise."""
    difficulty = rng.beta(2, 3, N) * 100
    return difficulty + rng.normal(0, 15, N), difficulty + rng.normal(0, 15, N)


def permutation_false_positives(repetitions: int, n_resamples: int) -> float:
    rng = np.random.default_rng(10)
    return float(np.mean([stats.compare(*identical_scores(rng), seed=i, n_resamples=n_resamples).verdict
                          != "not distinguishable at 95%" for i in range(repetitions)]))


def test_identical_models_are_rarely_called_different_scores():
    """The paired permutation test on identical models rejects at its level: with 499 random sign
    flips and the observed one counted, p = (k + 1) / 500 <= 0.05 exactly when k <= 24, which has
    probability 25/500 = 5% under H0. 1000 repetitions: standard error 0.69 points, band 5% +-
    3 standard errors = 2.9-7.1%. Measured: 4.7%."""
    low, high = band(0.05, 1000)
    assert low <= permutation_false_positives(1000, 499) <= high


@pytest.mark.slow
def test_identical_models_are_rarely_called_different_scores_long():
    """4000 repetitions, 999 flips: band 5% +- 3 x 0.34 = 3.97-6.03%. Measured: 4.95%."""
    low, high = band(0.05, 4000)
    assert low <= permutation_false_positives(4000, 999) <= high


# ---- sample size -------------------------------------------------------------------------------

POWER_REPS = 4000
POWER_TOL = 0.03  # 3 x sqrt(0.8 x 0.2 / 4000) = 0.019, plus 0.01 for the normal approximation


def one_sided_power(base: np.ndarray, tuned: np.ndarray) -> float:
    """Share of repetitions (rows) in which a one-sided paired t-test at 95% finds tuned below base."""
    return float(np.mean(sp.ttest_rel(tuned, base, axis=1, alternative="less").pvalue < 0.05))


def test_detectable_drop_agrees_with_a_simulation():
    """The model's world: tuned has the base's spread, uncorrelated, mean lower by the detectable
    drop; a paired one-sided test on 54 samples must then find the drop 80% of the time.
    Measured: 79.2% (drop 0.40)."""
    rng = np.random.default_rng(11)
    population = f1_like(rng, 200_000)
    drop = stats.detectable_drop(population, N)
    assert 0.35 < drop < 0.45  # F1-like scores: a 54-sample gate sees only large drops
    base = f1_like(rng, (POWER_REPS, N))
    tuned = f1_like(rng, (POWER_REPS, N)) - drop * population.mean()
    assert one_sided_power(base, tuned) == pytest.approx(0.8, abs=POWER_TOL)


def test_samples_needed_agrees_with_a_simulation():
    """Accuracy 50%: the n for a 10% relative drop, simulated as independent Bernoulli(0.5) and
    Bernoulli(0.45) scores on n samples, is found 80% of the time; the n is the smallest such.
    Measured: n = 1238, 79.8%."""
    base = np.r_[np.ones(500), np.zeros(500)]
    n = stats.samples_needed(base, 0.10)
    assert stats.detectable_drop(base, n) <= 0.10 < stats.detectable_drop(base, n - 1)
    rng = np.random.default_rng(12)
    b = rng.binomial(1, 0.5, (2000, n)).astype(float)
    t = rng.binomial(1, 0.45, (2000, n)).astype(float)
    assert one_sided_power(b, t) == pytest.approx(0.8, abs=0.035)  # 2000 repetitions: 3 x 0.009 + 0.01


def test_correlation_sharpens_the_figure_and_zero_is_conservative():
    rng = np.random.default_rng(13)
    population = f1_like(rng, 200_000)
    rho = 0.6
    drop = stats.detectable_drop(population, N, correlation=rho)
    assert drop == pytest.approx(stats.detectable_drop(population, N) * math.sqrt(1 - rho))
    base = f1_like(rng, (POWER_REPS, N))
    mean = population.mean()
    # tuned with the base's mean and spread and correlation rho with it, then lowered by the drop
    tuned = mean + rho * (base - mean) + math.sqrt(1 - rho ** 2) * (f1_like(rng, (POWER_REPS, N)) - mean)
    assert one_sided_power(base, tuned - drop * mean) == pytest.approx(0.8, abs=POWER_TOL)
    # the default (correlation 0) figure is a larger drop: found more often than 80% in this world
    assert one_sided_power(base, tuned - stats.detectable_drop(population, N) * mean) > 0.95


def test_the_confident_gate_passes_with_the_stated_margin():
    """A checkpoint that keeps everything (ratio 1, fresh noise) passes the confident gate at
    fraction 1 - detectable_drop with probability >= 80%, up to simulation error (200
    repetitions: 3 x 0.028): the figure is also the margin the confident gate needs. Measured: 92%."""
    rng = np.random.default_rng(14)
    drop = stats.detectable_drop(f1_like(rng, 200_000), N)
    passed = []
    for i in range(200):
        r = stats.retention(f1_like(rng, N), f1_like(rng, N), 1 - drop, seed=i, n_resamples=1000)
        passed.append(stats.confident_pass(r, 1 - drop, 0.95))
    assert np.mean(passed) >= 0.8 - 3 * math.sqrt(0.8 * 0.2 / 200)


def test_sample_size_degenerate_bases():
    assert stats.detectable_drop([0.0] * N, N) is None  # a zero mean: no relative drop
    assert stats.samples_needed([1.0] * N, 0.1) is None  # no spread: nothing to scale
    with pytest.raises(ValueError):
        stats.detectable_drop([1.0], 10)
    with pytest.raises(ValueError):
        stats.samples_needed([0.0, 1.0], 0.0)
