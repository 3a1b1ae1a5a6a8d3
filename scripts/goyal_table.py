"""Goyal et al. 2017 Table 1 in its own shape, from a goyal_fashion sweep (scripts/study_goyal_fashion.sh).

    python scripts/goyal_table.py pick SWEEP/tune --norm ghost     # prints eta0: the tuned base LR
    python scripts/goyal_table.py table SWEEP --out results/goyal_fashion

``pick``: the LR of the tune part with the best mean final validation accuracy among the LRs at which every
seed succeeded (the optimum on validation, not the largest stable LR); ties go to the smaller LR.

``table`` writes ``goyal_table.{md,csv}``: test error (%) per k x warm-up for each norm, as Goyal's Table 1 does
(mean +- standard deviation over the successful seeds), with the success count, its exact 95 % interval,
the 95 % interval of the mean, and two tests per large-batch cell:

- ``vs none``: the paired difference to no warm-up at the same k (paired by seed): paired t-test, and the exact
  sign-flip test as a distribution-free check;
- ``vs baseline``: the difference to the k = 1 baseline (unpaired), with a 95 % interval: Welch's t-test, and the
  exact two-sample permutation test as a distribution-free check;

the t-test p-values Holm-adjusted within each family (all "vs none" tests; all "vs baseline" tests). With 5 seeds
the exact tests cannot go below 2/32 (paired) and 2/252 (two-sample), so after Holm over a dozen comparisons they
can never reject: they are printed for what they say about the t-tests' normality assumption, not as the test. A failed run
(diverged or stalled) has no test error: it counts against the success rate and is left out of the means;
a cell with failures also shows its mean with failures scored at chance (90 % error). Goyal's ImageNet
numbers at k = 32 are printed beside the table.
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from any directory: find bench/

from bench import stats  # noqa: E402
from bench.report import runs as read_runs  # noqa: E402

GOYAL = {"baseline (k=1)": (23.60, 0.12), "no warm-up": (24.84, 0.37), "constant": (25.88, 0.56), "gradual": (23.74, 0.09)}
WARMUPS = [("none", "no warm-up"), ("constant", "constant"), ("linear", "gradual")]


def _norms(df: pd.DataFrame) -> pd.Series:
    if "task.norm" in df.columns:
        return df["task.norm"].astype(str)
    return pd.Series([json.loads((Path(d) / "result.json").read_text())["config"]["task"]["norm"] for d in df["dir"]], index=df.index)


def load(root: Path) -> pd.DataFrame:
    df = read_runs(root, metric="val_acc")
    df = df[df["finished"]].copy()
    df["norm"] = _norms(df)
    df["k"] = (df["batch_size"] // df["base_batch_size"]).astype(int)
    df["test_err"] = 100 * (1 - df["test_metric"].astype(float))
    return df


def pick(root: Path, norm: str | None) -> float:
    df = load(root)
    if norm is not None:
        df = df[df["norm"] == norm]
    if df.empty:
        raise SystemExit(f"goyal_table: no finished runs under {root}" + (f" with task.norm={norm}" if norm else ""))
    best = None
    for lr, g in sorted(df.groupby("lr_base"), key=lambda t: t[0]):
        if not g["success"].all():
            continue
        m = g["metric"].astype(float).mean()
        if best is None or m > best[1]:
            best = (lr, m)
    if best is None:
        raise SystemExit(f"goyal_table: no LR under {root} at which every seed succeeded")
    return float(best[0])


def exact_two_sample_pvalue(a, b) -> float:
    """Two-sided p of H0 "the two samples are exchangeable": |mean(a) - mean(b)| over all splits of the pooled values."""
    a, b = list(a), list(b)
    if not a or not b:
        return math.nan
    pooled, n = np.array(a + b, float), len(a)
    obs = abs(np.mean(a) - np.mean(b))
    total = pooled.sum()
    hits = count = 0
    for idx in itertools.combinations(range(len(pooled)), n):
        s = pooled[list(idx)].sum()
        d = abs(s / n - (total - s) / (len(pooled) - n))
        hits += d >= obs - 1e-12
        count += 1
    return hits / count


def welch_pvalue(a, b) -> float:
    """Two-sided Welch t-test p of mean(a) = mean(b) (nan with fewer than 2 values on a side)."""
    from scipy.stats import ttest_ind

    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return math.nan
    if a.var() == 0 and b.var() == 0:
        return 1.0 if a.mean() == b.mean() else 0.0
    return float(ttest_ind(a, b, equal_var=False).pvalue)


def welch_interval(a, b, conf: float = 0.95) -> tuple[float, float]:
    from scipy.stats import t

    a, b = np.asarray(a, float), np.asarray(b, float)
    if len(a) < 2 or len(b) < 2:
        return math.nan, math.nan
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return float(a.mean() - b.mean()), float(a.mean() - b.mean())
    dof = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    h = t.ppf(0.5 + conf / 2, dof) * se
    d = a.mean() - b.mean()
    return float(d - h), float(d + h)


def table(root: Path) -> pd.DataFrame:
    df = load(root)
    df = df[~df["dir"].map(lambda d: "tune" in Path(d).relative_to(root.resolve()).parts if Path(d).is_relative_to(root.resolve()) else False)]
    rows = []
    for norm, dn in df.groupby("norm"):
        base = dn[(dn["k"] == 1) & (dn["warmup"] == "none")]
        base_ok = base[base["success"]]["test_err"].tolist()
        for k, dk in sorted(dn.groupby("k"), key=lambda t: t[0]):
            none = dk[dk["warmup"] == "none"]
            for wu, label in WARMUPS:
                g = dk[dk["warmup"] == wu]
                if g.empty or (k == 1 and wu != "none"):
                    continue
                ok = g[g["success"]]
                errs = ok["test_err"].tolist()
                mean, lo, hi, _ = stats.mean_interval(errs)
                s_lo, s_hi = stats.clopper_pearson(len(ok), len(g))
                chance = np.where(g["success"], g["test_err"].fillna(0), 100 * (1 - g["chance"].astype(float)))
                row = {"norm": norm, "k": k, "batch": int(k * g["base_batch_size"].iloc[0]), "lr_peak": float(g["lr_peak"].iloc[0]),
                       "warmup": label, "n": len(g), "n_success": len(ok), "success_lo": s_lo, "success_hi": s_hi,
                       "err_mean": mean, "err_std": float(np.std(errs, ddof=1)) if len(errs) > 1 else math.nan,
                       "err_lo": lo, "err_hi": hi, "err_chance_scored": float(np.mean(chance)),
                       "diff_vs_none": math.nan, "p_vs_none": math.nan, "p_exact_vs_none": math.nan, "diff_vs_base": math.nan,
                       "diff_vs_base_lo": math.nan, "diff_vs_base_hi": math.nan, "p_vs_base": math.nan, "p_exact_vs_base": math.nan}
                if wu != "none" and not none.empty:
                    paired = g.merge(none[["seed", "test_err", "success"]], on="seed", suffixes=("", "_none"))
                    paired = paired[paired["success"] & paired["success_none"]]
                    if len(paired):
                        d = (paired["test_err"] - paired["test_err_none"]).tolist()
                        row["diff_vs_none"], row["p_exact_vs_none"] = float(np.mean(d)), stats.paired_permutation_pvalue(d)
                        row["p_vs_none"] = stats.paired_t_pvalue(d)
                if k > 1 and errs and base_ok:
                    row["diff_vs_base"] = float(np.mean(errs) - np.mean(base_ok))
                    row["diff_vs_base_lo"], row["diff_vs_base_hi"] = welch_interval(errs, base_ok)
                    row["p_exact_vs_base"] = exact_two_sample_pvalue(errs, base_ok)
                    row["p_vs_base"] = welch_pvalue(errs, base_ok)
                rows.append(row)
    out = pd.DataFrame(rows)
    for col in ("p_vs_none", "p_vs_base"):
        out[col.replace("p_", "holm_")] = stats.holm(out[col].tolist()) if len(out) else []
    return out


def _f(v, digits=2) -> str:
    return "–" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.{digits}f}"


def markdown(t: pd.DataFrame) -> str:
    lines = []
    for norm, tn in t.groupby("norm", sort=False):
        lines += [f"### task.norm={norm}: test error (%), mean ± std over successful seeds", "",
                  "| k | batch | peak LR | warm-up | successes [95 % CI] | error mean ± std | 95 % CI of mean | failures at chance | vs no warm-up, paired by seed | vs k=1 baseline [95 % CI] |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for _, r in tn.iterrows():
            vs_none = "–" if not math.isfinite(r.diff_vs_none) else (
                f"{r.diff_vs_none:+.2f} (t p={_f(r.p_vs_none, 3)}, Holm {_f(r.holm_vs_none, 3)}; exact {_f(r.p_exact_vs_none, 3)})")
            vs_base = "–" if not math.isfinite(r.diff_vs_base) else (
                f"{r.diff_vs_base:+.2f} [{_f(r.diff_vs_base_lo)}, {_f(r.diff_vs_base_hi)}] (Welch p={_f(r.p_vs_base, 3)}, Holm {_f(r.holm_vs_base, 3)}; exact {_f(r.p_exact_vs_base, 3)})")
            lines.append(f"| {r.k} | {r.batch} | {r.lr_peak:.4g} | {r.warmup} | {r.n_success}/{r.n} [{r.success_lo:.2f}, {r.success_hi:.2f}] | "
                         f"{_f(r.err_mean)} ± {_f(r.err_std)} | [{_f(r.err_lo)}, {_f(r.err_hi)}] | {_f(r.err_chance_scored)} | {vs_none} | {vs_base} |")
        lines.append("")
    lines += ["### Goyal et al. 2017, Table 1 (ResNet-50, ImageNet, k = 32 x 32 images): top-1 error (%), mean ± std of 5 runs", "",
              "| arm | error |", "|---|---|"]
    lines += [f"| {arm} | {m:.2f} ± {s:.2f} |" for arm, (m, s) in GOYAL.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pick", help="print the tuned base LR of a tune part")
    p.add_argument("sweep", type=Path)
    p.add_argument("--norm", default=None)
    t = sub.add_parser("table", help="write goyal_table.md and goyal_table.csv")
    t.add_argument("sweep", type=Path)
    t.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if args.cmd == "pick":
        print(f"{pick(args.sweep, args.norm):g}")
        return 0
    tab = table(args.sweep)
    args.out.mkdir(parents=True, exist_ok=True)
    tab.to_csv(args.out / "goyal_table.csv", index=False)
    (args.out / "goyal_table.md").write_text(markdown(tab))
    print(markdown(tab))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
