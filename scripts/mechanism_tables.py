"""The warm-up mechanism study's own tables and phase diagram, from its sweep folder.

    python scripts/mechanism_tables.py SWEEP --out results/warmup_mechanism

``python -m bench.report`` makes the general tables (cells, best LR, the paired warm-up effect, the sharpness
figure); this script adds what the study's four questions need (conf/experiment/warmup_mechanism.yaml):

- ``phase.csv``, ``phase.png`` (a): per model, optimizer, warm-up length and target LR, the success rate (exact
  interval) and the test error of the runs that succeeded; ``stable_lr.csv``: the largest LR with a success rate
  of at least 0.8 per warm-up length, and a Fisher exact test of no warm-up against the longest one at each LR.
- ``sharpness.csv`` (b): per cell, the initial sharpness lambda_0 against the stability limit at the target LR,
  the sharpness over its limit (lambda_t / limit_t) at the end of the warm-up and at its largest, the share of
  measurements within 20 % of the limit, and the largest early loss spike (catapult) in the first 200 steps.
- ``alternatives.csv`` (c): GI-Adam and RAdam without warm-up against Adam with and without warm-up: success
  rate and test accuracy per LR, and paired (same seed and LR) t-tests against Adam with the 80-step warm-up.
- ``adaptive.csv`` (d): Adam and RMSprop with an 80-step warm-up against none at the same LR and seed: the
  spread log10(p99 / p1) (median over the logged steps) and log10 of the largest p99 of the per-parameter step
  lr / (sqrt(v_hat) + eps) over the first 100 steps, and the generalization gap (test loss - training-set loss) at the end, each with a paired t-test.
- ``sharpness_traces.png`` (b): sharpness over its limit against the step for one seed of each arm at the target
  LRs in TRACES.
- ``mechanism.md``: the same tables in Markdown, for the results README.
"""

from __future__ import annotations

import functools
import json
import math
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from any directory: find bench/

from bench.report import curves as read_curves, markdown_sections, study_arguments  # noqa: E402
from bench.stats import clopper_pearson, holm, paired_t_pvalue  # noqa: E402

EARLY = 100        # steps of "early training" for the adaptive-step spread
SPIKE_WINDOW = 200  # steps in which a loss spike counts as a catapult
NEAR = 0.2         # a sharpness measurement is "at the limit" within this relative distance


def load(root: Path) -> pd.DataFrame:
    rows = []
    for path in sorted(root.rglob("result.json")):
        try:
            r = json.loads(path.read_text())
            cfg = r["config"]
            warm = 0 if r["choices"]["warmup"] == "none" else int(r["warmup_steps"]["model"])
            rows.append({
                "dir": str(path.parent), "model": cfg["task"]["model"], "optimizer": r["choices"]["optimizer"],
                "warmup_steps": warm, "lr": float(r["lr_peak"]), "seed": int(r["seed"]), "status": r["status"],
                "success": bool(r.get("success")), "momentum": float(cfg["optimizer"].get("momentum") or 0.0),
                "beta1": float((cfg["optimizer"].get("betas") or [0.0])[0]),
                "test_acc": (r.get("test") or {}).get("test_acc", math.nan),
                "test_loss": (r.get("test") or {}).get("test_loss", math.nan),
                "train_set_loss": (r.get("train_set") or {}).get("train_set_loss", math.nan),
                "val_acc": (r.get("final") or {}).get("val_acc", math.nan),
            })
        except (OSError, ValueError, KeyError, TypeError) as e:
            print(f"skipped {path}: {e}", file=sys.stderr)
    if not rows:
        raise SystemExit(f"mechanism_tables: no readable result.json under {root}")
    return pd.DataFrame(rows)


@functools.lru_cache(maxsize=None)
def curves(d: str) -> pd.DataFrame:
    """The run's training rows (the report's reader: a truncated last line is dropped), read once per run."""
    c = read_curves(d)
    return c[c["kind"] == "train"].reset_index(drop=True) if "kind" in c else c


CELL = ["model", "optimizer", "warmup_steps", "lr"]


def phase(runs: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    out = []
    for key, g in runs.groupby(CELL):
        k, n = int(g["success"].sum()), len(g)
        lo, hi = clopper_pearson(k, n)
        ok = g[g["success"]]
        out.append(dict(zip(CELL, key)) | {"runs": n, "successes": k, "success_rate": k / n, "success_lo": lo, "success_hi": hi,
                                           "test_err_pct": 100 * (1 - ok["test_acc"].mean()) if len(ok) else math.nan,
                                           "test_err_sd": 100 * ok["test_acc"].std() if len(ok) > 1 else math.nan})
    cells = pd.DataFrame(out)
    from scipy.stats import fisher_exact

    stable = []
    for (model, opt), g in cells.groupby(["model", "optimizer"]):
        longest = g["warmup_steps"].max()
        for w, gw in g.groupby("warmup_steps"):
            good = gw[gw["success_rate"] >= 0.8]
            stable.append({"model": model, "optimizer": opt, "warmup_steps": w,
                           "stable_lr": good["lr"].max() if len(good) else math.nan,
                           "largest_lr_with_a_success": gw.loc[gw["successes"] > 0, "lr"].max() if (gw["successes"] > 0).any() else math.nan,
                           "lrs": len(gw)})
        if longest > 0 and (g["warmup_steps"] == 0).any():
            for lr, gl in g.groupby("lr"):
                a, b = gl[gl["warmup_steps"] == 0], gl[gl["warmup_steps"] == longest]
                if len(a) and len(b):
                    table = [[int(b["successes"].iloc[0]), int(b["runs"].iloc[0] - b["successes"].iloc[0])],
                             [int(a["successes"].iloc[0]), int(a["runs"].iloc[0] - a["successes"].iloc[0])]]
                    p = fisher_exact(table)[1]
                    stable.append({"model": model, "optimizer": opt, "warmup_steps": f"{longest} vs 0", "lr": lr,
                                   "successes_longest": table[0][0], "successes_none": table[1][0], "fisher_p": p})
    return cells, pd.DataFrame(stable)


def phase_figure(cells: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    groups = list(cells.groupby(["model", "optimizer"]))
    cols = min(3, len(groups))
    rows = math.ceil(len(groups) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.2 * rows), squeeze=False)
    for ax, ((model, opt), g) in zip(axes.flat, groups):
        lrs = sorted(g["lr"].unique())
        ws = sorted(g["warmup_steps"].unique())
        grid = np.full((len(ws), len(lrs)), np.nan)
        for _, r in g.iterrows():
            grid[ws.index(r["warmup_steps"]), lrs.index(r["lr"])] = r["success_rate"]
        ax.imshow(grid, cmap="RdYlGn", vmin=0, vmax=1, aspect="auto", origin="lower")
        for _, r in g.iterrows():
            i, j = ws.index(r["warmup_steps"]), lrs.index(r["lr"])
            text = f"{r['successes']}/{r['runs']}" + (f"\n{r['test_err_pct']:.1f}%" if r["successes"] else "")
            ax.text(j, i, text, ha="center", va="center", fontsize=7)
        ax.set_xticks(range(len(lrs)), [f"{v:.3g}" for v in lrs], rotation=45, fontsize=7)
        ax.set_yticks(range(len(ws)), [str(w) for w in ws], fontsize=8)
        ax.set_xlabel("target (peak) LR")
        ax.set_ylabel("warm-up steps (0 = none)")
        ax.set_title(f"{model}, {opt}", fontsize=9)
    for ax in list(axes.flat)[len(groups):]:
        ax.axis("off")
    fig.suptitle("Success rate (colour; successes/runs) and mean test error of the successful runs\n"
                 "per target LR and warm-up length (Kalra & Barkeshli 2024 Fig. 4/5 analogue)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


TRACES = (  # (panel title, model, optimizers, probe, target LR): the cells the README's question (b) reads
    ("MLP, momentum SGD, lr 0.28 (no warm-up diverges)", "mlp", ("sgd",), "sharpness", 0.28284),
    ("MLP, Adam family, lr 0.016", "mlp", ("adam", "gi_adam", "radam"), "precond_sharpness", 0.016),
    ("BatchNorm ResNet, momentum SGD, lr 1.6", "resnet", ("sgd",), "sharpness", 1.6),
)


def trace_figure(runs: pd.DataFrame, path: Path, seed: int = 0) -> None:
    """Sharpness over its stability limit (lambda_t / limit_t at each step's LR) for one seed of each arm of the
    cells in TRACES: 1 is the edge of stability; a warm-up that keeps the curve at or below 1 while the LR
    rises is what Kalra & Barkeshli 2024 describe."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(TRACES), figsize=(5.6 * len(TRACES), 4.2), squeeze=False, constrained_layout=True)
    for ax, (title, model, opts, probe, lr) in zip(axes[0], TRACES):
        sel = runs[(runs["model"] == model) & runs["optimizer"].isin(opts) & np.isclose(runs["lr"], lr, rtol=1e-3) & (runs["seed"] == seed)]
        for _, r in sel.sort_values(["optimizer", "warmup_steps"]).iterrows():
            c = curves(r["dir"])
            if probe not in c or f"{probe}_limit" not in c:
                continue
            m = c[c[probe].notna()].sort_values("step")
            label = f"{r['optimizer']}, warm-up {r['warmup_steps']}" + ("" if r["success"] else f" ({r['status']})")
            ax.plot(m["step"], m[probe] / m[f"{probe}_limit"], "o-", ms=2.5, lw=1.2, label=label)
        ax.axhline(1.0, color="k", lw=0.8, ls="--")
        ax.set_yscale("log")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(f"{probe} / its limit at the step's LR")
        ax.set_title(f"{title}\nseed {seed}", fontsize=9)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle("Sharpness over its stability limit during training (dashed: the edge of stability)", fontsize=10)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def sharpness(runs: pd.DataFrame) -> pd.DataFrame:
    out = []
    for _, r in runs.iterrows():
        c = curves(r["dir"])
        if c.empty or "train_loss" not in c:
            continue
        for name in ("sharpness", "precond_sharpness"):
            lim_name = f"{name}_limit"
            if name not in c or lim_name not in c:
                continue
            m = c[c[name].notna() & c[lim_name].notna()].sort_values("step")
            if m.empty:
                continue
            ratio = (m[name] / m[lim_name]).to_numpy(float)
            steps = m["step"].to_numpy(int)
            if r["optimizer"] == "sgd":
                limit_peak = (2 + 2 * r["momentum"]) / r["lr"]
            else:
                limit_peak = (2 + 2 * r["beta1"]) / ((1 - r["beta1"]) * r["lr"])
            w = r["warmup_steps"]
            at_end = ratio[np.searchsorted(steps, w)] if w and np.searchsorted(steps, w) < len(steps) else math.nan
            in_warm = ratio[steps <= w] if w else ratio[:0]
            loss = c[c["train_loss"].notna()].sort_values("step")
            first = float(loss["train_loss"].iloc[0])
            early = loss[loss["step"] <= SPIKE_WINDOW]["train_loss"].to_numpy(float)
            out.append({**{k: r[k] for k in CELL}, "seed": r["seed"], "probe": name, "success": r["success"],
                        "lambda0": float(m[name].iloc[0]), "lambda0_over_peak_limit": float(m[name].iloc[0]) / limit_peak,
                        "ratio_end_of_warmup": at_end, "ratio_max_in_warmup": float(in_warm.max()) if len(in_warm) else math.nan,
                        "ratio_max": float(np.nanmax(ratio)), "ratio_last": float(ratio[-1]),
                        "share_near_limit": float(np.mean(np.abs(ratio - 1) <= NEAR)),
                        "loss_spike": float(np.nanmax(early) / first) if len(early) else math.nan})
    per_run = pd.DataFrame(out)
    if per_run.empty:
        return per_run
    agg = {c: (c, "median") for c in ("lambda0", "lambda0_over_peak_limit", "ratio_end_of_warmup", "ratio_max_in_warmup", "ratio_max",
                                       "ratio_last", "share_near_limit", "loss_spike")}
    return per_run.groupby(CELL + ["probe"]).agg(runs=("seed", "size"), success_rate=("success", "mean"), **agg).reset_index()


def _paired(runs: pd.DataFrame, a: dict, b: dict, column: str, by=("lr", "seed"), need_success=True) -> dict:
    """Mean of a - b over runs matched on ``by``, with a paired t-test p."""
    ra = runs.loc[np.logical_and.reduce([runs[k] == v for k, v in a.items()])]
    rb = runs.loc[np.logical_and.reduce([runs[k] == v for k, v in b.items()])]
    if need_success:
        ra, rb = ra[ra["success"]], rb[rb["success"]]
    m = ra.merge(rb, on=list(by), suffixes=("_a", "_b"))
    d = (m[f"{column}_a"] - m[f"{column}_b"]).dropna().to_numpy(float)
    p = paired_t_pvalue(d) if len(d) >= 2 else math.nan
    return {"pairs": len(d), "mean_diff": float(d.mean()) if len(d) else math.nan,
            "sd_diff": float(d.std(ddof=1)) if len(d) > 1 else math.nan, "p_t": p}


def alternatives(runs: pd.DataFrame, cells: pd.DataFrame) -> pd.DataFrame:
    mlp = runs[runs["model"] == "mlp"]
    out = []
    arms = [("adam", 0), ("adam", 20), ("adam", 80), ("adam", 320), ("gi_adam", 0), ("radam", 0)]
    for lr in sorted(mlp.loc[mlp["optimizer"].isin(["gi_adam", "radam"]), "lr"].unique()):
        for opt, w in arms:
            c = cells[(cells["model"] == "mlp") & (cells["optimizer"] == opt) & (cells["warmup_steps"] == w) & np.isclose(cells["lr"], lr)]
            if c.empty:
                continue
            c = c.iloc[0]
            row = {"lr": lr, "arm": f"{opt}, warm-up {w}", "successes": f"{c['successes']}/{c['runs']}", "test_err_pct": c["test_err_pct"]}
            if (opt, w) != ("adam", 80):
                t = _paired(mlp[np.isclose(mlp["lr"], lr)], {"optimizer": opt, "warmup_steps": w}, {"optimizer": "adam", "warmup_steps": 80}, "test_acc")
                row |= {"vs_adam_w80_test_acc_pp": 100 * t["mean_diff"], "pairs": t["pairs"], "p_t": t["p_t"]}
            out.append(row)
    return pd.DataFrame(out)


def adaptive(runs: pd.DataFrame) -> pd.DataFrame:
    sel = runs[runs["optimizer"].isin(["adam", "rmsprop"]) & (runs["model"] == "mlp") & runs["warmup_steps"].isin([0, 80])].copy()
    spread, top = [], []
    for d in sel["dir"]:
        c = curves(d)
        if c.empty or "adaptive_step_p99" not in c:
            spread.append(math.nan)
            top.append(math.nan)
            continue
        e = c[(c["step"] <= EARLY) & c["adaptive_step_p99"].notna()]
        spread.append(float(np.median(np.log10(e["adaptive_step_p99"] / e["adaptive_step_p1"]))))
        top.append(float(np.log10(e["adaptive_step_p99"].max())))
    sel["early_spread"], sel["early_log10_p99_max"] = spread, top
    sel["gap_loss"] = (sel["test_loss"] - sel["train_set_loss"]).where(sel["success"])  # a failed run has no gap to speak of
    out = []
    for opt in ("adam", "rmsprop"):
        for lr in sorted(sel.loc[sel["optimizer"] == opt, "lr"].unique()):
            at = sel[(sel["optimizer"] == opt) & np.isclose(sel["lr"], lr)]
            row = {"optimizer": opt, "lr": lr}
            for col, need in (("early_spread", False), ("early_log10_p99_max", False), ("gap_loss", True)):
                t = _paired(at, {"warmup_steps": 80}, {"warmup_steps": 0}, col, by=("seed",), need_success=need)
                row |= {f"{col}_warm80": at.loc[at["warmup_steps"] == 80, col].median(), f"{col}_none": at.loc[at["warmup_steps"] == 0, col].median(),
                        f"{col}_diff": t["mean_diff"], f"{col}_pairs": t["pairs"], f"{col}_p_t": t["p_t"]}
            out.append(row)
    df = pd.DataFrame(out)
    for col in ("early_spread", "early_log10_p99_max", "gap_loss"):  # Holm over the table's LRs and optimizers, per question
        p = df[f"{col}_p_t"].to_numpy(float) if len(df) else np.array([])
        ok = np.isfinite(p)
        adj = np.full(len(p), math.nan)
        if ok.any():
            adj[ok] = holm(p[ok].tolist())
        df[f"{col}_p_holm"] = adj
    return df


def main(argv: list[str] | None = None) -> int:
    args = study_arguments("The warm-up mechanism study's phase diagram and mechanism tables.", argv)
    if args is None:
        return 2
    runs = load(args.sweep_dir)
    args.out.mkdir(parents=True, exist_ok=True)
    cells, stable = phase(runs)
    sharp = sharpness(runs)
    alt = alternatives(runs, cells)
    ada = adaptive(runs)
    for name, df in (("phase", cells), ("stable_lr", stable), ("sharpness", sharp), ("alternatives", alt), ("adaptive", ada)):
        df.to_csv(args.out / f"{name}.csv", index=False)
    phase_figure(cells, args.out / "phase.png")
    trace_figure(runs, args.out / "sharpness_traces.png")
    (args.out / "mechanism.md").write_text(markdown_sections({
        "(a) Largest LR with a success rate >= 0.8 per warm-up length, and no warm-up against the longest (Fisher exact)": stable,
        "(b) Sharpness against its stability limit (medians over seeds)": sharp,
        "(c) GI-Adam and RAdam without warm-up against Adam (paired by seed against Adam with the 80-step warm-up)": alt,
        "(d) Early adaptive step and generalization gap: 80-step warm-up against none (paired by seed)": ada,
    }))
    print(f"wrote {args.out}/phase.csv, stable_lr.csv, sharpness.csv, alternatives.csv, adaptive.csv, phase.png, sharpness_traces.png, mechanism.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
