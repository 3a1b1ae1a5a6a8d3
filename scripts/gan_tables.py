"""The GAN warm-up study's own tables and figure, from its sweep folder (one task per call: ring or dcgan).

    python scripts/gan_tables.py SWEEP/ring --out results/gan_warmup/ring

``python -m bench.report`` makes the general tables (cells, best LR, each arm against no warm-up at their own
best LRs); this script adds what the seed's claim "warm-up on one model balances generator and discriminator"
needs (conf/experiment/gan_warmup.yaml), comparing every arm with no warm-up at the same G learning rate:

- ``cells.csv``: per arm (warm-up target and length, or the two-time-scale multiplier of D's LR) and G's LR:
  runs, collapsed runs, the success rate (exact interval), the primary metric of every run (the mean of the last
  5 evaluations on the test draw; a collapsed run's value is a real measurement and is kept), its floor when the
  task has one, and the discriminator's accuracy on held-out real and on generated samples (same evaluations).
- ``collapse.csv``: collapsed runs per arm and LR against no warm-up at that LR (Fisher exact, Holm over rows).
- ``paired.csv``: per arm and LR, paired by seed against no warm-up: the primary metric and D's accuracy
  ((real + fake) / 2: 0.5 is a discriminator that cannot tell them apart, 1 one that wins outright), mean
  difference with its interval, the exact sign-flip p and the paired t-test p, each with Holm over all rows of
  the table (with 10 seeds the smallest exact p is 2/1024, so Holm over many rows needs the t-test to reject).
- ``gan_lr.png``: success rate, primary metric and D's accuracy against G's LR, one line per arm.
- ``gan.md``: the tables in Markdown, for the results README.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from any directory: find bench/

from bench.report import markdown_sections, study_arguments  # noqa: E402
from bench.stats import clopper_pearson, holm, mean_interval, paired_permutation_pvalue, paired_t_pvalue  # noqa: E402

BASE = "none"
CELL = ["task", "arm", "lr"]


def arm_name(warmup: str, target: str, fraction, d_mult: float) -> str:
    """``none``, ``G 10%`` / ``D 2%`` / ``both 30%`` (linear warm-up on that model over that share of training) or
    ``TTUR D x2`` (no warm-up, D's LR at 2x G's)."""
    if warmup == "none":
        return BASE if d_mult == 1 else f"TTUR D x{d_mult:g}"
    who = {"generator": "G", "discriminator": "D"}.get(target, target)
    return f"{who} {100 * float(fraction):g}%" + (f", D x{d_mult:g}" if d_mult != 1 else "")


def load(root: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(root.rglob("result.json")):
        try:
            r = json.loads(path.read_text())
            cfg = r["config"]
            metric = r["primary_metric"]
            avg, test = r.get("final_avg") or {}, r.get("test_avg") or {}
            floor = ((r.get("task_info") or {}).get("floor") or {}).get(metric, math.nan)
            rows.append({
                "dir": str(path.parent), "task": r["task"], "seed": int(r["seed"]), "lr": float(r["lr_base"]),
                "arm": arm_name(r["choices"]["warmup"], cfg["task"]["warmup_on"], cfg["warmup"].get("fraction"),
                                float(cfg["task"]["lr_mult"]["discriminator"])),
                "status": r["status"], "success": bool(r.get("success")), "metric_name": metric,
                "mode": r["metric_modes"][metric], "metric": float(test.get(f"test_{metric}", math.nan)),
                "val_metric": float(avg.get(metric, math.nan)), "floor": float(floor),
                "d_acc_real": float(test.get("test_d_acc_real", math.nan)), "d_acc_fake": float(test.get("test_d_acc_fake", math.nan)),
            })
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"skipped {path}: {e}", file=sys.stderr)
    if not rows:
        raise SystemExit(f"gan_tables: no readable result.json under {root}")
    runs = pd.DataFrame(rows)
    runs["d_acc"] = (runs["d_acc_real"] + runs["d_acc_fake"]) / 2
    return runs


def _order(arms) -> list[str]:
    """none first, then warm-ups by target and length, then the two-time-scale controls."""
    def key(a: str):
        if a == BASE:
            return (0, "", 0.0)
        if a.startswith("TTUR"):
            return (2, "", float(a.split("x")[-1]))
        who, pct = a.split(" ")[:2]
        return (1, who, float(pct.rstrip("%,")))
    return sorted(set(arms), key=key)


def cells(runs: pd.DataFrame) -> pd.DataFrame:
    out = []
    for (task, arm, lr), g in runs.groupby(CELL):
        k, n = int(g["success"].sum()), len(g)
        lo, hi = clopper_pearson(k, n)
        out.append({"task": task, "arm": arm, "lr": lr, "runs": n, "collapsed": int((g["status"] == "collapsed").sum()),
                    "success_rate": k / n, "success_lo": lo, "success_hi": hi, "metric": g["metric_name"].iloc[0],
                    "mean": g["metric"].mean(), "sd": g["metric"].std(), "floor": g["floor"].iloc[0],
                    "d_acc_real": g["d_acc_real"].mean(), "d_acc_fake": g["d_acc_fake"].mean(), "d_acc": g["d_acc"].mean()})
    df = pd.DataFrame(out)
    rank = {a: i for i, a in enumerate(_order(df["arm"]))}
    return df.sort_values(["task", "lr", "arm"], key=lambda c: c.map(rank) if c.name == "arm" else c).reset_index(drop=True)


def collapse(c: pd.DataFrame) -> pd.DataFrame:
    from scipy.stats import fisher_exact

    out = []
    for (task, lr), g in c.groupby(["task", "lr"]):
        base = g[g["arm"] == BASE]
        if base.empty:
            continue
        b = base.iloc[0]
        for _, a in g[g["arm"] != BASE].iterrows():
            table = [[int(a["collapsed"]), int(a["runs"] - a["collapsed"])], [int(b["collapsed"]), int(b["runs"] - b["collapsed"])]]
            out.append({"task": task, "lr": lr, "arm": a["arm"], "collapsed": f"{table[0][0]}/{int(a['runs'])}",
                        "collapsed_none": f"{table[1][0]}/{int(b['runs'])}", "fisher_p": fisher_exact(table)[1]})
    df = pd.DataFrame(out, columns=["task", "lr", "arm", "collapsed", "collapsed_none", "fisher_p", "p_holm"])
    df["p_holm"] = holm(df["fisher_p"].tolist()) if len(df) else []
    return df


def paired(runs: pd.DataFrame) -> pd.DataFrame:
    out = []
    for (task, lr), g in runs.groupby(["task", "lr"]):
        base = g[g["arm"] == BASE].set_index("seed")
        if base.empty:
            continue
        for arm in _order(g["arm"]):
            if arm == BASE:
                continue
            a = g[g["arm"] == arm].set_index("seed")
            seeds = sorted(set(a.index) & set(base.index))
            row = {"task": task, "lr": lr, "arm": arm, "metric": g["metric_name"].iloc[0]}
            for col in ("metric", "d_acc"):
                d = [float(a.at[s, col] - base.at[s, col]) for s in seeds]
                kept = [x for x in d if math.isfinite(x)]
                m, lo, hi, _ = mean_interval(kept)
                row |= {f"{col}_pairs": len(kept), f"{col}_dropped": len(d) - len(kept), f"{col}_arm": float(a.loc[seeds, col].mean()) if seeds else math.nan,
                        f"{col}_none": float(base.loc[seeds, col].mean()) if seeds else math.nan, f"{col}_diff": m, f"{col}_lo": lo, f"{col}_hi": hi,
                        f"{col}_p": paired_permutation_pvalue(kept) if kept else math.nan,
                        f"{col}_p_t": paired_t_pvalue(kept) if len(kept) >= 2 else math.nan}
            out.append(row)
    df = pd.DataFrame(out)
    for col in (f"{m}_{t}" for m in ("metric", "d_acc") for t in ("p", "p_t")):
        if len(df):
            p = df[col].to_numpy(float)
            adj = np.full(len(p), math.nan)
            ok = np.isfinite(p)
            if ok.any():
                adj[ok] = holm(p[ok].tolist())
            df[f"{col}_holm"] = adj
    return df


def figure(c: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    arms = _order(c["arm"])
    cmap = plt.get_cmap("tab20")
    metric = c["metric"].iloc[0]
    for i, arm in enumerate(arms):
        g = c[c["arm"] == arm].sort_values("lr")
        style = dict(color="black", lw=2.2, marker="o") if arm == BASE else dict(color=cmap(i % 20), lw=1.2, marker=".", ls="--" if arm.startswith("TTUR") else "-")
        for ax, col in zip(axes, ("success_rate", "mean", "d_acc")):
            ax.plot(g["lr"], g[col], label=arm, **style)
    floor = c["floor"].dropna()
    if len(floor):
        axes[1].axhline(floor.iloc[0], color="grey", ls=":", label="floor (real vs real)")
    from matplotlib.ticker import NullFormatter

    lrs = sorted(c["lr"].unique())
    for ax, title in zip(axes, ("success rate (not collapsed)", f"test {metric} (mean of last 5 evaluations)", "D accuracy (real + fake) / 2")):
        ax.set_xscale("log")
        ax.set_xticks(lrs, [f"{v:g}" for v in lrs])  # the grid's LRs, not log-scale minor labels that overlap
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("G's learning rate")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].set_ylim(-0.05, 1.05)
    axes[2].axhline(0.5, color="grey", ls=":")
    axes[2].legend(fontsize=7, ncol=2)
    fig.suptitle(f"{c['task'].iloc[0]}: every arm at every LR (means over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    args = study_arguments("The GAN warm-up study's per-LR tables against no warm-up: collapse, metric, D's accuracy.", argv)
    if args is None:
        return 2
    runs = load(args.sweep_dir)
    if runs["task"].nunique() != 1:
        print(f"error: {args.sweep_dir} holds runs of several tasks ({', '.join(sorted(runs['task'].unique()))}): give one task's folder", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    c = cells(runs)
    col = collapse(c)
    pr = paired(runs)
    for name, df in (("cells", c), ("collapse", col), ("paired", pr)):
        df.to_csv(args.out / f"{name}.csv", index=False)
    figure(c, args.out / "gan_lr.png")
    short = pr[["lr", "arm", "metric_pairs", "metric_arm", "metric_none", "metric_diff", "metric_lo", "metric_hi", "metric_p", "metric_p_t_holm",
                "d_acc_arm", "d_acc_none", "d_acc_diff", "d_acc_p", "d_acc_p_t_holm"]] if len(pr) else pr
    (args.out / "gan.md").write_text(markdown_sections({
        "Cells: every arm at every LR (means over seeds; metric on the test draw, mean of the last 5 evaluations)":
            c.drop(columns=["task", "success_lo", "success_hi"]),
        "Collapsed runs against no warm-up at the same LR (Fisher exact, Holm over rows)": col.drop(columns=["task"]),
        "Paired by seed against no warm-up at the same LR: the metric and D's accuracy (exact sign-flip p; Holm over rows per metric of the paired t p)": short,
    }))
    print(f"wrote {args.out}/cells.csv, collapse.csv, paired.csv, gan_lr.png, gan.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
