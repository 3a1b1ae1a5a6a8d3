"""The report's statistics against scipy's own implementations and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as sps

from bench.stats import clopper_pearson, holm, mean_interval, paired_permutation_pvalue, quadratic_optimum


@pytest.mark.parametrize("k, n", [(0, 5), (1, 5), (3, 5), (5, 5), (7, 20), (0, 1), (1, 1)])
def test_clopper_pearson_matches_scipy_exact_interval(k, n):
    ci = sps.binomtest(k, n).proportion_ci(confidence_level=0.95, method="exact")
    assert clopper_pearson(k, n) == pytest.approx((ci.low, ci.high), abs=1e-12)


def test_clopper_pearson_hand_cases():
    assert clopper_pearson(5, 5)[1] == 1.0 and clopper_pearson(5, 5)[0] == pytest.approx(0.025 ** (1 / 5))  # (a/2)^(1/n)
    assert clopper_pearson(0, 5) == (0.0, pytest.approx(1 - 0.025 ** (1 / 5)))
    assert all(math.isnan(v) for v in clopper_pearson(0, 0))


def test_t_interval_below_ten_values():
    x = [0.91, 0.93, 0.88, 0.95, 0.90]
    m, lo, hi, how = mean_interval(x)
    ref = sps.t.interval(0.95, len(x) - 1, loc=np.mean(x), scale=sps.sem(x))
    assert how == "t" and m == pytest.approx(np.mean(x)) and (lo, hi) == pytest.approx(ref, abs=1e-12)
    # by hand for 2 values: mean +- t_{0.975,1} * s / sqrt(2), s = |a - b| / sqrt(2)
    m, lo, hi, _ = mean_interval([1.0, 3.0])
    assert hi - m == pytest.approx(12.706204736174707 * (2 / math.sqrt(2)) / math.sqrt(2))


def test_bca_from_ten_values_and_degenerate_cases():
    rng = np.random.default_rng(3)
    x = rng.normal(0.9, 0.02, size=12)
    m, lo, hi, how = mean_interval(x, seed=0)
    ref = sps.bootstrap((x,), np.mean, n_resamples=9_999, method="BCa", random_state=np.random.default_rng(0)).confidence_interval
    assert how == "bca" and (lo, hi) == pytest.approx((ref.low, ref.high)) and lo < m < hi
    assert mean_interval([0.5] * 12)[1:3] == (0.5, 0.5)
    assert math.isnan(mean_interval([0.7])[1]) and mean_interval([0.7])[3] == "n=1"
    assert mean_interval([])[3] == "none"


def test_paired_permutation_exact_against_scipy():
    d = [0.02, 0.05, -0.01, 0.03, 0.04, 0.01]
    ref = sps.permutation_test((np.array(d),), np.mean, permutation_type="samples", alternative="two-sided", n_resamples=np.inf).pvalue
    assert paired_permutation_pvalue(d) == pytest.approx(ref)


def test_paired_permutation_hand_cases():
    assert paired_permutation_pvalue([1.0] * 5) == pytest.approx(2 / 32)  # only all-plus and all-minus reach |mean| = 1
    assert paired_permutation_pvalue([0.0, 0.0, 0.0]) == 1.0
    assert paired_permutation_pvalue([1.0, -1.0]) == 1.0
    assert math.isnan(paired_permutation_pvalue([]))
    # Monte Carlo above the exact limit: close to the exact value for 20 equal signs (2 / 2^20)
    assert paired_permutation_pvalue([1.0] * 20, exact_up_to=10, resamples=20_000) < 1e-3


def test_holm_by_hand():
    # m = 4: sorted 0.01, 0.02, 0.03, 0.5 -> 0.04, 0.06, 0.06 (monotone), 0.5
    assert holm([0.03, 0.5, 0.01, 0.02]) == pytest.approx([0.06, 0.5, 0.04, 0.06])
    assert holm([0.4, 0.6]) == pytest.approx([0.8, 0.8])
    out = holm([0.01, math.nan, 0.2])
    assert out[0] == pytest.approx(0.02) and math.isnan(out[1]) and out[2] == pytest.approx(0.2)


def test_quadratic_optimum():
    xs = np.log([0.01, 0.03, 0.1, 0.3])
    peak = math.log(0.05)
    ys = [-(x - peak) ** 2 for x in xs]
    x_star, edge = quadratic_optimum(xs, ys, "max")
    assert not edge and x_star == pytest.approx(peak)  # a parabola is recovered exactly
    assert quadratic_optimum(xs, [1, 2, 3, 4], "max") == (pytest.approx(xs[-1]), True)  # optimum on the edge
    assert quadratic_optimum(xs, [4, 3, 2, 3], "min") == (pytest.approx(xs[2], abs=0.6), False)
    x_star, edge = quadratic_optimum([0.0, 1.0, 2.0], [1.0, 3.0, 1.0], "max")
    assert x_star == pytest.approx(1.0) and not edge


def test_paired_t_pvalue_against_scipy_and_its_edges():
    from scipy.stats import ttest_rel

    from bench.stats import paired_t_pvalue

    d = [0.3, 0.1, 0.4, 0.2, 0.35]
    assert paired_t_pvalue(d) == pytest.approx(ttest_rel(d, [0.0] * 5).pvalue)
    assert paired_t_pvalue(d) < 0.01 < 2 / 2**5  # five same-sign pairs: the t-test rejects where the exact test cannot
    assert math.isnan(paired_t_pvalue([0.1])) and paired_t_pvalue([0.0, 0.0]) == 1.0 and paired_t_pvalue([0.2, 0.2]) == 0.0
