"""The Hydra application: ``python -m bench [group=option ...] [key=value ...]`` (``-m`` to sweep).

One call = one job, in named steps that scripts reuse: :func:`prepare` (validate, threads,
ranks, device), :func:`build_task`, :func:`build_plan`, :func:`start_record`, :func:`run_job`
(the loop), :func:`finish_record`. Bad input ends with one ``error:`` line and exit code 2 before any
record is written; a diverged run is a normal result; a crash is recorded as ``failed`` (a single run
then exits 1, a multirun goes on to its next job). A job holds its directory's lock
(:mod:`bench.lock`) from before it reads its old record until its final record is written.
"""

from __future__ import annotations

import logging
import os
import random
import sys
import time
import traceback
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Mapping

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from bench import checkpoint as ckpt
from bench import records
from bench.distributed import Dist, from_environment
from bench.errors import ConfigError, bad
from bench.loggers import Loggers, RunContext, build_loggers, logger_choice
from bench.lock import Busy, JobLock, read_holder, watch_parent
from bench.loop import Outcome, train
from bench.plan import Plan, decay_name, make_plan, validate, warmup_name
from bench.probes import build_probes
from bench.records import RESULT, STALLED, SCHEMA_VERSION, config_hash, crash_point, declared_outcomes, environment, finished_statuses, read_result, write_json_atomic
from tasks.base import Task

from bench.cli import CONF_DIR, main  # noqa: E402,F401  (main: the entry point, kept here for `bench.app:main` users)


log = logging.getLogger(__name__)


def _threads(cfg: DictConfig, launcher: Mapping | None) -> int | None:
    """This job's CPU threads: hardware.threads, or its share of the cores under the joblib launcher."""
    if cfg.hardware.threads is not None:
        return cfg.hardware.threads
    if launcher is not None and "joblib" in str(launcher.get("_target_", "")):
        cores = os.cpu_count() or 1
        n = launcher.n_jobs
        n = cores + 1 + n if n < 0 else n  # joblib's convention: -1 = all cores
        return max(1, cores // max(1, n))
    return None


def _device(cfg: DictConfig, local_rank: int) -> torch.device:
    dev = cfg.hardware.device
    if dev == "cuda":
        if not torch.cuda.is_available():
            raise bad("hardware.device", dev, "cpu on this machine: no CUDA device is visible (use hardware=cpu)")
        return torch.device("cuda", local_rank)
    return torch.device("cpu")


def _seed_everything(seed: int, deterministic: bool, cuda: bool) -> None:
    """Seed Python, NumPy and torch; with ``deterministic`` on a CUDA device, ask torch for deterministic kernels.

    On the CPU the flag is not set: it would import torch._inductor (~2 s per process, paid by every
    job) and the CPU kernels these tasks use are deterministic at a fixed thread count anyway, which the
    byte-identical tests (same seed twice, resume vs uninterrupted, probes on/off) check.
    """
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        if cuda:
            torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:  # let cuDNN time its kernels once per input shape: fixed-shape convnets run markedly faster
        torch.backends.cudnn.benchmark = True


@dataclass
class Job:
    """One job's identity and place: its config, output directory, process group and device."""

    cfg: DictConfig
    out_dir: Path
    choices: dict
    overrides: list
    resolved: dict
    config_hash: str
    multirun: bool
    sweep_dir: str | None
    job_name: str
    dist: Dist
    device: torch.device


def choices_of(runtime_choices: Mapping, cfg: DictConfig) -> dict:
    """Config-group choices to record: Hydra's own groups dropped, the deprecated ``schedule`` alias folded into ``decay``."""
    choices = {k: v for k, v in runtime_choices.items() if not k.startswith("hydra")}
    choices["logger"] = logger_choice(cfg.logger)  # Hydra records none for a list such as logger=[wandb,tensorboard]
    alias = choices.pop("schedule", None)
    if alias is not None:
        log.warning("schedule=%s is deprecated: the group is now called decay (use decay=%s)", alias, alias)
    return choices


def prepare(cfg: DictConfig) -> Job:
    """Validate the config and resolve where and how this job runs (threads, ranks, device)."""
    hc = HydraConfig.get()
    validate(cfg)
    multirun = hc.mode == RunMode.MULTIRUN
    threads = _threads(cfg, hc.launcher if multirun else None)
    if threads:
        torch.set_num_threads(threads)
    dist = from_environment(cfg.hardware.device)
    device = _device(cfg, dist.local_rank)
    out_dir = Path(dist.broadcast(str(hc.runtime.output_dir)))  # ranks may resolve ${now:...} a second apart: all use rank 0's dir
    resolved = OmegaConf.to_container(cfg, resolve=True)
    return Job(
        cfg=cfg,
        out_dir=out_dir,
        choices=choices_of(hc.runtime.choices, cfg),
        overrides=list(hc.overrides.task),
        resolved=resolved,
        config_hash=config_hash(resolved),
        multirun=multirun,
        sweep_dir=str(Path(hc.sweep.dir).resolve()) if multirun else None,
        job_name=hc.job.override_dirname or hc.job.name,
        dist=dist,
        device=device,
    )


def build_task(cfg: DictConfig, device: torch.device) -> Task:
    """Seed every RNG, then build the task named by ``task._target_`` (data and models)."""
    _seed_everything(cfg.seed, cfg.hardware.deterministic, device.type == "cuda")
    task = hydra.utils.get_class(cfg.task._target_)(cfg.task, cfg.seed, device)
    if cfg.hardware.channels_last:
        for m in task.models.values():
            m.to(memory_format=torch.channels_last)
    return task


def build_plan(cfg: DictConfig, task: Task, world_size: int = 1, chash: str = "") -> Plan:
    """Budget, warm-up lengths, schedules and optimizer configs resolved against the task."""
    return make_plan(cfg, task, world_size, chash)


def start_record(job: Job, task: Task, plan: Plan) -> dict:
    """The ``running`` record, written before training starts."""
    cfg = job.cfg
    return {
        "schema": SCHEMA_VERSION,
        "status": "running",
        "task": cfg.task.name,
        "choices": job.choices,
        # group:option, as W&B tags: warmup=linear, decay=linear and batch=linear stay apart when flattened
        "tags": [f"{g}:{o}" for g, o in job.choices.items() if o is not None],
        "overrides": job.overrides,
        "seed": cfg.seed,
        "batch_size": cfg.batch.size,
        "base_batch_size": cfg.batch.base_size,
        "micro_batch_size": cfg.batch.micro_size or cfg.batch.size // job.dist.world_size,
        "scaling": cfg.batch.scaling,
        "lr_base": plan.lr_base,
        "lr_scale": plan.lr_scale,
        "lr_peak": plan.lr_peak,
        "lr_peak_by_model": plan.peak_lrs(),
        # the LR averaged over the budget (peak x mean multiplier): what a mean-matched control holds equal
        "lr_mean": plan.lr_mean,
        "lr_mean_by_model": plan.mean_lrs(),
        # the optimizer settings each model trains with (batch.scaling=sde changes betas and eps)
        "optimizer_by_model": {n: {k: v for k, v in c.items() if k not in ("_target_", "_partial_", "lr")} for n, c in plan.optimizer_cfgs.items()},
        "warmup": warmup_name(cfg),
        "warmup_steps": {n: s.warmup_steps for n, s in plan.schedules.items()},
        "decay": decay_name(cfg),
        "probes": [p for p in (cfg.get("diagnostics") or {})],
        "steps_planned": plan.total_steps,
        "steps_per_epoch": plan.steps_per_epoch,
        "world_size": job.dist.world_size,
        "primary_metric": next(iter(task.metrics)),
        # which block the report reads the metric from: the last evaluation, or the mean of the last K (train.average_last)
        "metric_block": "final_avg" if cfg.train.get("average_last") else "final",
        "average_last": cfg.train.get("average_last"),
        "metric_modes": dict(task.metrics),
        "outcomes": declared_outcomes(task.outcomes),
        "chance": dict(task.chance),
        "arm_keys": dict(task.arm_keys),
        "task_info": task.extra_record(),
        "output_dir": str(job.out_dir),
        "sweep_dir": job.sweep_dir,
        "config_hash": job.config_hash,
        "config": job.resolved,
        "env": environment(job.device),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def build_job_loggers(job: Job) -> list:
    """The loggers of the ``logger`` group (besides the local record, which always runs)."""
    sweep_name = Path(job.sweep_dir).name if job.multirun else None
    ctx = RunContext(
        out_dir=job.out_dir, config=job.resolved, choices=job.choices, sweep_name=sweep_name,
        job_name=job.job_name, config_hash=job.config_hash, multirun=job.multirun,
    )
    return build_loggers(job.cfg.logger, ctx)


def run_job(job: Job, task: Task, plan: Plan, logger: Loggers, probes, preempt: ckpt.PreemptFlag) -> Outcome:
    """Train the plan; divergence and preemption come back in the Outcome, exceptions propagate."""
    return train(plan, task, logger, job.dist, job.out_dir, preempt, probes)


def finish_record(record: dict, outcome: Outcome, task: Task, plan: Plan, wall: float) -> dict:
    """The record's end state: status (a task outcome where it declares one), steps, metrics, throughput.

    With ``train.average_last`` the task judges its end state (``final_status``, e.g. a GAN's collapse) on the
    averaged metrics, the block the report reads, so a run's status and its reported value agree.
    """
    status = outcome.status
    if status == "completed":
        judged = outcome.final_avg if record.get("metric_block") == "final_avg" and outcome.final_avg else outcome.final
        if task.is_stalled(outcome.initial_loss, outcome.final_train_loss, judged):
            status = STALLED
        status = task.final_status(judged) or status
        if status not in record["outcomes"]:
            raise RuntimeError(f"{type(task).__name__}.final_status returned {status!r}, which its outcomes do not declare ({', '.join(record['outcomes'])})")
    steps_done = outcome.steps - (outcome.resumed_from or 0)
    examples = steps_done * plan.batch_size
    throughput = {"steps_per_s": steps_done / outcome.train_time_s if outcome.train_time_s else None}
    if throughput["steps_per_s"]:
        throughput["examples_per_s"] = examples / outcome.train_time_s
        for unit, per in task.units_per_example().items():
            throughput[f"{unit}_per_step"] = per * plan.batch_size
            throughput[f"{unit}_per_s"] = per * examples / outcome.train_time_s
    if outcome.probe_time_s:  # what the probes cost this run: their seconds over the rest of training
        throughput["probe_time_s"] = outcome.probe_time_s
        throughput["probe_overhead"] = outcome.probe_time_s / max(outcome.train_time_s - outcome.probe_time_s, 1e-9)
    record.update(
        status=status,
        steps=outcome.steps,
        diverged_step=outcome.diverged_step,
        diverged_reason=outcome.diverged_reason,
        final=outcome.final,
        test=outcome.test,
        **({"final_avg": outcome.final_avg, "final_avg_steps": outcome.final_avg_steps, "test_avg": outcome.test_avg}
           if record.get("average_last") else {}),
        train_set=outcome.train_set,
        best=outcome.best,
        best_step=outcome.best_step,
        final_train_loss=outcome.final_train_loss,
        resumed_from=outcome.resumed_from,
        wall_time_s=wall,
        throughput=throughput,
        ended=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    record["success"] = bool(record["outcomes"].get(status, False))
    return record


def _fmt(metrics: Mapping | None) -> str:
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in (metrics or {}).items()) or "none"


def log_start(record: Mapping) -> None:
    """What this job is: where it writes and the choices that define it."""
    c, cfg = record["choices"], record["config"]
    env = record["env"]
    log.info("job dir %s", record["output_dir"])
    log.info(
        "task %s | optimizer %s | warmup %s %s | decay %s | batch %d (base %d, scaling %s) | lr base %.4g, peak %.4g, mean %.4g | %d steps (%d per epoch)",
        record["task"], c.get("optimizer"), record["warmup"], record["warmup_steps"], record["decay"], record["batch_size"],
        record["base_batch_size"], record["scaling"], record["lr_base"], record["lr_peak"], record["lr_mean"], record["steps_planned"], record["steps_per_epoch"],
    )
    log.info("device %s (%s), %s threads, seed %s%s", env["device"], env.get("device_name"), env["torch_threads"], cfg["seed"],
             f", probes {', '.join(record['probes'])}" if record.get("probes") else "")


def log_end(record: Mapping, path: Path) -> None:
    """How this job ended: status (with step and reason when it stopped early), metrics, time, record path."""
    status = record["status"]
    if status == "diverged":
        how = f"diverged at step {record['diverged_step']}: {record['diverged_reason']}"
    elif status == "preempted":
        how = f"preempted after step {record['steps']}: checkpointed, a rerun resumes"
    else:
        how = f"{status} ({'success' if record.get('success') else 'not a success'})"
    level = logging.INFO if record.get("success") or status == "preempted" else logging.WARNING
    log.log(level, "%s after %d/%d steps in %.1f s", how, record["steps"], record["steps_planned"], record["wall_time_s"])
    log.info("final: %s | best: %s | train loss %s", _fmt(record.get("final")), _fmt(record.get("best")), _fmt({"": record.get("final_train_loss")}).strip())
    k = record.get("average_last")
    if k:
        n = len(record.get("final_avg_steps") or [])
        level = logging.WARNING if n < k else logging.INFO
        log.log(level, "mean of the last %d evaluations%s: %s", n, f" (train.average_last={k}: the run has only {n})" if n < k else "",
                _fmt(record.get("final_avg")))
    log.info("record: %s", path)


def _already_finished(previous: dict | None, chash: str) -> bool:
    """A finished record of this very config: diverged, or any end state its task declared."""
    return bool(previous) and previous.get("config_hash") == chash and previous.get("status") in finished_statuses(previous)


def _take_lock(job: Job) -> JobLock | None:
    """The job directory's lock (rank 0 takes it for all ranks); :class:`bench.lock.Busy` names the holder."""
    lock, busy = None, None
    if job.dist.is_main:
        try:
            lock = JobLock(job.out_dir).acquire()
        except Busy as e:
            busy = str(e)
    busy = job.dist.broadcast(busy)
    if busy is not None:
        raise Busy(busy)
    return lock


def _recover(job: Job, previous: dict | None, holder: dict) -> None:
    """Under the lock, before anything is read: clear what killed writers left behind, and say so."""
    orphans = records.remove_orphans(job.out_dir) + ckpt.remove_orphans(job.out_dir)
    if orphans:
        log.warning("%s: removed %d temporary file(s) of a killed writer: %s", job.out_dir, len(orphans), ", ".join(p.name for p in orphans))
    if previous is not None and previous.get("status") == "running":
        who = f"pid {holder.get('pid')} on {holder.get('host')}" if holder else "an earlier process"
        log.warning("%s: the job run by %s (started %s) died without a final record; running it again (from its checkpoint if it left one)",
                    job.out_dir, who, previous.get("started"))
    if job.cfg.train.force:
        reason = ckpt.discard_unreadable(job.out_dir)
        if reason:
            log.warning("train.force=true: discarded %s, starting over", reason.split(": ")[0])


class _GuardedLogger:
    """A plug-in logger whose failure in open/log/offset/close is caught: the first error is noted
    (result.json ``logger_errors``), the plug-in is switched off, and training goes on with the local record."""

    def __init__(self, name: str, inner, errors: list):
        self.name, self.inner, self.errors, self.failed = name, inner, errors, False

    def _call(self, phase: str, fn, *args):
        if self.failed:
            return None
        try:
            return fn(*args)
        except Exception as e:
            self.failed = True
            msg = f"logger.{self.name} failed in {phase}: {type(e).__name__}: {e}"
            self.errors.append(msg)
            print(f"[bench] warning: {msg}; switched off, the local record goes on", file=sys.stderr)
            return None

    def open(self, resume_offset):
        self._call("open", self.inner.open, resume_offset)

    def log(self, row):
        self._call("log", self.inner.log, row)

    def offset(self):
        return self._call("offset", self.inner.offset)

    def close(self, result):
        self._call("close", self.inner.close, result)


def _failed(record: dict, e: BaseException, t0: float) -> dict:
    record.update(status="failed", success=False, error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(),
                  wall_time_s=time.perf_counter() - t0, ended=datetime.now(timezone.utc).isoformat(timespec="seconds"))
    return record


def _write_record(job: Job, record: dict) -> bool:
    """Write result.json; if even that fails (disk full), say so: the ``running`` record left behind is
    recognised as dead by the next run, which holds the lock its writer no longer does."""
    try:
        write_json_atomic(job.out_dir / RESULT, record)
        return True
    except OSError as e:
        print(f"[bench] {job.out_dir / RESULT}: cannot write the {record['status']} record ({type(e).__name__}: {e}); "
              "it stays 'running' and a rerun starts the job again", file=sys.stderr)
        return False


def _early_record(job: Job) -> dict:
    """What is known of a job before its task is built: enough for a ``failed`` record."""
    return {
        "schema": SCHEMA_VERSION, "status": "running", "task": job.cfg.task.get("name"), "choices": job.choices,
        "overrides": job.overrides, "seed": job.cfg.seed, "output_dir": str(job.out_dir), "sweep_dir": job.sweep_dir,
        "config_hash": job.config_hash, "config": job.resolved, "env": environment(job.device),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }


def run(cfg: DictConfig) -> dict:
    """One job under its directory's lock: prepare, build the task and plan, write the running record,
    train, write the final record. Returns the record; a crash is returned as a ``failed`` record."""
    job = prepare(cfg)
    if job.multirun:
        watch_parent()  # a launcher worker must not outlive its launcher, nor start queued jobs after it died
    holder = read_holder(job.out_dir)
    lock = _take_lock(job)
    try:
        return _run_locked(job, holder)
    finally:
        if lock is not None:
            lock.release()


def _run_locked(job: Job, holder: dict) -> dict:
    """:func:`run` once the lock is held. Publish order: metrics.jsonl, result.json, checkpoint removal
    (a kill between any two is repaired by the rerun: see docs/ARCHITECTURE.md, Crash safety)."""
    cfg, dist = job.cfg, job.dist
    previous = read_result(job.out_dir / RESULT)
    if dist.is_main:
        _recover(job, previous, holder)
    if _already_finished(previous, job.config_hash) and not cfg.train.force:
        if dist.is_main:
            ckpt.remove(job.out_dir)  # left by a job killed after its final record
        log.info("%s: already %s for this config, skipped (train.force=true reruns)", job.out_dir, previous["status"])
        return previous

    t0 = time.perf_counter()
    try:
        task = build_task(cfg, job.device)
        plan = build_plan(cfg, task, job.dist.world_size, job.config_hash)
        probes = build_probes(cfg.get("diagnostics"))
        record = start_record(job, task, plan)
        extra = []
        if dist.is_main:
            extra = build_job_loggers(job)  # before the record: a bad logger entry is a config error
    except ConfigError:
        raise
    except Exception as e:  # a crash before training (data, model): recorded, so the job is not left without a status
        record = _failed(_early_record(job), e, t0)
        if dist.is_main:
            _write_record(job, record)
        return _report_failure(job, record)

    errors: list[str] = []
    names = list(cfg.logger or {})
    if dist.is_main:
        log_start(record)
        write_json_atomic(job.out_dir / RESULT, record)
    logger = Loggers(job.out_dir, [_GuardedLogger(n, lg, errors) for n, lg in zip(names, extra)])
    preempt = ckpt.PreemptFlag()
    preempt.install()
    t0 = time.perf_counter()
    try:
        try:
            outcome = run_job(job, task, plan, logger, probes, preempt)
            record = finish_record(record, outcome, task, plan, time.perf_counter() - t0)
            record["logger_errors"] = errors
            if dist.is_main:
                if not outcome.preempted:
                    logger.close(record)  # publishes metrics.jsonl
                    crash_point("metrics")
                write_json_atomic(job.out_dir / RESULT, record)
                crash_point("result")
                if not outcome.preempted:
                    ckpt.remove(job.out_dir)
                log_end(record, job.out_dir / RESULT)
        except BaseException as e:  # every way out of training ends in a record that says so
            record = _failed(record, e, t0)
            record["logger_errors"] = errors
            if dist.is_main:
                try:
                    logger.close(record)
                except Exception as close_error:  # e.g. the disk is full: the failed record matters more than the rows
                    print(f"[bench] {job.out_dir}: metrics not published ({type(close_error).__name__}: {close_error})", file=sys.stderr)
                _write_record(job, record)
            if not isinstance(e, Exception):
                raise  # KeyboardInterrupt (Ctrl-C twice), SystemExit: recorded, and the process stops
            dist.close()
            return _report_failure(job, record)
        dist.close()
        return record
    finally:
        preempt.hand_over()  # restores the handlers; a signal that arrived is delivered now that the record is written


def _report_failure(job: Job, record: dict) -> dict:
    """Print a failed job's traceback; return its record so that a multirun goes on to the next job."""
    print(record.get("traceback", ""), file=sys.stderr, end="")
    log.error("%s: failed: %s", job.out_dir, record["error"])
    return record


def job(cfg: DictConfig) -> float | None:
    """One Hydra job (what :func:`bench.cli.main` runs): the run, its exit status, the primary metric for Hydra."""
    try:
        result = run(cfg)
    except (ConfigError, Busy) as e:
        print(f"error: {e}", file=sys.stderr)
        from bench.cluster import discard_refused_run

        discard_refused_run()
        sys.exit(2)
    if result.get("status") == "failed" and HydraConfig.get().mode != RunMode.MULTIRUN:
        sys.exit(1)  # a single run's failure is its exit status; a sweep's is decided over its records at the end
    primary = result.get("primary_metric")
    return (result.get(result.get("metric_block") or "final") or {}).get(primary)
