"""bench.report on hand-made records: cells, intervals, diverged counts, the alpha fit, bad input."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench import report as rep
from conftest import ROOT, bench_env


def record(i: int, *, warmup="none", batch=64, lr=0.1, seed=0, acc=0.9, status="completed", optimizer="sgd", scaling="none", base=64) -> dict:
    """A minimal result.json as bench.app writes it (only the keys the report reads)."""
    peak = lr * (batch / base if scaling == "linear" else 1.0)
    return {
        "schema": 1,
        "status": status,
        "task": "digits",
        "choices": {"task": "digits", "optimizer": optimizer, "warmup": warmup, "batch": scaling, "schedule": "constant", "logger": "local", "hardware": "cpu"},
        "overrides": [f"warmup={warmup}", f"batch.size={batch}", f"optimizer.lr={lr}", f"seed={seed}", f"optimizer={optimizer}"],
        "seed": seed,
        "batch_size": batch,
        "base_batch_size": base,
        "scaling": scaling,
        "lr_base": lr,
        "lr_scale": peak / lr,
        "lr_peak": peak,
        "warmup": warmup,
        "warmup_steps": {"model": 0 if warmup == "none" else 5},
        "schedule": "constant",
        "steps_planned": 100,
        "primary_metric": "val_acc",
        "metric_modes": {"val_acc": "max", "val_loss": "min"},
        "config": {"seed": seed, "optimizer": {"lr": lr}, "batch": {"size": batch}, "warmup": {"name": warmup}},
        "env": {"git_commit": "abc123", "git_dirty": False, "device": "cpu", "device_name": "x86_64", "cpu_count": 2, "torch_threads": 1, "host": "h", "torch": "2"},
        "started": f"2026-01-01T00:00:{i % 60:02d}+00:00",
        "ended": f"2026-01-01T00:01:{i % 60:02d}+00:00",
        "steps": 100 if status != "diverged" else 7,
        "diverged_step": 6 if status == "diverged" else None,
        "final": {} if status == "diverged" else {"val_acc": acc, "val_loss": 1 - acc},
        "best": {} if status == "diverged" else {"val_acc": acc, "val_loss": 1 - acc},
        "final_train_loss": 0.1,
        "wall_time_s": 2.0,
    }


def write_sweep(root: Path, records: list[dict]) -> Path:
    for i, r in enumerate(records):
        d = root / str(i)
        (d / ".hydra").mkdir(parents=True)
        (d / "result.json").write_text(json.dumps(r))
        rows = [{"kind": "train", "step": s, "lr": r["lr_peak"], "train_loss": 2.0 / (s + 1)} for s in range(0, 100, 10)]
        (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in rows))
    return root


def small_sweep(root: Path) -> Path:
    """2 warm-ups x 2 LRs x 1 batch x 3 seeds; warmup=none at lr=1.0 has one diverged seed."""
    recs = []
    accs = {("none", 0.1): [0.90, 0.92, 0.94], ("none", 1.0): [0.50, 0.60, None], ("linear", 0.1): [0.91, 0.93, 0.95], ("linear", 1.0): [0.96, 0.97, 0.98]}
    for (w, lr), vals in accs.items():
        for seed, a in enumerate(vals):
            recs.append(record(len(recs), warmup=w, lr=lr, seed=seed, acc=a if a is not None else 0.0, status="completed" if a is not None else "diverged"))
    return write_sweep(root, recs)


def test_cells_means_intervals_and_diverged_counts(tmp_path):
    res = rep.report(small_sweep(tmp_path / "sweep"), tmp_path / "out")
    s = pd.read_csv(tmp_path / "out" / "summary.csv").set_index(["warmup", "lr_base"])
    assert len(s) == 4
    assert s.loc[("none", 0.1), "mean"] == pytest.approx(0.92)
    assert s.loc[("linear", 1.0), "mean"] == pytest.approx(0.97)
    # the diverged seed is counted, not averaged: mean of the two finished runs
    assert s.loc[("none", 1.0), "n_runs"] == 3
    assert s.loc[("none", 1.0), "n_diverged"] == 1
    assert s.loc[("none", 1.0), "mean"] == pytest.approx(0.55)
    assert not s.loc[("none", 1.0), "eligible"]
    # a bootstrap interval of three values lies between their min and max and contains the mean
    lo, hi = s.loc[("none", 0.1), ["ci_low", "ci_high"]]
    assert 0.90 <= lo < 0.92 < hi <= 0.94
    # best LR: warmup=none cannot pick lr=1.0 (a diverged seed), linear picks it and it is on the grid edge
    b = res["best"].set_index("warmup")
    assert b.loc["none", "lr_base"] == 0.1 and b.loc["none", "edge"] == "low"
    assert b.loc["linear", "lr_base"] == 1.0 and b.loc["linear", "edge"] == "high"
    runs = pd.read_csv(tmp_path / "out" / "runs.csv")
    assert len(runs) == 12 and (runs["status"] == "diverged").sum() == 1
    assert math.isnan(runs.loc[runs["status"] == "diverged", "metric"].iloc[0])
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "abc123" in readme and "12 (11 completed, 1 diverged)" in readme
    assert "edge of the grid" in readme
    md = (tmp_path / "out" / "table.md").read_text()
    assert "0.92 [" in md and "1†" in md
    tex = (tmp_path / "out" / "table.tex").read_text()
    assert r"\begin{tabular}" in tex and "$^\\dagger$" in tex
    for name in ("heatmap", "warmup_comparison", "divergence", "curves"):
        assert (tmp_path / "out" / f"{name}.png").stat().st_size > 10_000


def test_bootstrap_interval_is_deterministic_and_needs_two_values():
    rng = np.random.default_rng(0)
    assert all(math.isnan(v) for v in rep.bootstrap_mean([0.5], rng))
    a = rep.bootstrap_mean([1.0, 2.0, 3.0, 4.0], np.random.default_rng(0))
    b = rep.bootstrap_mean([1.0, 2.0, 3.0, 4.0], np.random.default_rng(0))
    assert a == b and 1.0 <= a[0] < 2.5 < a[1] <= 4.0
    assert rep.bootstrap_mean([2.0, 2.0], rng) == (2.0, 2.0)


@pytest.mark.parametrize("alpha", [0.5, 1.0])
def test_alpha_fit_recovers_a_known_exponent(tmp_path, alpha):
    """Accuracy peaks at lr* = 0.01 * (B/16)^alpha; the LR grid holds every lr* exactly."""
    recs = []
    batches = [16, 64, 256, 1024]
    grid = [0.01 * 2.0**k for k in range(-2, 13)]
    rng = np.random.default_rng(1)
    for b in batches:
        best = 0.01 * (b / 16) ** alpha
        for lr in grid:
            for seed in range(3):
                acc = 0.95 - 0.05 * math.log2(lr / best) ** 2 + rng.normal(0, 0.002)
                recs.append(record(len(recs), batch=b, lr=lr, seed=seed, acc=acc))
    res = rep.report(write_sweep(tmp_path / "sweep", recs), tmp_path / "out", figures=alpha == 0.5)
    a = res["alpha"].iloc[0]
    assert a["alpha"] == pytest.approx(alpha, abs=1e-9)
    assert a["alpha_low"] <= alpha <= a["alpha_high"]
    assert a["n_batch_sizes"] == 4
    assert rep.fit_alpha([16, 64], [0.1, 0.2]) == pytest.approx((0.5, 0.1 / 4))
    assert (tmp_path / "out" / "lr_vs_batch.png").exists() == (alpha == 0.5)


def test_corrupt_partial_and_missing_records_are_skipped_and_named(tmp_path):
    root = small_sweep(tmp_path / "sweep")
    (root / "0" / "result.json").write_text('{"status": "compl')  # half-written
    (root / "1" / "result.json").write_text("[1, 2]")  # not a record
    (root / "20" / ".hydra").mkdir(parents=True)  # a job that never wrote a record
    running = record(99, warmup="linear", lr=0.1, seed=7)
    running.update(status="running", final=None, best=None)
    nested = root / "inner" / ".submitit" / "0"  # submitit layout inside a nested sweep
    nested.mkdir(parents=True)
    (nested / "result.json").write_text(json.dumps(running))
    res = rep.report(root, tmp_path / "out", figures=False)
    text = "\n".join(res["warnings"])
    assert str(root / "0" / "result.json") in text and str(root / "1" / "result.json") in text
    assert str(root / "20") in text and "never finished" in text and str(nested) in text
    s = res["summary"].set_index(["warmup", "lr_base"])
    assert s.loc[("linear", 0.1), "n_runs"] == 4 and s.loc[("linear", 0.1), "n_unfinished"] == 1
    assert s.loc[("linear", 0.1), "mean"] == pytest.approx(0.93)  # the running job adds no value
    assert s.loc[("none", 0.1), "n_runs"] == 1  # two of its three records were unreadable
    assert "half-written" in (tmp_path / "out" / "README.md").read_text()


def test_metric_option_and_lower_is_better(tmp_path):
    res = rep.report(small_sweep(tmp_path / "sweep"), tmp_path / "out", metric="val_loss", figures=False)
    b = res["best"].set_index("warmup")
    assert b.loc["linear", "mean"] == pytest.approx(0.03)  # val_loss = 1 - acc, minimised
    assert res["summary"]["mode"].eq("min").all()


def test_lr_multiplier_key_does_not_split_cells(tmp_path):
    recs = []
    for opt, ref in (("sgd", 0.1), ("adam", 0.001)):
        for m in (0.5, 1.0, 2.0):
            r = record(len(recs), lr=ref * m, optimizer=opt, acc=0.9 - abs(math.log2(m)) * 0.1)
            r["overrides"].append(f"lr_mult={m}")
            r["config"]["lr_mult"] = m
            recs.append(r)
    res = rep.report(write_sweep(tmp_path / "sweep", recs), tmp_path / "out", figures=False)
    assert "lr_mult" not in res["summary"].columns
    assert sorted(res["best"]["lr_base"]) == [0.001, 0.1]


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "bench.report", *map(str, args)], cwd=ROOT, env=bench_env(), capture_output=True, text=True, timeout=120)


@pytest.mark.slow  # five runs of the report CLI in a subprocess
def test_bad_inputs_give_one_line_and_exit_2(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    norecords = tmp_path / "norecords"
    (norecords / "0").mkdir(parents=True)
    (norecords / "0" / "notes.txt").write_text("x")
    cases = [(tmp_path / "missing", "not a directory"), (empty, "empty directory"), (norecords, "no readable result.json")]
    for path, words in cases:
        p = _cli(path)
        assert p.returncode == 2, p.stderr
        assert p.stderr.startswith("error: ") and words in p.stderr and p.stderr.count("\n") == 1
    sweep = small_sweep(tmp_path / "sweep")
    p = _cli(sweep, "--metric", "bleu")
    assert p.returncode == 2 and "--metric='bleu'" in p.stderr and "val_acc" in p.stderr and p.stderr.count("\n") == 1
    p = _cli(sweep, "--out", tmp_path / "o")
    assert p.returncode == 0, p.stderr
    assert "Best LR per group" in p.stdout and str(tmp_path / "o" / "heatmap.png") in p.stdout
