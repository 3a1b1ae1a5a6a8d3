"""Loggers are plug-ins behind one protocol; the local record (metrics.jsonl) always runs.

Every entry of the ``logger`` config node is one extra logger, built by :func:`build_loggers`::

    logger:
      tensorboard:                          # the entry's name = its option file's name
        _target_: bench.loggers.TensorBoardLogger
        _partial_: true                     # the harness adds ctx=RunContext(...)
        dir: tensorboard

The harness calls ``instantiate(entry)(ctx=ctx)``: a plug-in is any callable that takes its YAML
keys and a keyword ``ctx`` (a :class:`RunContext`) and returns a :class:`Logger`. Constructors
should only store their arguments; files and connections are opened in ``open``. An outside
plug-in needs no change here: a module on ``PYTHONPATH`` and a ``logger/<name>.yaml`` in a
directory on ``hydra.searchpath``.
"""

from __future__ import annotations

import hashlib
import os
import sys
from dataclasses import dataclass
from numbers import Real
from pathlib import Path
from typing import Mapping, Protocol

from omegaconf import DictConfig, OmegaConf

from bench.errors import ConfigError, bad
from bench.records import MetricsWriter


class Logger(Protocol):
    """What the loop and the app call, in this order: open, log (and offset) any number of times, close.

    ``open`` and ``log`` run on the main process only. ``close`` is not called when a job is
    preempted: the job will be rerun, and ``open`` is then called again with the checkpoint's offset.
    """

    def open(self, resume_offset: int | None) -> None:
        """Start, or resume when ``resume_offset`` is not None: then rows up to the checkpoint's step
        were logged by an earlier process, and rows after it may have been (and are sent again)."""

    def log(self, row: Mapping) -> None:
        """One row: ``kind`` ("train" or "eval"), ``step`` (0-based optimizer step) and scalar values."""

    def offset(self) -> int | None:
        """Called when a checkpoint is written: make everything logged so far durable and return a
        position to store with it (metrics.jsonl's byte offset), or None when no position is needed."""

    def close(self, result: Mapping) -> None:
        """The job's final record (result.json's content): write a summary, release files and runs."""


@dataclass(frozen=True)
class RunContext:
    """What the harness knows about a job and passes to every plug-in logger as ``ctx``."""

    out_dir: Path          # the job directory (result.json, metrics.jsonl); loggers write under it
    config: dict           # the resolved config, plain containers
    choices: dict          # config group -> chosen option, e.g. {"warmup": "linear", "batch": "sqrt"}
    sweep_name: str | None  # the sweep directory's name in a multirun, else None
    job_name: str          # the job's overrides as a directory name, or the app's name without any
    config_hash: str       # bench.records.config_hash of the resolved config
    multirun: bool


def logger_choice(logger_cfg: DictConfig) -> str:
    """The ``logger`` choice for the record, as typed on the command line: "local", "wandb" or
    "[wandb,tensorboard]". Hydra records no choice when a list of options is selected, so it is
    read off the entries (each named after its option file); "local" adds none."""
    names = list(logger_cfg or {})
    if not names:
        return "local"
    return names[0] if len(names) == 1 else f"[{','.join(names)}]"


def build_loggers(logger_cfg: DictConfig, ctx: RunContext) -> list[Logger]:
    """Every entry of the ``logger`` node, built as ``instantiate(entry)(ctx=ctx)``, in config order.

    All entries are checked before any is built; a malformed entry or an unknown ``_target_``
    is a :class:`bench.errors.ConfigError` naming ``logger.<name>``.
    """
    return [factory(ctx=ctx) for factory in logger_factories(logger_cfg)]


def logger_factories(logger_cfg: DictConfig) -> list:
    """The checked ``_partial_`` factory of every ``logger`` entry; nothing is opened or written
    (start-up validation calls this for every grid point)."""
    import hydra

    entries = dict(logger_cfg or {})
    for name, entry in entries.items():
        if not isinstance(entry, DictConfig) or "_target_" not in entry:
            raise bad(f"logger.{name}", OmegaConf.to_container(entry) if isinstance(entry, DictConfig) else entry,
                      "a mapping with _target_ (the logger class) and _partial_: true")
        if entry.get("_partial_") is not True:
            raise bad(f"logger.{name}._partial_", entry.get("_partial_"), "true: the harness adds ctx= when it builds the logger")
    built = []
    for name, entry in entries.items():
        try:
            factory = hydra.utils.instantiate(entry, _convert_="all")
        except Exception as e:  # an import error or a bad key inside a plug-in's YAML
            raise ConfigError(f"logger.{name}: cannot build {entry._target_}: {e}") from e
        built.append(factory)
    return built


class LocalLogger:
    """metrics.jsonl through :class:`bench.records.MetricsWriter`; on resume it is truncated to the
    checkpoint's byte offset, so the rows after the checkpoint are written once."""

    def __init__(self, out_dir: Path):
        self.out_dir = Path(out_dir)
        self.writer: MetricsWriter | None = None

    def open(self, resume_offset: int | None) -> None:
        self.writer = MetricsWriter(self.out_dir, resume_offset)

    def log(self, row: Mapping) -> None:
        self.writer.write(row)

    def offset(self) -> int:
        return self.writer.flush()

    def close(self, result: Mapping) -> None:
        if self.writer is not None:
            self.writer.close()


def _scalars(row: Mapping) -> dict[str, float]:
    """The row's numeric values, without its kind and step (bools and strings such as a divergence reason are left out)."""
    return {k: v for k, v in row.items() if k not in ("kind", "step") and isinstance(v, Real) and not isinstance(v, bool)}


class WandbLogger:
    """One W&B run per job. Offline mode writes under ``<job dir>/wandb`` and needs no network.

    The run id is the config hash plus a hash of the job directory, and ``resume="allow"``: a
    requeued or resumed job continues its own run. Tags are the config choices as ``group:option``.
    """

    def __init__(self, *, ctx: RunContext, mode: str, project: str, entity: str | None, group: str | None, tags: list[str]):
        self.ctx = ctx
        self.mode, self.project, self.entity, self.group, self.tags = mode, project, entity, group, list(tags)
        self.run = None

    def open(self, resume_offset: int | None) -> None:
        os.environ.setdefault("WANDB_SILENT", "true")
        import wandb

        ctx = self.ctx
        run_id = f"{ctx.config_hash}-{hashlib.sha256(str(Path(ctx.out_dir).resolve()).encode()).hexdigest()[:8]}"
        tags = [f"{g}:{c}" for g, c in ctx.choices.items() if c is not None] + self.tags
        self.run = wandb.init(
            project=self.project,
            entity=self.entity,
            group=self.group or ctx.sweep_name,
            name=ctx.job_name,
            tags=[t[:64] for t in tags],  # W&B limits tags to 64 characters
            config=ctx.config,
            dir=str(ctx.out_dir),
            mode=self.mode,
            reinit="finish_previous",
            id=run_id,
            resume="allow",  # W&B drops rows at steps it already has, so a resumed run logs each step once
        )

    def log(self, row: Mapping) -> None:
        self.run.log(_scalars(row), step=int(row["step"]))

    def offset(self) -> None:
        return None  # W&B keeps its own position: resume="allow" with a fixed run id

    def close(self, result: Mapping) -> None:
        for k in ("status", "steps", "lr_peak", "wall_time_s"):
            self.run.summary[k] = result.get(k)
        for k, v in (result.get("final") or {}).items():
            self.run.summary[f"final/{k}"] = v
        self.run.finish(exit_code=0 if result.get("status") != "failed" else 1)


class TensorBoardLogger:
    """Event files in ``<job dir>/<dir>``; scalars tagged ``<kind>/<key>`` (``train/train_loss``,
    ``eval/val_acc``) at the row's step, stored in double precision so they equal metrics.jsonl.

    The writer opens at the first row, with ``purge_step`` = that row's step: TensorBoard then drops
    every older event at or after it, so a resumed job (or a rerun from scratch, which starts at 0)
    shows each step once. ``close`` adds the final metrics as ``final/<key>`` and an HParams entry
    (choices, LRs, batch size, seed -> final metrics) for comparing the jobs of a sweep.
    """

    def __init__(self, *, ctx: RunContext, dir: str, flush_secs: int):
        self.ctx = ctx
        self.log_dir = Path(ctx.out_dir) / dir
        self.flush_secs = flush_secs
        self.writer = None

    def _open_writer(self, purge_step: int | None) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(str(self.log_dir), purge_step=purge_step, flush_secs=self.flush_secs)

    def open(self, resume_offset: int | None) -> None:
        self.writer = None  # opened by the first row, whose step is the purge point

    def log(self, row: Mapping) -> None:
        step = int(row["step"])
        if self.writer is None:
            self._open_writer(step)
        for k, v in _scalars(row).items():
            self.writer.add_scalar(f"{row['kind']}/{k}", v, step, new_style=True, double_precision=True)

    def offset(self) -> None:
        if self.writer is not None:
            self.writer.flush()  # a checkpoint is being written: the events before it must survive a kill
        return None

    def close(self, result: Mapping) -> None:
        from torch.utils.tensorboard.summary import hparams

        final = {k: v for k, v in (result.get("final") or {}).items() if isinstance(v, Real) and not isinstance(v, bool)}
        steps = result.get("steps")
        if self.writer is None:
            if not final:
                return
            self._open_writer(None)
        params = {f"choice/{g}": c for g, c in self.ctx.choices.items() if c is not None}
        for k in ("lr_base", "lr_peak", "batch_size", "seed", "status"):
            v = result.get(k)
            if isinstance(v, (Real, str)):
                params[k] = v
        metrics = {f"final/{k}": v for k, v in final.items()}
        step = steps - 1 if isinstance(steps, int) and steps > 0 else 0  # the job's last step
        for tag, v in metrics.items():
            self.writer.add_scalar(tag, v, step, new_style=True, double_precision=True)
        if metrics:
            for summary in hparams(params, metrics):
                self.writer.file_writer.add_summary(summary)
        self.writer.close()


class Loggers:
    """Fan-out, itself a :class:`Logger`: the local metrics.jsonl writer first, then the plug-ins.

    ``offset`` returns the local writer's byte offset (the one position a checkpoint stores).
    A plug-in that fails to close is reported on stderr and does not stop the record being written.
    """

    def __init__(self, out_dir: Path, extra: list[Logger]):
        self.local = LocalLogger(out_dir)
        self.extra = list(extra)
        self.opened = False

    def open(self, resume_offset: int | None) -> None:
        self.local.open(resume_offset)
        for lg in self.extra:
            lg.open(resume_offset)
        self.opened = True

    def log(self, row: Mapping) -> None:
        self.local.log(row)
        for lg in self.extra:
            lg.log(row)

    def offset(self) -> int:
        for lg in self.extra:
            lg.offset()
        return self.local.offset()

    def close(self, result: Mapping) -> None:
        self.local.close(result)
        if not self.opened:
            return
        for lg in self.extra:
            try:
                lg.close(result)
            except Exception as e:  # the local record is the result; an extra logger only mirrors it
                print(f"[bench] warning: {type(lg).__name__} failed to close: {type(e).__name__}: {e}", file=sys.stderr)
