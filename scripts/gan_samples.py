"""Sample-grid figure of a GAN sweep: the generated samples of the best and the worst setting.

    python scripts/gan_samples.py SWEEP_DIR --out FIG.png [--title TEXT]

A *setting* is every config value a run was launched with except the seed (read from the
``overrides`` in each ``result.json``). Settings are ranked by the mean over seeds of the task's
metrics (each record's ``metric_block``: the final evaluation, or the mean of the last K), in the task's order
(``metric_modes``; ring: modes covered, then high-quality fraction, then mode KL; digits: Fréchet distance, then
label entropy); a seed whose run did not
finish (diverged, failed) ranks the setting last. The figure has one row per chosen setting and
one panel per seed, drawn from ``samples.pt`` (the last evaluation's fixed-noise samples, written
by the task): 2-D scatter plots with the mixture's centres and 3σ circles, or a 10 x 10 grid of
digit images.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from bench.records import measured  # noqa: E402



def load_runs(sweep: Path) -> list[dict]:
    """Every finished-or-not run under ``sweep`` with its setting key, seed and job directory."""
    runs = []
    for path in sorted(sweep.rglob("result.json")):
        r = json.loads(path.read_text())
        setting = tuple(sorted(o for o in r.get("overrides", []) if not o.startswith("seed=") and not o.startswith("hydra.")))
        runs.append({"dir": path.parent, "setting": setting, "seed": r["seed"], "result": r})
    return runs


def values(result: dict) -> dict:
    """A record's metric values from the block it names: the final evaluation, or the mean of the last K (train.average_last)."""
    return result.get(result.get("metric_block") or "final") or {}


def score(runs: list[dict]) -> tuple:
    """Sort key of a setting (smaller is better): unfinished first counts, then the metrics in order."""
    modes = runs[0]["result"]["metric_modes"]
    unfinished = sum(not measured(r["result"]) for r in runs)
    key = [unfinished]
    for metric, mode in modes.items():
        vals = [values(r["result"]).get(metric) for r in runs if measured(r["result"])]
        vals = [v for v in vals if isinstance(v, (int, float)) and math.isfinite(v)]
        mean = sum(vals) / len(vals) if vals else math.inf
        key.append(-mean if mode == "max" and vals else mean)
    return tuple(key)


def rank_settings(runs: list[dict]) -> list[tuple[tuple, list[dict]]]:
    """(setting, its runs sorted by seed), best first."""
    by = {}
    for r in runs:
        by.setdefault(r["setting"], []).append(r)
    items = [(s, sorted(rs, key=lambda r: r["seed"])) for s, rs in by.items()]
    return sorted(items, key=lambda it: score(it[1]))


def label(setting: tuple, runs: list[dict]) -> str:
    """A short description of the setting and its mean metrics."""
    keep = [o for o in setting if not o.startswith(("experiment=", "task=", "train.", "report="))]
    modes = runs[0]["result"]["metric_modes"]
    done = [r for r in runs if measured(r["result"])]
    parts = []
    for m in modes:
        vals = [values(r["result"])[m] for r in done if m in values(r["result"])]
        if vals:
            parts.append(f"{m} {sum(vals) / len(vals):.3g}")
    status = ", ".join(sorted({r["result"]["status"] for r in runs}))
    return " ".join(keep) + "\n" + "; ".join(parts) + f" ({status})"


def draw_panel(ax, run: dict) -> None:
    r = run["result"]
    ax.set_xticks([])
    ax.set_yticks([])
    path = run["dir"] / "samples.pt"
    if not path.exists():
        ax.text(0.5, 0.5, f"no samples\n({r['status']})", ha="center", va="center", transform=ax.transAxes)
        return
    x = torch.load(path, weights_only=True)
    status = r["status"] if r["status"] != "completed" else ""
    ax.set_title(f"seed {run['seed']} {status}".strip(), fontsize=8)
    if x.ndim == 2:  # 2-D mixture
        info = r["task_info"]
        centres = torch.tensor(info["centres"])
        sigma = r["config"]["task"]["sigma"]
        lim = centres.abs().max().item() * 1.5
        for c in centres.tolist():
            ax.add_patch(plt.Circle(c, 3 * sigma, fill=False, color="tab:red", lw=0.6))
        ax.scatter(x[:, 0].clamp(-lim, lim), x[:, 1].clamp(-lim, lim), s=1, alpha=0.3, color="tab:blue")
        ax.set_xlim(-lim, lim)
        ax.set_ylim(-lim, lim)
        ax.set_aspect("equal")
    else:  # images (N, 1, H, W) in [0, 1]
        n = min(100, x.shape[0])
        side = math.isqrt(n)
        imgs = torch.nn.functional.pad(x[: side * side, 0], (0, 1, 0, 1), value=0.25)  # a grey line between digits
        h, w = imgs.shape[1:]
        grid = imgs.reshape(side, side, h, w).permute(0, 2, 1, 3).reshape(side * h, side * w)
        ax.imshow(grid.numpy(), cmap="gray_r", vmin=0, vmax=1)


def figure(sweep: Path, out: Path, title: str | None = None) -> list[tuple]:
    """Write the best/worst sample grid; returns the two (setting, runs) pairs drawn."""
    ranked = rank_settings(load_runs(sweep))
    if not ranked:
        raise SystemExit(f"error: no result.json under {sweep}")
    chosen = [("best", *ranked[0]), ("worst", *ranked[-1])] if len(ranked) > 1 else [("only", *ranked[0])]
    cols = max(len(rs) for _, _, rs in chosen)
    fig, axes = plt.subplots(len(chosen), cols, figsize=(3.2 * cols + 1.5, 3.4 * len(chosen) + 0.6), squeeze=False)
    for row, (which, setting, runs) in enumerate(chosen):
        for col in range(cols):
            ax = axes[row][col]
            if col < len(runs):
                draw_panel(ax, runs[col])
            else:
                ax.axis("off")
        axes[row][0].set_ylabel(f"{which}:\n" + label(setting, runs).replace("; ", "\n").replace(" task.", "\ntask.").replace(" warmup=", "\nwarmup="), fontsize=8)
    if title:
        fig.suptitle(title, fontsize=9, wrap=True)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return [(s, rs) for _, s, rs in chosen]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("sweep_dir", type=Path)
    ap.add_argument("--out", type=Path, required=True, help="PNG path")
    ap.add_argument("--title", default=None)
    a = ap.parse_args(argv)
    for which, (setting, runs) in zip(("best", "worst"), figure(a.sweep_dir, a.out, a.title)):
        print(f"{which}: {' '.join(setting)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
