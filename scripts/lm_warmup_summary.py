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
"""

from __future__ import annotations

import argparse
import sys

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


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", help="runs.csv written by python -m bench.report")
    ap.add_argument("--out", default=None, help="write the markdown table here (default: print it)")
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
