"""Preemption and resume: an interrupted run continues from its checkpoint and ends with the
same metrics.jsonl and final metrics as an uninterrupted one, byte for byte on the CPU."""

import json
import signal
import subprocess
import sys

import pytest

from conftest import ROOT, bench_env, run_bench, wait_for

pytestmark = pytest.mark.slow
ARGS = ["train.epochs=null", "train.steps=300", "train.log_every=1", "train.eval_every=50", "optimizer=adam", "optimizer.lr=0.002", "warmup=linear", "decay=cosine", "hardware.threads=1"]


def _start(out, *extra):
    return subprocess.Popen([sys.executable, "-m", "bench", *ARGS, *extra, f"hydra.run.dir={out}"], cwd=ROOT, env=bench_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_rows(out, n, proc, timeout=120):
    """Until the running job's metrics file holds ``n`` rows; polled often, as the signal must land mid-run."""
    partial = out / "metrics.jsonl.partial"

    def enough():
        assert proc.poll() is None, proc.communicate()  # ended early: fail now, with its output
        return partial.exists() and partial.read_text().count("\n") >= n

    wait_for(enough, timeout, 0.01, f"{n} rows in {partial}")


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    p = run_bench(*ARGS, f"hydra.run.dir={out}")
    assert p.returncode == 0, p.stderr
    return out


def _same_as_reference(out, reference):
    assert (out / "metrics.jsonl").read_bytes() == (reference / "metrics.jsonl").read_bytes()
    a, b = json.loads((out / "result.json").read_text()), json.loads((reference / "result.json").read_text())
    assert a["status"] == b["status"] == "completed"
    assert a["final"] == b["final"] and a["best"] == b["best"] and a["steps"] == b["steps"]
    assert not (out / "checkpoint.pt").exists()


def test_preempt_signal_checkpoints_and_resume_matches(tmp_path, reference):
    proc = _start(tmp_path)
    _wait_rows(tmp_path, 60, proc)
    proc.send_signal(signal.SIGUSR2)
    proc.communicate(timeout=60)
    assert proc.returncode == -signal.SIGUSR2  # the default handler ends the job after the checkpoint
    r = json.loads((tmp_path / "result.json").read_text())
    assert r["status"] == "preempted" and 60 <= r["steps"] < 300
    assert (tmp_path / "checkpoint.pt").exists()

    p = run_bench(*ARGS, f"hydra.run.dir={tmp_path}")
    assert p.returncode == 0, p.stderr
    assert json.loads((tmp_path / "result.json").read_text())["resumed_from"] == r["steps"]
    _same_as_reference(tmp_path, reference)


def test_killed_without_warning_restarts_from_last_checkpoint(tmp_path, reference):
    proc = _start(tmp_path, "train.checkpoint_every=40")
    _wait_rows(tmp_path, 130, proc)
    proc.kill()
    proc.communicate(timeout=60)
    assert json.loads((tmp_path / "result.json").read_text())["status"] == "running"  # the record says it never ended

    p = run_bench(*ARGS, "train.checkpoint_every=40", f"hydra.run.dir={tmp_path}")
    assert p.returncode == 0, p.stderr
    resumed = json.loads((tmp_path / "result.json").read_text())["resumed_from"]
    assert resumed is not None and resumed % 40 == 0 and resumed >= 120
    # checkpoint_every is part of the config, so compare against the reference's rows and metrics
    assert (tmp_path / "metrics.jsonl").read_bytes() == (reference / "metrics.jsonl").read_bytes()



def test_averaged_metrics_survive_a_kill(tmp_path):
    """train.average_last: the last evaluations (and the test scores already taken at the averaged steps) travel in
    the checkpoint, so a run killed after step 199 (the first averaged evaluation) ends with the same final_avg and
    test_avg as an uninterrupted one."""
    avg = ["train.average_last=3", "train.checkpoint_every=40"]
    ref = tmp_path / "ref"
    p = run_bench(*ARGS, *avg, f"hydra.run.dir={ref}")
    assert p.returncode == 0, p.stderr
    out = tmp_path / "killed"
    proc = _start(out, *avg)
    _wait_rows(out, 250, proc)
    proc.kill()
    proc.communicate(timeout=60)
    p = run_bench(*ARGS, *avg, f"hydra.run.dir={out}")
    assert p.returncode == 0, p.stderr
    a, b = json.loads((out / "result.json").read_text()), json.loads((ref / "result.json").read_text())
    assert a["resumed_from"] is not None and a["resumed_from"] >= 240  # after the test split was scored at step 199
    assert a["final_avg_steps"] == b["final_avg_steps"] == [199, 249, 299]
    assert a["final_avg"] == b["final_avg"] and a["test_avg"] == b["test_avg"] and a["test"] == b["test"]
    assert (out / "metrics.jsonl").read_bytes() == (ref / "metrics.jsonl").read_bytes()
