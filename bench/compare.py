"""Do two sweeps of the same grid agree?  ``python -m bench.compare SWEEP_A SWEEP_B``

Training near the stability edge is chaotic, and floating-point results differ between CPU kinds,
so a rerun on another machine (or with other seeds) is not expected to be byte-identical; it is
expected to agree *within the reported intervals*. For every cell (the grid point without the
seed) this checks:

- the success rate: the two exact (Clopper-Pearson) 95 % intervals overlap;
- the mean metric over successful runs: the two 95 % intervals (t below 10 runs, BCa from 10)
  overlap. A side with a single successful run has no interval: its value must lie in the other
  side's 95 % prediction interval for one new run (mean +- t s sqrt(1 + 1/n), n >= 2 runs there);
  with a single run on both sides the two values must be equal to 1e-9 (a same-machine rerun).

The metric is the held-out test metric (``result.json["test"]``, ``val_acc`` -> ``test_acc``) when
every successful run of both sweeps has it, else the validation metric, as in the report; the last
line says which.

It prints one line per cell that disagrees (and per cell present in only one sweep) and exits 1
if there is any, 0 when every cell agrees, 2 on unusable input.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import pandas as pd

from bench.stats import clopper_pearson, mean_interval, prediction_interval


def cell_stats(runs: pd.DataFrame, keys: list[str], column: str = "metric") -> pd.DataFrame:
    """Per cell: runs, successes, success rate and its interval, mean of ``column`` over successes and its interval.

    Runs counts the finished runs (trained to the end or diverged), as the report's success rate does.
    """
    rows = []
    if "finished" in runs:
        runs = runs[runs["finished"]]
    for cell, g in runs.groupby(keys, dropna=False, sort=True):
        cell = cell if isinstance(cell, tuple) else (cell,)
        k, n = int(g["success"].sum()), len(g)
        lo, hi = clopper_pearson(k, n)
        values = g.loc[g["success"], column].dropna()
        m, mlo, mhi, how = mean_interval(values.tolist())
        rows.append({**dict(zip(keys, cell)), "runs": n, "successes": k, "success_rate": k / n if n else math.nan,
                     "success_lo": lo, "success_hi": hi, "mean": m, "mean_lo": mlo, "mean_hi": mhi, "interval": how,
                     "n_values": len(values), "sd": float(values.std(ddof=1)) if len(values) >= 2 else math.nan})
    return pd.DataFrame(rows)


def _overlap(a_lo, a_hi, b_lo, b_hi) -> bool:
    return a_lo <= b_hi and b_lo <= a_hi


def disagreements(a: pd.DataFrame, b: pd.DataFrame, keys: list[str]) -> list[str]:
    """One line per cell whose success rate or mean does not agree within the intervals, or that one side lacks."""
    out = []
    ia, ib = a.set_index(keys), b.set_index(keys)
    for cell in sorted(set(ia.index) | set(ib.index), key=str):
        label = ", ".join(f"{k}={v}" for k, v in zip(keys, cell if isinstance(cell, tuple) else (cell,)))
        if cell not in ia.index or cell not in ib.index:
            out.append(f"{label}: only in {'B' if cell not in ia.index else 'A'}")
            continue
        x, y = ia.loc[cell], ib.loc[cell]
        if not _overlap(x.success_lo, x.success_hi, y.success_lo, y.success_hi):
            out.append(f"{label}: success {x.successes}/{x.runs} [{x.success_lo:.2f}, {x.success_hi:.2f}] vs "
                       f"{y.successes}/{y.runs} [{y.success_lo:.2f}, {y.success_hi:.2f}]")
            continue
        if math.isnan(x["mean"]) or math.isnan(y["mean"]):
            continue  # no successful run on a side: the success rates above are all there is to compare
        if math.isnan(x.mean_lo) and math.isnan(y.mean_lo):
            if abs(x["mean"] - y["mean"]) > 1e-9:
                out.append(f"{label}: mean {x['mean']:.4g} vs {y['mean']:.4g} (one successful run on each side: no interval, values differ)")
        elif math.isnan(x.mean_lo) or math.isnan(y.mean_lo):
            one, many = (x, y) if math.isnan(x.mean_lo) else (y, x)
            lo, hi = prediction_interval(many["mean"], many["sd"], int(many["n_values"]))
            if not lo <= one["mean"] <= hi:
                out.append(f"{label}: mean {x['mean']:.4g} vs {y['mean']:.4g} (one successful run on a side: outside the other's 95% "
                           f"prediction interval for one run, [{lo:.4g}, {hi:.4g}])")
        elif not _overlap(x.mean_lo, x.mean_hi, y.mean_lo, y.mean_hi):
            out.append(f"{label}: mean {x['mean']:.4g} [{x.mean_lo:.4g}, {x.mean_hi:.4g}] vs {y['mean']:.4g} [{y.mean_lo:.4g}, {y.mean_hi:.4g}]")
    return out


def compare(dir_a: Path, dir_b: Path, metric: str | None = None) -> tuple[list[str], int, str]:
    """(disagreement lines, number of cells compared, what was compared: e.g. ``test_acc`` or ``val_acc (test metrics missing)``)."""
    from bench.report import load

    sa, sb = load(dir_a, metric), load(dir_b, metric)
    keys = [k for k in sa.keys if k in sb.keys]
    if set(sa.keys) != set(sb.keys):
        extra = sorted(set(sa.keys) ^ set(sb.keys))
        raise ValueError(f"the two sweeps vary different keys ({', '.join(extra)}): not the same grid")
    test = sa.has_test and sb.has_test
    column = "test_metric" if test else "metric"
    name = "test_name" if test else "metric_name"
    names = sorted(set(sa.runs[name]) | set(sb.runs[name]))
    what = "/".join(names) + ("" if test else " (test metrics missing: validation compared)")
    a, b = cell_stats(sa.runs, keys, column), cell_stats(sb.runs, keys, column)
    return disagreements(a, b, keys), len(set(map(tuple, a[keys].astype(str).values)) | set(map(tuple, b[keys].astype(str).values))), what


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("sweep_a", type=Path)
    ap.add_argument("sweep_b", type=Path)
    ap.add_argument("--metric", default=None, help="metric to compare (default: each run's primary metric)")
    args = ap.parse_args(argv)
    from bench.report import ReportError

    try:
        lines, n, what = compare(args.sweep_a, args.sweep_b, args.metric)
    except (ReportError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for line in lines:
        print(f"disagree: {line}")
    print(f"{n - len(lines)} of {n} cells agree within their 95% intervals" + ("" if not lines else f"; {len(lines)} do not") + f" (metric: {what})")
    return 1 if lines else 0


if __name__ == "__main__":
    sys.exit(main())
