"""scripts/gan_samples.py: ranking of settings over seeds and the best/worst figure, on a hand-made sweep."""

import importlib.util
import json
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
spec = importlib.util.spec_from_file_location("gan_samples", ROOT / "scripts" / "gan_samples.py")
gan_samples = importlib.util.module_from_spec(spec)
spec.loader.exec_module(gan_samples)

MODES = {"modes": "max", "hq_frac": "max", "mode_kl": "min"}


def fake_run(root: Path, job: int, lr: str, seed: int, status: str, final: dict) -> None:
    d = root / str(job)
    d.mkdir(parents=True)
    r = {
        "overrides": [f"optimizer.lr={lr}", f"seed={seed}"],
        "seed": seed,
        "status": status,
        "final": final,
        "metric_modes": MODES,
        "task_info": {"centres": [[2.0, 0.0], [-2.0, 0.0]]},
        "config": {"task": {"sigma": 0.05}},
    }
    (d / "result.json").write_text(json.dumps(r))
    torch.save(torch.randn(50, 2), d / "samples.pt")


def test_best_and_worst_settings(tmp_path):
    sweep = tmp_path / "sweep"
    good = {"modes": 2.0, "hq_frac": 0.9, "mode_kl": 0.0}
    tie = {"modes": 2.0, "hq_frac": 0.5, "mode_kl": 0.0}
    bad = {"modes": 1.0, "hq_frac": 1.0, "mode_kl": 0.69}
    fake_run(sweep, 0, "0.1", 0, "completed", tie)
    fake_run(sweep, 1, "0.1", 1, "completed", tie)
    fake_run(sweep, 2, "0.2", 0, "completed", good)
    fake_run(sweep, 3, "0.2", 1, "completed", good)
    fake_run(sweep, 4, "0.3", 0, "collapsed", bad)
    fake_run(sweep, 5, "0.3", 1, "collapsed", bad)
    fake_run(sweep, 6, "0.4", 0, "completed", good)
    fake_run(sweep, 7, "0.4", 1, "diverged", {})  # an unfinished seed ranks its setting last
    ranked = gan_samples.rank_settings(gan_samples.load_runs(sweep))
    assert [s for s, _ in ranked] == [("optimizer.lr=0.2",), ("optimizer.lr=0.1",), ("optimizer.lr=0.3",), ("optimizer.lr=0.4",)]
    out = tmp_path / "fig.png"
    chosen = gan_samples.figure(sweep, out, "test")
    assert [s for s, _ in chosen] == [("optimizer.lr=0.2",), ("optimizer.lr=0.4",)]
    assert out.stat().st_size > 10_000
