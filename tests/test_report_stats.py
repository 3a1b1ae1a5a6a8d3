"""The report's statistics on hand-built records whose answers are known: lr_star, eligibility (a diverged
or stalled LR is never best), the warm-up effect table (paired differences, exact p, Holm), the three
alpha criteria; and a real tiny sweep through the CLI."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from bench import report as rep
from conftest import run_bench
from test_report import record, write_sweep

OUTCOMES = {"completed": True, "stalled": False}
T975 = {2: 4.302652729911275, 4: 2.7764451051977987}  # Student t quantiles, by degrees of freedom


def rec(i, *, status="completed", acc=0.9, test=None, chance=None, **kw) -> dict:
    r = record(i, status=status, acc=acc, **kw)
    r.update(outcomes=OUTCOMES, success=status == "completed")
    if status == "stalled":
        r.update(final={"val_acc": acc, "val_loss": 1 - acc}, best={"val_acc": acc, "val_loss": 1 - acc}, steps=100, diverged_step=None)
    if test is not None and status != "diverged":
        r["test"] = {"test_acc": test, "test_loss": 1 - test}
    if chance is not None:
        r["chance"] = {"val_acc": chance, "val_loss": 2.3026}
    return r


# ---------------------------------------------------------------- lr_star and eligibility


def lr_star_sweep(root):
    """acc = 0.9 - 0.05 ln(lr / 0.3)^2 at lr 0.01, 0.1, 1, 10 (seeds: -0.001, 0, +0.001, so the means are exact);
    lr 1e-3 stalls with a higher acc than any (a stalled run must still never be best), lr 100 always diverges,
    and lr 30 has 4 of 5 runs diverged."""
    recs = []
    for lr in (0.01, 0.1, 1.0, 10.0):
        for seed, e in enumerate((-0.001, 0.0, 0.001)):
            recs.append(rec(len(recs), lr=lr, seed=seed, acc=0.9 - 0.05 * math.log(lr / 0.3) ** 2 + e))
    for seed in range(3):
        recs.append(rec(len(recs), lr=1e-3, seed=seed, acc=0.99, status="stalled"))
        recs.append(rec(len(recs), lr=100.0, seed=seed, status="diverged"))
    for seed in range(5):
        recs.append(rec(len(recs), lr=30.0, seed=seed, acc=0.95, status="completed" if seed == 0 else "diverged"))
    return write_sweep(root, recs)


def test_lr_star_is_the_vertex_of_the_parabola_and_failing_lrs_are_never_best(tmp_path):
    res = rep.report(lr_star_sweep(tmp_path / "sweep"), tmp_path / "out", figures=False)
    s = res["summary"].set_index("lr_base")
    # success rates with exact intervals: stalled 0/3 -> [0, 1 - 0.025^(1/3)]; diverged 0/3; 1/5 at lr 30
    assert (s.loc[1e-3, "n_stalled"], s.loc[1e-3, "success_rate"], s.loc[1e-3, "success_lo"]) == (3, 0.0, 0.0)
    assert s.loc[1e-3, "success_hi"] == pytest.approx(1 - 0.025 ** (1 / 3))
    assert s.loc[100.0, "n_diverged"] == 3 and s.loc[100.0, "success_rate"] == 0.0 and math.isnan(s.loc[100.0, "mean"])
    assert s.loc[30.0, "success_rate"] == pytest.approx(0.2) and s.loc[30.0, "mean"] == pytest.approx(0.95)  # one success, n=1
    assert not s.loc[[1e-3, 100.0, 30.0], "eligible"].any() and s.loc[[0.01, 0.1, 1.0, 10.0], "eligible"].all()
    assert math.isnan(s.loc[1e-3, "mean"])  # a stalled run trained to the end but failed: no mean over successes
    b = res["best"].iloc[0]
    # the grid optimum is 0.1 (|ln(0.1/0.3)| < |ln(1/0.3)|); the parabola through 0.01, 0.1, 1 in ln(lr) is the curve itself
    assert b["lr_base"] == 0.1 and b["selected_on"] == "val_acc" and b["edge"] == ""
    assert b["lr_star"] == pytest.approx(0.3, rel=1e-9)
    assert b["lr_star_lo"] < 0.3 < b["lr_star_hi"] and b["fit"] == "quadratic in log LR"
    again = rep.report(tmp_path / "sweep", tmp_path / "out2", figures=False)["best"].iloc[0]
    assert (again["lr_star_lo"], again["lr_star_hi"]) == (b["lr_star_lo"], b["lr_star_hi"])  # fixed RNG seed
    best_csv = pd.read_csv(tmp_path / "out" / "best_lr.csv")
    assert {"lr_star", "lr_star_lo", "lr_star_hi", "selected_on", "test_mean", "success_rate", "success_lo", "success_hi"} <= set(best_csv.columns)
    assert {"success_rate", "success_lo", "success_hi"} <= set(pd.read_csv(tmp_path / "out" / "summary.csv").columns)
    md = (tmp_path / "out" / "table.md").read_text()
    assert "| 0/3 = 0 [0, 0.71] |" in md and "| 1/5 = 0.2 [0.0051, 0.72] |" in md


def test_eligibility_rule_four_of_five_is_enough_three_of_four_is_not(tmp_path):
    recs = []
    for lr, statuses in ((0.1, ["completed"] * 4 + ["diverged"]), (0.3, ["completed"] * 3 + ["stalled"]), (0.03, ["completed"] * 5)):
        for seed, st in enumerate(statuses):
            recs.append(rec(len(recs), lr=lr, seed=seed, status=st, acc={0.1: 0.9, 0.3: 0.95, 0.03: 0.8}[lr] + 0.001 * seed))
    res = rep.report(write_sweep(tmp_path / "sweep", recs), tmp_path / "out", figures=False)
    s = res["summary"].set_index("lr_base")
    assert s.loc[0.1, "eligible"] and s.loc[0.1, "mean"] == pytest.approx(0.9015)  # 4/5 = 0.8: mean over the 4 successes
    assert not s.loc[0.3, "eligible"]  # 3/4 = 0.75, although its mean is the highest
    assert res["best"]["lr_base"].iloc[0] == 0.1


def test_best_lr_on_the_grid_edge_and_no_eligible_cell(tmp_path):
    recs = [rec(i, lr=lr, seed=s, acc=0.5 + lr) for i, (lr, s) in enumerate((lr, s) for lr in (0.1, 0.2, 0.4) for s in range(2))]
    recs += [rec(100 + i, lr=lr, seed=s, batch=128, status="diverged") for i, (lr, s) in enumerate((lr, s) for lr in (0.1, 0.2) for s in range(2))]
    res = rep.report(write_sweep(tmp_path / "sweep", recs), tmp_path / "out", figures=False)
    b = res["best"].set_index("batch_size")
    assert b.loc[64, "lr_base"] == 0.4 and b.loc[64, "edge"] == "high" and b.loc[64, "lr_star"] == pytest.approx(0.4)
    assert b.loc[64, "fit"].startswith("grid optimum")
    assert math.isnan(b.loc[128, "lr_base"]) and b.loc[128, "edge"] == "no eligible cell"
    assert any("no LR has a success rate of at least 0.8" in w for w in res["warnings"])


# ---------------------------------------------------------------- warm-up effect

NONE_TEST = [0.80, 0.81, 0.82, 0.83, 0.85]
LINEAR_D = [0.01, 0.02, 0.03, 0.04, 0.05]
CONSTANT_D = [0.01, -0.01, 0.02, -0.02]  # seed 4 of constant diverges: scored at chance 0.1


def effect_sweep(root):
    """none / linear / constant at lr 0.1 (5 seeds; test = val - 0.05) and lr 1.0 (none 0/5, linear 5/5 but worse,
    constant 3/5 successes)."""
    recs = []

    def add(w, lr, seed, test, status="completed"):
        recs.append(rec(len(recs), warmup=w, lr=lr, seed=seed, acc=test + 0.05, test=test, chance=0.1, status=status))

    for s in range(5):
        add("none", 0.1, s, NONE_TEST[s])
        add("linear", 0.1, s, NONE_TEST[s] + LINEAR_D[s])
        add("constant", 0.1, s, NONE_TEST[s] + CONSTANT_D[s] if s < 4 else 0.0, "completed" if s < 4 else "diverged")
        add("none", 1.0, s, 0.0, "diverged")
        add("linear", 1.0, s, 0.5)
        add("constant", 1.0, s, 0.5 if s < 3 else 0.0, "completed" if s < 3 else "diverged")
    return write_sweep(root, recs)


def test_warmup_effect_paired_differences_exact_p_and_holm(tmp_path):
    res = rep.report(effect_sweep(tmp_path / "sweep"), tmp_path / "out", figures=False)
    e = pd.read_csv(tmp_path / "out" / "warmup_effect.csv").set_index("warmup")
    assert list(e.index) == ["constant", "linear"] and (e["metric"] == "test_acc").all()
    # (a) stable LR range: none 0.1 (0/5 at 1.0); linear 1.0, the top of the grid; constant 0.1 (3/5 = 0.6 at 1.0)
    assert (e.loc["linear", "stable_lr"], e.loc["linear", "stable_lr_none"], e.loc["linear", "stable_ratio"]) == (1.0, 0.1, pytest.approx(10.0))
    assert e.loc["linear", "stable_at_top"] and not e.loc["constant", "stable_at_top"] and e.loc["constant", "stable_ratio"] == 1.0
    # (b) linear: d = 0.01..0.05 on the test metric, all positive: p = 2 / 2^5; t-interval with s = std(d)
    lin = e.loc["linear"]
    assert (lin["lr_base"], lin["lr_base_none"], lin["n_pairs"]) == (0.1, 0.1, 5)
    half = T975[4] * np.std(LINEAR_D, ddof=1) / math.sqrt(5)
    assert lin["diff"] == pytest.approx(0.03) and (lin["diff_lo"], lin["diff_hi"]) == pytest.approx((0.03 - half, 0.03 + half))
    assert lin["p"] == pytest.approx(2 / 32)
    # constant: seed 4 diverged, scored at chance: d_4 = 0.1 - 0.85 = -0.75. |sum| >= 0.75 needs the sign of
    # -0.75 and the four small terms summing to >= 0 in its direction: 10 of 16 sign vectors, times 2 -> 20/32
    con = e.loc["constant"]
    assert con["n_pairs"] == 5 and con["diff"] == pytest.approx((sum(CONSTANT_D) - 0.75) / 5)
    assert con["p"] == pytest.approx(20 / 32)
    # Holm over the two comparisons: sorted 0.0625, 0.625 -> 2 x 0.0625 = 0.125, max(0.125, 0.625) = 0.625
    assert (lin["p_holm"], con["p_holm"]) == (pytest.approx(0.125), pytest.approx(0.625))
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "### Warm-up effect against none" in readme and "| ≥1 / 0.1 |" in readme and "test metrics missing" not in readme
    # the cells report the test metric, and the failures-at-chance mean of constant at 0.1
    s = res["summary"].set_index(["warmup", "lr_base"])
    assert s.loc[("none", 0.1), "test_mean"] == pytest.approx(np.mean(NONE_TEST))
    assert s.loc[("none", 0.1), "mean"] == pytest.approx(np.mean(NONE_TEST) + 0.05)  # validation, what selection uses
    con_vals = [NONE_TEST[k] + CONSTANT_D[k] for k in range(4)] + [0.1]
    assert s.loc[("constant", 0.1), "chance_mean"] == pytest.approx(np.mean(con_vals))
    assert s.loc[("constant", 0.1), "test_mean"] == pytest.approx(np.mean(con_vals[:4]))
    b = res["best"].set_index("warmup")
    assert b.loc["none", "test_mean"] == pytest.approx(np.mean(NONE_TEST)) and b.loc["none", "selected_on"] == "val_acc"


def test_warmup_lengths_are_arms_paired_with_the_one_no_warmup_cell(tmp_path):
    """A sweep of linear warm-ups of 10 and 50 steps plus one no-warm-up part (warmup.steps null there):
    each length is its own arm, and both pair with the single no-warm-up cell of their group."""
    recs = []
    for s in range(5):
        for steps, d in ((10, 0.01), (50, 0.03)):
            r = rec(len(recs), warmup="linear", seed=s, acc=0.85 + d + 0.001 * s, test=0.8 + d + 0.001 * s, chance=0.1)
            r["overrides"].append(f"warmup.steps={steps}")
            r["config"]["warmup"]["steps"] = steps
            recs.append(r)
        r = rec(len(recs), warmup="none", seed=s, acc=0.85 + 0.001 * s, test=0.8 + 0.001 * s, chance=0.1)
        r["config"]["warmup"]["steps"] = None
        recs.append(r)
    rep.report(write_sweep(tmp_path / "sweep", recs), tmp_path / "out", figures=False)
    e = pd.read_csv(tmp_path / "out" / "warmup_effect.csv")
    assert sorted(e["warmup.steps"].astype(str)) == ["10", "50"] and (e["warmup"] == "linear").all()
    e = e.set_index(e["warmup.steps"].astype(str))
    assert e.loc["10", "diff"] == pytest.approx(0.01) and e.loc["50", "diff"] == pytest.approx(0.03)
    assert (e["n_pairs"] == 5).all() and e.loc["50", "p"] == pytest.approx(2 / 32)
    assert "| linear steps=10 |" in (tmp_path / "out" / "README.md").read_text()


def test_without_test_metrics_the_effect_uses_validation_and_says_so(tmp_path):
    root = effect_sweep(tmp_path / "sweep")
    for p in root.rglob("result.json"):
        r = __import__("json").loads(p.read_text())
        r.pop("test", None)
        p.write_text(__import__("json").dumps(r))
    res = rep.report(root, tmp_path / "out", figures=False)
    e = res["effect"].set_index("warmup")
    assert e.loc["linear", "metric"] == "val_acc" and e.loc["linear", "diff"] == pytest.approx(0.03)  # val = test + 0.05 on both sides
    readme = (tmp_path / "out" / "README.md").read_text()
    assert readme.count("test metrics missing: validation numbers shown") == 2  # best-LR and warm-up tables (cells: table.md)


# ---------------------------------------------------------------- alpha criteria

GRID = [0.01, 0.02, 0.04, 0.08, 0.16, 0.32]
Q = 0.0475 / 0.105  # vertex of the parabola through (-1, 0.8), (0, 0.9), (1, 0.895) in log2 units


def alpha_sweep(root):
    """Batch 16 / 64: symmetric peaks at 0.02 / 0.04 (0.8, 0.9, 0.8; identical seeds). Batch 256: 0.04 -> 0.8,
    0.08 -> seeds (1.0, 0.85, 0.85), 0.16 -> seeds (0.695, 0.995, 0.995): means 0.9 and 0.895."""
    recs = []
    for b, peak in ((16, 0.02), (64, 0.04), (256, 0.08)):
        for lr in GRID:
            for s in range(3):
                if b == 256 and lr == 0.08:
                    acc = (1.0, 0.85, 0.85)[s]
                elif b == 256 and lr == 0.16:
                    acc = (0.695, 0.995, 0.995)[s]
                else:
                    acc = {0: 0.9, 1: 0.8}.get(abs(round(math.log2(lr / peak))), 0.5)
                recs.append(rec(len(recs), batch=b, lr=lr, seed=s, acc=acc))
    return write_sweep(root, recs)


def test_alpha_under_three_criteria(tmp_path):
    res = rep.report(alpha_sweep(tmp_path / "sweep"), tmp_path / "out", figures=False)
    b = res["best"].set_index("batch_size")
    assert b.loc[16, "lr_star"] == pytest.approx(0.02) and b.loc[64, "lr_star"] == pytest.approx(0.04)
    assert b.loc[256, "lr_star"] == pytest.approx(0.08 * 2**Q)
    assert b.loc[256, "lr_seed_median"] == pytest.approx(0.16)  # seed bests 0.08, 0.16, 0.16
    assert b.loc[256, "lr_delta_centre"] == pytest.approx(math.sqrt(0.08 * 0.16))  # 0.895 is within 1% of 0.9
    assert b.loc[16, "lr_delta_centre"] == pytest.approx(0.02) and b.loc[16, "delta"] == pytest.approx(0.009)
    a = res["alpha"].iloc[0]
    bs = [16, 64, 256]
    assert a["alpha"] == pytest.approx(rep.fit_alpha(bs, [0.02, 0.04, 0.08 * 2**Q])[0])
    assert a["alpha_seed_median"] == pytest.approx(0.75)  # slope of ln(0.02, 0.04, 0.16) on ln(16, 64, 256): 3 ln2 / (2 ln4)
    assert a["alpha_delta_centre"] == pytest.approx(rep.fit_alpha(bs, [0.02, 0.04, 0.08 * math.sqrt(2)])[0])
    assert a["alpha_low"] <= a["alpha"] <= a["alpha_high"]
    outside = not (a["alpha_low"] <= 0.75 <= a["alpha_high"]) or not (a["alpha_low"] <= a["alpha_delta_centre"] <= a["alpha_high"])
    assert a["disagree"] == outside
    assert any(w.startswith("alpha depends on the criterion") for w in res["warnings"]) == outside


def test_alpha_criteria_agree_on_a_clean_sweep(tmp_path):
    recs = []
    for b, peak in ((16, 0.02), (64, 0.04), (256, 0.08)):
        for lr in GRID:
            for s in range(3):
                recs.append(rec(len(recs), batch=b, lr=lr, seed=s, acc={0: 0.9, 1: 0.8}.get(abs(round(math.log2(lr / peak))), 0.5)))
    res = rep.report(write_sweep(tmp_path / "sweep", recs), tmp_path / "out", figures=False)
    a = res["alpha"].iloc[0]
    assert (a["alpha"], a["alpha_low"], a["alpha_high"], a["alpha_seed_median"], a["alpha_delta_centre"]) == pytest.approx((0.5,) * 5)
    assert not a["disagree"] and not any("alpha depends" in w for w in res["warnings"])


def test_runs_dataframe_for_notebooks(tmp_path):
    root = lr_star_sweep(tmp_path / "sweep")
    df = rep.runs(root)
    assert isinstance(df, pd.DataFrame) and len(df) == 4 * 3 + 2 * 3 + 5
    assert {"lr_base", "lr_peak", "batch_size", "seed", "status", "success", "finished", "metric", "test_metric", "chance", "decay"} <= set(df.columns)
    assert (df["decay"] == "constant").all()  # schema-1 records call it schedule


# ---------------------------------------------------------------- a real sweep


@pytest.mark.slow
def test_real_sweep_shows_diverged_and_dead_lrs_as_failures(tmp_path):
    """digits, 30 steps: optimizer.lr=100 diverges, 1e-6 learns nothing (stalled once the harness declares it,
    completed at chance before), 0.05 learns; warm-up none and linear; 2 seeds."""
    sweep = tmp_path / "sweep"
    p = run_bench("-m", "optimizer.lr=1e-6,0.05,100", "warmup=none,linear", "seed=0,1", "train.epochs=null", "train.steps=30",
                  "train.eval_every=30", "hardware.threads=1", f"hydra.sweep.dir={sweep}")
    assert p.returncode == 0, p.stderr
    out = sweep / "report"
    for name in ("summary.csv", "best_lr.csv", "warmup_effect.csv", "alpha.csv", "README.md", "table.md"):
        assert (out / name).exists(), name
    s = pd.read_csv(out / "summary.csv").set_index(["warmup", "lr_base"])
    for w in ("none", "linear"):
        hi = s.loc[(w, 100.0)]
        assert (hi["n_success"], hi["n_finished"], hi["success_lo"]) == (0, 2, 0.0) and hi["success_hi"] == pytest.approx(1 - 0.025**0.5)
        assert not hi["eligible"]
        dead = s.loc[(w, 1e-6)]
        stalled = dead.get("n_stalled", 0) > 0
        assert dead["success_rate"] == (0.0 if stalled else 1.0)
    b = pd.read_csv(out / "best_lr.csv")
    assert set(b["lr_base"]) == {0.05}  # never the LR that diverges, never the one that learns nothing
    e = pd.read_csv(out / "warmup_effect.csv")
    assert list(e["warmup"]) == ["linear"] and e["n_pairs"].iloc[0] == 2 and e["stable_lr_none"].iloc[0] in (0.05, 1e-6)
    readme = (out / "README.md").read_text()
    assert "### Warm-up effect against none" in readme and "fewer than 5 seeds" in readme


def test_noise_table_and_where_eta_star_stops_growing(tmp_path):
    """Best LR 0.1 at batch 16, 0.4 at 64 (alpha 1), 0.45 at 256 (local alpha 0.08 < 0.25): eta* stops growing at 64.
    Each run logs noise_scale 10, 20, 40 at steps 0, 50, 90: start, middle and end are those."""
    import json

    recs = []
    for batch, best in ((16, 0.1), (64, 0.4), (256, 0.45)):
        for lr in (best / 2, best, best * 2):
            for seed in range(5):
                acc = 0.9 - 0.05 * math.log(lr / best) ** 2
                recs.append(rec(len(recs), batch=batch, base=16, lr=lr, seed=seed, acc=acc, test=acc, chance=0.1))
    root = write_sweep(tmp_path / "s", recs)
    for d in root.iterdir():
        with open(d / "metrics.jsonl", "a") as f:
            for step, v in ((0, 10.0), (50, 20.0), (90, 40.0)):
                f.write(json.dumps({"kind": "probe", "step": step, "noise_scale": v}) + "\n")
    rep.report(root, tmp_path / "out", figures=False)
    t = pd.read_csv(tmp_path / "out" / "noise_scale.csv")
    assert list(t["batch_size"]) == [16, 64, 256] and (t["critical_batch"] == 64).all()
    assert (t[["noise_start", "noise_middle", "noise_end"]].to_numpy() == [10.0, 20.0, 40.0]).all() and (t["n_runs"] == 5).all()
    assert t["lr_star_peak"].tolist() == pytest.approx([0.1, 0.4, 0.45], rel=1e-6)
    assert "eta* stops growing at B" in (tmp_path / "out" / "table.md").read_text()
    plain = rep.report(write_sweep(tmp_path / "p", recs[:3]), tmp_path / "out2", figures=False)
    assert not (tmp_path / "out2" / "noise_scale.csv").exists() and plain["tables"]
