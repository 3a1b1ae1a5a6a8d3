"""The Transformer warm-up study's own tables and figure, from its sweep folder (or one study's part of it).

    python scripts/transformer_tables.py SWEEP/lm --out results/transformer_warmup/lm

``python -m bench.report`` makes the general tables; its paired warm-up table pairs an arm with no warm-up of the
same optimizer at each one's best LR only. The study's verdicts (conf/experiment/transformer_warmup.yaml) need more:

- ``cells.csv``: per task, arm and peak LR (``lr_peak``), the runs, how many completed, stalled and diverged, the
  success rate (exact interval), and the median and mean over seeds of the training-set loss at the end
  (``train_set_loss``: what "reach a higher training loss" is about), the last logged batch loss
  (``final_train_loss``), the final and best validation loss, the test loss and the generalization gap
  (``gap_loss`` = test loss - training-set loss). A stalled run is a failure whose losses are measurements: they
  count here; a diverged run has none.
- ``stable_lr.csv``: per task and arm the largest LR with a success rate >= STABLE (``stable_lr``; ``on_edge`` when
  it is the grid's largest, so the limit may lie above) and the best LR (below); then per LR a Fisher exact test of
  each arm's successes against adam/none at that LR, Holm over the table's tests.
- ``paired.csv``: the named comparisons A vs B within a task (COMPARISONS, and every arm against adam/none), each
  ``at: best`` (each arm at its best LR: success rate >= STABLE and the lowest mean final validation loss; an arm
  with one LR, as in a confirmation at LRs fixed in advance, at that LR) and
  ``at: <lr>`` at every LR both arms ran, paired by seed, for the training-set loss, the test loss and the gap: the
  mean of A - B (interval from bench.stats.mean_interval), the exact sign-flip p and the paired t p, each with Holm
  over the metric's rows of the same kind (at: best, or per LR). Stalled runs are in; a pair with a non-finite side is dropped and counted (``dropped``).
- ``loss_vs_lr.png``: per task, the median final training-set loss of each arm against the LR.
- ``transformer.md``: the tables in Markdown for the results README (paired: the ``at: best`` rows and the per-LR
  rows against adam/none for the training-set loss).
"""

from __future__ import annotations

import math
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from any directory: find bench/

from bench.records import DIVERGED, finished_statuses, read_result  # noqa: E402
from bench.report import markdown_sections, short_number, study_arguments  # noqa: E402
from bench.stats import clopper_pearson, holm, mean_interval, paired_permutation_pvalue, paired_t_pvalue  # noqa: E402

STABLE = 0.8  # a cell "trains" at this success rate or more (4 of 5 seeds), as the mechanism study's stable LR
NONE = "adam/none"
LINEAR10 = "adam/linear 10%"
COMPARISONS = (  # (A, B, the question) besides every arm against adam/none; a pair runs where the task has both arms
    ("adam/mean_matched", LINEAR10, "does warm-up beat a flat LR at its own mean LR?"),
    ("radam/none", LINEAR10, "does RAdam replace warm-up?"),
    ("adam/untuned_linear", LINEAR10, "does the untuned 200-step warm-up match the 10 % one?"),
    ("rmsprop/linear 10%", "rmsprop/none", "does warm-up change RMSprop's training loss and gap?"),
)
LOSSES = ("train_set_loss", "final_train_loss", "val_loss", "best_val_loss", "test_loss", "gap_loss")
PAIRED = ("train_set_loss", "test_loss", "gap_loss")


def _number(v) -> float:
    """A finite float, or NaN (records store non-finite values as strings such as "nan")."""
    try:
        x = float(v)
    except (TypeError, ValueError):
        return math.nan
    return x if math.isfinite(x) else math.nan


def arm(record: dict) -> str:
    """optimizer/warm-up, with the linear warm-up's length: "adam/none", "adam/linear 10%", "adam/mean_matched"."""
    opt, warm = record["choices"]["optimizer"], record["choices"]["warmup"]
    if warm != "linear":
        return f"{opt}/{warm}"
    w = record["config"]["warmup"]
    fraction = w.get("fraction") if w.get("fraction") is not None else w.get("default_fraction")
    if w.get("steps") is None and w.get("epochs") is None and fraction is not None:
        return f"{opt}/linear {100 * fraction:g}%"
    return f"{opt}/linear {record['warmup_steps']['model']} steps"


def load(root: Path) -> pd.DataFrame:
    """One row per finished run (completed, stalled or diverged) under ``root``; a diverged run's losses are NaN."""
    rows, unfinished = [], 0
    for path in sorted(root.rglob("result.json")):
        r = read_result(path)
        try:
            if r is None:
                raise ValueError("unreadable")
            if r.get("status") not in finished_statuses(r):  # running, crashed or preempted: not a result yet
                unfinished += 1
                continue
            measured = r["status"] != DIVERGED
            final, best, test, train_set = (r.get(k) or {} for k in ("final", "best", "test", "train_set"))
            losses = {"train_set_loss": train_set.get("train_set_loss"), "final_train_loss": r.get("final_train_loss"),
                      "val_loss": final.get("val_loss"), "best_val_loss": best.get("val_loss"), "test_loss": test.get("test_loss")}
            losses = {k: _number(v) if measured else math.nan for k, v in losses.items()}
            rows.append({"dir": str(path.parent), "task": r["task"], "arm": arm(r), "lr": float(f"{float(r['lr_peak']):.10g}"),
                         "lr_mean": _number(r.get("lr_mean")), "seed": int(r["seed"]), "status": r["status"],
                         "success": bool(r.get("success")), **losses,
                         "gap_loss": losses["test_loss"] - losses["train_set_loss"],
                         "unigram_val_loss": _number((r.get("task_info") or {}).get("unigram_val_loss"))})
        except (ValueError, KeyError, TypeError) as e:
            print(f"skipped {path}: {e}", file=sys.stderr)
    if unfinished:
        print(f"left out {unfinished} unfinished runs (running, crashed or preempted)", file=sys.stderr)
    if not rows:
        raise SystemExit(f"transformer_tables: no finished result.json under {root}")
    return pd.DataFrame(rows)


CELL = ["task", "arm", "lr"]


def cells(runs: pd.DataFrame) -> pd.DataFrame:
    out = []
    for key, g in runs.groupby(CELL):
        k, n = int(g["success"].sum()), len(g)
        lo, hi = clopper_pearson(k, n)
        row = dict(zip(CELL, key)) | {"lr_mean": g["lr_mean"].median(), "runs": n, "completed": int((g["status"] == "completed").sum()),
                                      "stalled": int((g["status"] == "stalled").sum()), "diverged": int((g["status"] == DIVERGED).sum()),
                                      "successes": k, "success_rate": k / n, "success_lo": lo, "success_hi": hi,
                                      "measured": int(g["train_set_loss"].notna().sum()), "unigram_val_loss": g["unigram_val_loss"].median()}
        for c in LOSSES:
            row |= {f"{c}_median": g[c].median(), f"{c}_mean": g[c].mean()}  # NaN-skipping: over the runs that have the loss
        out.append(row)
    return pd.DataFrame(out)


def best_lrs(cell: pd.DataFrame) -> dict[tuple[str, str], float]:
    """(task, arm) -> the LR with a success rate >= STABLE and the lowest mean final validation loss (absent if none).

    An arm run at a single LR (a confirmation on fresh seeds, its LR fixed in advance from an earlier grid) keeps that
    LR whatever its success rate: a test at a fixed cell must not drop the cell for failing."""
    ok = cell[(cell["success_rate"] >= STABLE) & cell["val_loss_mean"].notna()]
    best = {key: float(g.loc[g["val_loss_mean"].idxmin(), "lr"]) for key, g in ok.groupby(["task", "arm"])}
    fixed = {key: float(g["lr"].iloc[0]) for key, g in cell.groupby(["task", "arm"]) if len(g) == 1}
    return best | fixed


def stable(cell: pd.DataFrame) -> pd.DataFrame:
    from scipy.stats import fisher_exact

    best = best_lrs(cell)
    out = []
    for (task, a), g in cell.groupby(["task", "arm"]):
        good = g[g["success_rate"] >= STABLE]
        top = good["lr"].max() if len(good) else math.nan
        out.append({"task": task, "arm": a, "lrs": len(g), "stable_lr": top, "on_edge": bool(top == g["lr"].max()),
                    "largest_lr_with_a_success": g.loc[g["successes"] > 0, "lr"].max() if (g["successes"] > 0).any() else math.nan,
                    "best_lr": best.get((task, a), math.nan)})
    for (task, a), g in cell[cell["arm"] != NONE].groupby(["task", "arm"]):
        base = cell[(cell["task"] == task) & (cell["arm"] == NONE)].set_index("lr")
        for _, r in g.iterrows():
            if r["lr"] not in base.index:
                continue
            b = base.loc[r["lr"]]
            table = [[int(r["successes"]), int(r["runs"] - r["successes"])], [int(b["successes"]), int(b["runs"] - b["successes"])]]
            out.append({"task": task, "arm": a, "lr": r["lr"], "successes": f"{table[0][0]}/{int(r['runs'])}",
                        f"successes_{NONE}": f"{table[1][0]}/{int(b['runs'])}", "fisher_p": fisher_exact(table)[1]})
    df = pd.DataFrame(out)
    if "fisher_p" in df:
        df["fisher_p_holm"] = holm(df["fisher_p"].tolist())
    return df


def comparisons(runs: pd.DataFrame) -> list[tuple[str, str, str]]:
    """(task, A, B) for every arm against adam/none and each of COMPARISONS, where the task has both arms."""
    out = []
    for task, g in runs.groupby("task"):
        arms = set(g["arm"])
        if NONE in arms:
            out += [(task, a, NONE) for a in sorted(arms - {NONE})]
        out += [(task, a, b) for a, b, _ in COMPARISONS if a in arms and b in arms]
    return out


def _pair(runs: pd.DataFrame, task: str, a: str, lr_a: float, b: str, lr_b: float) -> pd.DataFrame:
    sel = runs[runs["task"] == task]
    ra = sel[(sel["arm"] == a) & (sel["lr"] == lr_a)]
    rb = sel[(sel["arm"] == b) & (sel["lr"] == lr_b)]
    return ra.merge(rb, on="seed", suffixes=("_a", "_b"))


def paired(runs: pd.DataFrame, cell: pd.DataFrame) -> pd.DataFrame:
    best = best_lrs(cell)
    out = []
    for task, a, b in comparisons(runs):
        lrs_a = set(runs.loc[(runs["task"] == task) & (runs["arm"] == a), "lr"])
        lrs_b = set(runs.loc[(runs["task"] == task) & (runs["arm"] == b), "lr"])
        at = [("best", best.get((task, a), math.nan), best.get((task, b), math.nan))]
        at += [(f"{lr:g}", lr, lr) for lr in sorted(lrs_a & lrs_b)]
        for where, lr_a, lr_b in at:
            m = _pair(runs, task, a, lr_a, b, lr_b)
            for metric in PAIRED:
                d = (m[f"{metric}_a"] - m[f"{metric}_b"]).to_numpy(float)
                ok = d[np.isfinite(d)]
                mean, lo, hi, method = mean_interval(ok.tolist())
                out.append({"task": task, "a": a, "b": b, "at": where, "lr_a": lr_a, "lr_b": lr_b, "metric": metric,
                            "pairs": len(ok), "dropped": len(d) - len(ok), "mean_diff": mean, "lo": lo, "hi": hi, "interval": method,
                            "p_perm": paired_permutation_pvalue(ok.tolist()), "p_t": paired_t_pvalue(ok.tolist()) if len(ok) >= 2 else math.nan})
    df = pd.DataFrame(out)
    if df.empty:
        return df
    # one family per metric and kind of row: the comparisons at each arm's best LR (the verdicts' tests), and
    # those at every shared LR (the per-LR view); with 5 seeds the exact sign-flip p is at least 2/2^5 = 0.0625,
    # so only the paired t-test (p_t) can reject, and its Holm column is the one to read
    df["p_holm"] = math.nan
    df["p_t_holm"] = math.nan
    family = np.where(df["at"] == "best", "best", "per_lr")
    for _, g in df.groupby([df["metric"], family]):
        df.loc[g.index, "p_holm"] = holm(g["p_perm"].tolist())
        pt = g["p_t"].to_numpy(float)
        ok = np.isfinite(pt)
        if ok.any():
            df.loc[g.index[ok], "p_t_holm"] = holm(pt[ok].tolist())
    return df


def figure(cell: pd.DataFrame, path: Path) -> None:
    """Median final training-set loss against the LR per arm: filled where the cell trains (success rate >= STABLE),
    hollow where it fails with measured losses (stalled), a cross on the top edge where every run diverged."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted(cell["task"].unique())
    arms = sorted(cell["arm"].unique())
    colours = dict(zip(arms, plt.get_cmap("tab10").colors))
    nudge = {a: 1.025 ** (i - (len(arms) - 1) / 2) for i, a in enumerate(arms)}  # arms side by side at a shared LR (log x)
    fig, axes = plt.subplots(1, len(tasks), figsize=(6.2 * len(tasks), 4.8), squeeze=False, constrained_layout=True)
    for ax, task in zip(axes[0], tasks):
        t = cell[cell["task"] == task]
        for a, g in t.groupby("arm"):
            g = g.sort_values("lr")
            c, x = colours[a], g["lr"] * nudge[a]
            good = (g["success_rate"] >= STABLE).to_numpy()
            ax.plot(x, g["train_set_loss_median"], "-", color=c, lw=1.2, label=a)
            ax.plot(x[good], g.loc[good, "train_set_loss_median"], "o", color=c, ms=5)
            ax.plot(x[~good], g.loc[~good, "train_set_loss_median"], "o", mfc="white", mec=c, mew=1.5, ms=7)
            gone = g["train_set_loss_median"].isna().to_numpy()
            ax.plot(x[gone], np.full(gone.sum(), 0.97), "x", color=c, ms=7, mew=1.5, transform=ax.get_xaxis_transform())
        if t["unigram_val_loss"].notna().any():  # where a stalled run ends
            ax.axhline(t["unigram_val_loss"].median(), color="grey", lw=0.8, ls="--", label="unigram loss (validation targets)")
        lrs = sorted(t["lr"].unique())
        ax.set_xscale("log")
        ax.set_xticks(lrs, [f"{v:g}" for v in lrs], fontsize=8)
        ax.minorticks_off()
        ax.set_xlabel("peak LR")
        ax.set_ylabel("median training-set loss at the end (nats)")
        ax.set_title(task, fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    title = ("Final training-set loss per warm-up arm against the peak LR (median over seeds); filled: success rate "
             f">= {STABLE:g}, hollow: fails more often (stalled runs' losses included), x: every run diverged")
    fig.suptitle(textwrap.fill(title, width=int(16 * 6.2 * len(tasks))), fontsize=9)  # one line per panel width, not cut off
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _interval(mean: float, lo: float, hi: float) -> str:
    return short_number(mean) if math.isnan(lo) else f"{short_number(mean)} [{short_number(lo)}, {short_number(hi)}]"


def readable(cell: pd.DataFrame, stab: pd.DataFrame, pair: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The Markdown's tables: fewer columns than the CSVs, the paired rows that the verdicts read."""
    rates = cell[["successes", "runs", "success_lo", "success_hi"]].itertuples(index=False)
    c = pd.DataFrame({"task": cell["task"], "arm": cell["arm"], "lr": cell["lr"],
                      "successes": [f"{k}/{n} [{short_number(lo)}, {short_number(hi)}]" for k, n, lo, hi in rates],
                      "stalled": cell["stalled"], "diverged": cell["diverged"],
                      **{f"{m} (median)": cell[f"{m}_median"] for m in ("train_set_loss", "val_loss", "test_loss", "gap_loss")}})
    summary = ["lrs", "stable_lr", "on_edge", "largest_lr_with_a_success", "best_lr"]
    per_arm = (stab[stab["lr"].isna()] if "lr" in stab else stab)[["task", "arm", *summary]]
    fisher = stab[stab["lr"].notna()].drop(columns=summary) if "lr" in stab else stab.iloc[:0]
    if pair.empty:
        shown = pair
    else:
        keep = (pair["at"] == "best") | ((pair["b"] == NONE) & (pair["metric"] == "train_set_loss"))
        p = pair[keep]
        shown = pd.DataFrame({"task": p["task"], "A vs B": p["a"] + " vs " + p["b"], "at": p["at"], "lr_a": p["lr_a"], "lr_b": p["lr_b"],
                              "metric": p["metric"], "pairs": p["pairs"], "dropped": p["dropped"],
                              "mean A - B [95%]": [_interval(*v) for v in p[["mean_diff", "lo", "hi"]].itertuples(index=False)],
                              "p_perm": p["p_perm"], "p_holm": p["p_holm"], "p_t": p["p_t"], "p_t_holm": p["p_t_holm"]})
    return {
        "Cells: successes [exact 95%], stalled and diverged runs, median losses over seeds (stalled runs included, diverged ones have none)": c,
        f"Largest LR with a success rate >= {STABLE:g} (on_edge: the grid's largest) and the best LR per arm": per_arm,
        f"Successes against {NONE} at each LR (Fisher exact, Holm over the table)": fisher,
        ("Paired by seed, A - B: each arm at its best LR (at: best), and against adam/none at each LR for the training-set loss "
         "(exact sign-flip p: at least 2/2^n with n pairs, 0.0625 for 5 and 0.002 for 10; paired t p; each with Holm over the metric's "
         "rows of the same kind: best, or per LR)"): shown,
    }


def main(argv: list[str] | None = None) -> int:
    args = study_arguments("The Transformer warm-up study's cells, stable LRs and paired comparisons.", argv)
    if args is None:
        return 2
    runs = load(args.sweep_dir)
    args.out.mkdir(parents=True, exist_ok=True)
    cell = cells(runs)
    stab = stable(cell)
    pair = paired(runs, cell)
    for name, df in (("cells", cell), ("stable_lr", stab), ("paired", pair)):
        df.to_csv(args.out / f"{name}.csv", index=False)
    figure(cell, args.out / "loss_vs_lr.png")
    (args.out / "transformer.md").write_text(markdown_sections(readable(cell, stab, pair)))
    print(f"wrote {args.out}/cells.csv, stable_lr.csv, paired.csv, loss_vs_lr.png, transformer.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
