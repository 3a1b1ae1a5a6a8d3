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


WANDB_FALLBACK_MODE = "offline"  # what a job logs to when nothing chooses a mode, or the chosen one fails to start


def _say(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def _unless_env(value, var: str):
    """``value``, or None when the W&B environment variable ``var`` is set: W&B then reads it itself
    (an argument passed to ``wandb.init`` would beat the variable)."""
    return None if os.environ.get(var) else value


WANDB_MODES = {"online": "online", "run": "online", "offline": "offline", "dryrun": "offline", "disabled": "disabled", "shared": "shared"}


def _outside_mode() -> str | None:
    """The mode W&B would take from outside bench, read as W&B reads it: WANDB_MODE, else the ``mode``
    key that ``wandb online|offline|disabled`` writes to the workspace or global settings file."""
    import configparser

    if os.environ.get("WANDB_MODE"):
        return os.environ["WANDB_MODE"]
    config_dir = Path(os.environ.get("WANDB_CONFIG_DIR") or Path.home() / ".config" / "wandb").expanduser()
    for f in (Path("wandb") / "settings", config_dir / "settings"):  # the workspace file wins
        parser = configparser.ConfigParser()
        try:
            parser.read(f)
        except configparser.Error:
            continue
        if parser.has_option("default", "mode"):
            return parser.get("default", "mode")
    return None


def wandb_mode(configured: str | None) -> str:
    """The W&B mode for a run: ``logger.wandb.mode`` when set, else what W&B itself resolves from the
    environment and its settings files, else offline (W&B's own default, online, needs an account).
    An unknown value is reported in one line and replaced by offline."""
    mode = configured if configured is not None else _outside_mode()
    if mode is None:
        return WANDB_FALLBACK_MODE
    if mode not in WANDB_MODES:
        source = "logger.wandb.mode" if configured is not None else "WANDB_MODE / W&B settings"
        _say(f"W&B mode {mode!r} from {source} is not one of {', '.join(WANDB_MODES)}: logging {WANDB_FALLBACK_MODE}")
        return WANDB_FALLBACK_MODE
    return WANDB_MODES[mode]


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text[:200]}"


def sweep_dir_of(ctx: RunContext) -> Path | None:
    """The sweep directory of a multirun job (Hydra's ``hydra.sweep.dir``), None for a single run."""
    if not ctx.multirun:
        return None
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return Path(HydraConfig.get().sweep.dir).resolve()
    for parent in Path(ctx.out_dir).resolve().parents:  # outside a Hydra job (tests, scripts): where multirun.yaml is
        if (parent / "multirun.yaml").is_file():
            return parent
    return Path(ctx.out_dir).resolve().parent


def sweep_group(experiment: str | None, sweep_dir: Path) -> str:
    """W&B group of a sweep: the experiment's name (or the sweep directory's) plus a sweep id, a hash
    of the sweep directory, so two sweeps of one preset stay apart and a resumed sweep keeps its group."""
    sweep_id = hashlib.sha256(str(Path(sweep_dir).resolve()).encode()).hexdigest()[:6]
    return f"{experiment or Path(sweep_dir).name}-{sweep_id}"


def varying_keys(multirun_yaml: Path) -> list[str]:
    """The keys a sweep varies (more than one value), in the order they were given: the preset's
    ``hydra.sweeper.params`` then the command line (which wins for a key in both)."""
    import yaml
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        hydra_cfg = (yaml.safe_load(multirun_yaml.read_text()) or {}).get("hydra", {})
        strings = [f"{k}={v}" for k, v in ((hydra_cfg.get("sweeper") or {}).get("params") or {}).items()]
        strings += list((hydra_cfg.get("overrides") or {}).get("task") or [])
        keys: dict[str, bool] = {}
        for o in OverridesParser.create().parse_overrides(strings):
            keys[o.get_key_element()] = o.is_sweep_override() and len(list(o.sweep_string_iterator())) > 1
    except Exception:  # a name is a nicety: an unreadable file falls back to the job's full override list
        return []
    return [k for k, varies in keys.items() if varies]


def run_name(ctx: RunContext, sweep_dir: Path | None) -> str:
    """The overrides that vary within the sweep ('warmup=linear,optimizer.lr=0.1'); the job name
    (all its overrides) outside a sweep or when the sweep's keys cannot be read."""
    from hydra.core.hydra_config import HydraConfig

    if sweep_dir is None or not HydraConfig.initialized():
        return ctx.job_name
    keys = varying_keys(sweep_dir / "multirun.yaml")
    mine = {}
    for o in HydraConfig.get().overrides.task:
        k, _, v = o.partition("=")
        mine[k.lstrip("+~")] = o.lstrip("+~")
    picked = [mine[k] for k in keys if k in mine]
    return ",".join(picked) if picked else ctx.job_name


class WandbLogger:
    """One W&B run per job; never stops training. See the W&B section of docs/ARCHITECTURE.md.

    Mode: ``mode`` when set, else W&B's own (WANDB_MODE, ``wandb offline``), else offline. A mode that
    fails to start (no network, no account, bad settings) falls back to offline with one line on stderr;
    offline failing too leaves the job with its local record. Offline runs of a sweep share one
    ``<sweep dir>/wandb`` (one ``wandb sync`` uploads them), a single run writes ``<job dir>/wandb``.
    Group: the experiment (or sweep directory) name plus a sweep id; job_type: the task; name: the
    overrides that vary within the sweep; tags: ``group:option``. A WANDB_* variable (WANDB_PROJECT,
    WANDB_ENTITY, WANDB_RUN_GROUP, WANDB_JOB_TYPE, WANDB_NAME, WANDB_DIR, WANDB_INIT_TIMEOUT) wins over
    the value bench would derive; an explicit YAML or command-line value wins over both.
    The run id is the config hash plus a hash of the job directory, and ``resume="allow"``: a requeued
    or resumed job continues its own run.
    """

    def __init__(self, *, ctx: RunContext, mode: str | None, project: str | None, entity: str | None, group: str | None,
                 tags: list[str], init_timeout: float | None = None):
        self.ctx = ctx
        self.mode, self.project, self.entity, self.group, self.tags = mode, project, entity, group, list(tags)
        self.init_timeout = init_timeout
        self.run = None

    def _init_args(self) -> dict:
        ctx = self.ctx
        sweep_dir = sweep_dir_of(ctx)
        experiment = ctx.choices.get("experiment")
        group = self.group or (sweep_group(experiment, sweep_dir) if sweep_dir is not None else experiment)
        run_id = f"{ctx.config_hash}-{hashlib.sha256(str(Path(ctx.out_dir).resolve()).encode()).hexdigest()[:8]}"
        tags = [f"{g}:{c}" for g, c in ctx.choices.items() if c is not None] + self.tags
        return dict(
            project=self.project or _unless_env("warmup-bench", "WANDB_PROJECT"),
            entity=self.entity,  # None: WANDB_ENTITY, else the account's default entity
            group=self.group or _unless_env(group, "WANDB_RUN_GROUP"),
            job_type=_unless_env((ctx.config.get("task") or {}).get("name"), "WANDB_JOB_TYPE"),
            name=_unless_env(run_name(ctx, sweep_dir), "WANDB_NAME"),
            tags=[t[:64] for t in tags],  # W&B limits tags to 64 characters
            config=ctx.config,
            dir=_unless_env(str(sweep_dir if sweep_dir is not None else ctx.out_dir), "WANDB_DIR"),
            reinit="finish_previous",
            id=run_id,
            resume="allow",  # W&B drops rows at steps it already has, so a resumed run logs each step once
        )

    def open(self, resume_offset: int | None) -> None:
        os.environ.setdefault("WANDB_SILENT", "true")
        mode = wandb_mode(self.mode)
        if mode == "disabled":
            self.run = None  # W&B is not even imported: nothing is written
            return
        self.run = start_wandb_run(mode, self._init_args(), self.init_timeout, f"job {self.ctx.job_name}")

    def log(self, row: Mapping) -> None:
        if self.run is None:
            return
        try:
            self.run.log(_scalars(row), step=int(row["step"]))
        except Exception as e:  # the local record is the result: W&B failing mid-run stops W&B, not training
            _say(f"W&B stopped logging this job ({_one_line(e)}); metrics.jsonl has every row")
            self.run = None

    def offset(self) -> None:
        return None  # W&B keeps its own position: resume="allow" with a fixed run id

    def close(self, result: Mapping) -> None:
        if self.run is None:
            return
        for k in ("status", "steps", "lr_peak", "wall_time_s"):
            self.run.summary[k] = result.get(k)
        for block in ("final", "final_avg"):  # final_avg: the mean of the last K evaluations (train.average_last)
            for k, v in (result.get(block) or {}).items():
                self.run.summary[f"{block}/{k}"] = v
        self.run.finish(exit_code=0 if result.get("status") != "failed" else 1)


def _wandb_init(mode: str, args: dict, settings=None):
    """``wandb.init`` with ``mode`` resolved already (:func:`wandb_mode`): WANDB_MODE is hidden from it for
    the call, so a value W&B refuses cannot stop the fallback run."""
    import wandb

    saved = os.environ.pop("WANDB_MODE", None)
    try:
        return wandb.init(mode=mode, settings=settings, **args)
    finally:
        if saved is not None:
            os.environ["WANDB_MODE"] = saved


def start_wandb_run(mode: str, args: dict, init_timeout: float | None, what: str):
    """A W&B run in ``mode``; on failure one line on stderr and an offline run instead (None when
    offline fails as well). ``init_timeout`` bounds an online start (WANDB_INIT_TIMEOUT wins)."""
    os.environ.setdefault("WANDB_SILENT", "true")
    import wandb

    timeout = _unless_env(init_timeout, "WANDB_INIT_TIMEOUT")
    try:
        return _wandb_init(mode, args, wandb.Settings(init_timeout=timeout) if timeout is not None else None)
    except Exception as e:
        first = _one_line(e)
    if mode == WANDB_FALLBACK_MODE:
        _say(f"W&B could not start for {what} ({first}); the job goes on with its local record only")
        return None
    try:
        wandb.teardown()  # the failed attempt may still hold the run id in W&B's service process
    except Exception:
        pass
    where = Path(os.environ.get("WANDB_DIR") or args.get("dir") or ".") / "wandb"
    _say(f"W&B could not start {mode} for {what} ({first}); logging offline to {where} (upload later: wandb sync {where}/offline-run-*)")
    try:
        return _wandb_init(WANDB_FALLBACK_MODE, args)
    except Exception as e:
        _say(f"W&B could not start offline either ({_one_line(e)}); the job goes on with its local record only")
        return None


def publish_sweep_to_wandb(wandb_cfg: Mapping, sweep_dir: Path, experiment: str | None) -> None:
    """One summary run in the sweep's group (job_type ``summary``): every table of the report
    (``<sweep>/report/*.csv``) as a W&B Table and every figure (``*.png``) as an image.

    Called by the sweep callback after the report; writes beside the jobs' runs, so the same
    ``wandb sync <sweep dir>/wandb/offline-run-*`` uploads the jobs and this summary. Never raises.
    """
    try:
        mode = wandb_mode(wandb_cfg.get("mode"))
        report_dir = Path(sweep_dir) / "report"
        if mode == "disabled" or not report_dir.is_dir():
            return
        sweep_dir = Path(sweep_dir).resolve()
        group = wandb_cfg.get("group") or _unless_env(sweep_group(experiment, sweep_dir), "WANDB_RUN_GROUP")
        args = dict(
            project=wandb_cfg.get("project") or _unless_env("warmup-bench", "WANDB_PROJECT"),
            entity=wandb_cfg.get("entity"),
            group=group,
            job_type="summary",
            name=f"summary {group or sweep_dir.name}",
            tags=["summary", *list(wandb_cfg.get("tags") or [])],
            dir=_unless_env(str(sweep_dir), "WANDB_DIR"),
            reinit="finish_previous",
            id=f"summary-{hashlib.sha256(str(sweep_dir).encode()).hexdigest()[:12]}",
            resume="allow",
        )
        run = start_wandb_run(mode, args, wandb_cfg.get("init_timeout"), f"the summary of {sweep_dir}")
        if run is None:
            return
        import pandas as pd
        import wandb

        payload = {}
        for csv in sorted(report_dir.glob("*.csv")):
            payload[f"table/{csv.stem}"] = wandb.Table(dataframe=pd.read_csv(csv))
        for png in sorted(report_dir.glob("*.png")):
            payload[f"figure/{png.stem}"] = wandb.Image(str(png))
        run.log(payload)
        run.finish()
        _say(f"W&B: report of {sweep_dir} logged to the summary run of group {group} ({len(payload)} tables and figures)")
    except Exception as e:  # publishing is a mirror of the report: it never fails a sweep
        _say(f"W&B summary run skipped ({_one_line(e)})")


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

        final = {f"{block}/{k}": v for block in ("final", "final_avg") for k, v in (result.get(block) or {}).items()
                 if isinstance(v, Real) and not isinstance(v, bool)}  # final_avg: the mean of the last K evaluations
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
        metrics = final
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
