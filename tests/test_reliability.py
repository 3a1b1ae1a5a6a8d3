"""Nothing lost, nothing mixed, nothing stuck at ``running`` (issue 11).

One writer per job directory (an OS lock that dies with its holder); a publish order that a kill
at any instant cannot turn into a short ``completed`` record; a record that says how every job
ended (failed with its reason, or preempted); launcher workers that die with their launcher;
checkpoints that name themselves when unreadable and never leave temporary files behind.
"""

from __future__ import annotations

import errno
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bench import checkpoint as ckpt
from bench.lock import Busy, JobLock, is_locked
from bench.records import METRICS, PARTIAL, MetricsWriter, read_metrics, write_json_atomic
from conftest import ROOT, bench_env

FAST = ["train.steps=100", "train.log_every=1", "train.eval_every=50", "train.checkpoint_every=40", "hardware.threads=1"]
LONG = ["train.steps=100000", "train.log_every=1", "train.eval_every=1000", "hardware.threads=1"]


def _bench(*args, env=None, timeout=300):
    return subprocess.run([sys.executable, "-m", "bench", *args], cwd=ROOT, env={**bench_env(), **(env or {})},
                          capture_output=True, text=True, timeout=timeout)


def _start(*args, env=None):
    return subprocess.Popen([sys.executable, "-m", "bench", *args], cwd=ROOT, env={**bench_env(), **(env or {})},
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)


def _wait_rows(partial: Path, n: int, proc, timeout=180):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if partial.exists() and partial.read_text().count("\n") >= n:
            return
        assert proc.poll() is None, proc.communicate()
        time.sleep(0.05)
    raise AssertionError(f"no {n} rows in {partial}")


def _result(d: Path) -> dict:
    return json.loads((d / "result.json").read_text())


def _error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


def _temps(d: Path) -> list[str]:
    return sorted(p.name for p in d.glob(".*.tmp*"))


# ---------------------------------------------------------------- in-process units


def _hold_lock(d: Path):
    code = f"import time; from bench.lock import JobLock; JobLock({str(d)!r}).acquire(); print('held', flush=True); time.sleep(300)"
    p = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


def test_lock_names_its_holder_and_dies_with_it(tmp_path):
    holder = _hold_lock(tmp_path)
    try:
        assert is_locked(tmp_path)
        with pytest.raises(Busy) as e:
            JobLock(tmp_path).acquire()
        assert f"pid {holder.pid} on host {socket.gethostname()}" in str(e.value) and str(tmp_path) in str(e.value)
    finally:
        holder.kill()  # SIGKILL: no cleanup runs, the kernel drops the lock
        holder.wait()
    assert not is_locked(tmp_path)
    lock = JobLock(tmp_path).acquire()
    lock.release()


def test_resume_after_metrics_were_published_keeps_the_rows(tmp_path):
    """A job killed after publishing metrics.jsonl but before its final record: the rerun resumes from the checkpoint's offset."""
    w = MetricsWriter(tmp_path)
    for s in range(4):
        w.write({"kind": "train", "step": s})
    offset = w.flush()  # the checkpoint's offset after step 3
    w.write({"kind": "train", "step": 4})
    w.close()
    assert not (tmp_path / PARTIAL).exists()

    w = MetricsWriter(tmp_path, resume_offset=offset)
    w.write({"kind": "train", "step": 4})
    w.write({"kind": "train", "step": 5})
    w.close()
    assert [r["step"] for r in read_metrics(tmp_path / METRICS)] == [0, 1, 2, 3, 4, 5]


def test_resume_refuses_a_metrics_file_shorter_than_the_checkpoint(tmp_path):
    (tmp_path / PARTIAL).write_text('{"step": 0}\n')
    with pytest.raises(RuntimeError, match="expects 100 bytes of rows, found 12"):
        MetricsWriter(tmp_path, resume_offset=100)
    assert (tmp_path / PARTIAL).stat().st_size == 12  # never padded


def _enospc(*a, **k):
    raise OSError(errno.ENOSPC, "No space left on device")


def test_failed_saves_leave_no_temporary_file(tmp_path, monkeypatch):
    real_save = torch.save

    def half_save(obj, f, *a, **k):
        if hasattr(f, "write"):
            f.write(b"half a checkpoint")
        else:
            Path(f).write_bytes(b"half a checkpoint")
        _enospc()

    monkeypatch.setattr(torch, "save", half_save)
    model = torch.nn.Linear(2, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
    with pytest.raises(OSError):
        ckpt.save(tmp_path, "h", 1, {"model": model}, {"model": opt}, {"model": sched}, 0, {})
    monkeypatch.setattr(torch, "save", real_save)
    monkeypatch.setattr(os, "fsync", _enospc)
    with pytest.raises(OSError):
        write_json_atomic(tmp_path / "result.json", {"status": "failed"})
    assert list(tmp_path.iterdir()) == []


def test_unreadable_checkpoint_is_named_and_discarded_on_request(tmp_path):
    path = tmp_path / ckpt.FILE
    path.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(ckpt.CheckpointError, match=f"{path}: unreadable checkpoint .*train.force=true discards it"):
        ckpt.load(tmp_path, "h")
    assert ckpt.discard_unreadable(tmp_path).startswith(str(path))
    assert not path.exists()
    assert ckpt.load(tmp_path, "h") is None


def test_sigint_is_a_preemption_and_a_second_one_stops_at_once():
    flag = ckpt.PreemptFlag()
    flag.install()
    try:
        os.kill(os.getpid(), signal.SIGINT)
        assert flag.is_set()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
    finally:
        flag._signum = None  # restore the handlers without re-delivering
        flag.hand_over()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


# ---------------------------------------------------------------- the real CLI

@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    p = _bench(*FAST, f"hydra.run.dir={out}")
    assert p.returncode == 0, p.stderr
    return out


@pytest.mark.slow
@pytest.mark.parametrize("point", ["checkpoint-tmp", "metrics", "result"])
def test_kill_at_each_publish_point_loses_nothing(tmp_path, reference, point):
    """SIGKILL at each point of the publish sequence; the rerun ends with every row, once, and no leftovers."""
    p = _bench(*FAST, f"hydra.run.dir={tmp_path}", env={"BENCH_TEST_KILL_AT": point})
    assert p.returncode == -signal.SIGKILL, p.stderr
    r = _result(tmp_path)
    if point == "checkpoint-tmp":  # killed inside the first save, at step 40
        assert r["status"] == "running" and len(_temps(tmp_path)) == 1 and _temps(tmp_path)[0].startswith(".checkpoint.pt.tmp")
        assert not (tmp_path / "checkpoint.pt").exists()
    elif point == "metrics":  # published rows, running record, checkpoint of step 80
        assert r["status"] == "running" and (tmp_path / METRICS).exists() and (tmp_path / "checkpoint.pt").exists()
    else:  # final record written, checkpoint not yet removed
        assert r["status"] == "completed" and (tmp_path / "checkpoint.pt").exists()

    p = _bench(*FAST, f"hydra.run.dir={tmp_path}")
    assert p.returncode == 0, p.stderr
    r = _result(tmp_path)
    assert r["status"] == "completed" and r["steps"] == 100
    assert r["resumed_from"] == {"checkpoint-tmp": None, "metrics": 80, "result": None}[point]
    assert (tmp_path / METRICS).read_bytes() == (reference / METRICS).read_bytes()
    assert r["final"] == _result(reference)["final"]
    assert not (tmp_path / "checkpoint.pt").exists() and not (tmp_path / PARTIAL).exists() and _temps(tmp_path) == []


@pytest.mark.slow
def test_second_writer_is_refused_and_a_killed_holder_blocks_nothing(tmp_path):
    a = _start(*LONG, f"hydra.run.dir={tmp_path}")
    try:
        _wait_rows(tmp_path / PARTIAL, 20, a)
        p = _bench("train.steps=30", "train.log_every=1", "seed=1", "hardware.threads=1", f"hydra.run.dir={tmp_path}")
        assert p.returncode == 2
        lines = _error_lines(p.stderr)
        assert len(lines) == 1 and f"in use by pid {a.pid} on host {socket.gethostname()}" in lines[0], p.stderr
        r = _result(tmp_path)
        assert r["status"] == "running" and r["seed"] == 0
        train = [row["step"] for row in read_metrics(tmp_path / PARTIAL) if row["kind"] == "train"]
        assert len(train) >= 20 and train == list(range(len(train)))  # on a slow machine the holder may also have evaluated
    finally:
        os.killpg(a.pid, signal.SIGKILL)
        a.communicate()
    p = _bench("train.steps=30", "train.log_every=1", "seed=1", "hardware.threads=1", f"hydra.run.dir={tmp_path}")
    assert p.returncode == 0, p.stderr
    assert f"the job run by pid {a.pid}" in p.stdout + p.stderr and "died without a final record" in p.stdout + p.stderr
    r = _result(tmp_path)
    assert r["status"] == "completed" and r["seed"] == 1
    assert [row["step"] for row in read_metrics(tmp_path / METRICS) if row["kind"] == "train"] == list(range(30))


BOOM = '''
from tasks.digits import DigitsTask


class BoomTask(DigitsTask):
    """Digits that raises in its 31st loss call under seed 0: an exception in training."""

    calls = 0

    def loss(self, name, model, batch):
        BoomTask.calls += 1
        if BoomTask.calls > 30 and self.seed == 0:
            raise RuntimeError("boom at run time")
        return super().loss(name, model, batch)


class BoomLogger:
    def __init__(self, *, ctx, phase):
        self.phase = phase

    def open(self, resume_offset):
        if self.phase == "open":
            raise ConnectionError("no network")

    def log(self, row):
        if self.phase == "log" and row["step"] == 5:
            raise OSError("log boom")

    def offset(self):
        return None

    def close(self, result):
        if self.phase == "close":
            raise RuntimeError("close boom")
'''


@pytest.fixture
def plugins(tmp_path):
    mod = tmp_path / "mod"
    mod.mkdir()
    (mod / "boom.py").write_text(BOOM)
    return {"PYTHONPATH": os.pathsep.join([str(mod), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}


@pytest.mark.slow
def test_exception_in_training_is_recorded_and_the_sweep_goes_on(tmp_path, plugins):
    single = tmp_path / "single"
    p = _bench("task._target_=boom.BoomTask", *FAST, f"hydra.run.dir={single}", env=plugins)
    assert p.returncode == 1
    r = _result(single)
    assert r["status"] == "failed" and r["error"] == "RuntimeError: boom at run time" and "Traceback" in r["traceback"]
    assert [row["step"] for row in read_metrics(single / METRICS) if row["kind"] == "train"] == list(range(30))

    sweep = tmp_path / "sweep"
    p = _bench("-m", "task._target_=boom.BoomTask", "seed=0,1", *FAST, f"hydra.sweep.dir={sweep}", env=plugins)
    assert [_result(sweep / str(i))["status"] for i in (0, 1)] == ["failed", "completed"], p.stderr  # job 1 ran after job 0 failed
    assert (sweep / "report" / "summary.csv").exists(), p.stderr  # the sweep reached its end (Hydra re-raises a job's exception before it)


@pytest.mark.slow
@pytest.mark.parametrize("phase", ["open", "log", "close"])
def test_a_failing_logger_is_recorded_and_training_goes_on(tmp_path, plugins, phase):
    p = _bench(*FAST, "+logger.boom._target_=boom.BoomLogger", "+logger.boom._partial_=true", f"+logger.boom.phase={phase}",
               f"hydra.run.dir={tmp_path}", env=plugins)
    assert p.returncode == 0, p.stderr
    r = _result(tmp_path)
    assert r["status"] == "completed" and r["steps"] == 100
    assert len(r["logger_errors"]) == 1 and r["logger_errors"][0].startswith(f"logger.boom failed in {phase}: ")
    assert f"logger.boom failed in {phase}" in p.stderr


@pytest.mark.slow
def test_sigint_checkpoints_and_records_preempted(tmp_path):
    proc = _start(*LONG[:-1], "train.steps=3000", "hardware.threads=1", f"hydra.run.dir={tmp_path}")
    _wait_rows(tmp_path / PARTIAL, 30, proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == -signal.SIGINT, err
    r = _result(tmp_path)
    assert r["status"] == "preempted" and 30 <= r["steps"] < 3000 and (tmp_path / "checkpoint.pt").exists()
    assert "Traceback" not in err


@pytest.mark.slow
def test_disk_full_ends_in_a_failed_record_without_temporary_files(tmp_path):
    """The job directory on a 256 KiB tmpfs: the records fit, the first checkpoint (about 1 MB) does not."""
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", str(disk)], capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        p = _bench(*FAST, f"hydra.run.dir={disk / 'job'}")
        assert p.returncode == 1, p.stderr
        r = _result(disk / "job")
        assert r["status"] == "failed" and "No space left on device" in r["error"]
        assert _temps(disk / "job") == [] and not (disk / "job" / "checkpoint.pt").exists()
        assert [row["step"] for row in read_metrics(disk / "job" / METRICS) if row["kind"] == "train"] == list(range(40))
    finally:
        subprocess.run(["umount", str(disk)])


@pytest.mark.slow
def test_corrupt_checkpoint_is_named_and_force_starts_over(tmp_path):
    (tmp_path / ckpt.FILE).write_bytes(b"garbage")
    p = _bench(*FAST, f"hydra.run.dir={tmp_path}")
    assert p.returncode == 1
    r = _result(tmp_path)
    assert r["status"] == "failed" and f"{tmp_path / ckpt.FILE}: unreadable checkpoint" in r["error"]
    p = _bench(*FAST, "train.force=true", f"hydra.run.dir={tmp_path}")
    assert p.returncode == 0, p.stderr
    assert _result(tmp_path)["status"] == "completed" and f"discarded {tmp_path / ckpt.FILE}" in p.stdout + p.stderr


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
def test_joblib_workers_die_with_their_launcher(tmp_path):
    sweep = tmp_path / "sweep"
    launcher = _start("-m", "seed=0,1,2,3", *LONG, "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "report=false",
                      f"hydra.sweep.dir={sweep}")
    try:
        for i in (0, 1):
            _wait_rows(sweep / str(i) / PARTIAL, 20, launcher)
        workers = [c for c in _children(launcher.pid) if (Path(f"/proc/{c}/cmdline").read_bytes().find(b"loky") >= 0)]
        assert len(workers) >= 2
        os.kill(launcher.pid, signal.SIGKILL)
        launcher.wait()  # not communicate(): orphaned workers would hold its pipes open
        deadline = time.time() + 60
        while time.time() < deadline and any(_alive(w) for w in workers):
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers), "loky workers outlived their launcher"
    finally:
        try:
            os.killpg(launcher.pid, signal.SIGKILL)  # the same session: orphans of a failed test end here
        except ProcessLookupError:
            pass
        launcher.communicate(timeout=60)
    assert not (sweep / "2").exists() and not (sweep / "3").exists()  # no queued job started after the launcher died
    for i in (0, 1):
        r = _result(sweep / str(i))
        assert r["status"] == "preempted" and (sweep / str(i) / "checkpoint.pt").exists()
