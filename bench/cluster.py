"""Pre-flight checks for a multirun, before any job is started or submitted to Slurm.

``PreflightCallback`` (registered in conf/config.yaml under ``hydra.callbacks``) runs once in the
process that starts the sweep. It refuses, with one ``error:`` line and exit code 2:

- a sweep dir that cannot be created or written (on a cluster it must also be on a filesystem
  every node mounts; that cannot be checked from here);
- ``hardware.device=cuda`` where no GPU will be there: no CUDA device on this machine for local
  launchers; for ``hydra/launcher=submitit_slurm`` a job that asks for no GPU, or a partition
  whose nodes have no ``gpu`` GRES (from ``sinfo``), or more processes than GPUs per node;
- GPUs asked of a Slurm partition that has none;
- a world size (Slurm: ``nodes x tasks_per_node``) that does not divide ``batch.size``;
- any value ``bench.plan.validate`` refuses, in any job of the sweep (each job's config is composed
  the way the sweeper will compose it), so a bad grid point fails the sweep before the first job
  instead of after hours in the queue;
- any plan-level value ``bench.plan.make_plan`` would refuse (budget, warm-up longer than the
  budget, batch larger than the training set, a scaled LR that overflows), through
  ``bench.plan.check_plan`` with the task's data-free ``static_train_size`` / ``static_models``:
  no task is built and no data read, so a check that needs an unknown size waits for the job.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf, open_dict

from bench.errors import ConfigError, bad


def _is_slurm(hydra_cfg: DictConfig) -> bool:
    return "SlurmLauncher" in str(hydra_cfg.launcher.get("_target_", ""))


def check_sweep_dir(sweep_dir: str, key: str = "hydra.sweep.dir") -> None:
    """Create ``sweep_dir`` and write a file in it, or raise ConfigError naming ``key`` and the reason."""
    path = Path(sweep_dir)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".write-test-"):
            pass
    except OSError as e:
        raise bad(key, sweep_dir, f"a directory this user can create and write ({e.strerror or e})") from None


def slurm_gpus_per_node(launcher: DictConfig) -> int:
    """GPUs a job asks for per node: ``gpus_per_node``, else ``gpus_per_task`` x tasks, else a ``gpu[:type]:N`` gres."""
    if launcher.get("gpus_per_node"):
        return int(launcher.gpus_per_node)
    if launcher.get("gpus_per_task"):
        return int(launcher.gpus_per_task) * int(launcher.tasks_per_node)
    gres = launcher.get("gres") or ""
    for item in str(gres).split(","):
        if item.startswith("gpu"):
            return int(item.rsplit(":", 1)[-1]) if item.rsplit(":", 1)[-1].isdigit() else 1
    return 0


def partition_gres(partition: str | None) -> tuple[str, list[str]] | None:
    """(partition name, GRES strings of its nodes) from ``sinfo``; the default partition when None.

    None when sinfo is missing or fails (then the GPU check is left to Slurm itself).
    """
    if shutil.which("sinfo") is None:
        return None
    try:
        out = subprocess.run(["sinfo", "-h", "-o", "%P|%G"], capture_output=True, text=True, timeout=30, check=True).stdout
    except (subprocess.SubprocessError, OSError):
        return None
    found: dict[str, list[str]] = {}
    default = None
    for line in out.splitlines():
        if "|" not in line:
            continue
        name, gres = line.strip().split("|", 1)
        if name.endswith("*"):
            name = name[:-1]
            default = name
        found.setdefault(name, []).append(gres)
    name = partition or default
    if name is None or name not in found:
        return None  # an unknown partition: sbatch's own error names it
    return name, found[name]


def check_job(cfg: DictConfig, cuda_available: bool, gres_of=partition_gres) -> None:
    """Checks on one job's composed config (with its ``hydra`` node). Raises ConfigError."""
    import hydra

    from bench.plan import check_plan, validate

    validate(cfg)
    hc = cfg.hydra
    device = cfg.hardware.device
    if _is_slurm(hc):
        lc = hc.launcher
        gpus = slurm_gpus_per_node(lc)
        tasks = int(lc.tasks_per_node)
        world = int(lc.nodes) * tasks
        if device == "cuda" and gpus == 0:
            raise bad("hardware.device", device, "cpu when the Slurm job asks for no GPU (hydra.launcher.gpus_per_node=0), or set gpus_per_node >= 1")
        if device == "cuda" and tasks > gpus:
            raise bad("hydra.launcher.tasks_per_node", tasks, f"at most gpus_per_node={gpus}: each DDP process needs its own GPU")
        if gpus > 0:
            part = gres_of(lc.partition)
            if part is not None and not any("gpu" in g for g in part[1]):
                raise bad("hydra.launcher.gpus_per_node", gpus, f"0 for partition {part[0]!r}, whose nodes have no GPUs (sinfo GRES: {', '.join(sorted(set(part[1])))}); set hydra.launcher.partition to a GPU partition, or hardware.device=cpu with gpus_per_node=0")
    else:
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if device == "cuda" and not cuda_available:
            raise bad("hardware.device", device, "cpu on this machine: no CUDA device is visible (use hardware=cpu, or a Slurm profile to run on a cluster's GPUs)")
    size = cfg.batch.size
    if size % world:
        raise bad("batch.size", size, f"a multiple of the world size {world} (nodes x tasks per node: the global batch is split over processes)")
    task_cls = hydra.utils.get_class(cfg.task._target_)  # validate loaded it already
    train_size = task_cls.static_train_size(cfg.task) if hasattr(task_cls, "static_train_size") else None
    specs = task_cls.static_models(cfg.task) if hasattr(task_cls, "static_models") else None
    models = None if specs is None else {name: (dict(s.optimizer), s.warmup) for name, s in specs.items()}
    check_plan(cfg, train_size, models, world)


def job_overrides(config: DictConfig, loader) -> list[list[str]] | None:
    """Each job's override list, as Hydra's basic sweeper will make them; None for other sweepers."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    sweeper = config.hydra.sweeper
    if not str(sweeper.get("_target_", "")).endswith("BasicSweeper"):
        return None
    strings = [f"{k}={v}" for k, v in (sweeper.get("params") or {}).items()]
    strings += list(config.hydra.overrides.task)
    parsed = OverridesParser.create(config_loader=loader).parse_overrides(strings)
    return [job for batch in BasicSweeper.split_arguments(parsed, None) for job in batch]


def preflight(config: DictConfig) -> None:
    """All checks for a multirun whose primary config is ``config``; raises ConfigError on the first problem."""
    import torch
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    cuda = torch.cuda.is_available()
    gres_cache: dict[Any, Any] = {}

    def gres_of(partition):
        if partition not in gres_cache:
            gres_cache[partition] = partition_gres(partition)
        return gres_cache[partition]

    loader = GlobalHydra.instance().config_loader()
    jobs = job_overrides(config, loader)
    if jobs is None:  # another sweeper picks the jobs as it goes: check the base config only
        check_job(config, cuda, gres_of)
    hc = HydraConfig.instance()
    try:
        for num, overrides in enumerate(jobs or []):
            job_cfg = loader.load_sweep_config(config, list(overrides))
            with open_dict(job_cfg.hydra.job):
                job_cfg.hydra.job.num = num
            hc.set_config(job_cfg)  # so that ${hydra:...} in the job's values resolves as in the job
            try:
                check_job(job_cfg, cuda, gres_of)
            except ConfigError as e:
                raise ConfigError(f"{e} (job #{num}: {' '.join(overrides)})" if len(jobs) > 1 else str(e)) from None
            except Exception:  # e.g. a value that resolves only inside a running job: that job checks it itself
                continue
    finally:
        hc.set_config(config)
    check_sweep_dir(str(config.hydra.sweep.dir))  # last: a refused sweep leaves no empty sweep dir behind


WARMUP_LENGTH_KEYS = ("warmup.steps", "warmup.epochs", "warmup.fraction", "warmup.beta2_multiple")


def check_no_warmup_length(config: DictConfig) -> None:
    """A single run with warmup=none refuses a warm-up length typed on its command line.

    ``python -m bench warmup=none warmup.steps=500`` asks for two things that contradict each other,
    and the length would be ignored without a word: most likely ``warmup=linear`` was meant. A length
    that comes from a preset or a config file is accepted, and so is one in a sweep
    (``-m warmup=none,linear warmup.epochs=5``): there one length serves every warm-up compared,
    and none has no length to apply.
    """
    from bench.plan import warmup_fn
    from bench.schedules import no_warmup

    if warmup_fn(config).func is not no_warmup:
        return
    typed = {str(o).lstrip("+~").partition("=")[0] for o in config.hydra.overrides.task}
    for key in WARMUP_LENGTH_KEYS:
        value = OmegaConf.select(config, key, default=None)
        if key in typed and value is not None:
            raise bad(key, value, "null with warmup=none (no warm-up has no length): choose a warm-up such as warmup=linear, or drop the key")


def preflight_run(config: DictConfig) -> None:
    """The checks of a single run (no ``-m``), before Hydra creates its run dir or writes anything.

    Same checks as one job of a sweep (:func:`check_job`: validate, the plan's data-free checks,
    devices), the warm-up length rule (:func:`check_no_warmup_length`), then ``hydra.run.dir``:
    created and written, so an unwritable one is one line instead of a traceback. A value that
    resolves only inside the running job (``${hydra:runtime.output_dir}``) is left to the job.
    """
    import torch
    from hydra.core.hydra_config import HydraConfig

    HydraConfig.instance().set_config(config)  # so that ${hydra:...} in the values resolves as in the job
    try:
        check_job(config, torch.cuda.is_available())
        check_no_warmup_length(config)
    except ConfigError:
        raise
    except Exception:  # not a value error of ours: the job's own checks will report it with its context
        pass
    check_sweep_dir(str(config.hydra.run.dir), key="hydra.run.dir")  # last: a refused run leaves no run dir behind


def discard_refused_run() -> None:
    """After a single run is refused (a check that needed the task's data): remove what Hydra wrote for it.

    Hydra creates the run dir, ``.hydra/`` and the job log before the app starts. They are removed
    only when the run dir holds nothing else (so never a record, a checkpoint or a file of an earlier
    run), and the run dir too when it is then empty. A multirun job's folder is kept: the sweep's
    report and exit status name it.
    """
    import logging

    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    if hc.mode == RunMode.MULTIRUN:
        return
    out = Path(hc.runtime.output_dir).resolve()
    logs = []
    for handler in list(logging.getLogger().handlers):
        name = getattr(handler, "baseFilename", None)
        if name and Path(name).resolve().parent == out:
            handler.close()
            logging.getLogger().removeHandler(handler)
            logs.append(Path(name).name)
    hydra_dir = out / hc.output_subdir if hc.output_subdir else None
    from bench.lock import FILE as LOCK_FILE

    # the job's lock file too: refused after it took the lock (a check on the task's data), released by now
    ours = set(logs) | ({hydra_dir.name} if hydra_dir else set()) | {LOCK_FILE}
    try:
        if set(os.listdir(out)) - ours:
            return  # something else lives here: leave everything as it is
        if hydra_dir is not None and hydra_dir.is_dir():
            if set(os.listdir(hydra_dir)) - {"config.yaml", "hydra.yaml", "overrides.yaml"}:
                return
            shutil.rmtree(hydra_dir)
        for name in [*logs, LOCK_FILE]:
            (out / name).unlink(missing_ok=True)
        out.rmdir()
    except OSError:
        pass  # best effort: the refusal itself has been reported


class PreflightCallback(Callback):
    """Runs :func:`preflight` before a multirun starts or submits anything, and :func:`preflight_run`
    before a single run writes anything; bad input exits 2 with one line."""

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _refuse_bad_input(preflight, config)

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _refuse_bad_input(preflight_run, config)


def _refuse_bad_input(check, config: DictConfig) -> None:
    """Run ``check(config)``; a ConfigError ends the process with one ``error:`` line and exit code 2."""
    try:
        check(config)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
