"""Sweeps through a real Slurm (hydra/launcher=submitit_slurm via hardware=slurm).

Needs the single-node cluster of scripts/slurm/up.sh (CI starts it before pytest when it runs as
root on Debian). Without a running Slurm these tests skip and say why. Jobs are tiny digits runs
on the CPU; every test uses its own sweep dir and submitit folder under tmp_path (Slurm job ids
restart at 1 when its state is wiped, and submitit would pick up an old result file).
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, bench_env, metrics, results, run_bench, wait_for


def _slurm_state() -> str | None:
    """None when a Slurm node can take jobs now, else why not."""
    if shutil.which("sinfo") is None:
        return "sinfo not found: Slurm is not installed (scripts/slurm/up.sh installs and starts it, as root on Debian)"
    try:
        p = subprocess.run(["sinfo", "-h", "-o", "%T"], capture_output=True, text=True, timeout=20)
    except (subprocess.SubprocessError, OSError) as e:
        return f"sinfo failed ({e}): Slurm is not running (start it with scripts/slurm/up.sh)"
    states = p.stdout.split()
    if p.returncode != 0 or not any(s.rstrip("*~#") in ("idle", "mixed") for s in states):
        return f"no idle Slurm node (sinfo: {p.stdout.strip() or p.stderr.strip()!r}): start Slurm with scripts/slurm/up.sh"
    return None


_why = _slurm_state()
pytestmark = pytest.mark.slow
needs_slurm = [pytest.mark.slurm, pytest.mark.skipif(_why is not None, reason=_why or "")]
# Bad input is refused before anything is submitted, so those tests need no Slurm (but the GPU-partition one asks sinfo).

# The slurm profile is a GPU profile; on the CI cluster (no GPUs) run it on one CPU per job.
CPU_JOB = ["hardware=slurm", "hardware.device=cpu", "hardware.precision=fp32", "hardware.channels_last=false",
           "hardware.deterministic=true", "hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=1",
           "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=15", "hydra.launcher.partition=debug"]
LONG = ["train.steps=120", "train.log_every=1", "train.eval_every=40", "optimizer=adam", "optimizer.lr=0.002",
        "warmup=linear", "decay=cosine"]


def _sweep_args(tmp_path: Path, *args: str) -> list[str]:
    own = [] if any(a.startswith("hydra.sweep.dir=") for a in args) else [f"hydra.sweep.dir={tmp_path / 'sweep'}"]
    return ["-m", *CPU_JOB, *args, *own, f"hydra.launcher.submitit_folder={tmp_path / 'submitit'}/%j"]


def _start(tmp_path: Path, *args: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "bench", *_sweep_args(tmp_path, *args)]
    return subprocess.Popen(cmd, cwd=ROOT, env=bench_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _array_task(tmp_path: Path, index: int, proc: subprocess.Popen, timeout: float = 120) -> str:
    """The Slurm id ('<array>_<index>') of job ``index`` of the sweep, once submitit made its folder."""

    def folder():
        assert proc.poll() is None, proc.communicate()  # the sweep ended before submitting: fail now
        found = [p.name for p in (tmp_path / "submitit").glob(f"*_{index}") if p.is_dir()]
        return found[0] if found else None

    return wait_for(folder, timeout, 0.5, f"the submitit folder of job {index} under {tmp_path / 'submitit'}")


def _wait_rows(job_dir: Path, n: int, proc: subprocess.Popen, timeout: float = 180) -> None:
    partial = job_dir / "metrics.jsonl.partial"

    def enough():
        assert proc.poll() is None, proc.communicate()
        return partial.exists() and partial.read_text().count("\n") >= n

    wait_for(enough, timeout, 0.2, f"{n} rows in {partial}")


def _scancel(*args: str) -> None:
    subprocess.run(["scancel", *args], check=True, timeout=30)


@pytest.mark.slurm
@pytest.mark.skipif(_why is not None, reason=_why or "")
def test_four_job_sweep_ends_with_four_records_and_a_report(tmp_path):
    p = run_bench(*_sweep_args(tmp_path, "train.steps=30", "train.eval_every=15", "optimizer.lr=0.05,0.1", "seed=0,1"), timeout=300)
    assert p.returncode == 0, p.stderr[-3000:]
    sweep = tmp_path / "sweep"
    recs = results(sweep)
    assert len(recs) == 4
    # it learned: chance is 0.1; the same runs locally gave val_acc 0.43-0.78 over seeds 0-4 at both LRs
    assert all(r["status"] == "completed" and r["steps"] == 30 and r["final"]["val_acc"] > 0.2 for r in recs)
    assert sorted((r["lr_base"], r["seed"]) for r in recs) == [(0.05, 0), (0.05, 1), (0.1, 0), (0.1, 1)]
    assert all(r["env"]["torch_threads"] == 1 and r["world_size"] == 1 for r in recs)  # threads = the CPUs Slurm gave the job
    # one job array of 4 tasks; its logs land in the submitit folder
    logs = sorted(tmp_path.glob("submitit/*_*/*_log.out"))
    assert len({p.parent.name.split("_")[0] for p in logs}) == 1 and len(logs) == 4
    report = sweep / "report"
    assert (report / "summary.csv").exists() and (report / "table.md").exists()
    assert "0.05" in (report / "runs.csv").read_text()


@pytest.mark.slurm
@pytest.mark.skipif(_why is not None, reason=_why or "")
def test_usr2_preemption_requeues_and_matches_uninterrupted_run(tmp_path):
    # two identical jobs run side by side (2 CPUs); job 0 is preempted, job 1 is the uninterrupted reference
    proc = _start(tmp_path, *LONG, "seed=0,0", "report=false")
    job = _array_task(tmp_path, 0, proc)
    _wait_rows(tmp_path / "sweep" / "0", 30, proc)
    _scancel("--signal=USR2", job)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    a, b = (json.loads((tmp_path / "sweep" / str(i) / "result.json").read_text()) for i in (0, 1))
    assert a["resumed_from"] is not None and 30 <= a["resumed_from"] < 120, a["resumed_from"]  # requeued, resumed from the checkpoint
    assert b["resumed_from"] is None
    assert a["status"] == b["status"] == "completed" and a["steps"] == b["steps"] == 120
    assert a["final"] == b["final"] and a["best"] == b["best"] and a["final_train_loss"] == b["final_train_loss"]
    assert (tmp_path / "sweep/0/metrics.jsonl").read_bytes() == (tmp_path / "sweep/1/metrics.jsonl").read_bytes()
    assert not (tmp_path / "sweep/0/checkpoint.pt").exists()
    log = (tmp_path / "submitit" / job / f"{job}_0_log.err").read_text()
    assert "USR2" in log and "preempted" in log  # submitit saw the signal and requeued


@pytest.mark.slurm
@pytest.mark.skipif(_why is not None, reason=_why or "")
def test_cancelled_job_fails_the_sweep_but_keeps_the_other_records(tmp_path):
    proc = _start(tmp_path, *LONG, "optimizer.lr=0.001,0.002", "report=false")
    job = _array_task(tmp_path, 0, proc)
    _wait_rows(tmp_path / "sweep" / "0", 15, proc)
    _scancel(job)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode != 0
    assert f"Job {job} " in err and "CANCELLED" in err, err[-3000:]  # the failure names the cancelled job
    # Hydra's submitit launcher returns at the first failed job; the others go on in Slurm and finish their records
    array = job.split("_")[0]

    def queue_empty():
        return not subprocess.run(["squeue", "-h", "-j", array], capture_output=True, text=True, timeout=30).stdout.strip()

    wait_for(queue_empty, 180, 1, f"the other jobs of array {array} to leave the Slurm queue")
    recs = {r["output_dir"].rsplit("/", 1)[-1]: r for r in results(tmp_path / "sweep")}
    assert recs["0"]["status"] in ("preempted", "running")  # it never ended normally
    assert recs["1"]["status"] == "completed" and metrics(tmp_path / "sweep" / "1")[-1]["step"] == 119


@pytest.mark.slurm
@pytest.mark.skipif(_why is not None, reason=_why or "")
def test_ddp_over_slurm_tasks_matches_one_process(tmp_path):
    """tasks_per_node=2: rank and world size come from SLURM (submitit's helper), gloo on the CPU."""
    run = ["train.steps=30", "train.log_every=1", "train.eval_every=10", "batch.size=64", "optimizer=adam", "optimizer.lr=0.003", "warmup=linear", "warmup.steps=5"]
    proc = _start(tmp_path, *run, "hydra.launcher.tasks_per_node=2", "report=false")
    ref = tmp_path / "ref"
    p = run_bench(*CPU_JOB, *run, f"hydra.run.dir={ref}")  # the same config in one local process
    assert p.returncode == 0, p.stderr
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    job = tmp_path / "sweep" / "0"
    r = json.loads((job / "result.json").read_text())
    assert r["status"] == "completed" and r["world_size"] == 2 and r["micro_batch_size"] == 32
    a, b = metrics(job), metrics(ref)
    assert [(x["kind"], x["step"]) for x in a] == [(x["kind"], x["step"]) for x in b]  # rank 0 alone wrote rows
    loss = lambda rows: [x["train_loss"] for x in rows if x["kind"] == "train"]  # noqa: E731
    assert loss(a) == pytest.approx(loss(b), rel=1e-4, abs=1e-5)
    assert len(list((tmp_path / "submitit").glob("*/*_1_log.out"))) == 1  # Slurm ran a second task (task 1)


@pytest.mark.parametrize(
    "args,needle",
    [
        pytest.param(["hydra.launcher.gpus_per_node=1", "hardware.device=cuda"], "hydra.launcher.gpus_per_node=1 is not allowed: 0 for partition 'debug', whose nodes have no GPUs", marks=needs_slurm),
        (["hardware.device=cuda"], "hardware.device='cuda' is not allowed: cpu when the Slurm job asks for no GPU"),
        (["hydra.launcher.tasks_per_node=2", "batch.size=63"], "batch.size=63 is not allowed: a multiple of the world size 2"),
        (["optimizer.lr=0.1,-1"], "optimizer.lr=-1 is not allowed"),
        (["hydra.sweep.dir=/etc/hostname/sweep"], "hydra.sweep.dir='/etc/hostname/sweep' is not allowed: a directory this user can create and write"),
    ],
    ids=["gpus-on-cpu-partition", "cuda-without-gpus", "world-size", "bad-grid-point", "unwritable-sweep-dir"],
)
def test_bad_input_is_refused_before_submission(tmp_path, args, needle):
    p = run_bench(*_sweep_args(tmp_path, "train.steps=20", *args), timeout=120)
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], p.stderr
    assert not (tmp_path / "submitit").exists() and not (tmp_path / "sweep").exists()  # nothing submitted, no sweep dir


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA: the refusal needs a machine without it")
def test_local_gpu_profile_without_cuda_is_refused_before_any_job(tmp_path):
    p = run_bench("-m", "hardware=gpu", "optimizer.lr=0.1,0.2", f"hydra.sweep.dir={tmp_path / 'sweep'}")
    assert p.returncode == 2
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: hardware.device='cuda' is not allowed: cpu on this machine"), p.stderr
    assert "(job #0: hardware=gpu optimizer.lr=0.1)" in lines[0]
    assert not (tmp_path / "sweep").exists()


def test_gpus_asked_per_node():
    from omegaconf import OmegaConf

    from bench.cluster import slurm_gpus_per_node

    def gpus(**kw):
        return slurm_gpus_per_node(OmegaConf.create({"gpus_per_node": None, "gpus_per_task": None, "tasks_per_node": 1, "gres": None, **kw}))

    assert gpus() == 0
    assert gpus(gpus_per_node=4) == 4
    assert gpus(gpus_per_task=1, tasks_per_node=8) == 8
    assert gpus(gres="gpu:a100:2") == 2 and gpus(gres="gpu") == 1 and gpus(gres="shard:4") == 0
