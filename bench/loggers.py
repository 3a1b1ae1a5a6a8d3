"""Loggers: the local record always runs; W&B is an addition behind the same interface."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import Mapping

from omegaconf import DictConfig

from bench.records import MetricsWriter


class Logger:
    """Receives every metrics row and the final result."""

    def log(self, row: Mapping) -> None: ...

    def finish(self, result: Mapping) -> None: ...


class LocalLogger(Logger):
    """metrics.jsonl through :class:`bench.records.MetricsWriter`."""

    def __init__(self, out_dir: Path, resume_offset: int | None = None):
        self.writer = MetricsWriter(out_dir, resume_offset)

    def log(self, row: Mapping) -> None:
        self.writer.write(row)

    def offset(self) -> int:
        return self.writer.flush()

    def finish(self, result: Mapping) -> None:
        self.writer.close()


class WandbLogger(Logger):
    """One W&B run per job. Offline mode writes under ``<job dir>/wandb`` and needs no network."""

    def __init__(self, cfg: DictConfig, resolved: dict, choices: Mapping[str, str], out_dir: Path, sweep_name: str | None, job_name: str, config_hash: str):
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        run_id = f"{config_hash}-{hashlib.sha256(str(Path(out_dir).resolve()).encode()).hexdigest()[:8]}"

        lc = cfg.logger
        tags = [f"{g}={c}" for g, c in choices.items() if c is not None] + list(lc.tags)
        self.run = wandb.init(
            project=lc.project,
            entity=lc.entity,
            group=lc.group or sweep_name,
            name=job_name,
            tags=[t[:64] for t in tags],  # W&B limits tags to 64 characters
            config=resolved,
            dir=str(out_dir),
            mode=lc.mode,
            reinit="finish_previous",
            # one W&B run per job directory and config: a requeued or resumed job continues its run
            id=run_id,
            resume="allow",
        )

    def log(self, row: Mapping) -> None:
        data = {k: v for k, v in row.items() if k not in ("step", "kind") and isinstance(v, (int, float))}
        self.run.log(data, step=int(row["step"]))

    def finish(self, result: Mapping) -> None:
        for k in ("status", "steps", "lr_peak", "wall_time_s"):
            self.run.summary[k] = result.get(k)
        for k, v in (result.get("final") or {}).items():
            self.run.summary[f"final/{k}"] = v
        self.run.finish(exit_code=0 if result.get("status") != "failed" else 1)


class Loggers(Logger):
    """Fan-out to several loggers; the local metrics.jsonl writer first, opened by the loop
    (from scratch, or truncated to a checkpoint's offset on resume)."""

    def __init__(self, out_dir: Path, extra: list[Logger]):
        self.out_dir = out_dir
        self.local: LocalLogger | None = None
        self.extra = extra

    def open(self, resume_offset: int | None) -> None:
        self.local = LocalLogger(self.out_dir, resume_offset)

    def offset(self) -> int:
        return self.local.offset()

    def log(self, row: Mapping) -> None:
        self.local.log(row)
        for lg in self.extra:
            lg.log(row)

    def finish(self, result: Mapping) -> None:
        if self.local is not None:
            self.local.finish(result)
        for lg in self.extra:
            lg.finish(result)
