"""Per-batch LR centres for the refined pass of lr_batch_fashion, from one coarse part.

    python scripts/lr_centres.py SWEEP/coarse/epochs --optimizer sgd [--scaling sqrt]
    -> lr_centre={16:0.5,32:0.5,...}

For each batch size: the ``lr_mult`` of the coarse grid with the best final validation metric among the runs
that succeeded (ties: the smaller LR); a batch where no LR succeeded, or whose best LR is on the grid's edge,
is named on stderr (the refined grid then still reaches a factor 2 beyond the edge). The output is one Hydra
override that scripts/study_lr_batch_fashion.sh passes to the refined part.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from any directory: find bench/

from bench.report import runs as read_runs  # noqa: E402


def centres(root: Path, optimizer: str, scaling: str | None = None) -> dict[int, float]:
    df = read_runs(root)
    df = df[(df["optimizer"] == optimizer) & df["finished"]]
    if scaling is not None:
        df = df[df["scaling"] == scaling]
    if df.empty:
        raise SystemExit(f"lr_centres: no finished {optimizer} runs under {root}")
    mults = {d: json.loads((Path(d) / "result.json").read_text())["config"]["lr_mult"] for d in df["dir"]}
    df = df.assign(lr_mult=df["dir"].map(mults).astype(float))
    out = {}
    for batch, g in df.groupby("batch_size"):
        ok = g[g["success"]]
        grid = sorted(g["lr_mult"].unique())
        if ok.empty:
            print(f"lr_centres: batch {batch}: no LR succeeded; centre 1", file=sys.stderr)
            out[int(batch)] = 1.0
            continue
        sign = 1 if ok["mode"].iloc[0] == "max" else -1
        best = ok.assign(score=sign * ok["metric"].astype(float)).sort_values(["score", "lr_mult"], ascending=[False, True]).iloc[0]
        if best["lr_mult"] in (grid[0], grid[-1]):
            print(f"lr_centres: batch {batch}: best lr_mult {best['lr_mult']:g} is on the grid's edge", file=sys.stderr)
        out[int(batch)] = float(best["lr_mult"])
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Per-batch LR centres (a Hydra override) from a coarse lr_batch_fashion part.")
    ap.add_argument("sweep", type=Path)
    ap.add_argument("--optimizer", required=True)
    ap.add_argument("--scaling", default=None, help="keep only runs with this batch.scaling (sqrt or sde)")
    args = ap.parse_args(argv)
    c = centres(args.sweep, args.optimizer, args.scaling)
    print("lr_centre={" + ",".join(f"{b}:{v:g}" for b, v in sorted(c.items())) + "}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
