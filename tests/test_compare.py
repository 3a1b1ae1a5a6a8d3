"""bench.compare: two sweeps of one grid agree within their intervals; a changed sweep does not."""

from __future__ import annotations

import pytest

from conftest import run_bench

GRID = ["-m", "optimizer=adam", "optimizer.lr=0.001,0.003", "train.eval_every=1000", "hardware.threads=1", "report=false"]


@pytest.mark.slow
def test_compare_agrees_on_reseeded_sweeps_and_flags_a_changed_one(tmp_path):
    for name, extra in (("a", ["seed=0,1,2", "train.steps=60"]), ("b", ["seed=3,4,5", "train.steps=60"]), ("short", ["seed=0,1,2", "train.steps=3"])):
        p = run_bench(*GRID, *extra, f"hydra.sweep.dir={tmp_path / name}")
        assert p.returncode == 0, p.stderr
    same = run_bench(str(tmp_path / "a"), str(tmp_path / "a"), module="bench.compare")
    assert same.returncode == 0 and "2 of 2 cells agree" in same.stdout, same.stdout + same.stderr
    reseeded = run_bench(str(tmp_path / "a"), str(tmp_path / "b"), module="bench.compare")
    assert reseeded.returncode == 0 and "2 of 2 cells agree" in reseeded.stdout, reseeded.stdout  # other seeds, same grid
    changed = run_bench(str(tmp_path / "a"), str(tmp_path / "short"), module="bench.compare")
    assert changed.returncode == 1 and changed.stdout.count("disagree: ") == 2, changed.stdout  # 3 steps instead of 60
    assert "optimizer.lr=0.001" in changed.stdout or "lr_base=0.001" in changed.stdout
    missing = run_bench(str(tmp_path / "a"), str(tmp_path / "nowhere"), module="bench.compare")
    assert missing.returncode == 2 and missing.stderr.startswith("error: ")
