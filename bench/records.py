"""Run records: result.json, metrics.jsonl, and the environment they were made in.

Files in a job's output directory:

- ``metrics.jsonl``: one JSON object per logged row. Train rows carry ``kind="train"``,
  eval rows ``kind="eval"``. While the job runs the rows go to ``metrics.jsonl.partial``;
  the file is renamed to ``metrics.jsonl`` when the job ends (completed, diverged or
  failed), just before the final result.json, so a finished record always has all its rows.
  A job killed between the two leaves ``metrics.jsonl`` next to a ``running`` record; its rerun
  resumes from the checkpoint by renaming it back (see :class:`MetricsWriter`). Rows hold no
  wall-clock values, so the same config and seed give the same file byte for byte.
- ``result.json``: the run's summary (schema in README.md), rewritten atomically
  (temporary file + ``os.replace``): status ``running`` while the job runs, then
  ``completed``, ``diverged``, ``failed``, ``preempted``, or one of the task's declared outcomes.

Statuses. The harness owns ``running``, ``preempted``, ``failed`` (crashed), ``diverged`` (ended
early: a result, but a failure) and ``completed`` (trained to the last step: a success). A task
may declare more end states of a run that trained to its last step (``Task.outcomes``, e.g. a
GAN's ``collapsed``: a failure). ``result.json`` stores the declaration under ``outcomes``
(``{"completed": true}`` plus the task's own) next to ``success``, so readers never need a list
of task statuses: use :func:`outcomes`, :func:`measured` and :func:`finished_statuses`.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import math
import os
import platform
import socket
import subprocess
from pathlib import Path
from typing import Any, Mapping

SCHEMA_VERSION = 1
RESULT = "result.json"
METRICS = "metrics.jsonl"
PARTIAL = "metrics.jsonl.partial"
COMPLETED = "completed"
DIVERGED = "diverged"
# Records of schema 1 written before result.json carried ``outcomes``: the only task status then
# was the GAN's ``collapsed`` (a failure). The one place that knows about it (see outcomes()).
LEGACY_OUTCOMES = {"completed": True, "collapsed": False}
# Test-only: BENCH_TEST_KILL_AT=<point> makes the job SIGKILL itself at that point of the publish
# sequence (see crash_point), so tests can kill a real process at a real instant.
KILL_AT_ENV = "BENCH_TEST_KILL_AT"


def crash_point(name: str) -> None:
    """SIGKILL this process here when ``$BENCH_TEST_KILL_AT`` equals ``name`` (tests only; unset in normal use).

    Points: ``checkpoint-tmp`` (checkpoint written to its temporary file, not yet renamed),
    ``metrics`` (metrics.jsonl published, result.json still ``running``), ``result`` (final
    result.json written, checkpoint not yet removed).
    """
    if os.environ.get(KILL_AT_ENV) == name:
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


STALLED = "stalled"  # trained to the end but never learned (Task.is_stalled): a failure


def declared_outcomes(task_outcomes: Mapping[str, bool]) -> dict[str, bool]:
    """The ``outcomes`` mapping a harness stores in result.json: ``completed`` (a success), ``stalled``
    (a failure) and the task's own."""
    return {COMPLETED: True, STALLED: False, **{str(k): bool(v) for k, v in task_outcomes.items()}}


def test_key(metric: str) -> str:
    """The record key of a metric on the test split: ``val_acc`` -> ``test_acc``, ``fd`` -> ``test_fd``."""
    return "test_" + (metric[4:] if metric.startswith("val_") else metric)


def train_set_key(metric: str) -> str:
    """The record key of a metric on the training set (tasks with ``train_eval``): ``val_loss`` -> ``train_set_loss``."""
    return "train_set_" + (metric[4:] if metric.startswith("val_") else metric)


def mean_of_evaluations(rows: list[Mapping]) -> dict[str, float]:
    """Each metric's mean over evaluation rows: m̄ = (1/n) Σ_i m_i over the n rows that hold a number for it.

    Key order follows the first row. A non-finite value makes its mean non-finite (NaN stays NaN), so an
    evaluation that broke is not averaged away. ``[{"fd": 19}, {"fd": 112}]`` -> ``{"fd": 65.5}``.
    """
    out: dict[str, float] = {}
    for key in dict.fromkeys(k for row in rows for k in row):
        values = [float(row[key]) for row in rows if isinstance(row.get(key), (int, float)) and not isinstance(row.get(key), bool)]
        if values:
            out[key] = sum(values) / len(values)
    return out


def outcomes(record: Mapping) -> dict[str, bool]:
    """Status -> success for the statuses of ``record`` that mean "trained to the last step, metric measured".

    Older records without the key fall back to :data:`LEGACY_OUTCOMES`.
    """
    declared = record.get("outcomes")
    return dict(declared) if isinstance(declared, Mapping) else dict(LEGACY_OUTCOMES)


def measured(record: Mapping) -> bool:
    """Whether the run trained to its last step, so its final metric is a measurement."""
    return record.get("status") in outcomes(record)


def succeeded(record: Mapping) -> bool:
    """Whether the run's status counts as a success (``completed``, or a task outcome declared a success)."""
    if isinstance(record.get("success"), bool):
        return record["success"]
    return bool(outcomes(record).get(record.get("status"), False))


def finished_statuses(record: Mapping) -> set[str]:
    """Statuses a rerun of the same config does not repeat: ``diverged`` and the record's outcomes."""
    return {DIVERGED, *outcomes(record)}


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
    try:
        with open(tmp, "w") as f:
            f.write(dumps(obj, indent=2, sort_keys=False))
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)  # a full disk must not leave the temporary file behind
        raise


def remove_orphans(out_dir: Path) -> list[Path]:
    """Delete result.json temporary files left by killed writers; call only while holding the job's lock."""
    found = sorted(Path(out_dir).glob(f".{RESULT}.tmp*"))
    for p in found:
        p.unlink(missing_ok=True)
    return found


def read_result(path: Path) -> dict | None:
    """A result.json as a dict, or None when missing or unreadable (half-written, corrupt)."""
    try:
        with open(path) as f:
            obj = json.load(f)
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


#: Config keys that cannot change a run's result (its metrics.jsonl and result metrics): changing
#: them reruns nothing. ``report`` (a report after the sweep), ``logger`` (where rows are copied
#: besides the local record), ``train.force`` (rerun anyway), ``train.checkpoint_every`` (a resumed
#: run is byte-identical to an uninterrupted one; tested). ``hydra.*`` is never in the job config.
IDENTITY_EXCLUDED = ("report", "logger", "train.force", "train.checkpoint_every")
#: Keys added after records existed whose default (null) changes nothing: left out of the identity while null, so
#: the records made before the key existed keep their hash and a resumed sweep still skips them.
IDENTITY_NULL_DEFAULTS = ("train.average_last",)


def identity(resolved: Mapping) -> dict:
    """The part of a resolved config that defines a run's result: all of it but :data:`IDENTITY_EXCLUDED`
    and the keys of :data:`IDENTITY_NULL_DEFAULTS` that are null."""
    out = json.loads(json.dumps(resolved, default=str))
    for key, only_null in [(k, False) for k in IDENTITY_EXCLUDED] + [(k, True) for k in IDENTITY_NULL_DEFAULTS]:
        *parents, leaf = key.split(".")
        node = out
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict) and (not only_null or node.get(leaf, 0) is None):
            node.pop(leaf, None)
    return out


def config_hash(resolved: Mapping) -> str:
    """Stable hash of the run-defining part of a resolved config (:func:`identity`, sorted JSON).

    Two jobs with the same hash give the same result: the skip-completed check and checkpoint
    resume use it, so rerunning a finished sweep with another logger or ``report=false`` skips.
    """
    return hashlib.sha256(json.dumps(identity(resolved), sort_keys=True, default=str).encode()).hexdigest()[:16]


class MetricsWriter:
    """Appends rows to ``metrics.jsonl.partial`` and publishes ``metrics.jsonl`` on close.

    Resuming (``resume_offset`` = the checkpoint's byte offset) keeps the first ``resume_offset``
    bytes: of ``metrics.jsonl.partial``, or of ``metrics.jsonl`` when the job that wrote the
    checkpoint had already published it (killed before its final result.json, or failed), which
    is renamed back to ``.partial`` first. Fewer bytes than the offset is an error, never padding.
    """

    def __init__(self, out_dir: Path, resume_offset: int | None = None):
        self.partial = Path(out_dir) / PARTIAL
        self.final = Path(out_dir) / METRICS
        if resume_offset is not None:
            if not self.partial.exists() and self.final.exists():
                os.replace(self.final, self.partial)
            size = self.partial.stat().st_size if self.partial.exists() else None
            if size is None or size < resume_offset:
                raise RuntimeError(f"{self.partial}: the checkpoint expects {resume_offset} bytes of rows, found {size or 0}; "
                                   "delete the job's checkpoint.pt to start the job over")
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
        """Flush, close and publish. The file is closed even when the flush fails (disk full);
        then nothing is published and the error propagates."""
        if self.f.closed:
            return
        try:
            self.flush()
        finally:
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


def _cpu_model() -> str | None:
    """The CPU's model name from /proc/cpuinfo (Linux), else platform.processor()."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or None


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
        # floating-point results differ between CPU kinds (AVX2 vs AVX-512): the kernels torch picked
        "cpu_model": _cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    if device.type == "cuda":
        env["device_name"] = torch.cuda.get_device_name(device)
        env["cuda"] = torch.version.cuda
    else:
        env["device_name"] = platform.processor() or platform.machine()
    # versions from the installed metadata: importing timm and transformers only to read
    # __version__ would cost seconds per job
    for dist in ("timm", "transformers", "hydra-core"):
        try:
            env[dist.removesuffix("-core")] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return env
