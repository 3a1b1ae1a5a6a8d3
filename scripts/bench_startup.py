"""Start-up cost of the CLI against the bare imports it cannot avoid.

    python scripts/bench_startup.py [--rounds 5]

Times, as medians over ``--rounds`` runs in fresh processes (run from the repository root):

- baseline: ``python -c "import torch, hydra"``, the floor of any job;
- ``python -m bench --help``;
- tab completion: what the bash hook of ``eval "$(warmup-bench -sc install=bash)"`` runs on
  ``warmup-bench optimizer=<TAB>``: the app with ``-sc query=bash`` and ``COMP_LINE`` set (run here as
  ``python -m bench`` so that it is this checkout's code; Hydra drops the first word of the line);
- a 1-step run: ``python -m bench train.steps=1 hardware.threads=1`` on the default (digits) task;
- a joblib sweep of two 1-step jobs on two workers (``-m hydra/launcher=joblib seed=0,1``), and from it
  what the workers add: the sweep minus the 1-step run (the launcher process imports torch for its pre-flight
  check and runs what a single run does bar the training; the two workers start side by side).

Prints each median and its ratio to the baseline; the goals are --help <= 1.3x, the 1-step
run <= 2x and a joblib worker <= 2x. Exit status 0 whatever the numbers: the script measures, it does not judge.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
GOALS = {"--help": 1.3, "1-step run": 2.0, "joblib worker": 2.0}  # issue 12 item 4


def _time(cmd: list[str], env: dict, check_out: str | None = None) -> float:
    t0 = time.perf_counter()
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    dt = time.perf_counter() - t0
    if p.returncode != 0 or (check_out is not None and check_out not in p.stdout):
        sys.exit(f"error: {' '.join(cmd)} failed (exit {p.returncode}):\n{p.stdout[-1000:]}{p.stderr[-2000:]}")
    return dt


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=5, help="fresh processes per command (the median is reported)")
    args = ap.parse_args(argv)
    py = sys.executable
    env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true", HYDRA_FULL_ERROR="1", CI="true")
    line = "warmup-bench optimizer="
    complete = dict(env, COMP_LINE=line, COMP_POINT=str(len(line)))
    with tempfile.TemporaryDirectory(prefix="bench_startup_") as tmp:
        cases = [
            ("import torch, hydra", lambda i: _time([py, "-c", "import torch, hydra"], env)),
            ("--help", lambda i: _time([py, "-m", "bench", "--help"], env, "bench")),
            ("tab completion", lambda i: _time([py, "-m", "bench", "-sc", "query=bash"], complete, "optimizer=sgd")),
            ("1-step run", lambda i: _time([py, "-m", "bench", "train.steps=1", "hardware.threads=1", f"hydra.run.dir={tmp}/run{i}"], env)),
            ("joblib sweep, 2 jobs", lambda i: _time([py, "-m", "bench", "-m", "train.steps=1", "hardware.threads=1", "seed=0,1", "report=false",
                                                      "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={tmp}/sweep{i}"], env)),
        ]
        _time([py, "-c", "import torch, hydra, sklearn"], env)  # warm the file cache once: every case then starts alike
        times: dict[str, list[float]] = {name: [] for name, _ in cases}
        for i in range(args.rounds):  # interleaved rounds: a load spike on a shared machine hits every case alike
            for name, fn in cases:
                times[name].append(fn(i))
    times["joblib worker"] = [s - r for s, r in zip(times["joblib sweep, 2 jobs"], times["1-step run"])]
    base = statistics.median(times["import torch, hydra"])
    print(f"{'command':<22}{'median s':>10}{'min s':>8}{'ratio':>8}  goal")
    for name, ts in times.items():
        med = statistics.median(ts)
        goal = f"<= {GOALS[name]}x" if name in GOALS else ""
        print(f"{name:<22}{med:>10.2f}{min(ts):>8.2f}{med / base:>7.2f}x  {goal}")
    print(f"({args.rounds} rounds, {os.cpu_count()} CPU cores, python {sys.version.split()[0]})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
