"""scripts/goyal_table.py on hand-built records whose answers are known: the tuned LR (best mean validation
among LRs where every seed succeeded), the exact two-sample test, the Welch interval and the table's cells."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from conftest import load_script
from test_report_stats import rec
from test_report import write_sweep

gt = load_script("goyal_table")


def _with_norm(r, norm):
    r["overrides"].append(f"task.norm={norm}")
    r["config"]["task"] = {"norm": norm}
    return r


def test_pick_is_the_best_mean_among_lrs_where_every_seed_succeeded(tmp_path):
    recs = []
    for lr, accs, status in ((0.01, (0.80, 0.82, 0.81), "completed"), (0.1, (0.90, 0.91, 0.89), "completed"),
                             (1.0, (0.95, 0.95, 0.0), None)):
        for seed, a in enumerate(accs):
            st = status or ("completed" if a else "diverged")
            recs.append(_with_norm(rec(len(recs), lr=lr, seed=seed, batch=32, base=32, acc=a, test=a - 0.01, chance=0.1, status=st), "ghost"))
    root = write_sweep(tmp_path / "tune", recs)
    assert gt.pick(root, "ghost") == 0.1  # 1.0 has the best successes but one seed diverged: not the optimum


def test_exact_two_sample_pvalue_and_welch():
    a, b = [1.0, 2.0, 3.0], [10.0, 11.0, 12.0]
    assert gt.exact_two_sample_pvalue(a, b) == pytest.approx(2 / math.comb(6, 3))  # only the observed split and its mirror
    assert gt.exact_two_sample_pvalue([1.0, 2.0], [1.0, 2.0]) == 1.0
    lo, hi = gt.welch_interval(b, a)
    assert lo < 9.0 < hi and (lo + hi) / 2 == pytest.approx(9.0)
    from scipy.stats import ttest_ind

    t = ttest_ind(b, a, equal_var=False).confidence_interval(0.95)
    assert (lo, hi) == pytest.approx((t.low, t.high))


def test_table_has_goyals_shape_tests_and_failures(tmp_path):
    """k = 1 baseline (5 seeds); k = 4: none (seed 4 diverged), constant, linear; errors in % of test accuracy."""
    recs = []
    base_acc = [0.90, 0.91, 0.90, 0.91, 0.90]

    def add(batch, warmup, seed, acc, status="completed"):
        recs.append(_with_norm(rec(len(recs), warmup=warmup, lr=0.1, seed=seed, batch=batch, base=32, scaling="linear",
                                   acc=acc, test=acc, chance=0.1, status=status), "ghost"))

    for s in range(5):
        add(32, "none", s, base_acc[s])
        add(128, "none", s, base_acc[s] - 0.02, "completed" if s < 4 else "diverged")
        add(128, "constant", s, base_acc[s] - 0.03)
        add(128, "linear", s, base_acc[s] - 0.001 * (s + 1))
    root = write_sweep(tmp_path / "sweep", recs)
    t = gt.table(root).set_index(["k", "warmup"])
    assert list(t.index) == [(1, "no warm-up"), (4, "no warm-up"), (4, "constant"), (4, "gradual")]
    b = t.loc[(1, "no warm-up")]
    assert b.n_success == 5 and b.err_mean == pytest.approx(100 * (1 - np.mean(base_acc)))
    none = t.loc[(4, "no warm-up")]
    assert (none.n, none.n_success) == (5, 4) and none.err_chance_scored == pytest.approx((4 * 0 + sum(100 * (1 - a + 0.02) for a in base_acc[:4]) + 90) / 5)
    lin = t.loc[(4, "gradual")]
    assert lin.diff_vs_none == pytest.approx(100 * np.mean([0.001 * (s + 1) - 0.02 for s in range(4)]))  # 4 pairs: seed 4 of none failed
    assert lin.p_exact_vs_none == pytest.approx(2 / 16)  # all four paired differences have one sign
    from scipy.stats import ttest_ind, ttest_rel

    d = [100 * (0.001 * (s + 1) - 0.02) for s in range(4)]
    assert lin.p_vs_none == pytest.approx(ttest_rel(d, [0.0] * 4).pvalue)
    con = t.loc[(4, "constant")]
    assert con.diff_vs_base == pytest.approx(3.0) and con.p_exact_vs_base == pytest.approx(2 / math.comb(10, 5))
    base_err = [100 * (1 - a) for a in base_acc]
    assert con.p_vs_base == pytest.approx(ttest_ind([e + 3.0 for e in base_err], base_err, equal_var=False).pvalue)
    assert t["holm_vs_base"].notna().sum() == 3
    md = gt.markdown(gt.table(root))
    assert "| 4 | 128 |" in md and "23.60 ± 0.12" in md and "4/5 [" in md


def test_lr_centres_pick_each_batch_best_successful_multiplier(tmp_path):
    lc = load_script("lr_centres")
    recs = []
    for batch, best in ((16, 0.5), (256, 4.0)):
        for mult in (0.5, 1.0, 2.0, 4.0, 8.0):
            acc = 0.9 - 0.01 * abs(math.log2(mult / best))
            status = "diverged" if mult == 8.0 else "completed"
            r = rec(len(recs), lr=0.1 * mult, batch=batch, acc=acc, test=acc, chance=0.1, status=status)
            r["config"]["lr_mult"] = mult
            recs.append(r)
    root = write_sweep(tmp_path / "coarse", recs)
    assert lc.centres(root, "sgd") == {16: 0.5, 256: 4.0}
    assert lc.main([str(root), "--optimizer", "sgd"]) == 0
