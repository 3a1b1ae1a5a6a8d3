"""What a user sees and relies on: the job's log, the warm-up logged at every step, rerun identity,
the Python API and the final weights."""

from __future__ import annotations

import json

import pytest
import torch

from bench.errors import ConfigError
from bench.records import config_hash
from conftest import metrics, run_bench

ONE = "hardware.threads=1"


@pytest.mark.slow
def test_a_run_says_what_it_is_doing(tmp_path):
    p = run_bench("train.steps=1", ONE, f"hydra.run.dir={tmp_path}")
    assert p.returncode == 0, p.stderr
    log = (tmp_path / "app.log").read_text()
    for text in ("job dir", "task digits | optimizer sgd | warmup none", "decay constant", "batch 64 (base 64, scaling none)",
                 "lr base 0.1, peak 0.1", "1 steps", "device cpu", "threads", "stalled (not a success) after 1/1 steps", "final: val_loss",
                 f"record: {tmp_path / 'result.json'}"):
        assert text in log, text
    assert "job dir" in p.stdout  # the terminal shows what app.log holds


@pytest.mark.slow
def test_progress_lines_when_not_on_a_terminal_and_a_diverged_run_says_why(tmp_path):
    p = run_bench("train.steps=100", "train.log_every=1", ONE, f"hydra.run.dir={tmp_path / 'a'}")
    lines = [x for x in (tmp_path / "a" / "app.log").read_text().splitlines() if "bench.progress" in x]
    assert 9 <= len(lines) <= 11 and "step 100/100 (100%)" in lines[-1]  # about every 10% of the run
    p = run_bench("optimizer.lr=1e6", "train.steps=50", ONE, f"hydra.run.dir={tmp_path / 'b'}")
    assert p.returncode == 0
    assert "[WARNING] - diverged at step" in (tmp_path / "b" / "app.log").read_text()


@pytest.mark.slow
def test_every_warmup_step_is_logged(tmp_path):
    p = run_bench("warmup=linear", "warmup.steps=15", "train.steps=60", "train.log_every=10", ONE, f"hydra.run.dir={tmp_path}")
    assert p.returncode == 0, p.stderr
    steps = [r["step"] for r in metrics(tmp_path) if r["kind"] == "train"]
    assert steps == [*range(16), 20, 30, 40, 50, 59]  # every warm-up step and the first at the peak: the switch is drawn where it is


def test_rerun_identity_ignores_only_what_cannot_change_a_result():
    base = {"seed": 0, "report": True, "logger": {}, "train": {"steps": 10, "force": False, "checkpoint_every": 0}, "optimizer": {"lr": 0.1}}
    same = [
        {**base, "report": False},
        {**base, "logger": {"wandb": {"mode": "offline"}}},
        {**base, "train": {**base["train"], "force": True, "checkpoint_every": 5}},
    ]
    for other in same:
        assert config_hash(other) == config_hash(base), other
    for other in ({**base, "seed": 1}, {**base, "optimizer": {"lr": 0.2}}, {**base, "train": {**base["train"], "steps": 11}}):
        assert config_hash(other) != config_hash(base), other


@pytest.mark.slow
def test_rerun_with_report_or_logger_changes_skips_and_a_training_key_reruns(tmp_path):
    args = ["-m", "train.steps=10", ONE, f"hydra.sweep.dir={tmp_path}"]
    assert run_bench(*args).returncode == 0
    first = json.loads((tmp_path / "0" / "result.json").read_text())
    again = run_bench(*args, "report=false", "logger=tensorboard", "train.checkpoint_every=5")
    assert again.returncode == 0 and "skipped" in again.stdout + again.stderr
    assert json.loads((tmp_path / "0" / "result.json").read_text())["started"] == first["started"]
    changed = run_bench(*args, "optimizer.lr=0.05")
    assert changed.returncode == 0 and "skipped" not in changed.stdout + changed.stderr
    assert json.loads((tmp_path / "0" / "result.json").read_text())["lr_base"] == 0.05


@pytest.mark.slow
def test_python_api_runs_one_job_and_refuses_bad_input(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    from bench import run

    r = run(["train.steps=20", ONE], output_dir=tmp_path / "a")
    assert r["status"] == "completed" and r["steps"] == 20
    assert json.loads((tmp_path / "a" / "result.json").read_text())["config_hash"] == r["config_hash"]
    assert (tmp_path / "a" / ".hydra" / "config.yaml").exists()
    with pytest.raises(ConfigError, match="train.steps=-1"):
        run(["train.steps=-1"], output_dir=tmp_path / "b")
    assert not (tmp_path / "b").exists()  # refused before anything is written


@pytest.mark.slow
def test_final_weights_on_request(tmp_path):
    p = run_bench("train.steps=10", "train.save_final=true", ONE, f"hydra.run.dir={tmp_path}")
    assert p.returncode == 0, p.stderr
    state = torch.load(tmp_path / "final.pt", weights_only=True)
    assert set(state) == {"models", "optimizers"} and "conv1.weight" in state["models"]["model"]
    assert not (tmp_path / "final.pt").with_name("final.pt.tmp").exists()
    p = run_bench("train.steps=10", ONE, f"hydra.run.dir={tmp_path / 'no'}")
    assert not (tmp_path / "no" / "final.pt").exists()  # off by default
