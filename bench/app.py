"""The Hydra application: ``python -m bench [group=option ...] [key=value ...]`` (``-m`` to sweep).

One call = one job: validate the config, build the task, resolve the plan, train,
write the record. Bad input ends with one ``error:`` line and exit code 2 before any
record is written; a diverged run is a normal result; a crash is recorded as ``failed``.
"""

from __future__ import annotations

import os
import random
import sys
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path

import hydra
import numpy as np
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from bench import checkpoint as ckpt
from bench.distributed import from_environment
from bench.errors import ConfigError, bad
from bench.loggers import Loggers, RunContext, build_loggers, logger_choice
from bench.loop import train
from bench.plan import make_plan, validate
from bench.records import FINISHED, RESULT, SCHEMA_VERSION, config_hash, environment, read_result, write_json_atomic

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def _threads(cfg: DictConfig, hc) -> int | None:
    """This job's CPU threads: hardware.threads, or its share of the cores under the joblib launcher."""
    if cfg.hardware.threads is not None:
        return cfg.hardware.threads
    launcher = hc.launcher
    if "joblib" in str(launcher.get("_target_", "")):
        cores = os.cpu_count() or 1
        n = launcher.n_jobs
        n = cores + 1 + n if n < 0 else n  # joblib's convention: -1 = all cores
        return max(1, cores // max(1, n))
    return None


def _device(cfg: DictConfig, local_rank: int) -> torch.device:
    dev = cfg.hardware.device
    if dev == "cpu":
        return torch.device("cpu")
    if dev == "cuda":
        if not torch.cuda.is_available():
            raise bad("hardware.device", dev, "cpu on this machine: no CUDA device is visible (use hardware=cpu)")
        return torch.device("cuda", local_rank)
    raise bad("hardware.device", dev, "cpu or cuda")


def _seed_everything(seed: int, deterministic: bool) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
    else:  # let cuDNN time its kernels once per input shape: fixed-shape convnets run markedly faster
        torch.backends.cudnn.benchmark = True


def run(cfg: DictConfig) -> dict:
    """One job. Returns its result dict (also written to result.json)."""
    hc = HydraConfig.get()
    out_dir = Path(hc.runtime.output_dir)
    choices = {k: v for k, v in hc.runtime.choices.items() if not k.startswith("hydra")}
    choices["logger"] = logger_choice(cfg.logger)  # Hydra records none for a list such as logger=[wandb,tensorboard]
    resolved = OmegaConf.to_container(cfg, resolve=True)
    chash = config_hash(resolved)
    multirun = hc.mode == RunMode.MULTIRUN

    validate(cfg)
    threads = _threads(cfg, hc)
    if threads:
        torch.set_num_threads(threads)
    dist = from_environment(cfg.hardware.device)
    device = _device(cfg, dist.local_rank)
    out_dir = Path(dist.broadcast(str(out_dir)))  # ranks may resolve ${now:...} a second apart: all use rank 0's dir

    previous = read_result(out_dir / RESULT)
    if previous and previous.get("status") in FINISHED and previous.get("config_hash") == chash and not cfg.train.force:
        print(f"[bench] {out_dir}: already {previous['status']} for this config, skipped (train.force=true reruns)", file=sys.stderr)
        return previous

    _seed_everything(cfg.seed, cfg.hardware.deterministic)
    task_cls = hydra.utils.get_class(cfg.task._target_)
    task = task_cls(cfg.task, cfg.seed, device)
    if cfg.hardware.channels_last:
        for m in task.models.values():
            m.to(memory_format=torch.channels_last)
    plan = make_plan(cfg, task, dist.world_size)

    record = {
        "schema": SCHEMA_VERSION,
        "status": "running",
        "task": cfg.task.name,
        "choices": choices,
        "overrides": list(hc.overrides.task),
        "seed": cfg.seed,
        "batch_size": cfg.batch.size,
        "base_batch_size": cfg.batch.base_size,
        "micro_batch_size": cfg.batch.micro_size or cfg.batch.size // dist.world_size,
        "scaling": cfg.batch.scaling,
        "lr_base": plan.lr_base,
        "lr_scale": plan.lr_scale,
        "lr_peak": plan.lr_peak,
        "lr_peak_by_model": plan.peak_lrs(),
        "warmup": cfg.warmup.name,
        "warmup_steps": {n: s.warmup_steps for n, s in plan.schedules.items()},
        "schedule": cfg.schedule.name,
        "steps_planned": plan.total_steps,
        "steps_per_epoch": plan.steps_per_epoch,
        "world_size": dist.world_size,
        "primary_metric": next(iter(task.metrics)),
        "metric_modes": dict(task.metrics),
        "task_info": task.extra_record(),
        "output_dir": str(out_dir),
        "sweep_dir": str(Path(hc.sweep.dir).resolve()) if multirun else None,
        "config_hash": chash,
        "config": resolved,
        "env": environment(device),
        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    extra = []
    if dist.is_main:
        sweep_name = Path(hc.sweep.dir).name if multirun else None
        ctx = RunContext(out_dir=out_dir, config=resolved, choices=choices, sweep_name=sweep_name, job_name=hc.job.override_dirname or hc.job.name, config_hash=chash, multirun=multirun)
        extra = build_loggers(cfg.logger, ctx)  # before the record: a bad logger entry is a config error
        write_json_atomic(out_dir / RESULT, record)
    logger = Loggers(out_dir, extra)
    preempt = ckpt.PreemptFlag()
    preempt.install()

    t0 = time.perf_counter()
    try:
        outcome = train(cfg, task, plan, logger, dist, out_dir, preempt)
    except Exception as e:
        record.update(status="failed", error=f"{type(e).__name__}: {e}", traceback=traceback.format_exc(), wall_time_s=time.perf_counter() - t0)
        if dist.is_main:
            logger.close(record)
            write_json_atomic(out_dir / RESULT, record)
        raise
    wall = time.perf_counter() - t0
    status = outcome.status
    if status == "completed":
        status = task.final_status(outcome.final) or status
    steps_done = outcome.steps - (outcome.resumed_from or 0)
    examples = steps_done * cfg.batch.size
    throughput = {"steps_per_s": steps_done / outcome.train_time_s if outcome.train_time_s else None}
    if throughput["steps_per_s"]:
        throughput["examples_per_s"] = examples / outcome.train_time_s
        for unit, per in task.units_per_example().items():
            throughput[f"{unit}_per_step"] = per * cfg.batch.size
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
    if dist.is_main:
        if outcome.preempted:
            write_json_atomic(out_dir / RESULT, record)
        else:
            logger.close(record)
            write_json_atomic(out_dir / RESULT, record)
            ckpt.remove(out_dir)
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
