"""Figures of a sweep report (matplotlib, Agg backend): one PNG per question.

- ``heatmap.png``: mean metric (final, or averaged: ``Sweep.reading``) over LR x batch size, one panel per warm-up (rows: task/optimizer);
  a sweep of one batch size is one LR x warm-up panel instead. The colour scale is fixed per metric
  (:func:`color_norm`), so two reports of one metric read the same colour the same way;
- ``lr_vs_batch.png``: lr_star in peak-LR units with its seed-bootstrap interval against batch size
  (log-log) and the fitted alpha;
- ``warmup_comparison.png``: metric at the best LR per warm-up and batch size: every successful seed,
  their mean, its 95% interval where there is one (two seeds or more) and n;
- ``curves.png``: train loss (one panel per model) and the LR (a step function of the logged rows)
  against step, for the best run per warm-up;
- ``divergence.png``: fraction of diverged runs against LR per warm-up, one panel per batch size.
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.colors import LogNorm, Normalize  # noqa: E402
from matplotlib.lines import Line2D  # noqa: E402
from matplotlib.ticker import FuncFormatter, MaxNLocator, NullFormatter  # noqa: E402
import pandas as pd  # noqa: E402

from bench.report import not_ok_text  # noqa: E402

DPI = 120
PANEL_COLUMNS = 4  # panels per row in the per-group probe figures
FIGURES = ("heatmap.png", "lr_vs_batch.png", "warmup_comparison.png", "curves.png", "divergence.png", "sharpness.png", "noise_scale.png")
SMOOTH = 9  # logged train rows in the moving average of curves.png (raw values drawn faintly behind)
WARMUP_ORDER = ["none", "constant", "linear", "exponential", "untuned_linear", "untuned_exponential"]
# Colour range of a metric in heat maps: (low, high, log scale). Fixed, never stretched to the data, so
# the same colour means the same value in every report; values beyond it take the end colour (the
# colour bar shows an arrow). Fractions span 0-1; unbounded metrics span the decades they take in practice.
SCALES: dict[str, tuple[float, float, bool]] = {
    "val_acc": (0.0, 1.0, False),
    "val_acc5": (0.0, 1.0, False),
    "hq_frac": (0.0, 1.0, False),
    "val_loss": (0.01, 10.0, True),  # cross-entropy in nats: near-perfect to above chance for 1000 classes (ln 1000 = 6.9)
    "val_ppl": (1.0, 1e4, True),  # perplexity: perfect to worse than uniform over a 10k vocabulary
    "val_bpc": (0.0, 8.0, False),  # bits per character: 8 = no better than raw bytes
    "fd": (1.0, 1000.0, True),  # Fréchet distance in classifier features (docs/gan.md)
    "mode_kl": (0.01, 10.0, True),
    "class_entropy": (0.0, math.log(10), False),  # nats over 10 digit classes: 0 = one class, ln 10 = uniform
    "classes": (0.0, 10.0, False),
}


def color_norm(metric: str, values=()) -> Normalize:
    """The colour scale of ``metric`` in heat maps.

    From :data:`SCALES` when the metric is listed. Otherwise (documented in docs/report.md): 0-1 when
    every value lies in [0, 1]; else, for positive values spanning more than two decades, the powers
    of ten around them (log scale); else from 0 (or the lowest value, when negative) to a round
    number above the highest. Only these unlisted metrics depend on the data.
    """
    if metric in SCALES:
        lo, hi, log = SCALES[metric]
        return LogNorm(lo, hi, clip=False) if log else Normalize(lo, hi, clip=False)
    x = np.asarray(values, float)
    x = x[np.isfinite(x)]
    if not len(x) or (x.min() >= 0 and x.max() <= 1):
        return Normalize(0.0, 1.0)
    if x.min() > 0 and x.max() / x.min() > 100:
        return LogNorm(10.0 ** math.floor(math.log10(x.min())), 10.0 ** math.ceil(math.log10(x.max()) + 1e-12))
    ticks = MaxNLocator(5).tick_values(min(x.min(), 0.0), x.max())
    return Normalize(float(ticks[0]), float(ticks[-1]))


def _warmups(df: pd.DataFrame) -> list[str]:
    present = list(df["warmup"].unique())
    return [w for w in WARMUP_ORDER if w in present] + sorted(w for w in present if w not in WARMUP_ORDER)


def _facets(df: pd.DataFrame, keys: list[str]) -> list[tuple[str, pd.DataFrame]]:
    """Split by the given keys (those that exist and vary); label each part 'k=v, ...'."""
    keys = [k for k in keys if k in df.columns and df[k].nunique(dropna=False) > 1]
    if not keys:
        return [("", df)]
    return [(", ".join(f"{k}={v}" for k, v in zip(keys, key if isinstance(key, tuple) else (key,))), g) for key, g in df.groupby(keys, sort=True, dropna=False)]


def _metric_label(sw, mode: str | None = None, name: str | None = None) -> str:
    mode = mode or next(iter(sw.modes.values()))
    return f"{sw.reading(name)} ({'higher' if mode == 'max' else 'lower'} is better)"


def _lr_label(sw) -> str:
    rules = sorted(sw.runs["scaling"].dropna().unique())
    if rules == ["none"]:
        return "optimizer.lr (lr_base = lr_peak: batch.scaling=none)"
    base = sorted(sw.runs["base_batch_size"].dropna().unique())
    return f"optimizer.lr (lr_base at batch.base_size={'/'.join(str(int(b)) for b in base)}; batch.scaling={'/'.join(rules)})"


def _other_keys(sw) -> list[str]:
    return [k for k in sw.keys if k not in ("warmup", "batch_size", "lr_base")]


def _fmt_value(v: float) -> str:
    return "–" if not math.isfinite(v) else f"{v:.2f}" if abs(v) < 100 else f"{v:.0f}"


def _mark_best(ax, x: float, y: float) -> None:
    """A black frame with a white frame inside it: visible on every colour of the map."""
    ax.add_patch(plt.Rectangle((x - 0.46, y - 0.46), 0.92, 0.92, fill=False, ec="black", lw=3.2, zorder=3))
    ax.add_patch(plt.Rectangle((x - 0.46, y - 0.46), 0.92, 0.92, fill=False, ec="white", lw=1.3, zorder=4))


def _heat_panel(ax, sw, cells: pd.DataFrame, xkey: str, xs: list, lrs: list, best: pd.DataFrame, norm, cmap) -> object:
    """One LR (rows) x ``xkey`` (columns) map of cell means, each cell labelled with its mean and n."""
    grid = np.full((len(lrs), len(xs)), np.nan)
    for _, r in cells.iterrows():
        grid[lrs.index(r["lr_base"]), xs.index(r[xkey])] = r["mean"]
    im = ax.imshow(np.ma.masked_invalid(grid), origin="lower", aspect="auto", cmap=cmap, norm=norm)
    ax.set_facecolor("0.85")  # a cell without a finished run
    for _, r in cells.iterrows():
        y, x = lrs.index(r["lr_base"]), xs.index(r[xkey])
        bad = not_ok_text(r, sw)
        txt = f"{_fmt_value(r['mean'])}\nn={r['n_runs']}"
        if math.isfinite(r["mean"]):
            red, green, blue, _ = cmap(norm(np.clip(r["mean"], norm.vmin, norm.vmax)))
            dark = 0.299 * red + 0.587 * green + 0.114 * blue < 0.5  # perceived brightness of the cell's colour
            color = "white" if dark else "black"
        else:
            color = "black"
        ax.text(x, y + (0.12 if bad else 0), txt, ha="center", va="center", fontsize=7, color=color, zorder=5)
        if bad:  # readable on any colour: a white box with a red frame
            ax.text(x, y - 0.28, "✕ " + bad, ha="center", va="center", fontsize=6, color="red", zorder=5,
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="red", alpha=0.9))
    for _, r in best[best["eligible"]].iterrows():
        if math.isfinite(r["lr_base"]) and r["lr_base"] in lrs and r[xkey] in xs:
            _mark_best(ax, xs.index(r[xkey]), lrs.index(r["lr_base"]))
    ax.set_yticks(range(len(lrs)), [f"{v:.3g}" for v in lrs])
    return im


def heatmap(sw, summary: pd.DataFrame, best: pd.DataFrame, path: Path) -> Path:
    """Mean metric per cell on a fixed colour scale; the best LR per group framed; n and failed runs per cell.

    With several batch sizes: LR x batch size, one panel per warm-up (and per other key). With one batch
    size: one LR x warm-up panel per other key, so the warm-ups sit side by side on one colour scale.
    """
    arm_cols, warmups, (summary, best) = _with_arms(sw, summary, best)  # an arm: a warm-up with its length, target, ...
    others = [k for k in _other_keys(sw) if k not in arm_cols]
    facets = _facets(summary, others)
    single = summary["batch_size"].nunique() == 1
    nl = summary["lr_base"].nunique()
    h = max(2.8, 0.5 * nl + 1.4)
    if single:  # each panel as wide as its arms need
        nrows, widths = 1, [max(3.4, 0.95 * len(set(g["_arm"])) + 1.8) for _, g in facets]
    else:
        nrows, widths = len(facets), [max(3.4, 0.95 * summary["batch_size"].nunique() + 1.8)] * len(warmups)
    fig, axes = plt.subplots(nrows, len(widths), figsize=(sum(widths) + 1.6, h * nrows + 1.1), squeeze=False, constrained_layout=True,
                             gridspec_kw={"width_ratios": widths})
    metrics = sorted(summary["metric_name"].unique())
    shared = len(metrics) == 1
    last = {}
    for i, (label, g) in enumerate(facets):
        name, mode = g["metric_name"].iloc[0], g["mode"].iloc[0]
        norm = color_norm(name, summary.loc[summary["metric_name"] == name, "mean"])
        cmap = plt.get_cmap("viridis" if mode == "max" else "viridis_r")  # bright = better either way
        lrs = sorted(g["lr_base"].unique())
        sel = best
        for k in others:
            sel = sel[sel[k].astype(str) == str(g[k].iloc[0])]
        panels = [(axes[0][i], g, "_arm", [w for w in warmups if w in set(g["_arm"])], sel, f"batch.size={int(g['batch_size'].iloc[0])}")] if single else [
            (axes[i][j], g[g["_arm"] == wu], "batch_size", sorted(g["batch_size"].unique()), sel[sel["_arm"] == wu], f"warm-up: {wu}") for j, wu in enumerate(warmups)
        ]
        for ax, cells, xkey, xs, b, title in panels:
            last[name] = (_heat_panel(ax, sw, cells, xkey, xs, lrs, b, norm, cmap), norm)
            if xkey == "_arm":
                long = len(xs) > 3 or max(map(len, xs)) > 12
                ax.set_xticks(range(len(xs)), [x.replace(" ", "\n") for x in xs], rotation=30 if long else 0, ha="right" if long else "center", fontsize=8)
                ax.set_xlabel("warm-up")
            else:
                ax.set_xticks(range(len(xs)), [str(int(v)) for v in xs])
                ax.set_xlabel("batch.size (examples/step)")
            ax.set_ylabel("optimizer.lr (base LR)" if len(_lr_label(sw)) > 30 else _lr_label(sw))
            ax.set_title(title + (f"\n{label}" if label else ""), fontsize=10)
            if not shared:
                fig.colorbar(last[name][0], ax=ax, shrink=0.85, extend=_extend(cells["mean"], norm)).set_label(_metric_label(sw, mode, name), fontsize=8)
    if shared:
        im, norm = last[metrics[0]]
        label = _metric_label(sw) + _scale_note(metrics[0])  # wrapped: a long label would run past a short map's height
        fig.colorbar(im, ax=axes, shrink=0.85, extend=_extend(summary["mean"], norm)).set_label(textwrap.fill(label, max(30, int(8 * h))))
    fig.suptitle(f"Mean {sw.reading()} over successful seeds (n = runs per cell)\nframed: best LR (success rate ≥ 0.8); ✕: runs that did not succeed", fontsize=10)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _extend(values, norm) -> str:
    """Colour-bar arrows for values beyond the fixed range."""
    x = np.asarray(values, float)
    x = x[np.isfinite(x)]
    lo, hi = bool(len(x) and x.min() < norm.vmin), bool(len(x) and x.max() > norm.vmax)
    return "both" if lo and hi else "min" if lo else "max" if hi else "neither"


def _scale_note(metric: str) -> str:
    return "" if metric in SCALES else " (range from the data)"


def lr_vs_batch(sw, best: pd.DataFrame, alpha: pd.DataFrame, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(7.5, 5.2), constrained_layout=True)
    lines = _other_keys(sw) + ["warmup"]
    ok = best[np.isfinite(best["lr_star_peak"].astype(float)) & best["eligible"]]
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
        # the seed bootstrap's interval need not contain the fit on all seeds (one seed: the fit's vertex vs the
        # bootstrap's grid points); a bar is drawn to the interval's far end and never below zero length
        err = [(g["lr_star_peak"] - g["lr_star_lo"] * g["lr_scale"]).clip(lower=0), (g["lr_star_hi"] * g["lr_scale"] - g["lr_star_peak"]).clip(lower=0)]
        ax.errorbar(g["batch_size"] * shift, g["lr_star_peak"], yerr=err, fmt="o", color=color, ms=7, capsize=3)
        ax.plot(g["batch_size"][edge] * shift, g["lr_star_peak"][edge], "o", color="white", mec=color, ms=7, mew=1.5)
        txt = label or "fit"
        if len(a) and math.isfinite(a["alpha"].iloc[0]):
            r = a.iloc[0]
            xs = np.array([g["batch_size"].min(), g["batch_size"].max()], float)
            ax.plot(xs, r["c"] * xs ** r["alpha"], "-", color=color, lw=1.5)
            txt += f": α={r['alpha']:.2f} [{r['alpha_low']:.2f}, {r['alpha_high']:.2f}]"
        ax.plot([], [], "o-", color=color, label=txt)
        anchors.append((g["batch_size"].iloc[0], g["lr_star_peak"].iloc[0]))
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
    ax.set_xlabel("batch.size B (examples/step, log scale)")
    ax.set_ylabel("η* = lr_star in lr_peak units (after batch.scaling; log scale)")
    ax.set_title(f"Optimal LR vs batch size, η* ∝ B^α (least squares; bars and α: 95% seed bootstrap)\nlr_star: quadratic fit of {sw.reading()} in log LR; hollow = grid optimum on the grid's edge", fontsize=10)
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _cell_runs(sw, row) -> pd.DataFrame:
    """The runs of the cell that ``row`` (a summary or best-LR row with every cell key) stands for."""
    runs = sw.runs
    for k in sw.keys:
        runs = runs[runs[k] == row[k]]
    return runs


def _arm_label(row, cols: list[str]) -> str:
    """``linear`` or ``linear warmup.fraction=0.1 task.warmup_on=generator``: the warm-up and the arm keys that vary
    (prefixes ``warmup.`` / ``task.`` dropped), the arm a cell belongs to."""
    parts = [str(row["warmup"])]
    for k in cols:
        v = row[k]
        if v is None or (isinstance(v, float) and math.isnan(v)) or str(v) in ("None", "nan", "null"):
            continue
        parts.append(f"{k.split('.', 1)[1] if k.startswith(('warmup.', 'task.')) else k}={_fmt_arm_value(v)}")
    return " ".join(parts)


def _fmt_arm_value(v) -> str:
    try:
        return f"{float(v):g}"
    except (TypeError, ValueError):
        return str(v)


def _with_arms(sw, *frames: pd.DataFrame) -> tuple[list[str], list[str], list[pd.DataFrame]]:
    """The arm keys that vary (in the first frame), the arms in warm-up order, and each frame with its ``_arm`` column."""
    from bench.report import arm_columns

    first = frames[0]
    arm_cols = [k for k in arm_columns(sw) if k in first.columns and first[k].astype(str).nunique() > 1]
    out = [f.assign(_arm=[_arm_label(r, arm_cols) for _, r in f.iterrows()]) if len(f) else f.assign(_arm=[]) for f in frames]
    order = {w: i for i, w in enumerate(_warmups(first))}
    arms = sorted(out[0]["_arm"].unique(), key=lambda a: (order.get(a.split(" ")[0], len(order)), a))
    return arm_cols, arms, out


def warmup_comparison(sw, best: pd.DataFrame, path: Path) -> Path:
    """At the best LR per arm and batch size: each seed (dots), the mean, its 95% interval and n.

    An arm is a warm-up with its arm keys (warm-up lengths, a GAN's warm-up target, ...): the arms of a group share
    one panel, side by side at each batch size; groups (other keys) get a panel each, wrapped into rows.
    One seed has no interval: its mean is drawn without a bar and labelled so.
    """
    arm_cols, arms, (best,) = _with_arms(sw, best)
    facets = _facets(best, [k for k in _other_keys(sw) if k not in arm_cols])
    cols = min(PANEL_COLUMNS, len(facets))
    rows = -(-len(facets) // cols)
    colors = plt.cm.tab10.colors if len(arms) <= 10 else plt.cm.tab20.colors
    per_bs = max(len(set(best["batch_size"])), 1)
    width_in = max(6.4, 0.55 * len(arms) * per_bs + 2.0)
    fig, axes = plt.subplots(rows, cols, figsize=(width_in * cols, 4.8 * rows), squeeze=False, constrained_layout=True)
    for ax in axes.flat[len(facets):]:
        ax.axis("off")
    for ax, (label, g) in zip(axes.flat, facets):
        bs = sorted(g["batch_size"].unique())
        width = 0.8 / max(len(arms), 1)
        for k, (arm, color) in enumerate(zip(arms, colors * (len(arms) // len(colors) + 1))):
            gw = g[g["_arm"] == arm].set_index("batch_size")
            for i, b in enumerate(bs):
                if b not in gw.index or not math.isfinite(gw.loc[b, "mean"]):
                    continue
                r = gw.loc[b]
                x = i + (k - (len(arms) - 1) / 2) * width
                cell = _cell_runs(sw, r.to_dict() | {"batch_size": b})
                vals = cell.loc[cell["success"], "metric"].dropna().to_numpy(float)  # the runs the mean is over
                ax.plot(np.full(len(vals), x + 0.12 * width), vals, ".", color=color, alpha=0.5, ms=4)
                has_ci = math.isfinite(r["ci_low"])
                yerr = [[r["mean"] - r["ci_low"]], [r["ci_high"] - r["mean"]]] if has_ci else None
                # hollow: every LR of this group had runs that did not succeed; the mean covers those that trained to the end
                ax.errorbar([x], [r["mean"]], yerr=yerr, fmt="o", color=color, mfc=color if r["eligible"] else "white", capsize=3, ms=6)
                note = f"n={len(vals)}" + ("" if has_ci else ", no interval")
                if not r["eligible"]:
                    note += f"\n✕ {not_ok_text(r, sw)}"
                ax.annotate(note, (x, r["mean"]), xytext=(-7, 0), textcoords="offset points", fontsize=6, ha="right", va="center", color="red" if not r["eligible"] else "0.25")
            if arm in set(g["_arm"]):
                ax.errorbar([], [], fmt="o", color=color, label=arm)
        ax.set_xticks(range(len(bs)), [str(int(b)) for b in bs])
        ax.set_xlim(-0.6, len(bs) - 0.4)
        ax.set_xlabel("batch.size (examples/step)")
        ax.set_ylabel(_metric_label(sw, g["mode"].iloc[0], g["metric_name"].iloc[0]))
        ax.set_title((label + "\n" if label else "") + "at the best LR per arm and batch size; dots: single seeds", fontsize=9)
        ax.grid(True, axis="y", alpha=0.3)
        if len(arms) > 6:  # many arms: the legend beside the panel, not over the seeds
            ax.legend(title="arm", fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        else:
            ax.legend(title="arm", fontsize=8)
    fig.suptitle("Warm-up comparison: mean over successful seeds\n95% interval (t below 10 runs, BCa from 10); n = successful seeds; ✕: runs that did not succeed", fontsize=9)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _models(m: pd.DataFrame) -> list[str]:
    """Model names of a multi-model run's rows (``train_loss/<model>``), or [] for one model."""
    return sorted(c.split("/", 1)[1] for c in m.columns if c.startswith("train_loss/"))


def curves_figure(sw, summary: pd.DataFrame, path: Path, read_curves) -> Path | None:
    """Loss and LR against step, per warm-up: the best run (seed) of the best eligible cell at the largest batch.

    The largest batch is where warm-up matters (Goyal et al.); at small batches all warm-ups look alike.
    A multi-model task (a GAN) gets one loss panel per model. The LR is drawn as logged: a step function
    holding each logged row's value until the next row.
    """
    fin = summary[summary["mean"].notna()]
    if fin.empty:
        return None
    big = fin["batch_size"].max()
    picks = []
    for label, g in _facets(fin[fin["batch_size"] == big], _other_keys(sw) + ["warmup"]):
        g = g[g["eligible"]] if g["eligible"].any() else g  # prefer cells where every run succeeded
        mode = g["mode"].iloc[0]
        cell = g.loc[g["mean"].idxmax() if mode == "max" else g["mean"].idxmin()]
        runs = _cell_runs(sw, cell)
        run = runs.loc[runs["metric"].idxmax() if mode == "max" else runs["metric"].idxmin()]
        picks.append((f"{label or cell['warmup']}: lr={cell['lr_base']:.3g}, seed {run['seed']}", run["dir"], cell["warmup"]))
    rank = {w: i for i, w in enumerate(WARMUP_ORDER)}
    picks = [(lab, d) for lab, d, w in sorted(picks, key=lambda p: rank.get(p[2], len(rank)))][:10]  # beyond ten lines the figure stops being readable
    loaded = [(label, read_curves(d), color) for (label, d), color in zip(picks, plt.cm.tab10.colors)]
    loaded = [(label, m[m["kind"] == "train"], color) for label, m, color in loaded if not m.empty and "kind" in m]
    if not loaded:
        return None
    models = sorted({n for _, m, _ in loaded for n in _models(m)})
    loss_cols = [(f"train_loss/{n}", n) for n in models] or [("train_loss", None)]
    styles = ["-", "--", ":", "-."]
    fig, axes = plt.subplots(1, len(loss_cols) + 1, figsize=(5.6 * (len(loss_cols) + 1), 4.6 + 0.16 * ((len(loaded) + 1) // 2) + 0.4),
                             squeeze=False, constrained_layout=True)
    axes = axes[0]
    for label, tr, color in loaded:
        for ax, (col, name) in zip(axes, loss_cols):
            if col not in tr:
                continue
            t = tr[tr[col].notna()]
            ax.plot(t["step"], t[col], color=color, lw=0.6, alpha=0.3)
            window = max(1, min(SMOOTH, len(t) // 20))  # short runs are drawn as they are
            ax.plot(t["step"], t[col].rolling(window, min_periods=1, center=True).mean(), color=color, lw=1.6, label=label)
        lr_cols = [(f"lr/{n}", n) for n in models] if models else [("lr", None)]
        for (c, name), ls in zip(lr_cols, styles):
            if c in tr:
                t = tr[tr[c].notna()]
                axes[-1].plot(t["step"], t[c], color=color, ls=ls, lw=1.3, drawstyle="steps-post")
    positive = all((tr[c].dropna() > 0).all() for _, tr, _ in loaded for c, _ in loss_cols if c in tr)
    for ax, (col, name) in zip(axes, loss_cols):
        if positive:
            ax.set_yscale("log")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(f"{name + ' ' if name else ''}train loss" + (" (log scale)" if positive else ""))
        ax.set_title((f"{name}: " if name else "") + f"train loss, best run per warm-up, batch {int(big)}\n(thick: moving average of up to {SMOOTH} logged steps)", fontsize=9)
    handles, labels = axes[0].get_legend_handles_labels()  # below the panels: a run's label is long, and up to ten
    fig.legend(handles, labels, loc="outside lower center", ncols=2 if len(labels) > 3 else 1, fontsize=7, title="run (colour, both panels)")
    lr_ax = axes[-1]
    lr_ax.set_xlabel("optimizer step")
    lr_ax.set_ylabel("learning rate (applied at this step)")
    lr_ax.set_title("LR of the same runs, as logged (held until the next logged row)", fontsize=9)
    if models:  # a legend for the line styles: which model each style is
        lr_ax.legend(handles=[Line2D([], [], color="black", ls=ls, label=n) for n, ls in zip(models, styles)], title="model (line style)", fontsize=7)
    for ax in axes:
        ax.grid(True, alpha=0.3)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def divergence(sw, path: Path) -> Path:
    """Fraction of finished runs that failed (diverged, or ended in an outcome its task declares a failure: stalled,
    collapsed, ...) against LR, a line per arm: a panel per batch size and other key (groups wrap into rows when the
    sweep has one batch size)."""
    arm_cols, arms, (runs,) = _with_arms(sw, sw.runs[sw.runs["finished"]])
    facets = _facets(runs, [k for k in _other_keys(sw) if k not in arm_cols])
    bs = sorted(runs["batch_size"].unique())
    panels = [(label, g, b) for label, g in facets for b in bs]
    cols = len(bs) if len(bs) > 1 else min(PANEL_COLUMNS, len(panels))
    rows = -(-len(panels) // cols)
    beside = len(arms) > 6  # many arms: the legend beside each first panel, not over the lines
    fig, axes = plt.subplots(rows, cols, figsize=((4.8 + 3.6 * beside) * cols + 0.6, 3.9 * rows + 0.9), squeeze=False,
                             constrained_layout=True, sharey=True)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for i, (ax, (label, g, b)) in enumerate(zip(axes.flat, panels)):
        gb = g[g["batch_size"] == b]
        present = [a for a in arms if a in set(g["_arm"])]
        for m, (wu, color) in enumerate(zip(present, plt.cm.tab10.colors if len(present) <= 10 else plt.cm.tab20.colors)):
            st = gb[gb["_arm"] == wu].groupby("lr_base")["success"]
            k, n = st.agg(lambda s: int((~s.astype(bool)).sum())), st.size()
            if not len(n):
                continue
            # each arm its own marker, smaller on top: curves that coincide stay visible
            ax.plot(n.index, k / n, "os^Dv"[m % 5] + ["-", "--", ":", "-."][m % 4], color=color, ms=max(3, 9 - 2 * m), lw=1.4, label=wu)
            for lr, kk, nn in zip(n.index, k, n):
                if kk:
                    ax.annotate(f"{kk}/{nn}", (lr, kk / nn), xytext=(3, 3), textcoords="offset points", fontsize=6, color=color)
        lrs = sorted(gb["lr_base"].unique())
        ax.set_xscale("log")
        ax.set_xticks(lrs, [f"{v:g}" for v in lrs], rotation=30 if len(lrs) > 4 else 0)  # the grid's LRs, not 10^k
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(-0.05, 1.1)
        ax.set_xlabel(("optimizer.lr (base LR)" if len(_lr_label(sw)) > 30 else _lr_label(sw)) + ", log scale")
        if i % cols == 0:
            ax.set_ylabel("fraction of runs that failed")
        ax.set_title(f"batch.size={int(b)}" + (f"\n{label}" if label else ""), fontsize=10)
        ax.grid(True, alpha=0.3)
        if len(bs) == 1 or b == bs[0]:
            ax.legend(title="arm", fontsize=7, **({"loc": "upper left", "bbox_to_anchor": (1.01, 1.0)} if beside else {}))
    kinds = sorted(set(runs.loc[~runs["success"].astype(bool), "status"]))
    fig.suptitle("Stable LR range: failed runs per arm and LR\n(k/n: k of n finished seeds failed"
                 + (f"; failures here: {', '.join(kinds)})" if kinds else "; none failed)"), fontsize=10)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def _probe_rows(m: pd.DataFrame, col: str) -> pd.DataFrame:
    """The rows of a run's metrics that carry ``col`` (train rows of logged steps and ``kind="probe"`` rows), by step."""
    if m.empty or col not in m:
        return pd.DataFrame()
    return m[m[col].notna()].sort_values("step")


def _lr_rows(m: pd.DataFrame, col: str = "lr") -> pd.DataFrame:
    return m[(m["kind"] == "train") & m[col].notna()].sort_values("step") if col in m else pd.DataFrame()


def sharpness_figure(sw, summary: pd.DataFrame, path: Path, read_curves) -> Path | None:
    """Sharpness (or, for Adam-like optimizers, preconditioned sharpness) against its stability limit over steps,
    one panel per warm-up (and other key), Kalra & Barkeshli 2024 Fig. 1 style: at the largest batch, one run
    (the lowest seed) per LR of the grid (the five largest), solid the measured value, dashed its limit at
    the LR of each step; the LR schedule of the largest of those LRs in grey on a twin axis."""
    runs = sw.runs
    batch = runs["batch_size"].max()
    facets = _facets(runs[runs["batch_size"] == batch], _other_keys(sw) + ["warmup"])
    panels = []
    for label, g in facets:
        picks = []
        for lr in sorted(g["lr_base"].unique())[-5:]:
            cell = g[g["lr_base"] == lr].sort_values("seed")
            picks.append((lr, cell.iloc[0]))
        loaded = [(lr, r, read_curves(r["dir"])) for lr, r in picks]
        key = next((k for k in ("precond_sharpness", "sharpness") for _, _, m in loaded if k in m), None)
        if key is not None:
            panels.append((label, key, loaded))
    if not panels:
        return None
    cols = min(PANEL_COLUMNS, len(panels))  # a sweep with many groups wraps into rows instead of one strip
    rows = -(-len(panels) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5.4 * cols, 4.4 * rows), squeeze=False, constrained_layout=True)
    for ax in axes.flat[len(panels):]:
        ax.axis("off")
    for ax, (label, key, loaded) in zip(axes.flat, panels):
        twin = ax.twinx()
        for (lr, r, m), color in zip(loaded, plt.cm.viridis(np.linspace(0, 0.9, len(loaded)))):
            t = _probe_rows(m, key)
            if t.empty:
                continue
            status = "" if r["success"] else f" ({r['status']})"
            ax.plot(t["step"], t[key], "o-", color=color, ms=3, lw=1.3, label=f"lr {lr:.3g}{status}")
            lim = _probe_rows(m, f"{key}_limit")
            if not lim.empty:
                ax.plot(lim["step"], lim[f"{key}_limit"], "--", color=color, lw=1.0)
        lr_col = "lr" if "lr" in loaded[-1][2] else next((c for c in loaded[-1][2].columns if c.startswith("lr/")), None)
        if lr_col is not None:
            lr_t = _lr_rows(loaded[-1][2], lr_col)
            twin.plot(lr_t["step"], lr_t[lr_col], color="0.6", lw=1.0, drawstyle="steps-post")
            twin.set_ylabel(f"{lr_col} of lr {loaded[-1][0]:.3g} (grey; applied at each step)", fontsize=8)
        ax.set_yscale("log")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(f"{key} (solid) and its limit (dashed), log scale")
        ax.set_title(f"{label}\nbatch {int(batch)}, lowest seed per LR", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7, title="base LR")
    limit = "(2 + 2 beta1)/((1 - beta1) lr)" if any(k == "precond_sharpness" for _, k, _ in panels) else "2/lr, (2 + 2 momentum)/lr"
    fig.suptitle(f"Sharpness against its stability limit {limit}: above the dashed line a step is unstable", fontsize=10)
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return path


def noise_figure(sw, best: pd.DataFrame, path: Path, read_curves) -> Path | None:
    """The gradient noise scale B_simple over training: per warm-up (and other key) panel, one line per batch size
    at its best LR (median over the cell's runs at each measured step), with the batch sizes as dotted lines:
    batches well below B_simple are where the linear scaling rule can hold (McCandlish et al. 2018)."""
    lines = []
    for label, g in _facets(best, _other_keys(sw) + ["warmup"]):
        per_batch = []
        for _, row in g.sort_values("batch_size").iterrows():
            series = [(_probe_rows(m, "noise_scale")) for m in (read_curves(d) for d in _cell_runs(sw, row)["dir"])]
            series = [t.set_index("step")["noise_scale"] for t in series if not t.empty]
            if series:
                per_batch.append((int(row["batch_size"]), pd.concat(series, axis=1).median(axis=1)))
        if per_batch:
            lines.append((label, per_batch))
    if not lines:
        return None
    fig, axes = plt.subplots(1, len(lines), figsize=(5.4 * len(lines), 4.4), squeeze=False, constrained_layout=True)
    for ax, (label, per_batch) in zip(axes[0], lines):
        for (b, sr), color in zip(per_batch, plt.cm.plasma(np.linspace(0, 0.85, len(per_batch)))):
            ax.plot(sr.index, sr.values, "o-", color=color, ms=3, lw=1.3, label=f"batch {b}")
            ax.axhline(b, color=color, ls=":", lw=0.8)
        ax.set_yscale("log")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("B_simple = tr(Sigma)/|G|^2 (examples), log scale")
        ax.set_title(f"{label}\nmedian over the best-LR cell's runs; dotted: the batch sizes", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Gradient noise scale over training (McCandlish et al. 2018)", fontsize=10)
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
    for c in (curves_figure(sw, summary, out / "curves.png", read_curves), sharpness_figure(sw, summary, out / "sharpness.png", read_curves),
              noise_figure(sw, best, out / "noise_scale.png", read_curves)):
        if c is not None:
            figs.append(c)
    return figs
