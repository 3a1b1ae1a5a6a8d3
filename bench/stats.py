"""Statistics for the report's tables: pure functions with their formulas, tested against scipy.

- :func:`clopper_pearson`: exact binomial interval for a success rate.
- :func:`mean_interval`: the mean with an interval fit for its n (Student's t below 10 values,
  scipy's BCa bootstrap from 10 on).
- :func:`paired_permutation_pvalue`: exact two-sided sign-flip test of paired differences.
- :func:`holm`: Holm's step-down adjustment of a family of p-values.
- :func:`quadratic_optimum`: the optimum of a parabola through the grid optimum and its neighbours.
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import numpy as np

CONF = 0.95
T_BELOW = 10  # below this many values the t-interval; from it on the BCa bootstrap


def clopper_pearson(k: int, n: int, conf: float = CONF) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval for k successes in n trials.

    lo = Beta(a/2; k, n-k+1) quantile, hi = Beta(1-a/2; k+1, n-k) quantile with a = 1 - conf;
    lo = 0 when k = 0 and hi = 1 when k = n. (nan, nan) for n = 0.
    """
    from scipy.stats import beta

    if n == 0:
        return math.nan, math.nan
    a = 1.0 - conf
    lo = 0.0 if k == 0 else float(beta.ppf(a / 2, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(1 - a / 2, k + 1, n - k))
    return lo, hi


def mean_interval(values: Sequence[float], conf: float = CONF, seed: int = 0) -> tuple[float, float, float, str]:
    """(mean, lo, hi, method) of ``values``.

    n = 0: all nan, method "none"; n = 1: no interval ("n=1"); n < 10: mean -/+ t_{1-a/2, n-1} s/sqrt(n)
    ("t"); n >= 10: scipy.stats.bootstrap BCa with 9,999 resamples and a fixed seed ("bca"). Values
    that are all equal give a zero-width interval.
    """
    x = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=float)
    n = len(x)
    if n == 0:
        return math.nan, math.nan, math.nan, "none"
    m = float(x.mean())
    if n == 1:
        return m, math.nan, math.nan, "n=1"
    if np.all(x == x[0]):
        return m, m, m, "t" if n < T_BELOW else "bca"
    if n < T_BELOW:
        from scipy.stats import t

        half = float(t.ppf(0.5 + conf / 2, n - 1)) * float(x.std(ddof=1)) / math.sqrt(n)
        return m, m - half, m + half, "t"
    from scipy.stats import bootstrap

    res = bootstrap((x,), np.mean, confidence_level=conf, n_resamples=9_999, method="BCa", random_state=np.random.default_rng(seed))
    return m, float(res.confidence_interval.low), float(res.confidence_interval.high), "bca"


def prediction_interval(mean: float, sd: float, n: int, conf: float = CONF) -> tuple[float, float]:
    """The ``conf`` interval for one new value, from ``n`` >= 2 values with this mean and sample SD:
    mean -/+ t_{1-a/2, n-1} s sqrt(1 + 1/n)."""
    from scipy.stats import t

    half = float(t.ppf(0.5 + conf / 2, n - 1)) * sd * math.sqrt(1 + 1 / n)
    return mean - half, mean + half


def paired_permutation_pvalue(diffs: Sequence[float], exact_up_to: int = 16, resamples: int = 100_000, seed: int = 0) -> float:
    """Two-sided p-value of H0 "paired differences are symmetric about 0" by sign flips of the mean.

    p = #{sign vectors e : |mean(e * d)| >= |mean(d)|} / 2^n over all 2^n sign vectors (exact) when
    n <= ``exact_up_to``; otherwise a Monte-Carlo estimate with the observed vector counted, (b+1)/(B+1).
    All-zero differences give p = 1; no differences give nan.
    """
    d = np.asarray([v for v in diffs if v is not None and math.isfinite(v)], dtype=float)
    n = len(d)
    if n == 0:
        return math.nan
    observed = abs(d.mean())
    tol = 1e-12 * max(1.0, float(np.abs(d).max()))
    if n <= exact_up_to:
        signs = np.array(list(itertools.product((1.0, -1.0), repeat=n)))
        stats = np.abs(signs @ d) / n
        return float(np.mean(stats >= observed - tol))
    rng = np.random.default_rng(seed)
    signs = rng.choice((1.0, -1.0), size=(resamples, n))
    stats = np.abs(signs @ d) / n
    return float((np.sum(stats >= observed - tol) + 1) / (resamples + 1))


def paired_t_pvalue(diffs: Sequence[float]) -> float:
    """Two-sided paired (one-sample) t-test p of mean(diffs) = 0: nan below 2 differences; 1 when all are 0.

    Beside :func:`paired_permutation_pvalue`: with n pairs the exact sign-flip p is at least 2/2^n (0.0625 at
    n = 5), so with few seeds it cannot reject whatever the effect; the t-test can, at the price of assuming
    roughly normal differences."""
    from scipy.stats import ttest_1samp

    d = [float(x) for x in diffs]
    if len(d) < 2:
        return math.nan
    if all(x == d[0] for x in d):
        return 1.0 if d[0] == 0 else 0.0
    return float(ttest_1samp(d, 0.0).pvalue)


def holm(pvalues: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error control), in the input order.

    Sorted ascending p_(1) <= ... <= p_(m): adj_(i) = max_{j <= i} min(1, (m - j + 1) p_(j)).
    nan entries stay nan and do not count in m.
    """
    idx = [i for i, p in enumerate(pvalues) if p is not None and math.isfinite(p)]
    m = len(idx)
    out = [math.nan] * len(pvalues)
    running = 0.0
    for rank, i in enumerate(sorted(idx, key=lambda i: pvalues[i])):
        running = max(running, min(1.0, (m - rank) * pvalues[i]))
        out[i] = running
    return out


def quadratic_optimum(xs: Sequence[float], ys: Sequence[float], mode: str) -> tuple[float, bool]:
    """The x of the best y, refined by a parabola through the grid optimum and its two neighbours.

    ``xs`` are grid points (e.g. log LRs) in increasing order, ``mode`` "max" or "min". Returns
    (x_star, on_edge): on_edge is True when the grid optimum is the first or last point (then
    x_star is that point: the optimum may lie outside the grid). When the three points do not bend
    the right way (no interior optimum), x_star is the grid optimum.
    """
    xs, ys = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    if len(xs) == 0:
        return math.nan, False
    sign = 1.0 if mode == "max" else -1.0
    i = int(np.nanargmax(sign * ys))
    if i == 0 or i == len(xs) - 1:
        return float(xs[i]), True
    x3, y3 = xs[i - 1 : i + 2], sign * ys[i - 1 : i + 2]
    a, b, _ = np.polyfit(x3, y3, 2)
    if not a < 0:  # a maximum of sign * y needs a concave parabola
        return float(xs[i]), False
    return float(np.clip(-b / (2 * a), x3[0], x3[2])), False
