"""scripts/bench_vision.py at tiny size: it runs on the CPU and reports every column for every setting."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys

import pytest

from conftest import ROOT, bench_env

pytestmark = pytest.mark.slow


def test_bench_vision_runs_at_tiny_size(tmp_path):
    out = tmp_path / "bench.json"
    args = ["--tasks", "cifar10_resnet,imagenet_resnet50", "--device", "cpu", "--batch", "4", "--steps", "3", "--warmup", "1",
            "--image-size", "32", "--val-images", "4", "--workers", "0", "--tiny", "--json", str(out)]  # fmt: skip
    p = subprocess.run([sys.executable, str(ROOT / "scripts" / "bench_vision.py"), *args], cwd=tmp_path, env=bench_env(), capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr
    res = json.loads(out.read_text())
    rows = {(r["task"], r["setting"]): r for r in res["rows"]}
    assert set(rows) == {(t, s) for t in ("cifar10_resnet", "imagenet_resnet50") for s in ("plain", "efficient")}
    for r in rows.values():
        assert r["step"] > 0 and r["step+data"] > 0 and math.isfinite(r["step"]) and math.isfinite(r["step+data"])
        assert r["harness"] > 0 or math.isnan(r["harness"])  # nan only when timer noise exceeds the timed steps
    assert "task.loader=dataloader" in rows[("cifar10_resnet", "plain")]["options"]
    assert {"task.loader=device", "hardware.precision=bf16", "hardware.channels_last=true"} <= set(rows[("cifar10_resnet", "efficient")]["options"])
    assert set(res["efficient_over_plain"]) == {"cifar10_resnet", "imagenet_resnet50"}
    assert "stand-in data" in p.stdout
    table = [line.split()[:2] for line in p.stdout.splitlines() if re.match(r"^\w+ +(plain|efficient) ", line)]
    assert table == [["cifar10_resnet", "plain"], ["cifar10_resnet", "efficient"], ["imagenet_resnet50", "plain"], ["imagenet_resnet50", "efficient"]]
