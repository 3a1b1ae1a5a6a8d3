"""Hydra callbacks: sweep-level progress after each job, and the report after each multirun.

Registered in conf/config.yaml under ``hydra.callbacks``. ``report=false`` on the command
line turns the report off. Neither callback can fail a sweep: a report error is printed
as one line and the sweep's exit status stays that of its jobs.
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
        if not config.get("report", True):
            return
        from bench.report import ReportError, print_summary, report

        sweep_dir = Path(config.hydra.sweep.dir)
        try:
            res = report(sweep_dir)
        except ReportError as e:
            print(f"[report] skipped: {e}", file=sys.stderr)
            return
        except Exception as e:  # a report bug must not turn a finished sweep into a failed one
            print(f"[report] failed: {type(e).__name__}: {e} (rerun: python -m bench.report {sweep_dir})", file=sys.stderr)
            return
        print_summary(res)
        publish_to_wandb(config, sweep_dir)


def publish_to_wandb(config: DictConfig, sweep_dir: Path) -> None:
    """With logger=wandb, the report's tables and figures as one summary run of the sweep's W&B group."""
    wandb_cfg = (config.get("logger") or {}).get("wandb")
    if wandb_cfg is None:
        return
    from bench.loggers import publish_sweep_to_wandb

    experiment = config.hydra.runtime.choices.get("experiment") if "runtime" in config.hydra else None
    publish_sweep_to_wandb(wandb_cfg, sweep_dir, experiment)
