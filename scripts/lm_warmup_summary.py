"""Train-loss companion to the sweep report for experiment=transformer_warmup.

    python scripts/lm_warmup_summary.py REPORT_DIR/runs.csv [--out table_train.md]

The report's tables use the primary metric (final val_loss). The warm-up literature states its
claims about the *training* loss, and the failure mode here is a stall at the unigram loss rather
than a blow-up, so this table adds, per cell (task x optimizer x warm-up x LR, seeds pooled):

- final train loss (the last logged step) and final val loss: mean over seeds with a 95% bootstrap
  interval (2.5/97.5 percentiles of the mean over 2000 resamples of the seeds, numpy seed 0);
- ``stalled``: runs whose final val loss is above ``--stall`` nats (default 3.0, i.e. within about
  0.25 nats of the 3.24-nat unigram cross-entropy of the pydoc validation split: the model has learned
  little beyond character frequencies);
- ``diverged``: runs the harness stopped as diverged (they enter no mean).

``--curves FILE`` also draws the train-loss curves (every seed thin, mean thick) of Adam without
warm-up, Adam with untuned linear warm-up and RAdam without warm-up, one panel per (norm, LR):
the comparison the literature makes, including the stalled runs the report's best-run figure omits.
It reads each run's ``metrics.jsonl`` from the ``dir`` column of runs.csv.
"""

from __future__ import annotations

import argparse
import sys

import json
from pathlib import Path

import numpy as np
import pandas as pd

CELL = ["task", "optimizer", "warmup", "lr_base"]


def interval(values: np.ndarray, resamples: int = 2000) -> tuple[float, float, float]:
    """Mean and 95% percentile-bootstrap interval of the mean; one value gives no interval."""
    mean = float(values.mean())
    if len(values) < 2:
        return mean, float("nan"), float("nan")
    rng = np.random.default_rng(0)
    means = rng.choice(values, size=(resamples, len(values)), replace=True).mean(axis=1)
    return mean, float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def summarise(runs: pd.DataFrame, stall: float) -> pd.DataFrame:
    rows = []
    for key, g in runs.groupby(CELL, sort=True):
        ok = g[g["status"] == "completed"]
        tr = interval(ok["final_train_loss"].to_numpy(float)) if len(ok) else (float("nan"),) * 3
        va = interval(ok["final_val_loss"].to_numpy(float)) if len(ok) else (float("nan"),) * 3
        rows.append(
            dict(zip(CELL, key))
            | {
                "runs": len(g),
                "train_loss": tr[0], "train_lo": tr[1], "train_hi": tr[2],
                "val_loss": va[0], "val_lo": va[1], "val_hi": va[2],
                "stalled": int((ok["final_val_loss"] > stall).sum()),
                "diverged": int((g["status"] == "diverged").sum()),
            }
        )  # fmt: skip
    return pd.DataFrame(rows)


def markdown(table: pd.DataFrame, stall: float) -> str:
    fmt = lambda m, lo, hi: f"{m:.3f} [{lo:.3f}, {hi:.3f}]" if np.isfinite(lo) else f"{m:.3f}"
    lines = [
        f"| task | optimizer | warm-up | LR | final train loss | final val loss | stalled (val > {stall:g}) | diverged | runs |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in table.itertuples():
        lines.append(
            f"| {r.task} | {r.optimizer} | {r.warmup} | {r.lr_base:g} | {fmt(r.train_loss, r.train_lo, r.train_hi)} "
            f"| {fmt(r.val_loss, r.val_lo, r.val_hi)} | {r.stalled} | {r.diverged} | {r.runs} |"
        )
    return "\n".join(lines) + "\n"


ARMS = [("adam", "none", "tab:red"), ("adam", "untuned_linear", "tab:blue"), ("radam", "none", "tab:green")]


def curves(runs: pd.DataFrame, out: str, unigram: float = 3.24) -> None:
    """Train loss against step per (task, LR) panel for the three arms of ARMS."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks, lrs = sorted(runs["task"].unique()), sorted(runs["lr_base"].unique())
    fig, axes = plt.subplots(len(tasks), len(lrs), figsize=(4.2 * len(lrs), 3.2 * len(tasks)), sharex=True, sharey=True, squeeze=False)
    for (i, task), (j, lr) in ((a, b) for a in enumerate(tasks) for b in enumerate(lrs)):
        ax = axes[i][j]
        for opt, warm, color in ARMS:
            cell = runs[(runs.task == task) & (runs.lr_base == lr) & (runs.optimizer == opt) & (runs.warmup == warm)]
            series = []
            for d in cell["dir"]:
                rows = [json.loads(l) for l in (Path(d) / "metrics.jsonl").read_text().splitlines()]
                pts = [(r["step"], r["train_loss"]) for r in rows if r["kind"] == "train" and "train_loss" in r]
                series.append(pd.Series(dict(pts)))
                ax.plot(*zip(*pts), color=color, lw=0.6, alpha=0.35)
            if series:
                mean = pd.concat(series, axis=1).mean(axis=1)
                ax.plot(mean.index, mean.values, color=color, lw=2, label=f"{opt}, warm-up {warm}")
        ax.axhline(unigram, color="grey", ls=":", lw=1, label="unigram loss (3.24)")
        ax.set_title(f"{task}, lr {lr:g}")
        ax.set_ylim(2.2, 5.5)  # the interesting range; a rare spike above it is clipped
        ax.grid(alpha=0.3)
        if i == len(tasks) - 1:
            ax.set_xlabel("optimizer step")
        if j == 0:
            ax.set_ylabel("train loss (nats/token)")
    axes[0][0].legend(fontsize=7)
    fig.suptitle("Train loss per seed (thin) and mean over seeds (thick)")
    fig.tight_layout()
    fig.savefig(out, dpi=110)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", help="runs.csv written by python -m bench.report")
    ap.add_argument("--out", default=None, help="write the markdown table here (default: print it)")
    ap.add_argument("--curves", default=None, help="also draw the train-loss curves of the key arms into this PNG")
    ap.add_argument("--stall", type=float, default=3.0, help="final val loss (nats) above which a run counts as stalled")
    args = ap.parse_args(argv)
    runs = pd.read_csv(args.runs)
    missing = [c for c in [*CELL, "status", "final_train_loss", "final_val_loss"] if c not in runs.columns]
    if missing:
        print(f"error: {args.runs} lacks columns {', '.join(missing)} (is it a bench.report runs.csv?)", file=sys.stderr)
        return 2
    text = markdown(summarise(runs, args.stall), args.stall)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)
    else:
        print(text, end="")
    if args.curves:
        curves(runs, args.curves)
    return 0


if __name__ == "__main__":
    sys.exit(main())
