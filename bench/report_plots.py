"""Figures of a sweep report (matplotlib, Agg backend): one PNG per question.

- ``heatmap.png``: mean final metric over LR x batch size, one panel per warm-up (rows: task/optimizer);
- ``lr_vs_batch.png``: best peak LR against batch size (log-log) with the fitted alpha;
- ``warmup_comparison.png``: metric at the best LR per warm-up and batch size, with intervals;
- ``curves.png``: train loss and LR against step of the best run per warm-up;
- ``divergence.png``: fraction of diverged runs per warm-up and LR.
"""

from __future__ import annotations

import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.ticker import FuncFormatter, NullFormatter  # noqa: E402
import pandas as pd  # noqa: E402

DPI = 120
FIGURES = ("heatmap.png", "lr_vs_batch.png", "warmup_comparison.png", "curves.png", "divergence.png")
SMOOTH = 9  # logged train rows in the moving average of curves.png (raw values drawn faintly behind)
WARMUP_ORDER = ["none", "constant", "linear", "exponential", "untuned_linear", "untuned_exponential"]


def _warmups(df: pd.DataFrame) -> list[str]:
    present = list(df["warmup"].unique())
    return [w for w in WARMUP_ORDER if w in present] + sorted(w for w in present if w not in WARMUP_ORDER)


def _facets(df: pd.DataFrame, keys: list[str]) -> list[tuple[str, pd.DataFrame]]:
    """Split by the given keys (those that exist and vary); label each part 'k=v, ...'."""
    keys = [k for k in keys if k in df.columns and df[k].nunique(dropna=False) > 1]
    if not keys:
        return [("", df)]
    return [(", ".join(f"{k}={v}" for k, v in zip(keys, key if isinstance(key, tuple) else (key,))), g) for key, g in df.groupby(keys, sort=True, dropna=False)]


def _metric_label(sw, mode: str | None = None) -> str:
    mode = mode or next(iter(sw.modes.values()))
    return f"final {sw.metric} ({'higher' if mode == 'max' else 'lower'} is better)"


def _lr_label(sw) -> str:
    rules = sorted(sw.runs["scaling"].dropna().unique())
    if rules == ["none"]:
        return "LR (optimizer.lr = peak LR)"
    base = sorted(sw.runs["base_batch_size"].dropna().unique())
    return f"optimizer.lr (base LR at batch {'/'.join(str(int(b)) for b in base)}; scaling {'/'.join(rules)})"


def _other_keys(sw) -> list[str]:
    return [k for k in sw.keys if k not in ("warmup", "batch_size", "lr_base")]


def heatmap(sw, summary: pd.DataFrame, best: pd.DataFrame, path: Path) -> Path:
    warmups = _warmups(summary)
    facets = _facets(summary, _other_keys(sw))
    nb, nl = summary["batch_size"].nunique(), summary["lr_base"].nunique()
    w, h = max(3.2, 0.9 * nb + 1.6), max(2.6, 0.42 * nl + 1.4)
    # one row per facet and one column per warm-up; a single warm-up puts the facets side by side instead
    side = len(warmups) == 1
    nrows, ncols = (1, len(facets)) if side else (len(facets), len(warmups))
    fig, grid_axes = plt.subplots(nrows, ncols, figsize=(w * ncols + 1.4, h * nrows + 0.9), squeeze=False, constrained_layout=True)
    axes = [[grid_axes[0][i]] for i in range(len(facets))] if side else grid_axes
    finite = summary["mean"][np.isfinite(summary["mean"])]
    vmin, vmax = (finite.min(), finite.max()) if len(finite) else (0, 1)
    im = None
    for i, (label, g) in enumerate(facets):
        mode = g["mode"].iloc[0]
        cmap = "viridis" if mode == "max" else "viridis_r"
        bs, lrs = sorted(g["batch_size"].unique()), sorted(g["lr_base"].unique())
        for j, wu in enumerate(warmups):
            ax = axes[i][j]
            gw = g[g["warmup"] == wu]
            grid = np.full((len(lrs), len(bs)), np.nan)
            for _, r in gw.iterrows():
                grid[lrs.index(r["lr_base"]), bs.index(r["batch_size"])] = r["mean"]
            im = ax.imshow(grid, origin="lower", aspect="auto", cmap=cmap, vmin=vmin, vmax=vmax)
            ax.set_facecolor("0.85")
            for _, r in gw.iterrows():
                y, x = lrs.index(r["lr_base"]), bs.index(r["batch_size"])
                txt = "–" if not math.isfinite(r["mean"]) else f"{r['mean']:.2f}" if abs(r["mean"]) < 100 else f"{r['mean']:.0f}"
                bad = r["n_diverged"] + r["n_unfinished"]
                if bad:
                    txt += f"\n✕{bad}/{r['n_runs']}"
                light = math.isfinite(r["mean"]) and (r["mean"] - vmin) / max(vmax - vmin, 1e-12) > 0.6
                light = light if mode == "max" else not light
                box = dict(boxstyle="round,pad=0.2", fc="white", ec="red", alpha=0.85) if bad else None  # readable on any colour
                ax.text(x, y, txt, ha="center", va="center", fontsize=7, color="red" if bad else "black" if light else "white", fontweight="bold" if bad else "normal", bbox=box)
            sel = best[(best["warmup"] == wu) & best["eligible"]]
            for k in _other_keys(sw):
                sel = sel[sel[k] == g[k].iloc[0]]
            for _, r in sel.iterrows():
                if math.isfinite(r["lr_base"]) and r["lr_base"] in lrs and r["batch_size"] in bs:
                    ax.add_patch(plt.Rectangle((bs.index(r["batch_size"]) - 0.5, lrs.index(r["lr_base"]) - 0.5), 1, 1, fill=False, ec="red", lw=2))
            ax.set_xticks(range(len(bs)), [str(int(b)) for b in bs])
            ax.set_yticks(range(len(lrs)), [f"{v:.3g}" for v in lrs])
            ax.set_xlabel("batch size (examples/step)")
            if ax is grid_axes[0][0] or (not side and j == 0):
                ax.set_ylabel(_lr_label(sw) if len(_lr_label(sw)) < 30 else "optimizer.lr (base LR)")
            ax.set_title(f"warm-up: {wu}" + (f"\n{label}" if label else ""), fontsize=10)
    cb = fig.colorbar(im, ax=grid_axes, shrink=0.8)
    cb.set_label(_metric_label(sw))
    fig.suptitle(f"Mean final {sw.metric} over seeds\nred box: best LR per batch (no run diverged); ✕k/n: k of n runs diverged or unfinished", fontsize=10)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def lr_vs_batch(sw, best: pd.DataFrame, alpha: pd.DataFrame, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7.5, 5.2), constrained_layout=True)
    lines = _other_keys(sw) + ["warmup"]
    ok = best[np.isfinite(best["lr_peak"].astype(float)) & best["eligible"]]
    anchors = []
    facets = _facets(ok, lines)
    for i, ((label, g), color) in enumerate(zip(facets, plt.cm.tab10.colors * 3)):
        g = g.sort_values("batch_size")
        shift = 1 + 0.025 * (i - (len(facets) - 1) / 2)  # a small sideways offset so equal points stay visible
        a = alpha
        for k in lines:
            if k in a.columns:
                a = a[a[k] == g[k].iloc[0]]
        edge = g["edge"].isin(["low", "high"])
        ax.plot(g["batch_size"] * shift, g["lr_peak"], "o", color=color, ms=7)
        ax.plot(g["batch_size"][edge] * shift, g["lr_peak"][edge], "o", color="white", mec=color, ms=7, mew=1.5)
        txt = label or "fit"
        if len(a) and math.isfinite(a["alpha"].iloc[0]):
            r = a.iloc[0]
            xs = np.array([g["batch_size"].min(), g["batch_size"].max()], float)
            ax.plot(xs, r["c"] * xs ** r["alpha"], "-", color=color, lw=1.5)
            txt += f": α={r['alpha']:.2f} [{r['alpha_low']:.2f}, {r['alpha_high']:.2f}]"
        ax.plot([], [], "o-", color=color, label=txt)
        anchors.append((g["batch_size"].iloc[0], g["lr_peak"].iloc[0]))
    if anchors:
        b0 = min(b for b, _ in anchors)
        lr0 = math.exp(np.mean([math.log(lr) for b, lr in anchors if b == b0]))
        bs = np.array(sorted(ok["batch_size"].unique()), float)
        ax.plot(bs, lr0 * (bs / b0), "k--", lw=1, label="linear rule (α=1)")
        ax.plot(bs, lr0 * (bs / b0) ** 0.5, "k:", lw=1.2, label="square-root rule (α=0.5)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    if anchors:
        ax.set_xticks(bs, [str(int(b)) for b in bs])
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if str(f"{v:.0e}")[0] in "25" else ""))
    ax.set_xlabel("batch size B (examples/step, log scale)")
    ax.set_ylabel("best peak LR η* (log scale)")
    ax.set_title(f"Optimal LR vs batch size, η* ∝ B^α (least squares, 95% seed-bootstrap interval)\nbest by final {sw.metric}; hollow = best on the grid's edge", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def warmup_comparison(sw, best: pd.DataFrame, path: Path) -> Path:
    facets = _facets(best, _other_keys(sw))
    fig, axes = plt.subplots(1, len(facets), figsize=(6.2 * len(facets), 4.6), squeeze=False, constrained_layout=True)
    warmups = _warmups(best)
    for ax, (label, g) in zip(axes[0], facets):
        bs = sorted(g["batch_size"].unique())
        width = 0.8 / max(len(warmups), 1)
        for k, (wu, color) in enumerate(zip(warmups, plt.cm.tab10.colors)):
            gw = g[g["warmup"] == wu].set_index("batch_size")
            for i, b in enumerate(bs):
                if b not in gw.index or not math.isfinite(gw.loc[b, "mean"]):
                    continue
                r = gw.loc[b]
                x = i + (k - (len(warmups) - 1) / 2) * width
                lo = r["mean"] - r["ci_low"] if math.isfinite(r["ci_low"]) else 0
                hi = r["ci_high"] - r["mean"] if math.isfinite(r["ci_high"]) else 0
                # hollow: every LR of this group had diverged runs; the mean covers the finished runs only
                ax.errorbar([x], [r["mean"]], yerr=[[lo], [hi]], fmt="o", color=color, mfc=color if r["eligible"] else "white", capsize=3)
                if not r["eligible"]:
                    ax.annotate(f"✕{r['n_diverged']}/{r['n_runs']}", (x, r["mean"]), xytext=(4, 0), textcoords="offset points", fontsize=7, color="red", va="center")
            ax.errorbar([], [], fmt="o", color=color, label=wu)
        ax.set_xticks(range(len(bs)), [str(int(b)) for b in bs])
        ax.set_xlim(-0.6, len(bs) - 0.3)  # room for the ✕k/n labels on the right
        ax.set_xlabel("batch size (examples/step)")
        ax.set_ylabel(_metric_label(sw, g["mode"].iloc[0]))
        ax.set_title((label + "\n" if label else "") + "at the best LR per warm-up and batch size (hollow, ✕k/n: k of n runs diverged there)", fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(title="warm-up", fontsize=8)
    fig.suptitle("Warm-up comparison: mean over seeds with 95% bootstrap interval", fontsize=11)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def curves_figure(sw, summary: pd.DataFrame, path: Path, read_curves) -> Path | None:
    """Loss and LR against step, per warm-up: the best run (seed) of the best eligible cell at the largest batch.

    The largest batch is where warm-up matters (Goyal et al.); at small batches all warm-ups look alike.
    """
    fin = summary[summary["mean"].notna()]
    if fin.empty:
        return None
    big = fin["batch_size"].max()
    picks = []
    for label, g in _facets(fin[fin["batch_size"] == big], _other_keys(sw) + ["warmup"]):
        g = g[g["eligible"]] if g["eligible"].any() else g  # prefer cells where no run diverged
        mode = g["mode"].iloc[0]
        cell = g.loc[g["mean"].idxmax() if mode == "max" else g["mean"].idxmin()]
        runs = sw.runs
        for k in sw.keys:
            runs = runs[runs[k] == cell[k]]
        run = runs.loc[runs["metric"].idxmax() if mode == "max" else runs["metric"].idxmin()]
        picks.append((f"{label or cell['warmup']}: lr={cell['lr_base']:.3g}, seed {run['seed']}", run["dir"], cell["warmup"]))
    rank = {w: i for i, w in enumerate(WARMUP_ORDER)}
    picks = [(lab, d) for lab, d, w in sorted(picks, key=lambda p: rank.get(p[2], len(rank)))][:10]  # beyond ten lines the figure stops being readable
    if not picks:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(12, 4.6), constrained_layout=True)
    for (label, d), color in zip(picks, plt.cm.tab10.colors):
        m = read_curves(d)
        if m.empty or "kind" not in m:
            continue
        tr = m[m["kind"] == "train"]
        if "train_loss" in tr:
            t = tr[tr["train_loss"].notna()]
            ax1.plot(t["step"], t["train_loss"], color=color, lw=0.6, alpha=0.3)
            window = max(1, min(SMOOTH, len(t) // 20))  # short runs are drawn as they are
            smooth = t["train_loss"].rolling(window, min_periods=1, center=True).mean()
            ax1.plot(t["step"], smooth, color=color, lw=1.6, label=label)
        lr_cols = ["lr"] if "lr" in tr else sorted(c for c in tr.columns if c.startswith("lr/"))
        for c, ls in zip(lr_cols, ["-", "--", ":", "-."]):
            t = tr[tr[c].notna()]
            ax2.plot(t["step"], t[c], color=color, ls=ls, lw=1.2, label=f"{label} ({c})" if len(lr_cols) > 1 else label)
    ax1.set_yscale("log")
    ax1.set_xlabel("optimizer step")
    ax1.set_ylabel("train loss (log scale)")
    ax1.set_title(f"train loss, best run per warm-up, batch {int(big)}\n(thick: moving average of up to {SMOOTH} logged steps)", fontsize=10)
    ax2.set_xlabel("optimizer step")
    ax2.set_ylabel("learning rate (applied at this step)")
    ax2.set_title("LR schedule of the same runs", fontsize=10)
    for ax in (ax1, ax2):
        ax.grid(True, alpha=0.3)
    ax1.legend(fontsize=7)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def divergence(sw, path: Path) -> Path:
    runs = sw.runs
    facets = _facets(runs, _other_keys(sw))
    fig, axes = plt.subplots(1, len(facets), figsize=(6.2 * len(facets), 4.4), squeeze=False, constrained_layout=True)
    for ax, (label, g) in zip(axes[0], facets):
        for wu, color in zip(_warmups(g), plt.cm.tab10.colors):
            f = g[g["warmup"] == wu].groupby("lr_base")["status"].agg(lambda s: (s == "diverged").mean())
            ax.plot(f.index, f.values, "o-", color=color, label=wu)
        ax.set_xscale("log")
        ax.set_ylim(-0.05, 1.05)
        ax.set_xlabel(_lr_label(sw) + ", log scale")
        ax.set_ylabel("fraction of runs diverged")
        ax.set_title((label + "\n" if label else "") + f"all batch sizes and seeds pooled ({g['batch_size'].nunique()} sizes)", fontsize=10)
        ax.grid(True, alpha=0.3)
        ax.legend(title="warm-up", fontsize=8)
    fig.suptitle("Stable LR range: diverged runs per warm-up and LR", fontsize=11)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def all_figures(sw, summary, best, alpha, out: Path, read_curves) -> list[Path]:
    figs = [
        heatmap(sw, summary, best, out / "heatmap.png"),
        warmup_comparison(sw, best, out / "warmup_comparison.png"),
        divergence(sw, out / "divergence.png"),
    ]
    fit = best[best["eligible"] & (best["n_lrs"] > 1)]
    if fit["batch_size"].nunique() > 1:  # alpha needs an LR grid and at least two batch sizes
        figs.insert(1, lr_vs_batch(sw, best, alpha, out / "lr_vs_batch.png"))
    c = curves_figure(sw, summary, out / "curves.png", read_curves)
    if c is not None:
        figs.append(c)
    return figs
