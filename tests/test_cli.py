"""End-to-end runs of the real CLI on digits: one job, sweeps, divergence, determinism, W&B."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT, bench_env, metrics, results, run_bench

pytestmark = pytest.mark.slow
SHORT = ["train.epochs=null", "train.steps=30", "train.eval_every=15"]


def test_help_lists_groups_and_options():
    p = run_bench("--help")
    assert p.returncode == 0, p.stderr
    for group, option in [("task", "digits"), ("optimizer", "lamb"), ("warmup", "untuned_exponential"), ("decay", "inverse_sqrt"), ("batch", "sqrt"), ("hardware", "gpu"), ("logger", "wandb")]:
        assert f"{group}: " in p.stdout and option in p.stdout, (group, option)


@pytest.mark.parametrize("args", [["--help"], ["-sc", "query=bash"], ["--cfg", "job"]])
def test_help_completion_and_cfg_do_not_import_torch(args):
    """bench.cli is Hydra's entry point and imports no torch: --help, tab completion and --cfg answer at Hydra's speed."""
    code = ("import runpy, sys\nsys.argv = ['bench', *sys.argv[1:]]\ntry:\n    runpy.run_module('bench', run_name='__main__')\n"
            "except SystemExit:\n    pass\nprint('TORCH', 'torch' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code, *args], cwd=ROOT, env=bench_env(), capture_output=True, text=True, timeout=120,
                       input="" if args[0] != "-sc" else "")
    assert p.stdout.strip().splitlines()[-1] == "TORCH False", p.stdout[-500:] + p.stderr[-2000:]


def test_digits_learns(tmp_path):
    p = run_bench("optimizer=adam", "optimizer.lr=0.003", "train.epochs=3", "warmup=linear", f"hydra.run.dir={tmp_path}")
    assert p.returncode == 0, p.stderr
    r = json.loads((tmp_path / "result.json").read_text())
    assert r["status"] == "completed"
    assert r["final"]["val_acc"] > 0.85  # chance is 0.1; seen 0.947-0.986 over seeds 0-4 (a tame run: Adam at 3e-3, far from the edge)
    assert r["steps"] == r["steps_planned"] == 3 * (1079 // 64)  # 1079 training images in the stratified split
    rows = metrics(tmp_path)
    assert rows[0]["step"] == 0 and rows[0]["lr"] == pytest.approx(0.0003)  # linear warm-up starts at 0.1 x peak
    assert {"step", "epoch", "lr", "train_loss"} <= rows[0].keys() and "grad_norm" not in rows[0]  # probes are off by default
    assert rows[-1]["kind"] == "eval" and rows[-1]["step"] == r["steps"] - 1
    assert not (tmp_path / "metrics.jsonl.partial").exists()
    env = r["env"]
    assert env["torch"] and env["host"] and env["device"] == "cpu"
    assert r["config"]["optimizer"]["lr"] == 0.003 and r["choices"]["optimizer"] == "adam"


def test_sweep_records_one_complete_record_per_job(tmp_path):
    sweep = tmp_path / "sweep"
    p = run_bench("-m", *SHORT, "warmup=none,constant,linear", "batch.size=32,128", f"hydra.sweep.dir={sweep}", "report=false")
    assert p.returncode == 0, p.stderr
    rs = results(sweep)
    assert len(rs) == 6
    assert {(r["warmup"], r["batch_size"]) for r in rs} == {(w, b) for w in ("none", "constant", "linear") for b in (32, 128)}
    for r in rs:
        assert r["status"] == "completed" and r["steps"] == 30
        assert r["sweep_dir"] == str(sweep.resolve())
        rows = metrics(Path(r["output_dir"]))
        assert sum(row["kind"] == "eval" for row in rows) == 2


def test_huge_lr_diverges_and_sweep_goes_on(tmp_path):
    sweep = tmp_path / "sweep"
    p = run_bench("-m", *SHORT, "optimizer.lr=0.05,1000", f"hydra.sweep.dir={sweep}", "report=false")
    assert p.returncode == 0, p.stderr
    by_lr = {r["lr_base"]: r for r in results(sweep)}
    assert by_lr[0.05]["status"] == "completed"
    bad = by_lr[1000]
    assert bad["status"] == "diverged"
    assert bad["diverged_step"] < 30 and bad["steps"] == bad["diverged_step"] + 1
    rows = metrics(Path(bad["output_dir"]))
    assert "diverged" in rows[-1] and rows[-1]["step"] == bad["diverged_step"]


def test_joblib_sweep_limits_threads(tmp_path):
    sweep = tmp_path / "sweep"
    p = run_bench("-m", *SHORT, "seed=0,1", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", f"hydra.sweep.dir={sweep}", "report=false")
    assert p.returncode == 0, p.stderr
    rs = results(sweep)
    assert len(rs) == 2 and all(r["status"] == "completed" for r in rs)
    import os

    assert all(r["env"]["torch_threads"] == max(1, (os.cpu_count() or 1) // 2) for r in rs)


def test_same_seed_same_metrics_bit_for_bit(tmp_path):
    args = [*SHORT, "train.log_every=1", "optimizer=adam", "warmup=linear", "decay=cosine", "hardware.threads=1"]
    for name in ("a", "b"):
        p = run_bench(*args, f"hydra.run.dir={tmp_path / name}")
        assert p.returncode == 0, p.stderr
    a = (tmp_path / "a" / "metrics.jsonl").read_bytes()
    assert a == (tmp_path / "b" / "metrics.jsonl").read_bytes()
    p = run_bench(*args, "seed=1", f"hydra.run.dir={tmp_path / 'c'}")
    assert (tmp_path / "c" / "metrics.jsonl").read_bytes() != a


def test_accumulation_matches_one_big_batch(tmp_path):
    base = [*SHORT, "train.log_every=1", "batch.size=128", "hardware.threads=1"]
    for name, micro in (("big", "null"), ("acc", "32")):
        p = run_bench(*base, f"batch.micro_size={micro}", f"hydra.run.dir={tmp_path / name}")
        assert p.returncode == 0, p.stderr
    big = [r for r in metrics(tmp_path / "big") if r["kind"] == "train"]
    acc = [r for r in metrics(tmp_path / "acc") if r["kind"] == "train"]
    assert len(big) == len(acc) == 30
    # the same update up to float summation order: equal at the first step, then within a chaotic drift
    # (seen: rel 5e-4 after 30 steps on one CPU; a real bug in accumulation gives differences of 10 % and more)
    assert big[0]["train_loss"] == pytest.approx(acc[0]["train_loss"], rel=1e-5)
    for x, y in zip(big, acc):
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=1e-2)
    assert json.loads((tmp_path / "acc" / "result.json").read_text())["micro_batch_size"] == 32


def test_lr_scaling_recorded(tmp_path):
    p = run_bench(*SHORT, "batch=sqrt", "batch.size=256", "batch.base_size=64", "optimizer.lr=0.05", f"hydra.run.dir={tmp_path}")
    assert p.returncode == 0, p.stderr
    r = json.loads((tmp_path / "result.json").read_text())
    assert r["lr_base"] == 0.05 and r["lr_peak"] == pytest.approx(0.1) and r["scaling"] == "sqrt"
    assert metrics(tmp_path)[0]["lr"] == pytest.approx(0.1)


def test_sde_scaling_trains_with_scaled_betas_and_records_them(tmp_path):
    p = run_bench(*SHORT, "optimizer=adam", "batch=sde", "batch.size=256", "batch.base_size=64", "optimizer.lr=0.001", f"hydra.run.dir={tmp_path}")
    assert p.returncode == 0, p.stderr
    r = json.loads((tmp_path / "result.json").read_text())
    assert r["scaling"] == "sde" and r["lr_peak"] == pytest.approx(0.002)
    assert r["optimizer_by_model"]["model"]["betas"] == pytest.approx([0.6, 0.996]) and r["optimizer_by_model"]["model"]["eps"] == pytest.approx(5e-9)
    refused = run_bench(*SHORT, "batch=sde", "batch.size=256", f"hydra.run.dir={tmp_path / 'sgd'}")  # SGD has no betas
    assert refused.returncode == 2 and "batch.scaling='sde' is not allowed: an optimizer with betas and eps" in refused.stderr


def test_wandb_offline_run(tmp_path):
    p = run_bench(*SHORT, "logger=wandb", "warmup=constant", f"hydra.run.dir={tmp_path}")
    assert p.returncode == 0, p.stderr
    runs = list((tmp_path / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    assert list(runs[0].glob("run-*.wandb")), "W&B wrote no run file"
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "completed"
