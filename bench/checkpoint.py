"""Checkpoints for preemption-safe runs, and the preemption signal flag.

A checkpoint holds the models, optimizers, LR schedulers, RNG states, the next step,
the metrics.jsonl byte offset and the loop's running summaries. Data position needs
no state: the batch order is a function of (seed, epoch), so the next step says where
to start. Written atomically (temporary file + os.replace); loaded with
``torch.load(weights_only=True)``. A save that fails (disk full) removes its temporary file; one
killed mid-save leaves ``.checkpoint.pt.tmp<pid>``, which the next job in the directory removes
(:func:`remove_orphans`). A checkpoint that cannot be read is a :class:`CheckpointError` naming the
file; ``train.force=true`` discards it (:func:`discard_unreadable`) and the job starts over.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import numpy as np
import torch

from bench.records import crash_point

FILE = "checkpoint.pt"
FINAL = "final.pt"  # with train.save_final=true
KEYS = ("config_hash", "step", "models", "optimizers", "schedulers", "rng", "metrics_offset")


class CheckpointError(Exception):
    """A checkpoint file that cannot be loaded; the message names the file."""


class PreemptFlag:
    """Set by SIGUSR2/SIGTERM/SIGINT; the loop checkpoints at the next step boundary, then hands the
    signal to the handler that was installed before (submitit's, which requeues the job).

    SIGINT (Ctrl-C) is a preemption too; a second SIGINT raises KeyboardInterrupt at once. SIGINT is
    left alone where it is ignored (a background job of a non-interactive shell).
    """

    def __init__(self):
        self._set = False
        self._signum = None
        self._previous = {}

    def install(self) -> None:
        for sig in (signal.SIGUSR2, signal.SIGTERM, signal.SIGINT):
            if sig == signal.SIGINT and signal.getsignal(sig) == signal.SIG_IGN:
                continue
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread (e.g. a thread-based launcher): no preemption support
                pass

    def _handle(self, signum, frame) -> None:
        if signum == signal.SIGINT and self._signum == signal.SIGINT:
            raise KeyboardInterrupt  # Ctrl-C twice: stop now, without the checkpoint
        self._set, self._signum = True, signum

    def is_set(self) -> bool:
        return self._set

    def hand_over(self, wait_s: float = 5.0) -> None:
        """Restore the previous handlers and re-deliver the signal to them (after the checkpoint).

        SIGTERM always ends the process. submitit's SIGTERM handler only logs (its preemption
        sequence is SIGTERM, then USR2 to requeue), so after it the process waits ``wait_s``
        seconds for that USR2 (whose handler requeues and exits), then dies by SIGTERM: a
        cancelled job must not return normally and be reported as a success.
        """
        for sig, prev in self._previous.items():
            signal.signal(sig, prev if prev is not None else signal.SIG_DFL)
        if self._signum is None:
            return
        prev = self._previous.get(self._signum)
        if self._signum == signal.SIGINT:  # end as an interrupted process (exit status 130), without a traceback
            signal.signal(signal.SIGINT, signal.SIG_DFL)
        elif callable(prev):
            prev(self._signum, None)
            if self._signum != signal.SIGTERM:
                return
            deadline = time.monotonic() + wait_s
            while time.monotonic() < deadline:
                time.sleep(0.1)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), self._signum)


def _rng_state() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    # numpy's key array is stored as a list so that torch.load(weights_only=True) accepts it
    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": [kind, keys.tolist(), pos, has_gauss, gauss]}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def save(out_dir, config_hash: str, next_step: int, models, opts, scheds, metrics_offset: int, extra: dict) -> None:
    state = {
        "config_hash": config_hash,
        "step": next_step,
        "models": {n: m.state_dict() for n, m in models.items()},
        "optimizers": {n: o.state_dict() for n, o in opts.items()},
        # LambdaLR's own state (step count, base and last LRs); its multiplier is a plain function, which it does not store
        "schedulers": {n: s.state_dict() for n, s in scheds.items()},
        "rng": _rng_state(),
        "metrics_offset": metrics_offset,
        **extra,
    }
    path = Path(out_dir) / FILE
    tmp = path.with_name(f".{FILE}.tmp{os.getpid()}")
    try:
        with open(tmp, "wb") as f:  # our own handle: closed on failure, so unlinking it frees the space at once
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        crash_point("checkpoint-tmp")
        os.replace(tmp, path)
    except BaseException as e:
        tmp.unlink(missing_ok=True)
        cause = e
        while cause is not None and not isinstance(cause, OSError):
            cause = cause.__context__
        if cause is not None and cause is not e:  # torch reports a full disk as "unexpected pos": name the real error
            raise OSError(cause.errno, f"cannot write {path}: {cause.strerror}") from e
        raise


def _read(path: Path, mmap: bool = False) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except Exception as e:
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(e).__name__}: {e}); train.force=true discards it and starts the job over") from e
    missing = [k for k in KEYS if not isinstance(state, dict) or k not in state]
    if missing:
        raise CheckpointError(f"{path}: not a bench checkpoint (missing {', '.join(missing)}); train.force=true discards it and starts the job over")
    return state


def save_final(out_dir, models, opts) -> Path:
    """The final weights and optimizer states as ``final.pt``: ``{"models": {name: state_dict},
    "optimizers": {name: state_dict}}``, loadable with ``torch.load(path, weights_only=True)``."""
    path = Path(out_dir) / FINAL
    tmp = path.with_name(f".{FINAL}.tmp{os.getpid()}")
    torch.save({"models": {n: m.state_dict() for n, m in models.items()}, "optimizers": {n: o.state_dict() for n, o in opts.items()}}, tmp)
    os.replace(tmp, path)
    return path


def load(out_dir, config_hash: str) -> dict | None:
    """The checkpoint in ``out_dir`` if it belongs to the config with this hash, else None.

    Raises :class:`CheckpointError` (naming the file) when there is one that cannot be read.
    """
    path = Path(out_dir) / FILE
    if not path.exists():
        return None
    state = _read(path)
    if state.get("config_hash") != config_hash:
        return None
    return state


def discard_unreadable(out_dir) -> str | None:
    """Remove the checkpoint in ``out_dir`` if it cannot be read; returns the reason, or None if it is readable or absent."""
    path = Path(out_dir) / FILE
    if not path.exists():
        return None
    try:
        _read(path, mmap=True)  # memory-mapped: checks the file without holding a second copy of the weights
    except CheckpointError as e:
        path.unlink(missing_ok=True)
        return str(e)
    return None


def remove_orphans(out_dir) -> list[Path]:
    """Delete temporary files left by saves that were killed; call only while holding the job's lock."""
    found = sorted(Path(out_dir).glob(f".{FILE}.tmp*"))
    for p in found:
        p.unlink(missing_ok=True)
    return found


def restore(state: dict, models, opts, scheds) -> int:
    """Load everything back; returns the step to continue from."""
    for n, m in models.items():
        m.load_state_dict(state["models"][n])
    for n, o in opts.items():
        o.load_state_dict(state["optimizers"][n])  # restores each param group's current LR too
    for n, s in scheds.items():
        s.load_state_dict(state["schedulers"][n])
    rng = state["rng"]
    torch.set_rng_state(rng["torch"])
    random.setstate(rng["python"])
    kind, keys, pos, has_gauss, gauss = rng["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, gauss))
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return state["step"]


def remove(out_dir) -> None:
    (Path(out_dir) / FILE).unlink(missing_ok=True)
