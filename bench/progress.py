"""Progress lines for a job: quiet unless stderr is a terminal (and never under CI=true)."""

from __future__ import annotations

import os
import sys
import time


def interactive() -> bool:
    return sys.stderr.isatty() and os.environ.get("CI", "").lower() not in ("1", "true")


class JobProgress:
    """A one-line status (step, loss, LR, rate) rewritten in place at most twice a second."""

    def __init__(self, total: int, enabled: bool = True):
        self.total = total
        self.enabled = enabled and interactive()
        self.t0 = time.perf_counter()
        self.last = 0.0

    def update(self, step: int, row: dict) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if now - self.last < 0.5 and step + 1 < self.total:
            return
        self.last = now
        rate = (step + 1) / max(now - self.t0, 1e-9)
        lr = row.get("lr", next((v for k, v in row.items() if k.startswith("lr/")), float("nan")))
        left = (self.total - step - 1) / rate
        sys.stderr.write(
            f"\r  step {step + 1}/{self.total}  loss {row.get('train_loss', float('nan')):.4f}  lr {lr:.3g}  {rate:.1f} it/s  ~{left:.0f}s left "
        )
        sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")
