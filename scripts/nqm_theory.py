"""A noisy-quadratic run (task=nqm) next to its closed-form expected loss, step by step.

    python scripts/nqm_theory.py RUN_DIR [--csv OUT.csv]

RUN_DIR is a job's output folder (result.json + metrics.jsonl). The LR of every update is rebuilt from
the recorded config with the harness's own plan (warm-up x decay x peak LR), so the comparison covers every
step even where metrics.jsonl has no row; where it has one, the logged LR is checked against it. Each train
row's ``exact_loss/model`` (L(theta_s), before update s) is compared with E[L]_s, and each eval row's
``val_loss`` (after update s) with E[L]_{s+1}. One run is one draw: average several seeds before reading
a difference as a disagreement (the spread over seeds is the yardstick, see tests/test_nqm.py).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from pathlib import Path
from typing import Mapping

import numpy as np
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a file: the checkout's bench and tasks
    sys.path.insert(0, str(ROOT))

from bench.plan import resolve_plan  # noqa: E402
from tasks.nqm import NoisyQuadraticTask, curvatures, expected_loss_curve  # noqa: E402

EXACT = "exact_loss/model"


def sgd_momentum(opt: Mapping) -> float:
    """The heavy-ball beta of a recorded optimizer config the closed form covers (torch.optim.SGD with
    dampening 0, no Nesterov, no weight decay, not maximizing); anything else is a ValueError."""
    if opt.get("_target_") != "torch.optim.SGD":
        raise ValueError(f"optimizer {opt.get('_target_')}: the closed form covers torch.optim.SGD only")
    for key, neutral in (("dampening", 0), ("nesterov", False), ("weight_decay", 0), ("maximize", False)):
        if opt.get(key, neutral) != neutral:
            raise ValueError(f"optimizer.{key}={opt[key]!r}: the closed form needs {neutral!r}")
    return float(opt.get("momentum", 0.0))


def theory(config: Mapping) -> tuple[np.ndarray, np.ndarray]:
    """(lrs, expected) for a resolved job config (result.json's ``config``): the LR of each of the
    planned updates, shape (T,), and E[L]_t for t = 0..T, shape (T+1,)."""
    cfg = OmegaConf.create(dict(config))
    target = f"{NoisyQuadraticTask.__module__}.{NoisyQuadraticTask.__name__}"
    if cfg.task.get("_target_") != target:
        raise ValueError(f"task._target_={cfg.task.get('_target_')!r}: the closed form is for {target} (task=nqm)")
    NoisyQuadraticTask.check_config(cfg.task)
    plan = resolve_plan(cfg, NoisyQuadraticTask.static_train_size(cfg.task), {"model": ({}, True)})
    peak, schedule = plan.peak_lrs()["model"], plan.schedules["model"]
    # the product LambdaLR forms (initial LR x multiplier), so the LRs equal the logged ones exactly
    lrs = np.array([peak * schedule(s) for s in range(plan.total_steps)])
    momentum = sgd_momentum(OmegaConf.to_container(cfg.optimizer, resolve=True))
    expected = expected_loss_curve(curvatures(cfg.task), cfg.task.noise, cfg.batch.size, lrs, momentum, cfg.task.init_scale**2)
    return lrs, expected


def compare(run_dir: Path) -> dict:
    """Rows of the run next to theory: ``train`` (step, lr, logged_lr, expected, exact) for every update
    the run made, ``eval`` (step, expected, val_loss), and ``lr_mismatch`` (largest relative difference
    between a logged LR and the rebuilt one)."""
    run_dir = Path(run_dir)
    record = json.loads((run_dir / "result.json").read_text())
    lrs, expected = theory(record["config"])
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    logged = {r["step"]: r for r in rows if r["kind"] == "train" and "lr" in r}
    steps = record.get("steps") or len(lrs)
    train = []
    for s in range(min(steps, len(lrs))):
        r = logged.get(s, {})
        train.append({"step": s, "lr": lrs[s], "logged_lr": r.get("lr"), "expected": expected[s], "exact": r.get(EXACT)})
    evals = [{"step": r["step"], "expected": expected[r["step"] + 1], "val_loss": r["val_loss"]} for r in rows if r["kind"] == "eval"]
    mismatch = max((abs(t["logged_lr"] - t["lr"]) / t["lr"] for t in train if t["logged_lr"] is not None and t["lr"] > 0), default=0.0)
    return {"train": train, "eval": evals, "lr_mismatch": mismatch, "status": record["status"]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--csv", type=Path, help="write every train step (step, lr, expected, exact) here")
    args = ap.parse_args(argv)
    out = compare(args.run_dir)
    train = out["train"]
    print(f"status {out['status']}, {len(train)} updates; largest relative difference of a logged LR from the rebuilt one: {out['lr_mismatch']:.2g}")
    print(f"{'step':>7} {'lr':>10} {'E[L] theory':>12} {'L measured':>12}")
    marks = sorted({0, *np.linspace(0, len(train) - 1, 11).astype(int).tolist()}) if train else []
    for s in marks:
        t = train[s]
        measured = "-" if t["exact"] is None else f"{t['exact']:.5g}"
        print(f"{s:>7} {t['lr']:>10.4g} {t['expected']:>12.5g} {measured:>12}")
    late = [t for t in train[3 * len(train) // 4 :] if t["exact"] is not None and t["exact"] > 0]
    if late:
        log_ratio = sum(math.log(t["exact"] / t["expected"]) for t in late) / len(late)
        print(f"last quarter: mean log(measured / theory) = {log_ratio:+.3f} over {len(late)} steps (one seed: expect noise)")
    if args.csv:
        with args.csv.open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["step", "lr", "logged_lr", "expected", "exact"])
            w.writeheader()
            w.writerows(train)
    return 0


if __name__ == "__main__":
    sys.exit(main())
