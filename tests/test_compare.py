"""bench.compare: two sweeps of one grid agree within their intervals; a changed sweep does not."""

from __future__ import annotations

import pytest

from conftest import run_bench

GRID = ["-m", "optimizer=adam", "optimizer.lr=0.001,0.003", "train.eval_every=1000", "hardware.threads=1", "report=false"]


@pytest.mark.slow
def test_compare_agrees_on_reseeded_sweeps_and_flags_a_changed_one(tmp_path):
    for name, extra in (("a", ["seed=0,1,2", "train.steps=60"]), ("b", ["seed=3,4,5", "train.steps=60"]), ("short", ["seed=0,1,2", "train.steps=15"])):
        p = run_bench(*GRID, *extra, f"hydra.sweep.dir={tmp_path / name}")
        assert p.returncode == 0, p.stderr
    same = run_bench(str(tmp_path / "a"), str(tmp_path / "a"), module="bench.compare")
    assert same.returncode == 0 and "2 of 2 cells agree" in same.stdout, same.stdout + same.stderr
    reseeded = run_bench(str(tmp_path / "a"), str(tmp_path / "b"), module="bench.compare")
    assert reseeded.returncode == 0 and "2 of 2 cells agree" in reseeded.stdout, reseeded.stdout  # other seeds, same grid
    changed = run_bench(str(tmp_path / "a"), str(tmp_path / "short"), module="bench.compare")
    assert changed.returncode == 1 and changed.stdout.count("disagree: ") == 2, changed.stdout  # 15 steps instead of 60 (seen: test_acc 0.56 vs 0.91 and 0.82 vs 0.96, intervals apart)
    assert "optimizer.lr=0.001" in changed.stdout or "lr_base=0.001" in changed.stdout
    missing = run_bench(str(tmp_path / "a"), str(tmp_path / "nowhere"), module="bench.compare")
    assert missing.returncode == 2 and missing.stderr.startswith("error: ")


def _sweep(root, test_shift, with_test=True):
    from test_report import record, write_sweep

    recs = []
    for lr in (0.1, 0.3):
        for seed, e in enumerate((-0.002, 0.0, 0.002)):
            r = record(len(recs), lr=lr, seed=seed, acc=0.9 + e)
            if with_test:
                r["test"] = {"test_acc": 0.85 + e + (test_shift if lr == 0.3 else 0.0), "test_loss": 0.2}
            recs.append(r)
    return write_sweep(root, recs)


def test_compare_uses_the_test_metric_when_both_sweeps_have_it(tmp_path):
    from bench.compare import compare

    a, b = _sweep(tmp_path / "a", 0.0), _sweep(tmp_path / "b", 0.1)  # same validation values, test of lr=0.3 moved by 0.1
    lines, n, what = compare(a, b)
    assert n == 2 and what == "test_acc" and len(lines) == 1 and "lr_base=0.3" in lines[0]
    lines, n, what = compare(a, _sweep(tmp_path / "c", 0.1, with_test=False))  # one side without test: validation
    assert lines == [] and what == "val_acc (test metrics missing: validation compared)"


def test_a_single_successful_run_is_judged_by_the_other_sides_prediction_interval(tmp_path):
    """One side with one successful run (the others diverged) has no interval: its value must lie in the other side's
    95 % prediction interval for one new run; one run on both sides must be equal (a same-machine rerun)."""
    from scipy.stats import t

    from bench.compare import cell_stats, disagreements
    from bench.report import load
    from bench.stats import prediction_interval
    from test_report import record, write_sweep

    def sweep(root, accs):
        recs = [record(i, lr=0.1, seed=i, acc=a if a is not None else 0.0, status="completed" if a is not None else "diverged")
                for i, a in enumerate(accs)]
        return cell_stats(load(write_sweep(root, recs)).runs, ["lr_base"])

    many = sweep(tmp_path / "many", [0.80, 0.84, 0.88])  # mean 0.84, SD 0.04
    lo, hi = prediction_interval(0.84, 0.04, 3)
    assert (lo, hi) == pytest.approx((0.84 - t.ppf(0.975, 2) * 0.04 * (4 / 3) ** 0.5, 0.84 + t.ppf(0.975, 2) * 0.04 * (4 / 3) ** 0.5))
    inside = sweep(tmp_path / "in", [0.70, None, None])  # outside the mean's t-interval [0.74, 0.94], inside the PI [0.64, 1.04]
    outside = sweep(tmp_path / "out", [hi + 0.01, None, None])
    assert disagreements(many, inside, ["lr_base"]) == []
    (line,) = disagreements(outside, many, ["lr_base"])
    assert "prediction interval" in line
    single = sweep(tmp_path / "single", [0.70, None, None])
    assert disagreements(inside, single, ["lr_base"]) == []  # the same value: a same-machine rerun
    (line,) = disagreements(single, sweep(tmp_path / "other", [0.71, None, None]), ["lr_base"])
    assert "one successful run on each side" in line
