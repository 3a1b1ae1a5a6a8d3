"""The Hydra application: ``python -m bench [group=option ...] [key=value ...]`` (``-m`` to sweep).

One call = one job, in named steps that scripts reuse: :func:`prepare` (validate, threads,
ranks, device), :func:`build_task`, :func:`build_plan`, :func:`start_record`, :func:`run_job`
(the loop), :func:`finish_record`. Bad input ends with one ``error:`` line and exit code 2 before any
record is written; a diverged run is a normal result; a crash is recorded as ``failed``.
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
from bench.distributed import Dist, from_environment
from bench.errors import ConfigError, bad
from bench.loggers import Loggers, RunContext, build_loggers, logger_choice
from bench.loop import Outcome, train
from bench.plan import Plan, decay_name, make_plan, validate, warmup_name
from bench.probes import build_probes
from bench.records import RESULT, SCHEMA_VERSION, config_hash, declared_outcomes, environment, finished_statuses, read_result, write_json_atomic
from tasks.base import Task

def _conf_dir() -> str:
    """The checkout's top-level conf/ when running from a checkout (or an editable install), else the
    copy installed with the package as bench/conf (pyproject.toml maps conf/ there at build time)."""
    here = Path(__file__).resolve().parent
    checkout = here.parent
    if (checkout / "pyproject.toml").is_file() and (checkout / "conf" / "config.yaml").is_file():
        return str(checkout / "conf")
    return str(here / "conf")


CONF_DIR = _conf_dir()


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
        "warmup": warmup_name(cfg),
        "warmup_steps": {n: s.warmup_steps for n, s in plan.schedules.items()},
        "decay": decay_name(cfg),
        "probes": [p for p in (cfg.get("diagnostics") or {})],
        "steps_planned": plan.total_steps,
        "steps_per_epoch": plan.steps_per_epoch,
        "world_size": job.dist.world_size,
        "primary_metric": next(iter(task.metrics)),
        "metric_modes": dict(task.metrics),
        "outcomes": declared_outcomes(task.outcomes),
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
    """The record's end state: status (a task outcome where it declares one), steps, metrics, throughput."""
    status = outcome.status
    if status == "completed":
        status = task.final_status(outcome.final) or status
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
    record.update(
        status=status,
        steps=outcome.steps,
        diverged_step=outcome.diverged_step,
        diverged_reason=outcome.diverged_reason,
        final=outcome.final,
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


def _already_finished(previous: dict | None, chash: str) -> bool:
    """A finished record of this very config: diverged, or any end state its task declared."""
    return bool(previous) and previous.get("config_hash") == chash and previous.get("status") in finished_statuses(previous)


def run(cfg: DictConfig) -> dict:
    """One job: prepare, build the task and plan, write the running record, train, write the final record."""
    job = prepare(cfg)
    previous = read_result(job.out_dir / RESULT)
    if _already_finished(previous, job.config_hash) and not cfg.train.force:
        print(f"[bench] {job.out_dir}: already {previous['status']} for this config, skipped (train.force=true reruns)", file=sys.stderr)
        return previous

    task = build_task(cfg, job.device)
    plan = build_plan(cfg, task, job.dist.world_size, job.config_hash)
    probes = build_probes(cfg.get("diagnostics"))
    record = start_record(job, task, plan)
    dist = job.dist
    extra = []
    if dist.is_main:
        extra = build_job_loggers(job)  # before the record: a bad logger entry is a config error
        write_json_atomic(job.out_dir / RESULT, record)
    logger = Loggers(job.out_dir, extra)
    preempt = ckpt.PreemptFlag()
    preempt.install()

    t0 = time.perf_counter()
    try:
        outcome = run_job(job, task, plan, logger, probes, preempt)
    except Exception as e:
        record.update(status="failed", success=False, error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(), wall_time_s=time.perf_counter() - t0)
        if dist.is_main:
            logger.close(record)
            write_json_atomic(job.out_dir / RESULT, record)
        raise
    record = finish_record(record, outcome, task, plan, time.perf_counter() - t0)
    if dist.is_main:
        if not outcome.preempted:
            logger.close(record)
        write_json_atomic(job.out_dir / RESULT, record)
        if not outcome.preempted:
            ckpt.remove(job.out_dir)
    dist.close()
    if outcome.preempted:
        preempt.hand_over()
    return record


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def main(cfg: DictConfig) -> float | None:
    try:
        result = run(cfg)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
    primary = result.get("primary_metric")
    return (result.get("final") or {}).get(primary)
