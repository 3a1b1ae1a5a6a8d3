"""Run records: result.json, metrics.jsonl, and the environment they were made in.

Files in a job's output directory:

- ``metrics.jsonl``: one JSON object per logged row. Train rows carry ``kind="train"``,
  eval rows ``kind="eval"``. While the job runs the rows go to ``metrics.jsonl.partial``;
  the file is renamed to ``metrics.jsonl`` when the job ends (completed, diverged or
  failed), so a ``metrics.jsonl`` is always a finished record. Rows hold no wall-clock
  values, so the same config and seed give the same file byte for byte.
- ``result.json``: the run's summary (schema in README.md), rewritten atomically
  (temporary file + ``os.replace``): status ``running`` while the job runs, then
  ``completed``, ``diverged``, ``failed``, ``preempted``, or an end state the task declares
  (``Task.outcomes``, e.g. ``collapsed``). ``outcomes`` in the record maps each end state of a
  run that trained to its last step to whether it is a success; ``success`` is the run's flag.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any, Mapping

SCHEMA_VERSION = 2  # 2: `outcomes` and `success` (the task declares its end states); `decay` replaces `schedule`
RESULT = "result.json"
METRICS = "metrics.jsonl"
PARTIAL = "metrics.jsonl.partial"
#: The end states of schema-1 records, which did not store their task's declaration (only GAN tasks had one).
LEGACY_OUTCOMES = {"completed": True, "collapsed": False}


def _clean(v: Any) -> Any:
    """JSON has no NaN/inf: write them as strings so the file stays standard JSON."""
    if isinstance(v, float) and not math.isfinite(v):
        return str(v)
    if isinstance(v, dict):
        return {k: _clean(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_clean(x) for x in v]
    return v


def dumps(obj: Any, **kw) -> str:
    return json.dumps(_clean(obj), allow_nan=False, **kw)


def write_json_atomic(path: Path, obj: Mapping) -> None:
    """Write ``obj`` to ``path`` via a temporary file in the same directory and ``os.replace``."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    with open(tmp, "w") as f:
        f.write(dumps(obj, indent=2, sort_keys=False))
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def read_result(path: Path) -> dict | None:
    """A result.json as a dict, or None when missing or unreadable (half-written, corrupt)."""
    try:
        with open(path) as f:
            obj = json.load(f)
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def config_hash(resolved: Mapping) -> str:
    """Stable hash of a resolved config (sorted JSON), used to recognise a rerun of the same job."""
    return hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()[:16]


class MetricsWriter:
    """Appends rows to ``metrics.jsonl.partial`` and publishes ``metrics.jsonl`` on close."""

    def __init__(self, out_dir: Path, resume_offset: int | None = None):
        self.partial = Path(out_dir) / PARTIAL
        self.final = Path(out_dir) / METRICS
        if resume_offset is not None and self.partial.exists():
            with open(self.partial, "r+b") as f:
                f.truncate(resume_offset)
            self.f = open(self.partial, "ab")
        else:
            self.final.unlink(missing_ok=True)
            self.f = open(self.partial, "wb")

    def write(self, row: Mapping) -> None:
        self.f.write((dumps(row) + "\n").encode())

    def flush(self) -> int:
        """Flush to disk; returns the byte offset (stored in checkpoints for resume)."""
        self.f.flush()
        os.fsync(self.f.fileno())
        return self.f.tell()

    def close(self) -> None:
        if self.f.closed:
            return
        self.flush()
        self.f.close()
        os.replace(self.partial, self.final)


def read_metrics(path: Path) -> list[dict]:
    """Rows of a metrics.jsonl; a truncated last line (a killed writer) is dropped."""
    rows = []
    with open(path) as f:
        for line in f:
            try:
                rows.append(json.loads(line))
            except ValueError:
                break
    return rows


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def environment(device) -> dict:
    """Where the run happened: code version, libraries, hardware."""
    import torch

    env = {
        "git_commit": _git("rev-parse", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--untracked-files=no")),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "host": socket.gethostname(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
    }
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    else:
        env["device_name"] = platform.processor() or platform.machine()
    for mod in ("timm", "transformers", "hydra"):
        try:
            env[mod] = __import__(mod).__version__
        except ImportError:
            pass
    return env
