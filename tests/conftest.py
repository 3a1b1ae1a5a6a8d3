"""Shared test helpers: run the real CLI in a subprocess and read its records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def bench_env() -> dict:
    env = dict(os.environ)
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", HYDRA_FULL_ERROR="0", CI="true")
    env.pop("WORLD_SIZE", None)
    return env


def run_bench(*args: str, cwd: Path | None = None, timeout: float = 600, module: str = "bench") -> subprocess.CompletedProcess:
    """``python -m bench ARGS`` as a user would run it; returns the completed process (not checked)."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=cwd or ROOT,
        env=bench_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def results(sweep_dir: Path) -> list[dict]:
    """Every result.json under a sweep dir, in job-number order."""
    paths = sorted(Path(sweep_dir).rglob("result.json"), key=lambda p: str(p))
    return [json.loads(p.read_text()) for p in paths]


def metrics(job_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (Path(job_dir) / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture
def bench():
    return run_bench
