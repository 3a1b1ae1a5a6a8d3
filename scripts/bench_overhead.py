"""Harness overhead: the suite's training loop against a bare hand-written PyTorch loop.

Both loops train the same model object on the same batches with the same optimizer
class and end with one evaluation; the harness adds its LR scheduler, logging rows,
divergence checks and bookkeeping (and, in the probe cases, the probes of ``diagnostics``).
Rounds alternate (harness, bare, harness, ...) in one process so drift in machine load hits
both; the printed ratio is the median over rounds of harness steps/s / bare steps/s.
Target: >= 0.97 with ``diagnostics=none``. The probe cases state what the two shipped probes
(grad_norm, update_ratio) cost at every=1 and every=50. A case with probes also times the same
harness without them in each round; ``probes`` is the median of harness-with / harness-without steps/s,
what the probes alone cost (target for the curvature and noise probes at their default cadence: >= 1/1.1,
i.e. at most 10 % more time; docs/diagnostics.md); ``timed`` is the median of the probes' own seconds over the
rest of the loop, timed inside the loop (``throughput.probe_overhead`` in a run's record), which machine load
moves less than a ratio of two separate runs.

    python scripts/bench_overhead.py                          # digits at batch 64 and 1024, probes at batch 64
    python scripts/bench_overhead.py --case lm="task=lm_preln"  # any task via Hydra overrides
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.app import build_plan, build_task  # noqa: E402
from bench.checkpoint import PreemptFlag  # noqa: E402
from bench.distributed import Dist  # noqa: E402
from bench.loggers import Loggers  # noqa: E402
from bench.loop import build_optimizers, train  # noqa: E402
from bench.plan import validate  # noqa: E402
from bench.probes import build_probes  # noqa: E402

PROBES = "diagnostics=[grad_norm,update_ratio]"
DEFAULT_CASES = {
    "digits-b64": "task=digits batch.size=64",
    "digits-b1024": "task=digits batch.size=1024 batch.base_size=1024",
    "b64+probes/1": f"task=digits batch.size=64 {PROBES} diagnostics.grad_norm.every=1 diagnostics.update_ratio.every=1",
    "b64+probes/50": f"task=digits batch.size=64 {PROBES} diagnostics.grad_norm.every=50 diagnostics.update_ratio.every=50",
}


def _bare(task, plan, steps: int, batch_size: int) -> float:
    """A plain loop: zero_grad, forward, backward, step; then one evaluation. Returns seconds."""
    models = task.models
    opts = build_optimizers(plan, models)
    t0 = time.perf_counter()
    done, epoch = 0, 0
    while done < steps:
        for batch in task.train_batches(batch_size, epoch, 0, torch.Generator().manual_seed(epoch)):
            for name, model in models.items():
                opts[name].zero_grad(set_to_none=True)
                res = task.loss(name, model, batch)
                (res[0] if isinstance(res, tuple) else res).backward()
                opts[name].step()
            done += 1
            if done == steps:
                break
        epoch += 1
    with torch.no_grad():
        task.evaluate()
    return time.perf_counter() - t0


def _harness(task, plan, probes, probe_share: list | None = None) -> float:
    with tempfile.TemporaryDirectory() as out:
        logger = Loggers(Path(out), [])
        outcome = train(plan, task, logger, Dist(), Path(out), PreemptFlag(), probes)
        logger.close({})
    assert outcome.status == "completed", outcome
    if probe_share is not None:  # the probes' own seconds over the rest of the loop (the record's throughput.probe_overhead)
        probe_share.append(outcome.probe_time_s / (outcome.train_time_s - outcome.probe_time_s))
    return outcome.train_time_s


def measure(name: str, overrides: list[str], steps: int, rounds: int, threads: int | None) -> dict:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, "train.epochs=null", "train.diverge_factor=null", f"train.steps={steps}", f"train.eval_every={steps}", "report=false"])
    validate(cfg)
    if threads:
        torch.set_num_threads(threads)
    task = build_task(cfg, torch.device(cfg.hardware.device))
    plan = build_plan(cfg, task)
    units = task.units_per_example()
    _bare(task, plan, min(steps, 20), cfg.batch.size)  # warm up allocator and kernels
    probed = bool(build_probes(cfg.get("diagnostics")))
    h, b, p, share = [], [], [], []
    for _ in range(rounds):
        h.append(steps / _harness(task, plan, build_probes(cfg.get("diagnostics")), share))
        b.append(steps / _bare(task, plan, steps, cfg.batch.size))
        if probed:  # the same harness without probes: what the probes alone cost
            p.append(steps / _harness(task, plan, []))
    ratios = [x / y for x, y in zip(h, b)]
    row = {"case": name, "batch": cfg.batch.size, "harness_steps_s": statistics.median(h), "bare_steps_s": statistics.median(b), "ratio": statistics.median(ratios), "min_ratio": min(ratios)}
    if probed:
        row["probe_ratio"] = statistics.median(x / y for x, y in zip(h, p))
        row["probe_overhead"] = statistics.median(share)
    for unit, per in units.items():
        row[f"harness_{unit}_s"] = row["harness_steps_s"] * cfg.batch.size * per
        row[f"bare_{unit}_s"] = row["bare_steps_s"] * cfg.batch.size * per
    return row


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", action="append", default=[], metavar="NAME=OVERRIDES", help="a case: name and space-separated Hydra overrides")
    ap.add_argument("--steps", type=int, default=200, help="optimizer steps per round")
    ap.add_argument("--rounds", type=int, default=5, help="alternating rounds per case")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = ap.parse_args(argv)
    cases = dict(c.split("=", 1) for c in args.case) if args.case else DEFAULT_CASES
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rounds} rounds x {args.steps} steps")
    print(f"{'case':<16} {'batch':>6} {'harness it/s':>13} {'bare it/s':>10} {'ratio':>7} {'min':>6} {'probes':>7} {'timed':>6}  extra")
    worst = 1.0
    for name, ov in cases.items():
        r = measure(name, ov.split(), args.steps, args.rounds, args.threads)
        extra = "  ".join(f"{k}={v:,.0f}" for k, v in r.items() if k.endswith("_s") and "steps" not in k)
        probes = f"{r['probe_ratio']:.3f}" if "probe_ratio" in r else "-"
        timed = f"{r['probe_overhead']:.1%}" if "probe_overhead" in r else "-"
        print(f"{name:<16} {r['batch']:>6} {r['harness_steps_s']:>13.1f} {r['bare_steps_s']:>10.1f} {r['ratio']:>7.3f} {r['min_ratio']:>6.3f} {probes:>7} {timed:>6}  {extra}", flush=True)
        if "diagnostics" not in ov:
            worst = min(worst, r["ratio"])
    print(f"worst median ratio {worst:.3f} (target >= 0.97 without probes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
