"""Hydra callbacks: sweep-level progress after each job, and the report after each multirun.

Registered in conf/config.yaml under ``hydra.callbacks``. ``report=false`` on the command
line turns the report off. A report error never fails a sweep: it is printed as one line.

A sweep whose jobs did not all finish still gets its report; then every job of *this* multirun
that failed (status ``failed``) or never finished (no result.json, or still ``running`` /
``preempted``) is named on stderr with its folder and error line, and the multirun exits with
status 1 (:data:`EXIT_JOBS_FAILED`) once everything else is written. Jobs from earlier sweeps
in the same folder do not count: for Hydra's basic sweeper the job folders are rebuilt from the
sweep's own overrides; for another sweeper, the folders whose ``.hydra/`` this multirun wrote.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from omegaconf import DictConfig

from bench.progress import interactive
from bench.records import RESULT, finished_statuses, read_result

EXIT_JOBS_FAILED = 1  # not 2, which means bad input refused before anything ran


def planned_jobs(multirun_yaml: Path) -> int | None:
    """Jobs in a sweep: the product of the sweep lengths of sweeper params and command-line overrides.

    The command line wins over a preset's ``hydra.sweeper.params`` for the same key, as in
    Hydra's basic sweeper. None when the file cannot be read (no total is shown then).
    """
    import yaml
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        with open(multirun_yaml) as f:
            hydra = (yaml.safe_load(f) or {}).get("hydra", {})
        strings = [f"{k}={v}" for k, v in ((hydra.get("sweeper") or {}).get("params") or {}).items()]
        strings += list((hydra.get("overrides") or {}).get("task") or [])
        lengths = {}
        for o in OverridesParser.create().parse_overrides(strings):
            lengths[o.get_key_element()] = len(list(o.sweep_string_iterator())) if o.is_sweep_override() else 1
    except Exception:  # progress is a nicety: any surprise in the file means no total, never a failed job
        return None
    n = 1
    for v in lengths.values():
        n *= v
    return n


def sweep_progress(sweep_dir: Path) -> str:
    """'[sweep] 12/72 jobs done, ~3m10s left' from the records under the sweep dir and multirun.yaml's age."""
    marker = sweep_dir / "multirun.yaml"
    t_start = marker.stat().st_mtime if marker.exists() else None
    done = new = 0
    for p in sweep_dir.rglob(RESULT):
        r = read_result(p)
        # done: a result (diverged or a declared outcome) or a crash; running and preempted jobs are still to come
        if r is None or not (r.get("status") in finished_statuses(r) or r.get("status") == "failed"):
            continue
        done += 1
        if t_start is not None and p.stat().st_mtime >= t_start:
            new += 1
    total = planned_jobs(marker) if marker.exists() else None
    line = f"[sweep] {done}/{total} jobs done" if total else f"[sweep] {done} jobs done"
    if total and t_start is not None and new:
        left = (time.time() - t_start) / new * max(total - done, 0)
        line += f", ~{int(left // 60)}m{int(left % 60):02d}s left"
    return line


def sweep_job_dirs(config: DictConfig) -> list[Path]:
    """The output folders of this multirun's jobs, in job order.

    Basic sweeper: each job's config composed as the sweeper composes it, ``hydra.sweep.subdir``
    resolved with its job number. Other sweepers pick jobs as they go: the folders under the
    sweep dir whose ``.hydra/config.yaml`` is no older than this multirun's ``multirun.yaml``.
    """
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import open_dict

    from bench.cluster import job_overrides

    sweep_dir = Path(config.hydra.sweep.dir)
    loader = GlobalHydra.instance().config_loader() if GlobalHydra.instance().is_initialized() else None
    jobs = job_overrides(config, loader) if loader is not None else None
    if jobs is not None:
        dirs = []
        for num, overrides in enumerate(jobs):
            job_cfg = loader.load_sweep_config(config, list(overrides))
            with open_dict(job_cfg.hydra.job):
                job_cfg.hydra.job.num = num
            dirs.append(sweep_dir / str(job_cfg.hydra.sweep.subdir))
        return dirs
    marker = sweep_dir / "multirun.yaml"
    since = marker.stat().st_mtime if marker.exists() else 0.0
    return sorted(p.parent.parent for p in sweep_dir.rglob(".hydra/config.yaml") if p.stat().st_mtime >= since and p.parent.parent != sweep_dir)


def unfinished_jobs(job_dirs: list[Path]) -> list[tuple[Path, str]]:
    """(folder, why) for each job that failed or never finished: its record's error line, or what is missing."""
    out = []
    for d in job_dirs:
        r = read_result(d / RESULT)
        if r is None:
            why = "no readable result.json (never started, or crashed before writing its record)"
        elif r.get("status") == "failed":
            error = str(r.get("error") or "").strip()
            why = error.splitlines()[0] if error else "failed (no error recorded)"
        elif r.get("status") in finished_statuses(r):
            continue
        else:
            why = f"status {r.get('status')!r}: killed, or stopped before its last step"
        out.append((d, why))
    return out


class SweepCallback(Callback):
    """After each job: a progress line (terminal only). After the multirun: the report (unless report=false)."""

    def on_job_end(self, config: DictConfig, job_return: Any, **kwargs: Any) -> None:
        if not interactive():
            return
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        hc = HydraConfig.get()
        if hc.mode != RunMode.MULTIRUN:
            return
        print(sweep_progress(Path(hc.sweep.dir)), file=sys.stderr, flush=True)

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        """The report (unless report=false); then the jobs that failed, and exit status 1 when there are any."""
        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            bad_jobs = unfinished_jobs(sweep_job_dirs(config))
        except Exception as e:  # never lose the report over this; say that the check could not run
            print(f"[sweep] could not check the jobs' records: {type(e).__name__}: {e}".splitlines()[0], file=sys.stderr)
            bad_jobs = []
        if config.get("report", True):
            self._report(sweep_dir, config)
        if bad_jobs:
            print(f"[sweep] {len(bad_jobs)} job(s) of this sweep failed or did not finish:", file=sys.stderr)
            for d, why in bad_jobs:
                print(f"[sweep]   {d}: {why}", file=sys.stderr)
            # SystemExit is not an Exception, so Hydra's callback runner lets it end the process
            raise SystemExit(EXIT_JOBS_FAILED)

    @staticmethod
    def _report(sweep_dir: Path, config: DictConfig) -> None:
        from bench.report import ReportError, print_summary, report

        try:
            res = report(sweep_dir)
        except ReportError as e:
            print(f"[report] skipped: {e}", file=sys.stderr)
            return
        except Exception as e:  # a report bug must not turn a finished sweep into a failed one
            print(f"[report] failed: {type(e).__name__}: {e} (rerun: python -m bench.report {sweep_dir})", file=sys.stderr)
            return
        print_summary(res, file=sys.stdout, warn_file=sys.stderr)  # the streams of now, not of import time
        publish_to_wandb(config, sweep_dir)


def publish_to_wandb(config: DictConfig, sweep_dir: Path) -> None:
    """With logger=wandb, the report's tables and figures as one summary run of the sweep's W&B group."""
    wandb_cfg = (config.get("logger") or {}).get("wandb")
    if wandb_cfg is None:
        return
    from bench.loggers import publish_sweep_to_wandb

    experiment = config.hydra.runtime.choices.get("experiment") if "runtime" in config.hydra else None
    publish_sweep_to_wandb(wandb_cfg, sweep_dir, experiment)
