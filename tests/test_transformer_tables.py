"""scripts/transformer_tables.py on hand-built runs whose answers are known: the stable LR and the Fisher test, the
best LR ignoring a cell that fails too often, a paired difference with its exact sign-flip p and Holm, a stalled
run's losses counted and a diverged run dropped, and the CLI (its files, and its error on a missing folder)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from conftest import ROOT, load_script

tt = load_script("transformer_tables")


def _run(root, name, *, task="lm_postln", opt="adam", warmup="none", fraction=None, lr=0.004, seed=0, status="completed",
         train_set=2.0, test=None, val=None):
    """One result.json in the layout the harness writes (the keys the script reads); test and val default to
    train_set + 0.1 and + 0.05. A diverged run keeps the finite losses of its last evaluation, as a real one does."""
    d = root / name
    d.mkdir(parents=True)
    test = train_set + 0.1 if test is None else test
    val = train_set + 0.05 if val is None else val
    diverged = status == "diverged"
    rec = {"task": task, "choices": {"task": task, "optimizer": opt, "warmup": warmup},
           "config": {"warmup": {"name": warmup, "steps": None, "epochs": None, "fraction": fraction,
                                 "default_fraction": 0.05 if warmup == "linear" else None}},
           "warmup_steps": {"model": int(1000 * fraction) if fraction else 0}, "lr_peak": lr, "lr_mean": lr * 0.5, "seed": seed,
           "status": status, "success": status == "completed", "outcomes": {"completed": True, "stalled": False},
           "final": {"val_loss": val}, "best": {"val_loss": val - 0.01}, "test": {} if diverged else {"test_loss": test},
           "train_set": {} if diverged else {"train_set_loss": train_set}, "final_train_loss": "nan" if diverged else train_set + 0.02,
           "task_info": {"unigram_val_loss": 3.25}}
    (d / "result.json").write_text(json.dumps(rec))


def _arm(root, part, lr, successes=5, seeds=5, **kw):
    """``seeds`` runs of one cell; the first ``successes`` complete, the rest stall at the unigram loss."""
    for s in range(seeds):
        ok = s < successes
        _run(root, f"{part}/{lr}_{s}", lr=lr, seed=s, status="completed" if ok else "stalled",
             **(kw if ok else kw | {"train_set": 3.2, "val": 3.24}))


def test_stable_lr_and_fisher(tmp_path):
    for lr in (0.004, 0.008):
        _arm(tmp_path, "none", lr, successes=5 if lr == 0.004 else 0)  # no warm-up stalls at 0.008
        _arm(tmp_path, "linear", lr, warmup="linear", fraction=0.1)
    runs = tt.load(tmp_path)
    assert set(runs["arm"]) == {"adam/none", "adam/linear 10%"}
    s = tt.stable(tt.cells(runs))
    per_arm = s[s["lr"].isna()].set_index("arm")
    assert per_arm.loc["adam/none", "stable_lr"] == 0.004 and not per_arm.loc["adam/none", "on_edge"]
    assert per_arm.loc["adam/linear 10%", "stable_lr"] == 0.008 and per_arm.loc["adam/linear 10%", "on_edge"]
    f = s[s["lr"].notna()].set_index("lr")
    assert f.loc[0.008, "fisher_p"] == pytest.approx(2 / 252)  # 5/5 against 0/5: the two-sided exact p
    assert f.loc[0.004, "fisher_p"] == 1.0
    assert f.loc[0.008, "fisher_p_holm"] == pytest.approx(2 * 2 / 252)  # two tests in the family


def test_best_lr_ignores_a_cell_below_the_success_threshold(tmp_path):
    _arm(tmp_path, "a", 0.004, val=2.0)
    _arm(tmp_path, "b", 0.008, successes=3, val=1.0)  # 3/5 < 0.8: not a candidate, though its successes score lower
    cell = tt.cells(tt.load(tmp_path))
    assert tt.best_lrs(cell) == {("lm_postln", "adam/none"): 0.004}
    s = tt.stable(cell)
    assert s.loc[s["arm"] == "adam/none", "best_lr"].item() == 0.004


def test_an_arm_at_one_fixed_lr_is_compared_there_even_when_it_fails_often(tmp_path):
    """A confirmation runs each arm at one LR fixed in advance: the comparison happens there, stalls included."""
    _arm(tmp_path, "none", 0.004, successes=2, seeds=10)  # 8 of 10 stall: below the threshold, still the arm's cell
    _arm(tmp_path, "warm", 0.008, successes=10, seeds=10, warmup="linear", fraction=0.1, train_set=1.6)
    runs = tt.load(tmp_path)
    cell = tt.cells(runs)
    assert tt.best_lrs(cell) == {("lm_postln", "adam/none"): 0.004, ("lm_postln", "adam/linear 10%"): 0.008}
    p = tt.paired(runs, cell)
    row = p[(p["at"] == "best") & (p["metric"] == "train_set_loss")].iloc[0]
    assert (row["lr_a"], row["lr_b"], row["pairs"]) == (0.008, 0.004, 10)
    assert row["mean_diff"] == pytest.approx(0.2 * (1.6 - 2.0) + 0.8 * (1.6 - 3.2))
    assert row["p_perm"] == pytest.approx(2 / 2**10)  # all 10 pairs negative: the exact two-sided sign-flip p


def test_paired_difference_exact_p_and_holm(tmp_path):
    for s, d in enumerate((-0.1, -0.2, -0.3, -0.4)):  # warm-up lowers the training-set loss by 0.25 on average
        _run(tmp_path, f"none/{s}", seed=s, train_set=2.0, test=2.3)
        _run(tmp_path, f"warm/{s}", warmup="linear", fraction=0.1, seed=s, train_set=2.0 + d, test=2.3)
    runs = tt.load(tmp_path)
    p = tt.paired(runs, tt.cells(runs))
    assert list(p["at"].unique()) == ["best", "0.004"]  # the best LR of both arms is the one LR
    row = p[(p["at"] == "best") & (p["metric"] == "train_set_loss")].iloc[0]
    assert (row["a"], row["b"], row["pairs"], row["dropped"]) == ("adam/linear 10%", "adam/none", 4, 0)
    assert row["mean_diff"] == pytest.approx(-0.25)
    from scipy.stats import t

    half = t.ppf(0.975, 3) * math.sqrt(sum((x - 0.25) ** 2 for x in (0.1, 0.2, 0.3, 0.4)) / 3) / 2
    assert (row["lo"], row["hi"]) == pytest.approx((-0.25 - half, -0.25 + half))
    assert row["p_perm"] == pytest.approx(2 / 16)  # only the all-minus and all-plus sign vectors reach |mean| 0.25
    assert row["p_holm"] == pytest.approx(2 / 16)  # the best-LR family of the metric holds this one row
    per_lr = p[(p["at"] == "0.004") & (p["metric"] == "train_set_loss")].iloc[0]
    assert per_lr["p_holm"] == pytest.approx(2 / 16)  # and the per-LR family its own
    from scipy.stats import ttest_1samp

    assert row["p_t"] == pytest.approx(ttest_1samp([-0.1, -0.2, -0.3, -0.4], 0).pvalue)  # the paired t-test, which 5 seeds need
    assert row["p_t_holm"] == pytest.approx(row["p_t"])
    gap = p[(p["at"] == "best") & (p["metric"] == "gap_loss")].iloc[0]
    assert gap["mean_diff"] == pytest.approx(0.25)  # same test loss, lower training-set loss: a larger gap


def test_stalled_run_counted_and_diverged_run_dropped(tmp_path):
    for s in range(5):
        _run(tmp_path, f"none/{s}", seed=s, train_set=2.0)
        status = {3: "stalled", 4: "diverged"}.get(s, "completed")
        _run(tmp_path, f"warm/{s}", warmup="linear", fraction=0.02, seed=s, status=status, train_set=3.2 if s == 3 else 1.9)
    runs = tt.load(tmp_path)
    assert runs.loc[runs["status"] == "diverged", tt.LOSSES].isna().all(axis=None)  # its last evaluation's losses are not kept
    cell = tt.cells(runs).set_index("arm").loc["adam/linear 2%"]
    assert (cell["runs"], cell["completed"], cell["stalled"], cell["diverged"], cell["measured"]) == (5, 3, 1, 1, 4)
    assert cell["success_rate"] == pytest.approx(0.6)
    assert cell["train_set_loss_mean"] == pytest.approx((3 * 1.9 + 3.2) / 4)  # the stalled run's loss is in
    assert cell["train_set_loss_median"] == pytest.approx(1.9)
    p = tt.paired(runs, tt.cells(runs))
    row = p[(p["at"] == "0.004") & (p["metric"] == "train_set_loss")].iloc[0]
    assert (row["pairs"], row["dropped"]) == (4, 1)
    assert row["mean_diff"] == pytest.approx((3 * -0.1 + 1.2) / 4)
    # one LR per arm: no LR is selected, so the best-LR rows compare there, the stalled run in and the diverged one out
    assert p.loc[p["at"] == "best", "pairs"].eq(4).all() and p.loc[p["at"] == "best", "dropped"].eq(1).all()


def test_named_comparisons():
    runs = tt.pd.DataFrame({"task": ["bert_mlm"] * 5 + ["lm_preln"] * 2,
                            "arm": ["adam/none", "adam/linear 10%", "adam/mean_matched", "rmsprop/none", "rmsprop/linear 10%",
                                    "adam/none", "radam/none"]})
    got = tt.comparisons(runs)
    assert ("bert_mlm", "adam/mean_matched", "adam/linear 10%") in got
    assert ("bert_mlm", "rmsprop/linear 10%", "rmsprop/none") in got
    assert ("bert_mlm", "rmsprop/none", "adam/none") in got
    assert [c for c in got if c[0] == "lm_preln"] == [("lm_preln", "radam/none", "adam/none")]  # no 10 % arm: no RAdam vs it


def test_missing_folder_is_an_error_line_and_exit_2(tmp_path, capsys):
    assert tt.main([str(tmp_path / "nope"), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "nope" in err[0]
    assert not (tmp_path / "out").exists()


def test_cli_writes_every_file(tmp_path):
    sweep = tmp_path / "sweep"
    for lr in (0.004, 0.008):
        _arm(sweep, "lm_none", lr, successes=5 if lr == 0.004 else 0)
        _arm(sweep, "lm_linear", lr, warmup="linear", fraction=0.1, train_set=1.8)
        _arm(sweep, "lm_matched", lr, warmup="mean_matched", train_set=1.9)
    _run(sweep, "lm_none/diverged", lr=0.016, status="diverged")
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "transformer_tables.py"), str(sweep), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert {p.name for p in out.iterdir()} == {"cells.csv", "stable_lr.csv", "paired.csv", "loss_vs_lr.png", "transformer.md"}
    md = (out / "transformer.md").read_text()
    assert "adam/mean_matched vs adam/linear 10%" in md and "5/5" in md
    paired = tt.pd.read_csv(out / "paired.csv")
    rows = [[c.strip() for c in line.split("|")[1:-1]] for line in md.splitlines() if " vs adam/" in line]  # task, A vs B, at, ...
    per_lr = [r for r in rows if r[2] != "best"]
    assert per_lr and all(r[1].endswith("vs adam/none") and r[5] == "train_set_loss" for r in per_lr)  # per LR: vs none, train_set only
    assert len(paired) > len(rows)
