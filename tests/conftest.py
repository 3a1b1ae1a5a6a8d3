"""Shared test helpers: run the real CLI in a subprocess, read its records, wait for a condition,
load a script from scripts/."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from types import ModuleType
from typing import Callable, TypeVar

import pytest

ROOT = Path(__file__).resolve().parent.parent
T = TypeVar("T")


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


def wait_for(predicate: Callable[[], T], timeout_s: float, interval_s: float, what: str) -> T:
    """Call ``predicate`` every ``interval_s`` seconds until it returns a truthy value, and return that value.

    Raises AssertionError naming ``what`` after ``timeout_s`` seconds. The predicate may itself raise
    (e.g. an assertion that the watched process is still alive) to fail at once instead of waiting out
    the timeout. It is always called at least once, and once more after the deadline, so a slow machine
    that reaches the condition just as time runs out still passes.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() >= deadline:
            value = predicate()
            if value:
                return value
            raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
        time.sleep(interval_s)


def load_script(name: str) -> ModuleType:
    """``scripts/<name>.py`` as a module (scripts/ is not a package; its tools are not part of bench or tasks)."""
    key = f"scripts_{name}"
    if key not in sys.modules:
        spec = importlib.util.spec_from_file_location(key, ROOT / "scripts" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[key] = module
        spec.loader.exec_module(module)
    return sys.modules[key]
