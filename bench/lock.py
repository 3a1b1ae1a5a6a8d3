"""One writer per job directory, and launcher workers that die with their launcher.

:class:`JobLock` is an exclusive ``fcntl.flock`` on ``<job dir>/job.lock``, taken before the job
reads or writes anything of its own there (Hydra's ``.hydra/`` copy is written earlier, by Hydra).
The kernel drops the lock when the holding process ends however it ends (kill -9 included), so a
crashed holder never blocks a rerun, and a ``running`` record in a directory whose lock is free was
left by a dead job. The file is never deleted (deleting a flock'ed file lets two processes lock two
different files); it holds the holder's pid, host and start time for the refusal message.

:func:`watch_parent` is for jobs run in a launcher's worker process (joblib/loky): when the parent
process disappears (killed, even by SIGKILL) the worker sends itself SIGTERM, which a running job
handles as a preemption (checkpoint, ``preempted`` record), and SIGKILL after a grace period.
"""

from __future__ import annotations

import fcntl
import json
import multiprocessing
import os
import signal
import socket
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

FILE = "job.lock"


class Busy(Exception):
    """The job directory is locked by another live process."""


def _describe(info: dict) -> str:
    if not info:
        return "another process (no holder information yet)"
    return f"pid {info.get('pid')} on host {info.get('host')}, since {info.get('started')}"


class JobLock:
    """Exclusive, non-blocking lock on a job directory; released by :meth:`release` or by the process ending."""

    def __init__(self, out_dir: Path):
        self.path = Path(out_dir) / FILE
        self.fd: int | None = None

    def acquire(self) -> "JobLock":
        """Take the lock or raise :class:`Busy` naming the holder."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise Busy(f"{self.path.parent}: in use by {_describe(read_holder(self.path.parent))}; "
                       "two jobs in one directory would mix their records (wait for it, or use another hydra.run.dir / hydra.sweep.dir)") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            os.close(self.fd)  # closing the only descriptor drops the flock
            self.fd = None


def read_holder(out_dir: Path) -> dict:
    """The pid/host/started written by the last process that took the lock ({} if none)."""
    try:
        return json.loads((Path(out_dir) / FILE).read_text() or "{}")
    except (OSError, ValueError):
        return {}


def is_locked(out_dir: Path) -> bool:
    """Whether a live process holds the job directory's lock (readers can tell a live ``running`` job from a dead one)."""
    path = Path(out_dir) / FILE
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


_watching = False


def watch_parent(grace_s: float = 60.0, every_s: float = 0.5) -> bool:
    """In a worker process (one started by ``multiprocessing``/loky), end this process when its parent dies.

    A daemon thread polls ``os.getppid()``: once the process has been re-parented, it sends itself
    SIGTERM (a running job checkpoints and records ``preempted``, an idle worker just ends), then
    SIGKILL after ``grace_s`` seconds. Returns whether a watch is running. Not started in a process
    without a multiprocessing parent (a plain run, or a Slurm job started by srun).
    """
    global _watching
    if _watching:
        return True
    if multiprocessing.parent_process() is None:
        return False
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(every_s)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(grace_s)
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, name="bench-parent-watch", daemon=True).start()
    _watching = True
    return True
