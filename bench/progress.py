"""A job's progress: a tqdm bar on a terminal, a log line every ~10 % of the run elsewhere.

On a terminal (stderr is a TTY and ``CI`` is not set) tqdm draws a bar with the step, loss, LR
and rate. Under Slurm, nohup or CI the bar would only fill log files with carriage returns, so
the job logs ``step s/T (p%) loss ... lr ... it/s, ~N s left`` at every tenth of the budget
instead: ``tail -f`` on a Slurm log shows progress, and every job's ``app.log`` holds the same.
"""

from __future__ import annotations

import logging
import os
import sys
import time

log = logging.getLogger("bench.progress")


def interactive() -> bool:
    return sys.stderr.isatty() and os.environ.get("CI", "").lower() not in ("1", "true")


def _lr(row: dict) -> float:
    return row.get("lr", next((v for k, v in row.items() if k.startswith("lr/")), float("nan")))


class JobProgress:
    """Progress of one job over ``total`` steps, starting at ``start`` (a resumed job)."""

    def __init__(self, total: int, enabled: bool = True, start: int = 0):
        self.total = total
        self.enabled = enabled
        self.start = start
        self.t0 = time.perf_counter()
        self.bar = None
        self.next_mark = 0
        if enabled and interactive():
            from tqdm.auto import tqdm  # lazy: only a terminal needs it

            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, leave=False, file=sys.stderr)
        self._advance_mark(start)

    def _advance_mark(self, done: int) -> None:
        tenth = max(1, self.total // 10)
        self.next_mark = (done // tenth + 1) * tenth

    def update(self, step: int, row: dict) -> None:
        """Called at logged steps with the row just written."""
        if not self.enabled:
            return
        done = step + 1
        if self.bar is not None:
            self.bar.update(done - self.bar.n)
            self.bar.set_postfix(loss=f"{row.get('train_loss', float('nan')):.4f}", lr=f"{_lr(row):.3g}", refresh=False)
            return
        if done >= self.next_mark or done == self.total:
            rate = (done - self.start) / max(time.perf_counter() - self.t0, 1e-9)
            left = (self.total - done) / rate if rate > 0 else float("nan")
            log.info(
                "step %d/%d (%d%%)  loss %.4f  lr %.3g  %.1f it/s, ~%.0f s left",
                done, self.total, round(100 * done / self.total), row.get("train_loss", float("nan")), _lr(row), rate, left,
            )
            self._advance_mark(done)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
