"""Sweep report: ``python -m bench.report SWEEP_DIR [--out DIR] [--metric NAME]``.

Reads every ``result.json`` under a multirun directory (basic and joblib layouts
``SWEEP/<job num>/``, submitit's ``SWEEP/.submitit/``, nested sweeps) and writes into
``--out`` (default ``SWEEP/report``):

- ``runs.csv``: one row per run (also :func:`runs`, a DataFrame for notebooks);
- ``summary.csv``: one row per cell (all varying config keys except ``seed``): runs, successes, the success
  rate with its exact interval, the mean over successful runs with an interval fit for its n, the mean
  with failures scored at chance;
- ``best_lr.csv``: per (task, optimizer, warm-up, batch size, other keys) the grid LR selected on validation,
  lr_star (quadratic fit in log LR) with a seed-bootstrap interval, and the test metric at the selected LR;
- ``alpha.csv``: the exponent alpha of eta* ~ B^alpha under three criteria for eta*;
- ``warmup_effect.csv``: each warm-up against ``none``: stable LR range, paired test difference, p, Holm;
- ``table.md`` and ``table.tex`` with those tables, the figures (``bench/report_plots.py``)
  and a ``README.md`` with the sweep command, commit, hardware, wall time and warnings.

Every statistic is defined in docs/report.md (Definitions); the primitives are in ``bench/stats.py``.
A run's metric is read from the block its record names (``metric_block``): the final evaluation, or with
``train.average_last`` the mean of the last K evaluations (``final_avg``, and ``test_avg`` for test).
Selection always uses the validation metric; the tables report the held-out test metric when every
successful run has it (``result.json["test"]``), else validation, and say so.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench.records import COMPLETED, DIVERGED, METRICS, RESULT, measured, outcomes, read_result, succeeded
from bench.stats import clopper_pearson, holm, mean_interval, paired_permutation_pvalue, paired_t_pvalue, quadratic_optimum

BOOT_LR = 1000  # seed resamples for lr_star's interval (and alpha's, refitted on the same samples)
STABLE = 0.8  # success rate a cell needs to be selectable as best LR and to count in the stable LR range
FEW_SEEDS = 5  # a cell with fewer runs than this is warned about
DELTA_REL = 0.01  # alpha's third criterion: LRs whose mean is within 1 % of the best mean (relative, so any metric's units)
BASELINE = "none"  # the warm-up every other warm-up is compared with
BASE_KEYS = ["task", "optimizer", "warmup", "batch_size", "lr_base"]
RENAME = {"optimizer.lr": "lr_base", "batch.size": "batch_size"}  # override keys the record already holds as columns
NOT_CELL = {"seed", "experiment", "logger", "hardware", "train.force", "report"}  # never split cells


class ReportError(Exception):
    """Input the report cannot work with: one line, non-zero exit."""


@dataclass
class Sweep:
    """What was read from a sweep directory (:func:`load`).

    ``runs`` has one row per readable record: the cell keys (``task``, ``optimizer``, ``warmup``,
    ``batch_size`` = ``batch.size``, ``lr_base`` = ``optimizer.lr``, then every other varying key), ``seed``,
    ``status``, ``measured`` (trained to its last step), ``finished`` (measured or diverged: an outcome of
    training), ``success``, ``lr_peak`` (after the scaling rule), ``lr_mean`` (averaged over the budget), ``scaling``, ``base_batch_size``, ``decay``,
    ``metric_name`` / ``metric`` (validation value of the chosen metric from the record's ``metric_block``: the
    final evaluation, or with ``train.average_last`` the mean of the last K evaluations; NaN unless measured),
    ``metric_block``, ``avg_evals`` (evaluations averaged; NaN for ``final``), ``average_last`` (K),
    ``test_name`` / ``test_metric`` (its held-out test value from the same block, NaN when the record has none),
    ``chance`` (what a run that learned nothing scores on the metric, NaN when the record does not say), ``floor``
    (the best value real data reaches, ``task_info.floor``, NaN when the task states none), ``final_<m>`` /
    ``best_<m>`` (and ``avg_<m>`` for averaging runs) for every task metric, ``final_<m>`` / ``avg_<m>`` for the other
    values of the evaluations (a GAN's ``d_acc_real``, ``d_acc_fake``), steps, wall time, provenance and ``dir``.
    """

    root: Path
    runs: pd.DataFrame
    keys: list[str]  # the cell's columns
    metric: str  # column name of the chosen metric ("metric" holds the values)
    modes: dict[str, str]  # task -> "min" | "max" for the chosen metric
    outcomes: dict[str, bool] = field(default_factory=dict)  # measured statuses seen -> success (records.outcomes)
    warnings: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    unfinished: list[tuple[str, str]] = field(default_factory=list)  # (job folder, why) of runs that failed or never finished
    has_test: bool = False  # every successful run has the test metric: tables report test, else validation
    average_last: str | None = None  # K of the runs whose metric is a mean of their last K evaluations ("5", "3/5"); None: final values
    arm_keys: dict = field(default_factory=dict)  # config key -> its baseline value (None: any) that makes a compared arm (records' arm_keys)

    def reading(self, name: str | None = None) -> str:
        """What the metric values are, for titles: ``final fd``, or ``fd (mean of the last 5 evaluations)``."""
        name = name or self.metric
        return f"final {name}" if self.average_last is None else f"{name} (mean of the last {self.average_last} evaluations)"


# ---------------------------------------------------------------- reading


def _lookup(cfg: dict, dotted: str):
    cur = cfg
    for part in dotted.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur


def _override_keys(overrides: list[str]) -> dict[str, str]:
    out = {}
    for o in overrides or []:
        if "=" not in o:
            continue
        k, v = o.split("=", 1)
        out[k.lstrip("+~")] = v
    return out


def _number(v):
    """A float from a record value: numbers as they are, non-finite ones stored as strings ("nan", "inf"); NaN otherwise."""
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            return math.nan
    return float(v) if _is_num(v) else math.nan


def _is_num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _is_num_or_text(v) -> bool:
    """A number, or one JSON cannot hold written as a string (``"nan"``, ``"inf"``)."""
    return _is_num(v) or (isinstance(v, str) and v.strip().lower().lstrip("+-") in ("nan", "inf", "infinity"))


# What the report reads from a record, and the shape it must have: key -> (test, what is expected, required).
# A record breaking any of these is skipped and named; None is accepted for a key that is not required.
_RECORD_KEYS = {
    "status": (lambda v: isinstance(v, str), "a status string", True),
    "task": (lambda v: isinstance(v, str), "a task name", True),
    "config": (lambda v: isinstance(v, dict), "the resolved config (a mapping)", True),
    "metric_modes": (lambda v: isinstance(v, dict) and all(isinstance(k, str) and m in ("min", "max") for k, m in v.items()), "a mapping metric -> 'min' | 'max'", True),
    "lr_base": (lambda v: _is_num(v) and math.isfinite(v), "a finite number", True),
    "batch_size": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer", True),
    "lr_peak": (lambda v: _is_num(v) and math.isfinite(v), "a finite number", True),
    "seed": (lambda v: isinstance(v, int) and not isinstance(v, bool), "an integer", False),
    "primary_metric": (lambda v: isinstance(v, str), "a metric name", False),
    "warmup": (lambda v: isinstance(v, str), "a warm-up name", False),
    "choices": (lambda v: isinstance(v, dict), "a mapping group -> option", False),
    "overrides": (lambda v: isinstance(v, list) and all(isinstance(o, str) for o in v), "a list of override strings", False),
    "final": (lambda v: isinstance(v, dict) and all(_is_num_or_text(x) for x in v.values()), "a mapping metric -> number", False),
    "metric_block": (lambda v: v in ("final", "final_avg"), "'final' or 'final_avg'", False),
    "average_last": (lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1, "an integer >= 1", False),
    "final_avg": (lambda v: isinstance(v, dict) and all(_is_num_or_text(x) for x in v.values()), "a mapping metric -> number", False),
    "final_avg_steps": (lambda v: isinstance(v, list) and all(_is_num(x) for x in v), "a list of steps", False),
    "test_avg": (lambda v: isinstance(v, dict) and all(_is_num_or_text(x) for x in v.values()), "a mapping test metric -> number", False),
    "best": (lambda v: isinstance(v, dict) and all(_is_num_or_text(x) for x in v.values()), "a mapping metric -> number", False),
    "outcomes": (lambda v: isinstance(v, dict) and all(isinstance(x, bool) for x in v.values()), "a mapping status -> true/false", False),
    "warmup_steps": (lambda v: isinstance(v, dict) and all(_is_num(x) for x in v.values()), "a mapping model -> steps", False),
    "env": (lambda v: isinstance(v, dict), "a mapping", False),
    "final_train_loss": (_is_num_or_text, "a number", False),
    "wall_time_s": (_is_num_or_text, "a number", False),
    "started": (lambda v: isinstance(v, str), "a timestamp string", False),
    "ended": (lambda v: isinstance(v, str), "a timestamp string", False),
    "test": (lambda v: isinstance(v, dict) and all(_is_num_or_text(x) for x in v.values()), "a mapping test metric -> number", False),
    "chance": (lambda v: isinstance(v, dict) and all(_is_num_or_text(x) for x in v.values()), "a mapping metric -> number", False),
    "arm_keys": (lambda v: isinstance(v, dict) and all(x is None or isinstance(x, (str, int, float)) for x in v.values()), "a mapping config key -> baseline value", False),
}


def record_problem(r: dict) -> str | None:
    """Why the report cannot use record ``r`` (the first key that is missing or of the wrong type), or None."""
    for key, (test, expected, required) in _RECORD_KEYS.items():
        if key not in r or r[key] is None:
            if required:
                return f"no {key!r} key" if key not in r else f"{key} is null, expected {expected}"
            continue
        try:
            ok = bool(test(r[key]))
        except Exception:
            ok = False
        if not ok:
            return f"{key}={_short(r[key])} is not {expected}"
    return None


def _short(v) -> str:
    text = json.dumps(v, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _scalar(v):
    """A cell value that compares equal to itself and sorts: NaN and None (null) become text, lists and mappings JSON."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "null" if v is None else "nan"
    if isinstance(v, (list, dict)):
        return json.dumps(v)
    return v


def _cell_value(r: dict, key: str):
    """Record ``r``'s value of cell key ``key``: from its overrides or choices, else its resolved config."""
    if key in r["_vals"]:
        return _scalar(r["_vals"][key])
    v = _lookup(r["config"], key)
    return _scalar(None if isinstance(v, dict) else v)  # a group's node is no value: the record did not choose this group


def test_name(metric: str) -> str:
    """The held-out test counterpart of validation metric ``metric`` in ``result.json["test"]``:
    a leading ``val_`` becomes ``test_`` (``val_acc`` -> ``test_acc``), any other name gets the prefix (``fd`` -> ``test_fd``)."""
    return "test_" + metric[len("val_"):] if metric.startswith("val_") else "test_" + metric


def _choices(r: dict) -> dict:
    """The record's config-group choices; schema-1 records name the decay group ``schedule``: read as ``decay``."""
    ch = {k: v for k, v in (r.get("choices") or {}).items() if not k.startswith("hydra")}
    if "schedule" in ch and "decay" not in ch:
        ch["decay"] = ch.pop("schedule")
    return ch


def _base_value(r: dict, key: str):
    """The BASE_KEYS columns of a record."""
    if key == "optimizer":
        return (r.get("choices") or {}).get("optimizer")
    return r.get(key)


def find_records(root: Path) -> list[Path]:
    """Every result.json under root, including hidden folders (submitit's .submitit/), sorted."""
    return sorted(p for p in root.rglob(RESULT) if ".hydra" not in p.parts)


def _job_dirs_without_record(root: Path) -> list[Path]:
    """Job folders Hydra created (they hold .hydra/) that have no result.json: never started or crashed early."""
    return sorted(p.parent for p in root.rglob(".hydra") if p.is_dir() and not (p.parent / RESULT).exists())


def sweep_commands(root: Path) -> list[str]:
    """The command of each multirun under root, rebuilt from multirun.yaml's hydra.overrides."""
    import yaml

    cmds = []
    for path in sorted(root.rglob("multirun.yaml")):
        try:
            with open(path) as f:
                ov = (yaml.safe_load(f) or {}).get("hydra", {}).get("overrides", {})
        except (OSError, yaml.YAMLError):
            continue
        hydra_ov = [o for o in ov.get("hydra") or [] if o != "hydra.mode=MULTIRUN"]
        args = " ".join(_quote(o) for o in [*hydra_ov, *(ov.get("task") or [])])
        cmds.append(f"python -m bench -m {args}".rstrip())
    return cmds


def _quote(arg: str) -> str:
    return f"'{arg}'" if any(c in arg for c in " ()[]{}$*?|&;<>'\"") else arg


def load(root: Path, metric: str | None = None) -> Sweep:
    """Read the records under root into a runs table. Raises ReportError for unusable input."""
    root = Path(root)
    if not root.is_dir():
        raise ReportError(f"{root}: not a directory (give the sweep directory a multirun wrote)")
    if not any(root.iterdir()):
        raise ReportError(f"{root}: empty directory, no sweep has run here")
    paths = find_records(root)
    warnings = []
    records = []
    for p in paths:
        r = read_result(p)
        if r is None:
            warnings.append(f"unreadable or half-written record skipped: {p}")
            continue
        problem = record_problem(r)
        if problem is not None:
            warnings.append(f"malformed record skipped ({problem}): {p}")
            continue
        r["_path"] = p
        records.append(r)
    # the same run twice (two parts of a study that share a grid point): count it once, or its cell's n and
    # intervals would treat one seed as two
    seen_hash: dict[str, Path] = {}
    unique = []
    for r in records:
        h = r.get("config_hash")
        if h is not None and h in seen_hash and r["status"] not in ("running", "failed"):
            warnings.append(f"duplicate run (same config as {seen_hash[h].parent}) counted once: {r['_path'].parent}")
            continue
        if h is not None and r["status"] not in ("running", "failed"):
            seen_hash[h] = r["_path"]
        unique.append(r)
    records = unique
    unfinished = []
    for d in _job_dirs_without_record(root):
        warnings.append(f"job folder without result.json (never started, or crashed before writing): {d}")
        unfinished.append((str(d), "no result.json (never started, or crashed before writing its record)"))
    if not records:
        raise ReportError(f"{root}: no readable result.json records found (is this a multirun directory?)")

    known = sorted({m for r in records for m in r["metric_modes"]})
    if metric is not None and metric not in known:
        raise ReportError(f"--metric={metric!r} is not a metric of these runs: one of {', '.join(known)}")

    # Which override keys and choices vary across the runs: together they define the cells.
    extra_vals: dict[str, list] = {}
    for r in records:
        choices = _choices(r)
        ov = _override_keys(r.get("overrides"))
        vals = dict(choices)
        for k in ov:
            if k in choices or k in ("schedule", "decay") or k.startswith("hydra"):
                continue
            v = _lookup(r["config"], k)
            vals[RENAME.get(k, k)] = ov[k] if v is None else (json.dumps(v) if isinstance(v, (list, dict)) else v)
        r["_vals"] = vals
        for k in vals:
            extra_vals.setdefault(k, [])
    # sweeps that override different keys share one folder: a record without a key gets its configured value
    for r in records:
        r["_cells"] = {k: _cell_value(r, k) for k in extra_vals}
        for k in extra_vals:
            extra_vals[k].append(str(r["_cells"][k]))
    varying = sorted(k for k, v in extra_vals.items() if len(set(v)) > 1 and k not in NOT_CELL and k not in BASE_KEYS)
    # A key fixed by the other cell keys (an LR multiplier next to lr_base) would only split groups: drop it.
    # Keys with many values go first: a per-part lookup table (lr_centre) is dropped, and the few-valued keys that
    # name the parts (batch=sde, train.steps=400) stay as the readable columns.
    table = pd.DataFrame([{k: str(r["_cells"][k]) for k in varying} | {k: str(_base_value(r, k)) for k in BASE_KEYS} for r in records])
    # Between keys with as many values, the run-length and other training keys (train.*) give way before the
    # config-group choices and the task / optimizer / warm-up / batch settings that name what was compared.
    for k in sorted(varying, key=lambda c: (-table[c].nunique(), -_naming_rank(c), c)):
        others = BASE_KEYS + [v for v in varying if v != k]
        if table.groupby(others)[k].nunique().max() == 1:
            varying.remove(k)
    keys = BASE_KEYS + varying

    rows, modes, seen = [], {}, {COMPLETED: True}
    for r in records:
        declared = outcomes(r)
        # a record that declares its outcomes names them all; an old record (fallback) only its own status
        for k, ok in (declared.items() if "outcomes" in r else [(r["status"], declared[r["status"]])] if r["status"] in declared else []):
            if seen.setdefault(k, ok) != ok:
                warnings.append(f"status {k!r} is declared a success in some records and a failure in others; read as {seen[k]}")
        name = metric or r.get("primary_metric")
        mode = r["metric_modes"].get(name)
        if mode is None:
            warnings.append(f"record without metric {name!r} skipped: {r['_path']}")
            continue
        if modes.setdefault(r["task"], mode) != mode:
            raise ReportError(f"metric {name!r} is 'min' in some runs of task {r['task']} and 'max' in others")
        final, best = r.get("final") or {}, r.get("best") or {}
        test, chance = r.get("test") or {}, r.get("chance") or {}
        block = r.get("metric_block") or "final"
        averaged = r.get("final_avg") or {}
        value, test_value = (averaged, r.get("test_avg") or {}) if block == "final_avg" else (final, test)
        floor = (r.get("task_info") or {}).get("floor") if isinstance(r.get("task_info"), dict) else None
        status = r["status"]
        ok = measured(r)
        row = {
            "task": r["task"],
            "optimizer": _scalar((r.get("choices") or {}).get("optimizer")),
            "warmup": _scalar(r.get("warmup")),
            "batch_size": r.get("batch_size"),
            "lr_base": r.get("lr_base"),
        }
        for k in varying:
            row[k] = r["_cells"][k]
        env = r.get("env") or {}
        row.update(
            seed=r.get("seed"),
            status=status,
            measured=ok,
            finished=ok or status == DIVERGED,
            success=ok and succeeded(r),
            scaling=r.get("scaling"),
            base_batch_size=r.get("base_batch_size"),
            lr_peak=r.get("lr_peak"),
            lr_mean=_number(r.get("lr_mean")),  # the LR averaged over the budget (NaN in records before it was kept)
            warmup_steps=max((r.get("warmup_steps") or {"": 0}).values()),
            metric_name=name,
            mode=mode,
            metric=_number(value.get(name)) if ok else math.nan,
            metric_block=block,
            average_last=_number(r.get("average_last")) if block == "final_avg" else math.nan,
            avg_evals=len(r.get("final_avg_steps") or []) if block == "final_avg" else math.nan,
            test_name=test_name(name),
            has_test=test_name(name) in test_value,
            test_metric=_number(test_value.get(test_name(name))) if ok else math.nan,
            chance=_number(chance.get(name)),
            floor=_number(floor.get(name)) if isinstance(floor, dict) else math.nan,
            best_metric=_number(best.get(name)) if ok else math.nan,
            steps=r.get("steps"),
            steps_planned=r.get("steps_planned"),
            diverged_step=r.get("diverged_step"),
            final_train_loss=_number(r.get("final_train_loss")),
            wall_time_s=_number(r.get("wall_time_s")),
            started=r.get("started"),
            ended=r.get("ended"),
            git_commit=env.get("git_commit"),
            git_dirty=env.get("git_dirty"),
            device_name=env.get("device_name"),
            cpu_model=env.get("cpu_model"),
            cpu_capability=env.get("cpu_capability"),
            device=env.get("device"),
            cpu_count=env.get("cpu_count"),
            torch_threads=env.get("torch_threads"),
            host=env.get("host"),
            torch=env.get("torch"),
            dir=str(r["_path"].parent),
        )
        row.setdefault("decay", _scalar(r.get("decay") or r.get("schedule")))  # unless a cell key already
        for m in r["metric_modes"]:
            row[f"final_{m}"] = _number(final.get(m))
            row[f"best_{m}"] = _number(best.get(m))
            if averaged:
                row[f"avg_{m}"] = _number(averaged.get(m))
        for m in dict.fromkeys([*final, *averaged]):  # evaluation values that are no task metric (a GAN's D accuracy)
            if m not in r["metric_modes"]:
                row[f"final_{m}"] = _number(final.get(m))
                if averaged:
                    row[f"avg_{m}"] = _number(averaged.get(m))
        # the generalization gap: test loss minus the loss on the training set, both at the end (tasks with train_eval)
        train_set = r.get("train_set") or {}
        if ok and "train_set_loss" in train_set and "test_loss" in test:
            row["train_set_loss"] = _number(train_set["train_set_loss"])
            row["gap_loss"] = _number(test["test_loss"]) - row["train_set_loss"]
        rows.append(row)
        if not ok and status != DIVERGED:
            why = {"running": "killed or still going", "failed": "crashed, see its result.json", "preempted": "stopped for a requeue"}.get(status, "unknown status")
            error = str(r.get("error") or "").strip().splitlines()[:1]
            warnings.append(f"run never finished (status {status}; {why}): {r['_path'].parent}" + (f": {error[0]}" if error else ""))
            unfinished.append((str(r["_path"].parent), error[0] if error else f"status {status} ({why})"))
    if not rows:
        raise ReportError(f"{root}: no record holds the metric {metric!r}")
    runs = pd.DataFrame(rows)
    for k in varying:  # one type per cell column: numbers sort as numbers, a column with any text is all text
        if not all(_is_num(v) for v in runs[k]):
            runs[k] = runs[k].map(str)
    runs["seed"] = runs["seed"].astype("Int64")  # a record may lack its seed: sorted last, not a crash
    runs = runs.sort_values(keys + ["seed"], kind="stable").reset_index(drop=True)
    names = sorted(runs["metric_name"].unique())
    ok = runs[runs["success"]]
    has_test = bool(len(ok)) and bool(ok["has_test"].all())
    arm_keys: dict = {}
    for r in records:
        for k, v in (r.get("arm_keys") or {}).items():
            if arm_keys.setdefault(k, v) != v:
                warnings.append(f"arm key {k} has baseline {arm_keys[k]!r} in some records and {v!r} in others; read as {arm_keys[k]!r}")
    return Sweep(root, runs, keys, "/".join(names), modes, dict(sorted(seen.items())), warnings, sweep_commands(root), sorted(unfinished), has_test,
                 _averaging(runs, warnings), arm_keys)


def _averaging(runs: pd.DataFrame, warnings: list[str]) -> str | None:
    """K of the averaging runs ("5", or "3/5" when they differ), None when every run reads its final evaluation;
    warns when the runs mix the two readings, or when a measured run averaged fewer evaluations than K."""
    avg = runs[runs["metric_block"] == "final_avg"]
    if avg.empty:
        return None
    if len(avg) < len(runs):
        warnings.append(f"{len(runs) - len(avg)} of {len(runs)} runs report their final evaluation, the others the mean of their last "
                        "evaluations (train.average_last): their values are not alike")
    short = avg[avg["measured"] & (avg["avg_evals"] < avg["average_last"])]
    if len(short):
        warnings.append(f"{len(short)} run(s) had fewer evaluations than train.average_last and average what they have "
                        f"(fewest: {int(short['avg_evals'].min())}), e.g. {short['dir'].iloc[0]}")
    return "/".join(str(k) for k in sorted({int(k) for k in avg["average_last"].dropna()})) or "?"


def runs(root: Path, metric: str | None = None) -> pd.DataFrame:
    """The runs of the sweep under ``root`` as a DataFrame, one row per readable record (see :class:`Sweep`).

    For notebooks: ``bench.report.runs("multirun/demo/2026-01-01_00-00-00")``.
    """
    return load(Path(root), metric).runs


# ---------------------------------------------------------------- statistics


def finished_cells(runs: pd.DataFrame) -> pd.DataFrame:
    """The runs that are an outcome of training (measured or diverged): what success rates count."""
    return runs[runs["finished"]]


def _reported(sw: Sweep) -> str:
    """The runs column the tables report: the held-out test metric when every successful run has it, else validation."""
    return "test_metric" if sw.has_test else "metric"


def scored_at_chance(g: pd.DataFrame, column: str) -> np.ndarray:
    """Values of the finished runs of ``g`` with every failure scored at its chance value: successes give
    ``column``, failures (diverged, stalled, collapsed, ...) ``chance``. NaN values when a failure's chance is unknown."""
    fin = finished_cells(g)
    return np.where(fin["success"].to_numpy(bool), fin[column].to_numpy(float), fin["chance"].to_numpy(float))


def summarize(sw: Sweep) -> pd.DataFrame:
    """One row per cell: counts, success rate with its exact interval, means with intervals (see docs/report.md).

    - ``success_rate = n_success / n_finished`` (finished: trained to the end or diverged; crashed, preempted
      and running jobs are ``n_unfinished`` and outside the rate), ``success_lo/hi``: Clopper-Pearson 95 %;
    - ``mean, ci_low, ci_high, interval``: the validation metric over successful runs (t below 10, BCa from 10);
    - ``test_mean, test_lo, test_hi``: the test metric over successful runs (NaN when the sweep has no test);
    - ``chance_mean, chance_lo, chance_hi``: the reported metric (test, else validation) over all finished runs,
      failures scored at chance (NaN when a failure's chance value is unknown);
    - ``eligible``: may be selected as best LR (:data:`STABLE`, no unfinished run).
    """
    out = []
    col = _reported(sw)
    for key, g in sw.runs.groupby(sw.keys, sort=True, dropna=False):
        fin = finished_cells(g)
        succ = fin[fin["success"]]
        n, k = len(fin), len(succ)
        lo, hi = clopper_pearson(k, n)
        m, mlo, mhi, how = mean_interval(succ["metric"].tolist())
        tm, tlo, thi, _ = mean_interval(succ["test_metric"].tolist()) if sw.has_test else (math.nan,) * 3 + ("none",)
        at_chance = scored_at_chance(g, col)
        cm, clo, chi, _ = mean_interval(at_chance.tolist()) if n and np.isfinite(at_chance).all() else (math.nan,) * 3 + ("none",)
        vals = succ["metric"].to_numpy(float)
        vals = vals[np.isfinite(vals)]
        chance = fin["chance"].dropna()
        floor = g["floor"].dropna()
        row = dict(zip(sw.keys, key))
        row.update(
            lr_peak=g["lr_peak"].iloc[0],
            lr_mean=g["lr_mean"].iloc[0],
            metric_name=g["metric_name"].iloc[0],
            mode=g["mode"].iloc[0],
            n_runs=len(g),
            **{f"n_{s}": int((g["status"] == s).sum()) for s in status_columns(sw)},
            n_unfinished=int((~g["finished"]).sum()),  # failed, preempted, running
            n_success=k,
            n_finished=n,
            success_rate=k / n if n else math.nan,
            success_lo=lo,
            success_hi=hi,
            mean=m,
            ci_low=mlo,
            ci_high=mhi,
            interval=how,
            std=float(vals.std(ddof=1)) if len(vals) > 1 else math.nan,
            test_name=g["test_name"].iloc[0] if sw.has_test else "",
            test_mean=tm,
            test_lo=tlo,
            test_hi=thi,
            chance_metric=g["test_name"].iloc[0] if sw.has_test else g["metric_name"].iloc[0],
            chance=float(chance.iloc[0]) if len(chance) else math.nan,
            chance_mean=cm,
            chance_lo=clo,
            chance_hi=chi,
            floor=float(floor.iloc[0]) if len(floor) else math.nan,
            final_train_loss=float(np.nanmean(g["final_train_loss"])) if g["final_train_loss"].notna().any() else math.nan,
            wall_time_s=float(g["wall_time_s"].sum()),
        )
        if "gap_loss" in g and g.loc[g["success"], "gap_loss"].notna().any():  # over the successful runs, as the means above
            row["gap_loss_mean"], row["gap_loss_lo"], row["gap_loss_hi"], _ = mean_interval(g.loc[g["success"], "gap_loss"].dropna().tolist())
        row["eligible"] = bool(n and row["n_unfinished"] == 0 and k / n >= STABLE and math.isfinite(m))
        out.append(row)
    return pd.DataFrame(out)


def status_columns(sw: Sweep) -> list[str]:
    """Statuses counted per cell: completed, diverged, then each other declared outcome seen in the records."""
    return [COMPLETED, DIVERGED, *(s for s in sw.outcomes if s != COMPLETED)]


def _count_columns(sw: Sweep) -> list[str]:
    return [f"n_{s}" for s in status_columns(sw)] + ["n_unfinished", "n_success", "n_finished"]


def not_ok_text(r, sw: Sweep) -> str:
    """'1 diverged, 2 collapsed' for a summary or best-LR row: its runs that did not succeed, by status."""
    parts = [(r[f"n_{s}"], s) for s in status_columns(sw) if not sw.outcomes.get(s, False)] + [(r["n_unfinished"], "unfinished")]
    return ", ".join(f"{int(n)} {s}" for n, s in parts if n)


def _better_idx(means: pd.Series, mode: str):
    return means.idxmax() if mode == "max" else means.idxmin()


def _lr_group(sw: Sweep) -> list[str]:
    return [k for k in sw.keys if k != "lr_base"]


def _group_cells(sw: Sweep, summary: pd.DataFrame):
    """(group key tuple, the group's summary rows) per group of cells that differ only in lr_base."""
    group = _lr_group(sw)
    for key, g in summary.groupby(group, sort=True, dropna=False):
        yield group, (key if isinstance(key, tuple) else (key,)), g


def _cell_values(sw: Sweep, cell) -> pd.DataFrame:
    """The runs of the cell that ``cell`` (a row holding every cell key) stands for."""
    runs = sw.runs
    for k in sw.keys:
        runs = runs[runs[k] == cell[k]]
    return runs


def lr_star(sw: Sweep, cells: pd.DataFrame, rng_seed: int = 0, n_boot: int = BOOT_LR) -> tuple[float, bool, np.ndarray]:
    """(lr_star, on_edge, bootstrap samples of lr_star) of one group's eligible cells (a summary slice).

    lr_star = exp(x*), x* = :func:`bench.stats.quadratic_optimum` of the validation mean (over successes)
    against log(lr_base) over the eligible cells, sorted by LR: the parabola through the grid optimum and its
    two eligible neighbours; the grid optimum itself when it is the first or last eligible LR (on_edge) or the
    three points do not bend towards an optimum. Samples: resample the successful runs of every eligible cell
    with replacement (``n_boot`` times, numpy RNG seed ``rng_seed``), recompute the means, refit.
    """
    ok = cells[cells["eligible"]].sort_values("lr_base")
    if ok.empty:
        return math.nan, False, np.array([])
    mode = ok["mode"].iloc[0]
    xs = np.log(ok["lr_base"].to_numpy(float))
    x_star, edge = quadratic_optimum(xs, ok["mean"].to_numpy(float), mode)
    values = []
    for _, c in ok.iterrows():
        runs = _cell_values(sw, c)
        v = runs.loc[runs["success"], "metric"].to_numpy(float)
        values.append(v[np.isfinite(v)])
    rng = np.random.default_rng(rng_seed)
    means = np.column_stack([v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(axis=1) for v in values])
    samples = np.array([quadratic_optimum(xs, row, mode)[0] for row in means])
    return float(math.exp(x_star)), bool(edge), np.exp(samples)


def _seed_median_lr(sw: Sweep, ok: pd.DataFrame) -> float:
    """Geometric median over seeds of each seed's best grid LR: per seed, the eligible cell where that seed's
    successful run has the best validation value; then exp(median(log lr_base)) over seeds."""
    if ok.empty:
        return math.nan
    mode = ok["mode"].iloc[0]
    frames = []
    for _, c in ok.iterrows():
        runs = _cell_values(sw, c)
        frames.append(runs.loc[runs["success"] & runs["metric"].notna(), ["seed", "lr_base", "metric"]])
    per = pd.concat(frames)
    if per.empty:
        return math.nan
    per = per.assign(key=per["metric"] if mode == "max" else -per["metric"]).sort_values(["seed", "key", "lr_base"], ascending=[True, False, True])
    best = per.groupby("seed", dropna=False).head(1)["lr_base"].to_numpy(float)
    return float(math.exp(np.median(np.log(best))))


def _delta_centre_lr(ok: pd.DataFrame) -> tuple[float, float]:
    """(geometric centre, delta): exp(mean(log lr_base)) over the eligible cells whose validation mean is within
    delta = DELTA_REL * |best mean| of the best."""
    if ok.empty:
        return math.nan, math.nan
    mode = ok["mode"].iloc[0]
    best = ok["mean"].max() if mode == "max" else ok["mean"].min()
    delta = DELTA_REL * abs(best)
    near = ok[(ok["mean"] >= best - delta) if mode == "max" else (ok["mean"] <= best + delta)]
    return float(math.exp(np.log(near["lr_base"].to_numpy(float)).mean())), delta


def best_lr(sw: Sweep, summary: pd.DataFrame) -> pd.DataFrame:
    """Per group (cell keys minus lr_base): the grid LR selected on validation, lr_star and its interval, the
    test metric at the selected LR, and the per-group LRs of the two other alpha criteria (see docs/report.md).

    Only eligible cells are candidates; a group without one gets NaN and edge ``no eligible cell``.
    """
    out = []
    for group, key, g in _group_cells(sw, summary):
        grid = sorted(g["lr_base"].unique())
        ok = g[g["eligible"]]
        row = dict(zip(group, key))
        row.update(n_lrs=len(grid), lr_min=grid[0], lr_max=grid[-1], metric_name=g["metric_name"].iloc[0], mode=g["mode"].iloc[0], selected_on=g["metric_name"].iloc[0],
                   floor=g["floor"].dropna().iloc[0] if g["floor"].notna().any() else math.nan)
        if ok.empty:
            row.update(lr_base=math.nan, lr_peak=math.nan, lr_scale=math.nan, lr_star=math.nan, lr_star_lo=math.nan, lr_star_hi=math.nan, lr_star_peak=math.nan, fit="",
                       lr_seed_median=math.nan, lr_delta_centre=math.nan, delta=math.nan, mean=math.nan, ci_low=math.nan, ci_high=math.nan, interval="none",
                       success_rate=math.nan, success_lo=math.nan, success_hi=math.nan, test_name="", test_mean=math.nan, test_lo=math.nan, test_hi=math.nan,
                       chance_mean=math.nan, chance_lo=math.nan, chance_hi=math.nan, n_runs=0, **{c: 0 for c in _count_columns(sw)}, eligible=False, edge="no eligible cell")
            out.append(row)
            continue
        b = ok.loc[_better_idx(ok["mean"], row["mode"])]
        edge = "single LR" if len(grid) == 1 else "low" if b["lr_base"] == grid[0] else "high" if b["lr_base"] == grid[-1] else ""
        star, star_edge, samples = lr_star(sw, g)
        lo, hi = (float(v) for v in np.percentile(samples, [2.5, 97.5])) if len(samples) else (math.nan, math.nan)
        centre, delta = _delta_centre_lr(ok)
        scale = b["lr_peak"] / b["lr_base"]
        row.update(
            lr_base=b["lr_base"], lr_peak=b["lr_peak"], lr_scale=scale,
            lr_star=star, lr_star_lo=lo, lr_star_hi=hi, lr_star_peak=star * scale,
            fit="grid optimum (edge of the eligible LRs)" if star_edge else "quadratic in log LR",
            lr_seed_median=_seed_median_lr(sw, ok), lr_delta_centre=centre, delta=delta,
            **{c: b[c] for c in ("mean", "ci_low", "ci_high", "interval", "success_rate", "success_lo", "success_hi", "test_name", "test_mean", "test_lo", "test_hi", "chance_mean", "chance_lo", "chance_hi", "n_runs", *_count_columns(sw))},
            eligible=True, edge=edge,
        )
        out.append(row)
    return pd.DataFrame(out)


def fit_alpha(batch, lr) -> tuple[float, float]:
    """Least squares of log(lr) = log(c) + alpha * log(batch); returns (alpha, c)."""
    x, y = np.log(np.asarray(batch, float)), np.log(np.asarray(lr, float))
    alpha, logc = np.polyfit(x, y, 1)
    return round(float(alpha), 12) + 0.0, float(math.exp(logc))  # round (+0.0 drops the sign of zero): a flat fit prints as 0, not -2e-16


def alpha_table(sw: Sweep, summary: pd.DataFrame, best: pd.DataFrame | None = None) -> pd.DataFrame:
    """alpha of eta* ~ B^alpha per group (cell keys minus lr_base and batch_size) under three criteria for eta*.

    ``alpha``: eta* = lr_star (peak units, lr_star x lr_scale), interval = 2.5/97.5 percentiles of the slope
    refitted on the lr_star bootstrap samples of every batch size (sample i of each batch together);
    ``alpha_seed_median``: eta* = geometric median over seeds of each seed's best grid LR;
    ``alpha_delta_centre``: eta* = geometric centre of the eligible LRs within delta of the best.
    Only batch sizes where more than one LR was swept and some cell is eligible take part.
    """
    best = best_lr(sw, summary) if best is None else best
    group = [k for k in sw.keys if k not in ("lr_base", "batch_size")]
    cols = [*group, "n_batch_sizes", "alpha", "alpha_low", "alpha_high", "c", "alpha_seed_median", "alpha_delta_centre", "disagree"]
    if best.empty:
        return pd.DataFrame(columns=cols)
    out = []
    for key, g in best.groupby(group, sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        picked = g[g["eligible"] & (g["n_lrs"] > 1)].sort_values("batch_size")
        row = dict(zip(group, key))
        row.update(n_batch_sizes=len(picked), alpha=math.nan, alpha_low=math.nan, alpha_high=math.nan, c=math.nan, alpha_seed_median=math.nan, alpha_delta_centre=math.nan, disagree=False)
        if len(picked) >= 2:
            bs = picked["batch_size"].to_numpy(float)
            scale = picked["lr_scale"].to_numpy(float)
            row["alpha"], row["c"] = fit_alpha(bs, picked["lr_star_peak"])
            row["alpha_seed_median"] = fit_alpha(bs, picked["lr_seed_median"] * scale)[0]
            row["alpha_delta_centre"] = fit_alpha(bs, picked["lr_delta_centre"] * scale)[0]
            samples = []
            for _, b in picked.iterrows():
                cells = summary
                for k in sw.keys:
                    if k != "lr_base":
                        cells = cells[cells[k] == b[k]]
                samples.append(lr_star(sw, cells)[2] * b["lr_scale"])
            logx = np.log(bs) - np.log(bs).mean()
            slopes = (np.log(np.vstack(samples)).T @ logx) / (logx @ logx)  # least-squares slope of every sample at once
            row["alpha_low"], row["alpha_high"] = (float(v) for v in np.percentile(slopes, [2.5, 97.5]))
            row["disagree"] = any(not (row["alpha_low"] - 1e-9 <= a <= row["alpha_high"] + 1e-9) for a in (row["alpha_seed_median"], row["alpha_delta_centre"]))
        out.append(row)
    return pd.DataFrame(out, columns=cols)


def warmup_effect(sw: Sweep, summary: pd.DataFrame, best: pd.DataFrame) -> pd.DataFrame:
    """Each warm-up against ``none`` at the same task, optimizer, batch size and other keys (see docs/report.md).

    (a) ``stable_lr``: the largest lr_base whose cell has success_rate >= STABLE (``stable_lr_none`` for none),
    ``stable_ratio`` = stable_lr / stable_lr_none; ``stable_at_top``: that LR is the arm's largest grid LR (the
    range may go further). (b) at each side's own best grid LR (selected on validation, :func:`best_lr`), over
    the seeds both cells ran: d_s = value(arm, s) - value(none, s) of the reported metric (test, else validation),
    a failure scored at chance (a pair whose failure has no chance value is dropped, ``n_dropped``);
    ``diff`` with its interval (:func:`bench.stats.mean_interval`), ``p`` (exact sign-flip,
    :func:`bench.stats.paired_permutation_pvalue`) and ``p_holm`` (Holm over every row of the table).
    """
    # warm-up length keys (warmup.steps, ...) belong to the arm: a linear warm-up of 10, 50 or 200 steps is three
    # arms, each paired with the no-warm-up cell of its group (whose length, unused, may be null); so do the keys the
    # records declare as arm keys (a GAN's warm-up target and two-time-scale multipliers)
    lengths = arm_columns(sw)
    group = [k for k in sw.keys if k not in ("lr_base", "warmup") and k not in lengths]
    cols = [*group, "warmup", *lengths, "baseline", "metric", "mode", "stable_lr", "stable_lr_none", "stable_ratio", "stable_at_top", "stable_at_top_none",
            "lr_base", "lr_base_none", "n_pairs", "n_dropped", "diff", "diff_lo", "diff_hi", "interval", "p", "p_holm", "p_t", "p_t_holm"]
    col = _reported(sw)
    name = "/".join(sorted(sw.runs["test_name" if sw.has_test else "metric_name"].unique()))
    out = []
    for key, g in summary.groupby(group, sort=True, dropna=False) if group else [((), summary)]:
        key = key if isinstance(key, tuple) else (key,)
        if BASELINE not in set(g["warmup"]):
            continue

        def rows_of(frame, arm):
            for k, v in arm.items():
                frame = frame[frame[k].astype(str) == str(v)]
            return frame

        def stable(arm):
            c = rows_of(g, arm)
            ok = c[c["n_finished"].gt(0) & c["success_rate"].ge(STABLE)]
            return (float(ok["lr_base"].max()), bool(ok["lr_base"].max() == c["lr_base"].max())) if len(ok) else (math.nan, False)

        def chosen(arm):
            b = rows_of(best, dict(zip(group, key)) | arm)
            return b.iloc[0] if len(b) and b["eligible"].iloc[0] else None

        arms = g[["warmup", *lengths]].drop_duplicates().astype(str).to_dict("records")
        bases = [a for a in arms if is_baseline(sw, a)]
        for arm in sorted((a for a in arms if not is_baseline(sw, a)), key=lambda a: tuple(a.values())):
            # the no-warm-up cell with the same length values when there is one (a crossed sweep), else the only one
            same = [b for b in bases if all(b[k] == arm[k] for k in lengths)]
            if not same and len(bases) != 1:
                continue
            base = same[0] if same else bases[0]
            s0, top0 = stable(base)
            b0 = chosen(base)
            s1, top1 = stable(arm)
            b1 = chosen(arm)
            row = dict(zip(group, key)) | arm
            row.update(baseline=BASELINE, metric=name, mode=g["mode"].iloc[0], stable_lr=s1, stable_lr_none=s0,
                       stable_ratio=s1 / s0 if s0 > 0 else math.nan, stable_at_top=top1, stable_at_top_none=top0,
                       lr_base=b1["lr_base"] if b1 is not None else math.nan, lr_base_none=b0["lr_base"] if b0 is not None else math.nan,
                       n_pairs=0, n_dropped=0, diff=math.nan, diff_lo=math.nan, diff_hi=math.nan, interval="none", p=math.nan, p_t=math.nan)
            if b1 is not None and b0 is not None:
                v1, v0 = (_seed_values(sw, b, col) for b in (b1, b0))
                shared = sorted(set(v1) & set(v0))
                d = [v1[s] - v0[s] for s in shared]
                kept = [x for x in d if math.isfinite(x)]
                m, lo, hi, how = mean_interval(kept)
                row.update(n_pairs=len(kept), n_dropped=len(d) - len(kept), diff=m, diff_lo=lo, diff_hi=hi, interval=how, p=paired_permutation_pvalue(kept),
                           p_t=paired_t_pvalue(kept))
            out.append(row)
    table = pd.DataFrame(out, columns=cols)
    table["p_holm"] = holm(table["p"].astype(float).tolist()) if len(table) else []
    table["p_t_holm"] = holm(table["p_t"].astype(float).tolist()) if len(table) else []
    return table


def arm_columns(sw: Sweep) -> list[str]:
    """The cell keys that belong to an arm rather than to its group: warm-up lengths (``warmup.*``) and the keys the
    records declare as arm keys (``Task.arm_keys``)."""
    return [k for k in sw.keys if k.startswith("warmup.") or k in sw.arm_keys]


def _same_value(cell, baseline) -> bool:
    """A cell value (text or number) against an arm key's baseline value: as numbers when both read as numbers."""
    try:
        return float(cell) == float(baseline)
    except (TypeError, ValueError):
        return str(cell) == str(baseline)


def is_baseline(sw: Sweep, arm: dict) -> bool:
    """Whether an arm (``warmup`` and arm-column values) is the baseline: no warm-up, and every declared arm key
    with a baseline value at that value (a two-time-scale run without warm-up is an arm of its own)."""
    return arm["warmup"] == BASELINE and all(_same_value(arm[k], v) for k, v in sw.arm_keys.items() if k in arm and v is not None)


def _seed_values(sw: Sweep, cell, column: str) -> dict:
    """seed -> value of the finished runs of ``cell``: ``column`` for a success, its chance value for a failure (may be NaN)."""
    runs = finished_cells(_cell_values(sw, cell))
    runs = runs[runs["seed"].notna()]
    vals = scored_at_chance(runs, column)
    return {int(s): float(v) for s, v in zip(runs["seed"], vals)}



# ---------------------------------------------------------------- writing


def _fmt(v, digits: int = 4) -> str:
    if isinstance(v, (float, np.floating)):
        if not math.isfinite(v):
            return "–"
        return f"{v:.{digits}g}"
    return str(v)


def _naming_rank(key: str) -> int:
    """How well a cell key names a group, for the choice between keys that fix each other (lower: kept first)."""
    if "." not in key:
        return 0  # a config-group choice (task, optimizer, warmup) or a renamed key (batch_size)
    return 1 if key.split(".", 1)[0] in ("task", "optimizer", "warmup", "batch", "decay") else 2


def short_number(v) -> str:
    """A table cell for a study script's Markdown: 3 significant digits (scientific from 1e4), '–' for NaN."""
    if isinstance(v, (float, np.floating)):
        if math.isnan(v):
            return "–"
        return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.3e}"
    return str(v)


def study_arguments(description: str, argv: list[str] | None = None) -> argparse.Namespace | None:
    """The study scripts' command line, ``SWEEP --out DIR``; None (after one error line) when SWEEP is no folder."""
    ap = argparse.ArgumentParser(description=description)
    ap.add_argument("sweep_dir", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args(argv)
    if not args.sweep_dir.is_dir():
        print(f"error: sweep folder {args.sweep_dir} does not exist", file=sys.stderr)
        return None
    return args


def markdown_sections(frames: Mapping[str, pd.DataFrame], empty: str = "(no rows)") -> str:
    """One '### title' section per frame, each a Markdown table of its columns (cells by :func:`short_number`);
    the study scripts (scripts/*_tables.py) write their .md files with it."""
    parts = []
    for title, df in frames.items():
        parts.append(f"### {title}\n")
        if df.empty:
            parts.append(f"{empty}\n")
            continue
        cols = list(df.columns)
        parts.append("| " + " | ".join(str(c) for c in cols) + " |")
        parts.append("|" + "---|" * len(cols))
        parts += ["| " + " | ".join(short_number(v) for v in row) + " |" for row in df[cols].itertuples(index=False)]
        parts.append("")
    return "\n".join(parts) + "\n"


def _interval_text(m, lo, hi, digits: int = 4) -> str:
    """'0.92 [0.9, 0.94]'; a value without an interval (one run) as '0.92 (n=1)'; nothing as '–'."""
    if not math.isfinite(m):
        return "–"
    return f"{_fmt(m, digits)} [{_fmt(lo, digits)}, {_fmt(hi, digits)}]" if math.isfinite(lo) else f"{_fmt(m, digits)} (n=1)"


def _cell_text(r) -> str:
    return _interval_text(r["mean"], r["ci_low"], r["ci_high"])


def _success_text(r) -> str:
    """'4/5 = 0.8 [0.28, 0.99]': successes of finished runs, rate, Clopper-Pearson 95 % interval."""
    if not r["n_finished"]:
        return "0/0"
    return f"{int(r['n_success'])}/{int(r['n_finished'])} = {_fmt(r['success_rate'], 2)} [{_fmt(r['success_lo'], 2)}, {_fmt(r['success_hi'], 2)}]"


def _bases(sw: Sweep) -> str:
    bases = {int(b) for b in sw.runs["base_batch_size"] if _is_num(b) and math.isfinite(b)}  # not checked by record_problem: may be junk
    return "/".join(str(b) for b in sorted(bases)) or "?"


def header(sw: Sweep, key: str) -> str:
    """A column's label in the published tables: the CLI / record names (docs/ARCHITECTURE.md, Names)."""
    if key == "lr_base":
        return f"optimizer.lr (lr_base, at batch.base_size={_bases(sw)})"
    if key == "lr_peak":
        return "lr_peak (after batch.scaling)"
    if key == "batch_size":
        return "batch.size"
    return key


TEST_MISSING = "test metrics missing: validation numbers shown"
FLOOR_HEADER = "floor (real vs real)"


def _tables(sw: Sweep, summary, best, alpha, effect=None) -> list[tuple[str, list[str], list[list[str]], list[str]]]:
    """(title, header, rows, notes) of each published table, shared by the markdown, LaTeX and README writers."""
    effect = warmup_effect(sw, summary, best) if effect is None else effect
    group = _lr_group(sw)
    val = sw.metric
    test = "/".join(sorted(sw.runs["test_name"].unique()))
    reported = test if sw.has_test else val
    fallback = [] if sw.has_test else [TEST_MISSING]
    # one count column per status that is not a success (diverged, a task's failed outcome), unfinished when any
    bad = [s for s in status_columns(sw) if not sw.outcomes.get(s, False)] + (["unfinished"] if summary["n_unfinished"].any() else [])
    gap = "gap_loss_mean" in summary and summary["gap_loss_mean"].notna().any()
    floor = bool(summary["floor"].notna().any())  # the task states the value real data reaches (a GAN's real-vs-real FD)
    cells = [
        [*(_fmt(r[k]) for k in sw.keys), f"{r['n_runs']}", _success_text(r), _cell_text(r),
         *([_interval_text(r["test_mean"], r["test_lo"], r["test_hi"])] if sw.has_test else []),
         *([_fmt(r["floor"])] if floor else []),
         *([_interval_text(r["gap_loss_mean"], r["gap_loss_lo"], r["gap_loss_hi"])] if gap else []),
         _interval_text(r["chance_mean"], r["chance_lo"], r["chance_hi"]),
         *(f"{r[f'n_{s}']}" for s in bad[:-1]), f"{r[f'n_{bad[-1]}']}" + ("†" if not r["eligible"] else "")]
        for _, r in summary.iterrows()
    ]
    bests = [
        [*(_fmt(r[k]) for k in group), _fmt(r["lr_base"]), _fmt(r["lr_peak"]),
         _interval_text(r["lr_star"], r["lr_star_lo"], r["lr_star_hi"], 3) if r["eligible"] else "–",
         _cell_text(r), _success_text(r) if r["eligible"] else "–",
         *([_interval_text(r["test_mean"], r["test_lo"], r["test_hi"])] if sw.has_test else []), *([_fmt(r["floor"])] if floor else []), r["edge"]]
        for _, r in best.iterrows()
    ]
    agroup = [k for k in sw.keys if k not in ("lr_base", "batch_size")]
    alphas = [
        [*(_fmt(r[k]) for k in agroup), _fmt(r["alpha"], 3), f"[{_fmt(r['alpha_low'], 3)}, {_fmt(r['alpha_high'], 3)}]",
         _fmt(r["alpha_seed_median"], 3), _fmt(r["alpha_delta_centre"], 3) + ("‡" if r["disagree"] else ""), str(r["n_batch_sizes"])]
        for _, r in alpha.iterrows()
        if r["n_batch_sizes"] >= 2
    ]
    elengths = arm_columns(sw)
    egroup = [k for k in sw.keys if k not in ("lr_base", "warmup") and k not in elengths]

    def stable(v, top):
        return "–" if not math.isfinite(v) else f"≥{_fmt(v)}" if top else _fmt(v)

    effects = [
        [*(_fmt(r[k]) for k in egroup), " ".join([str(r["warmup"]), *(f"{k.split('.', 1)[1]}={r[k]}" for k in elengths)]), f"{stable(r['stable_lr'], r['stable_at_top'])} / {stable(r['stable_lr_none'], r['stable_at_top_none'])}",
         _fmt(r["stable_ratio"], 3), f"{_fmt(r['lr_base'])} / {_fmt(r['lr_base_none'])}", str(r["n_pairs"]),
         _interval_text(r["diff"], r["diff_lo"], r["diff_hi"]), _fmt(r["p"], 3), _fmt(r["p_holm"], 3), _fmt(r["p_t"], 3), _fmt(r["p_t_holm"], 3)]
        for _, r in effect.iterrows()
    ]
    keyh = [header(sw, k) for k in sw.keys]
    tables = [
        (f"Cells: success rate and {sw.reading(val)}" + (f" and {test}" if sw.has_test else "") + " (95% intervals)",
         [*keyh, "runs", "successes/finished = rate [exact 95%]", f"{val}, successes [95%]", *([f"{test}, successes [95%]"] if sw.has_test else []),
          *([FLOOR_HEADER] if floor else []),
          *(["gap: test_loss − train-set loss, successes [95%]"] if gap else []),
          f"{reported}, failures at chance [95%]", *bad],
         cells, fallback),
        (f"Best LR per group: selected on {sw.reading(val)}, reported on {reported}",
         [*(header(sw, k) for k in group), f"best grid {header(sw, 'lr_base')}", header(sw, "lr_peak"), "lr_star [95% seed bootstrap]",
          f"{val}, successes [95%]", "successes/finished", *([f"{test} at the selected LR [95%]"] if sw.has_test else []), *([FLOOR_HEADER] if floor else []), "edge"],
         bests, fallback),
    ]
    if alphas:  # only sweeps with an LR grid at two or more batch sizes have an alpha
        tables.append(("LR/batch scaling: eta* ~ B^alpha (eta* = lr_star in lr_peak units)",
                       [*agroup, "alpha", "95% interval", "alpha (median-over-seeds best)", f"alpha (centre within {DELTA_REL:.0%} of best)", "batch sizes"], alphas, []))
    if effects:
        tables.append((f"Warm-up effect against none: stable LR range and paired difference of {reported} at each arm's best LR",
                       [*(header(sw, k) for k in egroup), "warm-up", "stable optimizer.lr (arm / none)", "stable ratio",
                        "best optimizer.lr (arm / none)", "seed pairs", f"{reported} arm − none [95%]", "p (exact sign-flip)", "p (Holm)", "p (paired t)", "p (t, Holm)"], effects, fallback))
    return tables


FOOTNOTES = [
    "successes/finished: finished runs trained to the end or diverged; crashed, preempted and running jobs are outside the rate. [exact 95%]: Clopper-Pearson.",
    "Means over successful runs: 95% t-interval below 10 runs, BCa bootstrap from 10; (n=1): one run, no interval. "
    "Failures at chance: every finished run, failures (diverged, stalled, collapsed, ...) scored at the value of a run that learned nothing.",
    f"† a run of this cell did not succeed (it diverged, did not finish, or ended in an outcome its task declares a failure); only cells with a success rate of at least {STABLE} and no unfinished run may be selected as best LR.",
    "‡ alpha under this criterion lies outside the interval of the lr_star alpha.",
    f"Stable LR: the largest LR with a success rate of at least {STABLE}; ≥: the largest LR of the grid.",
    f"{FLOOR_HEADER}: the value real data reaches on the metric (a task's `task_info.floor`, e.g. the Fréchet distance between two "
    "disjoint sets of real images), shown only where the task states one.",
]


def write_markdown(path: Path, tables) -> None:
    lines = []
    for title, header_, rows, *notes in tables:
        lines += [f"### {title}", ""] + [f"*{n}*" for n in (notes[0] if notes else [])] + ([""] if notes and notes[0] else [])
        lines += ["| " + " | ".join(header_) + " |", "|" + "---|" * len(header_)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines.append("")
    lines += [f"- {f}" for f in FOOTNOTES]
    path.write_text("\n".join(lines) + "\n")


# LaTeX specials in text mode, and the two non-ASCII marks the tables use
_TEX = {
    "\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "$": r"\$", "{": r"\{", "}": r"\}",
    "^": r"\textasciicircum{}", "~": r"\textasciitilde{}", "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
    "†": r"\textsuperscript{\dag}", "‡": r"\textsuperscript{\ddag}", "–": "--", "−": r"$-$", "≥": r"$\geq$",
}
_TEX_RE = re.compile("|".join(re.escape(c) for c in _TEX))
_NUMERIC = re.compile(r"^(–|[-+]?(\d+\.?\d*|\.\d+)(e[-+]?\d+)?)(\s|\[|†|$)")  # a number, maybe followed by an interval or a mark


def tex_escape(text: str) -> str:
    """``text`` with every LaTeX special escaped (one pass, so no escape is escaped again)."""
    return _TEX_RE.sub(lambda m: _TEX[m.group()], str(text))


def _align(rows: list[list[str]], i: int) -> str:
    """``r`` for a column whose cells all start with a number (or are empty: –), else ``l``."""
    return "r" if rows and all(_NUMERIC.match(r[i]) for r in rows) else "l"


def write_latex(path: Path, tables) -> None:
    """Each table as a booktabs ``tabular``: every cell and header escaped, numeric columns right-aligned."""
    out = ["% warmup-bench report tables; needs \\usepackage{booktabs}"]
    for title, header, rows, *_ in tables:
        spec = "".join(_align(rows, i) for i in range(len(header)))
        out += [f"% {tex_escape(title)}", r"\begin{tabular}{" + spec + "}", r"\toprule", " & ".join(tex_escape(h) for h in header) + r" \\", r"\midrule"]
        out += [" & ".join(tex_escape(c) for c in r) + r" \\" for r in rows]
        out += [r"\bottomrule", r"\end{tabular}", ""]
    path.write_text("\n".join(out) + "\n")


def _wall(runs: pd.DataFrame) -> str:
    total = runs["wall_time_s"].sum()
    span = ""
    started = pd.to_datetime(runs["started"], errors="coerce", utc=True).dropna()
    ended = pd.to_datetime(runs["ended"], errors="coerce", utc=True).dropna()
    if len(started) and len(ended):
        span = f"; first start to last end {(ended.max() - started.min()).total_seconds():.0f} s ({started.min():%Y-%m-%d %H:%M} to {ended.max():%H:%M} UTC)"
    return f"{total:.0f} s of training summed over runs{span}"


def _commits(runs: pd.DataFrame) -> list[str]:
    return sorted({str(c) for c in runs["git_commit"].dropna()})


def _dirty(runs: pd.DataFrame) -> bool:
    return bool(runs["git_dirty"].fillna(False).astype(bool).any())


def report_warnings(sw: Sweep, summary: pd.DataFrame, best: pd.DataFrame, alpha: pd.DataFrame | None = None) -> list[str]:
    """Everything a reader should check before trusting the tables: the README lists these, the terminal prints them."""
    warns = list(sw.warnings)
    commits = _commits(sw.runs)
    if len(commits) > 1:
        warns.append(f"runs come from {len(commits)} different commits")
    if _dirty(sw.runs):
        warns.append("some runs were made with uncommitted changes (env.git_dirty)")
    for _, r in best.iterrows():
        label = ", ".join(f"{k}={_fmt(r[k])}" for k in best.columns if k in sw.keys and k != "lr_base")
        if r["edge"] in ("low", "high"):
            warns.append(f"best LR on the {r['edge']} edge of the grid ({_fmt(r['lr_base'])} in [{_fmt(r['lr_min'])}, {_fmt(r['lr_max'])}]) for {label}: widen the grid")
        elif r["edge"] == "no eligible cell":
            warns.append(f"no LR has a success rate of at least {STABLE} (and every run finished) for {label}: no best LR is selected")
    for _, r in (alpha if alpha is not None else pd.DataFrame()).iterrows():
        if r["disagree"]:
            label = ", ".join(f"{k}={_fmt(r[k])}" for k in alpha.columns if k in sw.keys) or "the sweep"
            warns.append(f"alpha depends on the criterion for {label}: lr_star {_fmt(r['alpha'], 3)} [{_fmt(r['alpha_low'], 3)}, {_fmt(r['alpha_high'], 3)}], "
                         f"median-over-seeds best {_fmt(r['alpha_seed_median'], 3)}, centre within {DELTA_REL:.0%} of best {_fmt(r['alpha_delta_centre'], 3)}")
    few = summary[summary["n_runs"] < FEW_SEEDS]
    if len(few):
        warns.append(f"{len(few)} of {len(summary)} cells have fewer than {FEW_SEEDS} seeds (min {few['n_runs'].min()}): intervals are wide or missing")
    return warns


def chance_note(sw: Sweep, summary: pd.DataFrame) -> str | None:
    """The README's one line when "failures scored at chance" is not computable for some cell, else None."""
    missing = summary[summary["chance_mean"].isna() & summary["n_finished"].gt(0)]
    if missing.empty:
        return None
    return (f"failures scored at chance: not computable for {len(missing)} of {len(summary)} cells: their records carry no `chance` value "
            f"for {sw.metric}, so those cells are left empty")


def write_readme(path: Path, sw: Sweep, summary: pd.DataFrame, figures: list[str], tables, warns: list[str]) -> None:
    runs = sw.runs
    commits = _commits(runs)
    dirty = _dirty(runs)
    hw = runs.drop_duplicates(["host", "device", "device_name", "cpu_model", "cpu_capability", "cpu_count", "torch_threads"])
    counts = runs["status"].value_counts().to_dict()
    lines = [f"# Report: {sw.root.name}", "", f"Sweep directory: `{sw.root}`", ""]
    lines += ["## Command", ""] + ["```", *(sw.commands or ["(no multirun.yaml found)"]), "```", ""]
    lines += ["## Provenance", ""]
    if len(commits) > 1:
        lines.append(f"- commits: {len(commits)} (HEAD moved while the sweep ran): " + ", ".join(c[:10] for c in commits))
    else:
        lines.append(f"- commit: {commits[0] if commits else 'unknown'}")
    if dirty:
        lines.append("- the working tree had uncommitted changes (tracked files) when some runs started (`git_dirty` in runs.csv)")
    for _, h in hw.iterrows():
        cpu = f", CPU {h['cpu_model']} (torch kernels: {h['cpu_capability']})" if isinstance(h.get("cpu_model"), str) else ""
        lines.append(f"- hardware: {h['device']} ({h['device_name']}){cpu}, {h['cpu_count']} CPU cores, {h['torch_threads']} torch threads per job, host {h['host']}, torch {h['torch']}")
    lines.append(f"- wall time: {_wall(runs)}")
    lines.append(f"- runs: {len(runs)} (" + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + f"), {len(summary)} cells, metric: {sw.reading()}")
    if sw.unfinished:  # first thing after the provenance: these runs are missing from every table below
        lines += ["", "## Jobs that failed or did not finish", ""]
        lines += [f"- `{d}`: {why}" for d, why in sw.unfinished]
    lines += ["", "## Warnings", ""]
    lines += [f"- {w}" for w in warns] or ["- none"]
    lines += ["", "## Files", "", "- `runs.csv` (one row per run), `summary.csv` (cells), `best_lr.csv`, `alpha.csv`, `warmup_effect.csv`, `table.md`, `table.tex`"]
    lines += [f"- `{f}`" for f in figures]
    lines += ["", "## Tables", "", "Statistics: docs/report.md. The per-cell table is in `table.md`."]
    note = chance_note(sw, summary)
    if note:
        lines += ["", f"*{note}.*"]
    lines.append("")
    for title, header_, rows, *notes in tables[1:]:
        lines += [f"### {title}", ""] + [f"*{n}*" for n in (notes[0] if notes else [])] + ([""] if notes and notes[0] else [])
        lines += ["| " + " | ".join(header_) + " |", "|" + "---|" * len(header_)]
        lines += ["| " + " | ".join(r) + " |" for r in rows] + [""]
    lines += [f"- {f}" for f in FOOTNOTES]
    path.write_text("\n".join(lines) + "\n")


def curves(run_dir: str, warnings: list[str] | None = None) -> pd.DataFrame:
    """A run's metrics.jsonl as a table (empty when missing), numeric columns as floats.

    Rows up to the first line that is not a JSON object are kept (a killed writer leaves a truncated
    last line); that line and what follows are dropped, and so are rows without a numeric ``step``.
    Each drop is appended to ``warnings`` with the file and line, so the report says what it left out.
    """
    p = Path(run_dir) / METRICS
    if not p.exists():
        return pd.DataFrame()
    rows = []
    try:
        with open(p, errors="replace") as f:
            lines = f.read().splitlines()
    except OSError as e:
        if warnings is not None:
            warnings.append(f"metrics.jsonl unreadable ({e.strerror or e}), its curves are not drawn: {p}")
        return pd.DataFrame()
    for n, line in enumerate(lines, 1):
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict):
            if warnings is not None:
                what = "truncated last line" if n == len(lines) else "line that is not a JSON object"
                warnings.append(f"metrics.jsonl has a {what} at line {n} of {len(lines)}: rows from there on dropped: {p}")
            break
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty or "step" not in df:
        return pd.DataFrame()
    for c in df.columns:
        if c not in ("kind", "diverged"):
            df[c] = pd.to_numeric(df[c], errors="coerce")
    bad = df["step"].isna()
    if bad.any():
        if warnings is not None:
            warnings.append(f"metrics.jsonl has {int(bad.sum())} row(s) without a numeric step, dropped: {p}")
        df = df[~bad]
    return df


def report(root: Path, out: Path | None = None, metric: str | None = None, figures: bool = True) -> dict:
    """Write the whole report; returns {'out': dir, 'figures': [...], 'summary': DataFrame, 'best': ..., 'alpha': ..., 'warnings': [...]}."""
    from bench import report_plots

    sw = load(Path(root), metric)
    out = Path(out) if out is not None else sw.root / "report"
    out.mkdir(parents=True, exist_ok=True)
    summary = summarize(sw)
    best = best_lr(sw, summary)
    alpha = alpha_table(sw, summary, best)
    effect = warmup_effect(sw, summary, best)
    sw.runs.to_csv(out / "runs.csv", index=False)
    summary.to_csv(out / "summary.csv", index=False)
    best.to_csv(out / "best_lr.csv", index=False)
    alpha.to_csv(out / "alpha.csv", index=False)
    effect.to_csv(out / "warmup_effect.csv", index=False)
    tables = _tables(sw, summary, best, alpha, effect)
    noise = noise_table(sw, best, lambda d: curves(d))
    if len(noise):
        noise.to_csv(out / "noise_scale.csv", index=False)
        ngroup = [k for k in sw.keys if k not in ("lr_base", "batch_size")]
        tables.append(("Gradient noise scale B_simple (median over the best-LR cell's runs) and where eta*(B) stops growing",
                       [*(header(sw, k) for k in ngroup), "batch.size", "lr_star (peak)", "B_simple start", "middle", "end", "runs",
                        f"eta* stops growing at B (local alpha < {CRITICAL_ALPHA})"],
                       [[*(_fmt(r[k]) for k in ngroup), _fmt(r["batch_size"]), _fmt(r["lr_star_peak"], 3), _fmt(r["noise_start"], 3),
                         _fmt(r["noise_middle"], 3), _fmt(r["noise_end"], 3), str(r["n_runs"]), _fmt(r["critical_batch"])]
                        for _, r in noise.iterrows()], []))
    else:
        (out / "noise_scale.csv").unlink(missing_ok=True)
    write_markdown(out / "table.md", tables)
    write_latex(out / "table.tex", tables)
    curve_warnings: list[str] = []
    figures = report_plots.all_figures(sw, summary, best, alpha, out, lambda d: curves(d, curve_warnings)) if figures else []
    for name in set(report_plots.FIGURES) - {f.name for f in figures}:
        (out / name).unlink(missing_ok=True)  # a figure from an earlier report of another sweep would mislead
    warns = report_warnings(sw, summary, best, alpha) + curve_warnings
    write_readme(out / "README.md", sw, summary, [f.name for f in figures], tables, warns)
    return {"out": out, "figures": figures, "summary": summary, "best": best, "alpha": alpha, "effect": effect, "warnings": warns, "tables": tables}


CRITICAL_ALPHA = 0.25  # eta* "stops growing" once doubling the batch raises it by less than 2^0.25 (local alpha < 0.25)


def noise_table(sw: Sweep, best: pd.DataFrame, read_curves) -> pd.DataFrame:
    """For sweeps whose runs logged ``noise_scale``: per group and batch size, the gradient noise scale B_simple at
    the start, middle and end of training (first, middle and last measurement; median over the runs of the batch's
    best-LR cell), the best LR there (``lr_star_peak``), and per group ``critical_batch``: the smallest batch size from
    which doubling the batch raises eta* by less than a factor 2^CRITICAL_ALPHA (the local exponent between
    neighbouring batch sizes falls below CRITICAL_ALPHA), i.e. where the measured eta*(B) stops growing. Empty when no
    run has the probe. McCandlish et al. 2018: the linear rule can hold for batches well below B_simple."""
    cols = [*[k for k in sw.keys if k not in ("lr_base", "batch_size")], "batch_size", "lr_star_peak", "noise_start", "noise_middle",
            "noise_end", "n_runs", "critical_batch"]
    group = [k for k in sw.keys if k not in ("lr_base", "batch_size")]
    out = []
    ok = best[best["eligible"] & np.isfinite(best["lr_star_peak"].astype(float))]
    for key, g in ok.groupby(group, dropna=False) if group else [((), ok)]:
        key = key if isinstance(key, tuple) else (key,)
        g = g.sort_values("batch_size")
        bs, lrs = g["batch_size"].astype(float).tolist(), g["lr_star_peak"].astype(float).tolist()
        critical = math.nan
        for i in range(len(bs) - 1):
            if min(lrs[i], lrs[i + 1]) <= 0 or min(bs[i], bs[i + 1]) <= 0 or bs[i + 1] == bs[i]:
                continue  # malformed values: no exponent between these two
            if math.log(lrs[i + 1] / lrs[i]) / math.log(bs[i + 1] / bs[i]) < CRITICAL_ALPHA:
                critical = bs[i]
                break
        for _, row in g.iterrows():
            runs = sw.runs
            for k in sw.keys:
                runs = runs[runs[k] == row[k]]
            series = []
            for d in runs.loc[runs["success"], "dir"]:
                m = read_curves(d)
                if not m.empty and "noise_scale" in m:
                    t = m[m["noise_scale"].notna()].sort_values("step")["noise_scale"].to_numpy(float)
                    if len(t):
                        series.append((t[0], t[len(t) // 2], t[-1]))
            if not series:
                continue
            arr = np.array(series)
            out.append(dict(zip(group, key)) | {"batch_size": row["batch_size"], "lr_star_peak": row["lr_star_peak"],
                        "noise_start": float(np.median(arr[:, 0])), "noise_middle": float(np.median(arr[:, 1])),
                        "noise_end": float(np.median(arr[:, 2])), "n_runs": len(series), "critical_batch": critical})
    return pd.DataFrame(out, columns=cols)


def print_summary(res: dict, file=sys.stdout, warn_file=sys.stderr) -> None:
    """The best-LR and alpha tables and the figure paths (``file``), and every warning (``warn_file``), for a terminal."""
    for title, header, rows, *_ in res["tables"][1:]:
        print(f"\n{title}", file=file)
        widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
        print("  ".join(h.ljust(w) for h, w in zip(header, widths)), file=file)
        for r in rows:
            print("  ".join(c.ljust(w) for c, w in zip(r, widths)), file=file)
    print(f"\nreport: {res['out']}  (README.md, table.md, summary.csv, runs.csv)", file=file)
    for f in res["figures"]:
        print(f"figure: {f}", file=file)
    for w in res["warnings"]:
        print(f"warning: {w}", file=warn_file)
    if res["warnings"]:
        print(f"{len(res['warnings'])} warning(s), also in {res['out'] / 'README.md'}", file=warn_file)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.report", description="Tables and figures from a warmup-bench sweep directory.")
    ap.add_argument("sweep_dir", type=Path, help="a multirun directory (hydra.sweep.dir); nested sweeps are read too")
    ap.add_argument("--out", type=Path, default=None, help="output folder (default SWEEP_DIR/report)")
    ap.add_argument("--metric", default=None, help="metric to report (default: each task's primary metric)")
    args = ap.parse_args(argv)
    try:
        res = report(args.sweep_dir, args.out, args.metric)
    except ReportError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print_summary(res)
    return 0


if __name__ == "__main__":
    sys.exit(main())
