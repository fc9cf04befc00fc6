"""Uncertainty for every figure keeptune reports (issue 25): pure functions over per-sample scores.

Input is always a plain sequence of per-sample values, one per evaluated sample, in the
same sample order for every model compared: 0/1 for accuracy or exact match, 0..1 or 0..100
for F1-like scores. Higher is better. Nothing here reads files or knows about models.

Method, stated once:
- Intervals are seeded bootstrap intervals over samples from `scipy.stats.bootstrap`, BCa
  (bias-corrected and accelerated) by default. Where BCa is undefined (scipy warns and
  returns nan: a bootstrap distribution that is a single value, or a jackknife that hits an
  infinite ratio), the same resamples give a percentile interval instead, and
  `Interval.method` records which one was used.
- Anything computed from two models is *paired*: each bootstrap replicate draws one set of
  sample indices and applies it to both models, so the interval measures the change, not
  the spread of sample difficulty (`scipy.stats.bootstrap(..., paired=True)`).
- Comparisons test the paired difference of means: exact McNemar (a two-sided binomial
  test on the discordant pairs, `scipy.stats.binomtest`) for 0/1 scores, a paired
  sign-flip permutation test (`scipy.stats.permutation_test`, permutation_type="samples")
  otherwise.
- Sample sizes use the normal approximation of a one-sided paired test (see
  `detectable_drop`).

The same seed and inputs give the same numbers. An interval's bound may be inf (a ratio
whose baseline replicate is 0); a caller writing JSON must map it to null or a string.

About 400 lines, kept in one file on purpose: intervals, paired retention, comparisons and sample sizes
share the one bootstrap convention above, and a reader checks them against each other here.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

import numpy as np
from scipy import stats

LEVEL = 0.95
N_RESAMPLES = 2000
# Resampled values held at once by one scipy call: the bootstrap and BCa's jackknife make
# (batch x n) arrays; unbatched, a 10 000-sample jackknife would be 10 000 x 10 000 floats.
BATCH_VALUES = 1 << 22

Values = Sequence[float]


@dataclass(frozen=True)
class Interval:
    """A confidence interval: [low, high] at `level`, made by `method` ("BCa", "percentile" or
    "degenerate": every resample gives the same value, so low == high)."""
    low: float
    high: float
    level: float
    method: str

    def format(self, value: float, digits: int = 2) -> str:
        """`value` and the interval, compactly: "21.59 [16.80, 26.40]"."""
        return f"{value:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}]"

    def contains(self, value: float) -> bool:
        """Whether low <= value <= high."""
        return self.low <= value <= self.high

    def scaled(self, factor: float) -> Interval:
        """The interval of factor x the statistic (e.g. 100 for a 0/1 score printed as a percentage)."""
        low, high = sorted((self.low * factor, self.high * factor))
        return Interval(low, high, self.level, self.method)


# ---- the bootstrap, shared by every function below -------------------------------------------

def _columns(*columns: Values) -> tuple[np.ndarray, ...]:
    """The columns as float arrays, checked to be one value per sample each."""
    arrays = tuple(np.asarray(c, dtype=float).reshape(-1) for c in columns)
    if len({len(a) for a in arrays}) > 1:
        raise ValueError(f"paired columns differ in length: {[len(a) for a in arrays]}")
    return arrays


def _degenerate(arrays: tuple[np.ndarray, ...]) -> bool:
    """True when every sample's row is the same (n = 1 included): every bootstrap resample is then
    the original data, so the bootstrap distribution is one value."""
    return all(np.all(a == a[0]) for a in arrays)


def _batch(n: int) -> int:
    """Resamples per vectorized call (bootstrap and jackknife alike), so that one call holds about
    BATCH_VALUES floats; at most a few hundred samples make one batch, as scipy's default."""
    return max(1, BATCH_VALUES // max(n, 1))


def _run(call: Callable):
    """Run a scipy bootstrap call with its degenerate-data warnings silenced: a nan bound is
    detected and answered by the caller (percentile fallback), not left to the log."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", stats.DegenerateDataWarning)
        return call()


def _bound(value: float, result) -> float:
    """A bound of scipy's interval, nan only where it was interpolated between two infinite
    replicates (older scipy computes inf - inf there): that bound is inf."""
    if np.isnan(value) and np.isposinf(result.bootstrap_distribution).any():
        return math.inf
    return float(value)


def _bootstrap(arrays, statistic, *, level, seed, method, n_resamples, vectorized=True):
    """scipy's paired bootstrap of `statistic` over the samples of `arrays`, and the two-sided
    Interval: `method` (BCa or percentile) where it is defined, else percentile over the same
    resamples. Returns (BootstrapResult, Interval)."""
    options = dict(statistic=statistic, paired=True, vectorized=vectorized, confidence_level=level,
                   batch=_batch(len(arrays[0])))
    result = _run(lambda: stats.bootstrap(arrays, n_resamples=n_resamples, method=method,
                                          rng=np.random.default_rng(seed), **options))
    low, high = result.confidence_interval
    if method != "percentile" and (np.isnan(low) or np.isnan(high)):
        # BCa undefined: re-read the same replicates as a percentile interval (n_resamples=0
        # reuses `bootstrap_result`'s distribution instead of drawing new resamples).
        method = "percentile"
        result = _run(lambda: stats.bootstrap(arrays, n_resamples=0, bootstrap_result=result,
                                              method=method, **options))
        low, high = result.confidence_interval
    return result, Interval(_bound(low, result), _bound(high, result), level, method)


def _lower_bound(arrays, statistic, result, method: str, level: float, *, vectorized=True) -> float:
    """The one-sided lower confidence bound at `level` from the replicates of `result` by `method`
    (alternative="greater": the bound b with P(true >= b) = level), or by percentile where
    `method` gives nan."""
    one_sided = _run(lambda: stats.bootstrap(
        arrays, statistic, n_resamples=0, bootstrap_result=result, paired=True, vectorized=vectorized,
        confidence_level=level, alternative="greater", method=method, batch=_batch(len(arrays[0]))))
    lower = one_sided.confidence_interval.low
    if np.isnan(lower) and method != "percentile":
        return _lower_bound(arrays, statistic, result, "percentile", level, vectorized=vectorized)
    return _bound(lower, result)


# ---- intervals ---------------------------------------------------------------------------------

def _mean(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(x, axis=axis)


def interval(values: Values, level: float = LEVEL, seed: int = 0, method: str = "BCa",
             n_resamples: int = N_RESAMPLES) -> Optional[Interval]:
    """The bootstrap confidence interval of the mean of per-sample `values`.

    BCa by default (`method="percentile"` for the percentile interval), falling back to
    percentile where BCa is undefined; `Interval.method` says which. Degenerate inputs:
    no values -> None (there is no mean); all values equal (one value included) -> the point
    interval [v, v] with method "degenerate". That point says the sample shows no spread, not
    that there is no uncertainty: 54 exact-match zeros give [0, 0], while an exact binomial
    interval (scipy.stats.binomtest(0, 54).proportion_ci()) would reach 0.066.
    """
    (x,) = _columns(values)
    if len(x) == 0:
        return None
    if _degenerate((x,)):
        return Interval(float(x[0]), float(x[0]), level, "degenerate")
    return _bootstrap((x,), _mean, level=level, seed=seed, method=method, n_resamples=n_resamples)[1]


def corpus_interval(columns: Sequence[Values], statistic: Callable[..., float], level: float = LEVEL,
                    seed: int = 0, method: str = "BCa", n_resamples: int = N_RESAMPLES) -> Optional[Interval]:
    """The bootstrap interval of a corpus metric that is not a mean of per-sample values.

    `columns` are numeric per-sample columns of equal length (e.g. each sample's matched,
    predicted and reference token counts); `statistic(*columns)` computes the corpus metric
    from 1-D arrays. Every resample draws one set of sample indices and applies it to all
    columns together (a paired bootstrap), so the metric is recomputed on a resampled corpus.
    The statistic is called once per resample (and, for BCa, once per left-out sample).
    No samples -> None; every row equal -> the point interval at statistic(*columns),
    method "degenerate"; BCa falls back to percentile as in `interval`.
    """
    arrays = _columns(*columns)
    if len(arrays) == 0 or len(arrays[0]) == 0:
        return None
    if _degenerate(arrays):
        value = float(statistic(*arrays))
        return Interval(value, value, level, "degenerate")
    return _bootstrap(arrays, statistic, level=level, seed=seed, method=method, n_resamples=n_resamples,
                      vectorized=False)[1]


# ---- paired retention --------------------------------------------------------------------------

@dataclass(frozen=True)
class Retention:
    """A checkpoint's retention of one scalar: statistic(tuned) / statistic(base), paired.

    ratio, interval: the point ratio and its two-sided interval at `level`; lower: the
    one-sided lower bound at `level` (the confident gate compares it with the fraction);
    p_at_least: the share of bootstrap replicates whose ratio is >= `fraction`, an estimate of
    the probability that the checkpoint keeps at least that fraction. With a base of 0
    (base_zero) the ratio is undefined: ratio, interval, lower and p_at_least are None and
    `note` says why the gate passes trivially.
    """
    ratio: Optional[float]
    interval: Optional[Interval]
    lower: Optional[float]
    p_at_least: Optional[float]
    fraction: float
    level: float
    base: float
    tuned: float
    base_zero: bool = False
    note: Optional[str] = None


def _ratio_of(statistic: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """The paired statistic statistic(tuned) / statistic(base), vectorized along `axis`.

    A replicate whose base statistic is 0 has no ratio; it is given the value the gate
    `tuned >= fraction x base` implies for any fraction <= 1: 1.0 when tuned is 0 too (0 >= 0,
    nothing kept or lost) and inf when tuned is above 0, so that "ratio >= fraction" and the
    gate agree on every replicate.
    """
    def ratio(base: np.ndarray, tuned: np.ndarray, axis: int = -1) -> np.ndarray:
        b, t = statistic(base, axis=axis), statistic(tuned, axis=axis)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where(b == 0, np.where(t == 0, 1.0, np.inf), t / b)
    return ratio


def retention(base: Values, tuned: Values, fraction: float, level: float = LEVEL, seed: int = 0,
              statistic: Callable[..., np.ndarray] = np.mean, method: str = "BCa",
              n_resamples: int = N_RESAMPLES) -> Retention:
    """The paired retention of `tuned` over `base` (per-sample scores of the same samples, in order).

    `statistic(values, axis=-1)` reduces along an axis like numpy.mean (the default) and must be
    >= 0 for the scores given. Each bootstrap replicate resamples sample indices once and
    applies them to base and tuned, so sample difficulty cancels. The interval is BCa with the
    percentile fallback of `interval`; `lower` uses the same method one-sided.

    Base statistic 0 (e.g. the default's exact match, 0.0 on 54 paragraphs): the ratio is
    undefined and None, base_zero is True, and the gate `tuned >= fraction x 0` passes
    trivially under either rule (`confident_pass` returns True); the note says so, so that a
    report states it instead of showing a passing ratio. Every (base, tuned) pair equal
    (n = 1 included): a "degenerate" point interval at the ratio, p_at_least 0 or 1.
    """
    b, t = _columns(base, tuned)
    if len(b) == 0:
        raise ValueError("retention needs at least one sample")
    base_value, tuned_value = float(statistic(b)), float(statistic(t))
    if base_value < 0:
        raise ValueError(f"retention is a ratio of non-negative statistics; the base's is {base_value}")
    common = dict(fraction=fraction, level=level, base=base_value, tuned=tuned_value)
    if base_value == 0:
        return Retention(None, None, None, None, base_zero=True, **common, note=(
            f"baseline 0: the ratio is undefined and the gate {tuned_value:g} >= {fraction:g} x 0 "
            "passes trivially; this scalar cannot show a loss"))
    ratio = tuned_value / base_value
    if _degenerate((b, t)):
        return Retention(ratio, Interval(ratio, ratio, level, "degenerate"), ratio, float(ratio >= fraction),
                         **common)
    paired = _ratio_of(statistic)
    result, two_sided = _bootstrap((b, t), paired, level=level, seed=seed, method=method,
                                   n_resamples=n_resamples)
    lower = _lower_bound((b, t), paired, result, two_sided.method, level)
    # The probability of keeping at least `fraction`, estimated as the share of replicates.
    p_at_least = float(np.mean(result.bootstrap_distribution >= fraction))
    return Retention(ratio, two_sided, lower, p_at_least, **common)


def confident_pass(result: Retention, fraction: float, confidence: float) -> bool:
    """The confident gate (`rule: confident`): the one-sided lower bound of the paired ratio at
    `confidence` is >= `fraction`. `result` must have been computed with level=confidence (its
    `lower` is that bound). A base of 0 passes trivially, as under the point rule; the result's
    note says so."""
    if not math.isclose(result.level, confidence):
        raise ValueError(f"the retention was estimated at level {result.level}, not {confidence}: "
                         "compute it with level=confidence")
    if result.base_zero:
        return True
    return result.lower >= fraction


# ---- comparing two models on the same samples --------------------------------------------------

@dataclass(frozen=True)
class Comparison:
    """A against B on the same samples: difference = mean(A) - mean(B), its paired bootstrap
    interval, the p-value of `test` (two-sided, H0: no difference) and the verdict. discordant:
    (A right and B wrong, A wrong and B right), for McNemar."""
    difference: float
    interval: Optional[Interval]
    p_value: float
    test: str
    verdict: str
    n: int
    mean_a: float
    mean_b: float
    discordant: Optional[tuple[int, int]] = None


def _binary(x: np.ndarray) -> bool:
    return bool(np.all((x == 0) | (x == 1)))


def _mcnemar(a: np.ndarray, b: np.ndarray) -> tuple[float, tuple[int, int]]:
    """Exact McNemar: under H0 each discordant pair is equally likely to favour A or B, so the count
    favouring A is Binomial(discordant, 1/2); the p-value is its two-sided binomial test. No
    discordant pair -> p = 1."""
    a_only, b_only = int(np.sum((a == 1) & (b == 0))), int(np.sum((a == 0) & (b == 1)))
    if a_only + b_only == 0:
        return 1.0, (a_only, b_only)
    return float(stats.binomtest(a_only, a_only + b_only, 0.5).pvalue), (a_only, b_only)


def _mean_difference(a: np.ndarray, b: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.mean(a - b, axis=axis)


def _permutation(a: np.ndarray, b: np.ndarray, seed: int, n_resamples: int) -> float:
    """Paired permutation test: under H0 A's and B's scores of a sample are exchangeable, so each
    pair's difference may flip sign; the p-value is the share of flips whose mean difference is at
    least as far from 0 as the observed one (exact when 2^n <= n_resamples, else randomized)."""
    result = stats.permutation_test((a, b), _mean_difference, permutation_type="samples", vectorized=True,
                                    n_resamples=n_resamples, rng=np.random.default_rng(seed),
                                    batch=_batch(len(a)))
    return float(result.pvalue)


def _verdict(difference: float, p_value: float, level: float) -> str:
    if p_value < 1 - level:
        return "A is better" if difference > 0 else "B is better"
    return f"not distinguishable at {level * 100:g}%"


def compare(a: Values, b: Values, kind: str = "auto", level: float = LEVEL, seed: int = 0,
            n_resamples: int = 9999) -> Comparison:
    """Compare per-sample scores `a` and `b` of the same samples (same order), higher is better.

    kind: "binary" (0/1 scores: exact McNemar), "scores" (any scores: paired permutation test)
    or "auto" (binary when both are all 0/1). The interval is the paired bootstrap interval of
    the mean difference (resampling the per-sample differences; BCa with percentile fallback;
    "degenerate" when every difference is equal). The verdict follows the test: p < 1 - level
    gives "A is better" or "B is better" by the sign of the difference, otherwise
    "not distinguishable at 95%" (at `level`). n_resamples serves both the bootstrap and the
    permutation test.
    """
    x, y = _columns(a, b)
    if len(x) == 0:
        raise ValueError("compare needs at least one sample")
    if kind == "auto":
        kind = "binary" if _binary(x) and _binary(y) else "scores"
    if kind == "binary":
        if not (_binary(x) and _binary(y)):
            raise ValueError("kind='binary' needs 0/1 scores")
        p_value, discordant = _mcnemar(x, y)
        test = "exact McNemar"
    elif kind == "scores":
        p_value, discordant = _permutation(x, y, seed, n_resamples), None
        test = "paired permutation"
    else:
        raise ValueError(f"kind must be 'auto', 'binary' or 'scores', not {kind!r}")
    difference = float(np.mean(x) - np.mean(y))
    return Comparison(difference, interval(x - y, level, seed, n_resamples=n_resamples), p_value, test,
                      _verdict(difference, p_value, level), len(x), float(np.mean(x)), float(np.mean(y)),
                      discordant)


# ---- how many samples a gate needs -------------------------------------------------------------

def _drop_scale(base: Values, power: float, confidence: float, correlation: float) -> Optional[float]:
    """(z_confidence + z_power) x sigma_d / mean(base): the relative drop detectable with one
    sample; divide by sqrt(n) for n samples. None when the base has a zero mean or no spread."""
    (x,) = _columns(base)
    if len(x) < 2:
        raise ValueError("the base's per-sample scores need at least two samples")
    mean, sd = float(np.mean(x)), float(np.std(x, ddof=1))
    if mean <= 0 or sd == 0:
        return None
    # SD of the per-sample difference d = base - tuned when tuned has the base's spread sd and
    # correlation rho with it: Var(d) = sd^2 + sd^2 - 2 rho sd^2 = 2 sd^2 (1 - rho). The default
    # rho = 0 is the largest Var(d) for any rho >= 0; fine-tuning the same model gives rho > 0,
    # so with rho = 0 the drops and sample sizes below are conservative (upper bounds).
    if not -1 <= correlation < 1:
        raise ValueError(f"correlation must be in [-1, 1), not {correlation}")
    sigma_d = sd * math.sqrt(2 * (1 - correlation))
    z = stats.norm.ppf(confidence) + stats.norm.ppf(power)
    return float(z * sigma_d / mean)


def detectable_drop(base: Values, n: int, power: float = 0.8, confidence: float = 0.95,
                    correlation: float = 0.0) -> Optional[float]:
    """The smallest relative drop of the mean (0.1 = 10%) that a gate on `n` samples detects with
    probability `power` at one-sided `confidence`, from the base model's own per-sample scores.

    Model: a one-sided paired test of "no drop" on n samples, normal approximation: the mean
    per-sample difference d = base - tuned has standard error sigma_d / sqrt(n), and a true drop
    delta x mean(base) is detected with probability Phi(delta x mean / se - z_confidence), which
    reaches `power` at delta = (z_confidence + z_power) x sigma_d / (sqrt(n) x mean(base)).
    sigma_d = sd x sqrt(2 (1 - correlation)), sd the base's per-sample SD: the SD of the
    difference when tuned's scores have the base's spread and that correlation with them. The
    default correlation 0 is conservative: a fine-tuned model's scores correlate positively with
    its base's (pass the correlation observed between a base and a checkpoint for a sharper
    figure). The same figure is the margin above the fraction that a checkpoint needs to pass
    the confident gate with probability `power`, conservatively: a ratio's bootstrap interval is
    skewed upwards, so its lower bound passes somewhat more often at large drops. Assumes n large
    enough for the normal approximation (tens of samples). A value >= 1 means even losing the
    skill entirely is not detected reliably. None when the base's mean is 0 or its scores show
    no spread (the model has nothing to scale)."""
    scale = _drop_scale(base, power, confidence, correlation)
    return None if scale is None else scale / math.sqrt(n)


def samples_needed(base: Values, drop: float, power: float = 0.8, confidence: float = 0.95,
                   correlation: float = 0.0) -> Optional[int]:
    """The number of samples on which a gate detects a relative drop `drop` (0.05 = 5%) of the mean
    with probability `power` at one-sided `confidence`: the smallest n whose `detectable_drop` is
    <= drop, n = ceil((scale / drop)^2) under the same model. None where `detectable_drop` is."""
    if drop <= 0:
        raise ValueError(f"drop must be > 0, not {drop}")
    scale = _drop_scale(base, power, confidence, correlation)
    return None if scale is None else math.ceil((scale / drop) ** 2)
