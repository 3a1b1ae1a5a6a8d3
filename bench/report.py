"""Sweep report: ``python -m bench.report SWEEP_DIR [--out DIR] [--metric NAME]``.

Reads every ``result.json`` under a multirun directory (basic and joblib layouts
``SWEEP/<job num>/``, submitit's ``SWEEP/.submitit/``, nested sweeps) and writes into
``--out`` (default ``SWEEP/report``):

- ``runs.csv``: one row per run;
- ``summary.csv``: one row per cell (all varying config keys except ``seed``) with the mean
  of the metric over seeds, its 95% bootstrap interval, the run count and the diverged count;
- ``best_lr.csv``: the best LR per (task, optimizer, warm-up, batch size, other keys);
- ``alpha.csv``: the fitted exponent alpha of eta* ~ B^alpha per (task, optimizer, warm-up);
- ``table.md`` and ``table.tex`` with those tables, the figures (``bench/report_plots.py``)
  and a ``README.md`` with the sweep command, commit, hardware, wall time and warnings.

Statistics (see docs/report.md):

- a run's metric enters its cell's mean only when the run trained to its last step: its status is
  one of the record's declared ``outcomes`` (``completed`` plus the task's own, see
  ``bench/records.py``); diverged, failed, preempted and still-``running`` runs are counted,
  never averaged;
- the best LR of a group is chosen among cells whose runs all succeeded (each status an outcome
  declared a success: none diverged, none unfinished, none e.g. collapsed);
- the interval is the 2.5/97.5 percentile of the mean over 2000 resamples of the seeds
  with replacement (numpy RNG seed 0, so the report is deterministic); one seed gives none;
- alpha is the least-squares slope of log(eta*) on log(B) over batch sizes, eta* the best
  peak LR (``lr_peak``, after the scaling rule); its interval resamples the seeds of every
  cell, re-picks eta* per batch size and refits, 1000 times.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench.records import COMPLETED, DIVERGED, METRICS, RESULT, measured, outcomes, read_result, succeeded

BOOT_CELL = 2000  # resamples for a cell's interval
BOOT_ALPHA = 1000  # resamples for alpha's interval (each refits every group)
BASE_KEYS = ["task", "optimizer", "warmup", "batch_size", "lr_base"]
RENAME = {"optimizer.lr": "lr_base", "batch.size": "batch_size"}  # override keys the record already holds as columns
NOT_CELL = {"seed", "experiment", "logger", "hardware", "train.force", "report"}  # never split cells


class ReportError(Exception):
    """Input the report cannot work with: one line, non-zero exit."""


@dataclass
class Sweep:
    """What was read from a sweep directory."""

    root: Path
    runs: pd.DataFrame
    keys: list[str]  # the cell's columns
    metric: str  # column name of the chosen metric ("metric" holds the values)
    modes: dict[str, str]  # task -> "min" | "max" for the chosen metric
    outcomes: dict[str, bool] = field(default_factory=dict)  # measured statuses seen -> success (records.outcomes)
    warnings: list[str] = field(default_factory=list)
    commands: list[str] = field(default_factory=list)
    unfinished: list[tuple[str, str]] = field(default_factory=list)  # (job folder, why) of runs that failed or never finished


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
    "best": (lambda v: isinstance(v, dict) and all(_is_num_or_text(x) for x in v.values()), "a mapping metric -> number", False),
    "outcomes": (lambda v: isinstance(v, dict) and all(isinstance(x, bool) for x in v.values()), "a mapping status -> true/false", False),
    "warmup_steps": (lambda v: isinstance(v, dict) and all(_is_num(x) for x in v.values()), "a mapping model -> steps", False),
    "env": (lambda v: isinstance(v, dict), "a mapping", False),
    "final_train_loss": (_is_num_or_text, "a number", False),
    "wall_time_s": (_is_num_or_text, "a number", False),
    "started": (lambda v: isinstance(v, str), "a timestamp string", False),
    "ended": (lambda v: isinstance(v, str), "a timestamp string", False),
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
        choices = {k: v for k, v in (r.get("choices") or {}).items() if not k.startswith("hydra")}
        ov = _override_keys(r.get("overrides"))
        vals = dict(choices)
        for k in ov:
            if k in choices or k.startswith("hydra"):
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
    table = pd.DataFrame([{k: str(r["_cells"][k]) for k in varying} | {k: str(_base_value(r, k)) for k in BASE_KEYS} for r in records])
    for k in list(varying):
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
            success=ok and succeeded(r),
            scaling=r.get("scaling"),
            base_batch_size=r.get("base_batch_size"),
            lr_peak=r.get("lr_peak"),
            warmup_steps=max((r.get("warmup_steps") or {"": 0}).values()),
            schedule=r.get("schedule"),
            metric_name=name,
            mode=mode,
            metric=_number(final.get(name)) if ok else math.nan,
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
            device=env.get("device"),
            cpu_count=env.get("cpu_count"),
            torch_threads=env.get("torch_threads"),
            host=env.get("host"),
            torch=env.get("torch"),
            dir=str(r["_path"].parent),
        )
        for m in r["metric_modes"]:
            row[f"final_{m}"] = _number(final.get(m))
            row[f"best_{m}"] = _number(best.get(m))
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
    return Sweep(root, runs, keys, "/".join(names), modes, dict(sorted(seen.items())), warnings, sweep_commands(root), sorted(unfinished))


# ---------------------------------------------------------------- statistics


def bootstrap_mean(values, rng: np.random.Generator, n: int = BOOT_CELL) -> tuple[float, float]:
    """95% percentile interval of the mean of ``values`` (resampled with replacement); NaN below 2 values."""
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    if len(x) < 2:
        return math.nan, math.nan
    means = x[rng.integers(0, len(x), size=(n, len(x)))].mean(axis=1)
    lo, hi = np.percentile(means, [2.5, 97.5])
    return float(lo), float(hi)


def summarize(sw: Sweep) -> pd.DataFrame:
    """One row per cell: mean and 95% bootstrap interval of the metric, run and status counts."""
    rng = np.random.default_rng(0)
    out = []
    for key, g in sw.runs.groupby(sw.keys, sort=True, dropna=False):
        vals = g["metric"].to_numpy(float)
        ok = np.isfinite(vals)
        lo, hi = bootstrap_mean(vals, rng)
        row = dict(zip(sw.keys, key))
        row.update(
            lr_peak=g["lr_peak"].iloc[0],
            metric_name=g["metric_name"].iloc[0],
            mode=g["mode"].iloc[0],
            mean=float(vals[ok].mean()) if ok.any() else math.nan,
            ci_low=lo,
            ci_high=hi,
            std=float(vals[ok].std(ddof=1)) if ok.sum() > 1 else math.nan,
            n_runs=len(g),
            **{f"n_{s}": int((g["status"] == s).sum()) for s in status_columns(sw)},
            n_unfinished=int((~g["measured"] & (g["status"] != DIVERGED)).sum()),  # failed, preempted, running
            n_success=int(g["success"].sum()),
            final_train_loss=float(np.nanmean(g["final_train_loss"])) if g["final_train_loss"].notna().any() else math.nan,
            wall_time_s=float(g["wall_time_s"].sum()),
        )
        row["eligible"] = row["n_success"] == row["n_runs"]
        out.append(row)
    return pd.DataFrame(out)


def status_columns(sw: Sweep) -> list[str]:
    """Statuses counted per cell: completed, diverged, then each other declared outcome seen in the records."""
    return [COMPLETED, DIVERGED, *(s for s in sw.outcomes if s != COMPLETED)]


def _count_columns(sw: Sweep) -> list[str]:
    return [f"n_{s}" for s in status_columns(sw)] + ["n_unfinished", "n_success"]


def not_ok_text(r, sw: Sweep) -> str:
    """'1 diverged, 2 collapsed' for a summary or best-LR row: its runs that did not succeed, by status."""
    parts = [(r[f"n_{s}"], s) for s in status_columns(sw) if not sw.outcomes.get(s, False)] + [(r["n_unfinished"], "unfinished")]
    return ", ".join(f"{int(n)} {s}" for n, s in parts if n)


def _better_idx(means: pd.Series, mode: str):
    return means.idxmax() if mode == "max" else means.idxmin()


def best_lr(sw: Sweep, summary: pd.DataFrame) -> pd.DataFrame:
    """Best cell per group (cell keys minus lr_base) among eligible cells; flags a best LR on the grid's edge."""
    group = [k for k in sw.keys if k != "lr_base"]
    out = []
    for key, g in summary.groupby(group, sort=True, dropna=False):
        grid = sorted(g["lr_base"].unique())
        ok = g[g["eligible"] & g["mean"].notna()]
        row = dict(zip(group, key))
        row.update(n_lrs=len(grid), lr_min=grid[0], lr_max=grid[-1], metric_name=g["metric_name"].iloc[0], mode=g["mode"].iloc[0])
        finished = g[g["mean"].notna()]
        if ok.empty and finished.empty:
            row.update(lr_base=math.nan, lr_peak=math.nan, mean=math.nan, ci_low=math.nan, ci_high=math.nan, n_runs=0, **{c: 0 for c in _count_columns(sw)}, eligible=False, edge="no finished run")
            out.append(row)
            continue
        # no cell without a diverged run: report the best of the others, flagged (not eligible, no edge check)
        pool = ok if not ok.empty else finished
        b = pool.loc[_better_idx(pool["mean"], row["mode"])]
        edge = "low" if b["lr_base"] == grid[0] else "high" if b["lr_base"] == grid[-1] else ""
        if len(grid) == 1:
            edge = "single LR"
        if ok.empty:
            edge = "no eligible cell"
        row.update(lr_base=b["lr_base"], lr_peak=b["lr_peak"], mean=b["mean"], ci_low=b["ci_low"], ci_high=b["ci_high"], n_runs=b["n_runs"], **{c: b[c] for c in _count_columns(sw)}, eligible=not ok.empty, edge=edge)
        out.append(row)
    return pd.DataFrame(out)


def fit_alpha(batch, lr) -> tuple[float, float]:
    """Least squares of log(lr) = log(c) + alpha * log(batch); returns (alpha, c)."""
    x, y = np.log(np.asarray(batch, float)), np.log(np.asarray(lr, float))
    alpha, logc = np.polyfit(x, y, 1)
    return round(float(alpha), 12) + 0.0, float(math.exp(logc))  # round (+0.0 drops the sign of zero): a flat fit prints as 0, not -2e-16


def _pick(table: pd.DataFrame, mode: str) -> pd.DataFrame:
    """Per batch size, the row of ``table`` (columns batch_size, lr_peak, mean) with the best mean."""
    rows = [g.loc[_better_idx(g["mean"], mode)] for _, g in table.groupby("batch_size") if g["mean"].notna().any()]
    return pd.DataFrame(rows)


def alpha_table(sw: Sweep, summary: pd.DataFrame) -> pd.DataFrame:
    """alpha of eta* ~ B^alpha per group (cell keys minus lr_base and batch_size), with a seed-bootstrap interval."""
    group = [k for k in sw.keys if k not in ("lr_base", "batch_size")]
    rng = np.random.default_rng(0)
    out = []
    for key, g in summary.groupby(group, sort=True, dropna=False):
        # eta* means something only where an LR grid was swept: with one LR per batch size the fit would
        # return the scaling rule itself (alpha = 1 under batch=linear)
        grid = g.groupby("batch_size")["lr_base"].nunique()
        ok = g[g["eligible"] & g["mean"].notna() & g["batch_size"].isin(grid[grid > 1].index)]
        mode = g["mode"].iloc[0]
        picked = _pick(ok, mode)
        row = dict(zip(group, key))
        row.update(n_batch_sizes=len(picked), alpha=math.nan, alpha_low=math.nan, alpha_high=math.nan, c=math.nan)
        if len(picked) >= 2:
            row["alpha"], row["c"] = fit_alpha(picked["batch_size"], picked["lr_peak"])
            # resample seeds within every eligible cell, re-pick eta* per batch, refit
            runs = sw.runs.merge(ok[sw.keys], on=sw.keys)
            cells = [(k[-2], k[-1], gg["metric"].to_numpy(float)) for k, gg in runs.groupby([*group, "batch_size", "lr_peak"], dropna=False)]
            bs = np.array([c[0] for c in cells], float)
            lrs = np.array([c[1] for c in cells], float)
            by_batch = [np.flatnonzero(bs == b) for b in np.unique(bs)]
            sign = 1.0 if mode == "max" else -1.0
            alphas = []
            for _ in range(BOOT_ALPHA):
                means = sign * np.array([v[rng.integers(0, len(v), len(v))].mean() for _, _, v in cells])
                best = [idx[np.argmax(means[idx])] for idx in by_batch]
                alphas.append(fit_alpha(bs[best], lrs[best])[0])
            if alphas:
                row["alpha_low"], row["alpha_high"] = (float(v) for v in np.percentile(alphas, [2.5, 97.5]))
        out.append(row)
    return pd.DataFrame(out)


# ---------------------------------------------------------------- writing


def _fmt(v, digits: int = 4) -> str:
    if isinstance(v, (float, np.floating)):
        if not math.isfinite(v):
            return "–"
        return f"{v:.{digits}g}"
    return str(v)


def _cell_text(r) -> str:
    if not math.isfinite(r["mean"]):
        return "–"
    ci = f" [{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]" if math.isfinite(r["ci_low"]) else ""
    return f"{_fmt(r['mean'])}{ci}"


def _tables(sw: Sweep, summary, best, alpha) -> list[tuple[str, list[str], list[list[str]]]]:
    """(title, header, rows) of each published table, shared by the markdown and LaTeX writers."""
    group = [k for k in sw.keys if k != "lr_base"]
    # one count column per status that is not a success (diverged, a task's failed outcome), unfinished when any
    bad = [s for s in status_columns(sw) if not sw.outcomes.get(s, False)] + (["unfinished"] if summary["n_unfinished"].any() else [])
    cells = [
        [*(_fmt(r[k]) for k in sw.keys), _cell_text(r), f"{r['n_runs']}", *(f"{r[f'n_{s}']}" for s in bad[:-1]), f"{r[f'n_{bad[-1]}']}" + ("†" if not r["eligible"] else "")]
        for _, r in summary.iterrows()
    ]
    bests = [
        [*(_fmt(r[k]) for k in group), _fmt(r["lr_base"]), _fmt(r["lr_peak"]), _cell_text(r) + ("" if r["eligible"] else f" ({not_ok_text(r, sw)} of {r['n_runs']})†" if r["n_runs"] else "†"), r["edge"]]
        for _, r in best.iterrows()
    ]
    agroup = [k for k in sw.keys if k not in ("lr_base", "batch_size")]
    alphas = [
        [*(_fmt(r[k]) for k in agroup), _fmt(r["alpha"], 3), f"[{_fmt(r['alpha_low'], 3)}, {_fmt(r['alpha_high'], 3)}]", str(r["n_batch_sizes"])]
        for _, r in alpha.iterrows()
        if r["n_batch_sizes"] >= 2
    ]
    m = sw.metric
    tables = [
        (f"Cells: final {m}, mean [95% bootstrap interval] over seeds", [*sw.keys, f"{m}", "runs", *bad], cells),
        (f"Best LR per group (mean final {m} of the best eligible cell)", [*group, "lr_base", "lr_peak", m, "edge"], bests),
    ]
    if alphas:  # only sweeps with an LR grid at two or more batch sizes have an alpha
        tables.append(("LR/batch scaling: eta* ~ B^alpha (eta* = best peak LR)", [*agroup, "alpha", "95% interval", "batch sizes"], alphas))
    return tables


def write_markdown(path: Path, tables) -> None:
    lines = []
    for title, header, rows in tables:
        lines += [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows]
        lines.append("")
    lines.append("† a run of this cell did not succeed (it diverged, did not finish, or ended in an outcome its task declares a failure): the cell is not eligible as best LR; its mean covers the runs that trained to the end only. In the best-LR table, † marks a group where every LR had such runs.")
    path.write_text("\n".join(lines) + "\n")


# LaTeX specials in text mode, and the two non-ASCII marks the tables use
_TEX = {
    "\\": r"\textbackslash{}", "_": r"\_", "%": r"\%", "&": r"\&", "#": r"\#", "$": r"\$", "{": r"\{", "}": r"\}",
    "^": r"\textasciicircum{}", "~": r"\textasciitilde{}", "<": r"\textless{}", ">": r"\textgreater{}", "|": r"\textbar{}",
    "†": r"\textsuperscript{\dag}", "–": "--",
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
    for title, header, rows in tables:
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


def report_warnings(sw: Sweep, summary: pd.DataFrame, best: pd.DataFrame) -> list[str]:
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
        elif r["edge"] in ("no eligible cell", "no finished run"):
            warns.append(f"every LR has runs that did not succeed for {label}: the best-LR table shows the best of them, marked †")
    few = summary[summary["n_runs"] < 3]
    if len(few):
        warns.append(f"{len(few)} of {len(summary)} cells have fewer than 3 seeds (min {few['n_runs'].min()}): intervals are rough or missing")
    return warns


def write_readme(path: Path, sw: Sweep, summary: pd.DataFrame, figures: list[str], tables, warns: list[str]) -> None:
    runs = sw.runs
    commits = _commits(runs)
    dirty = _dirty(runs)
    hw = runs.drop_duplicates(["host", "device", "device_name", "cpu_count", "torch_threads"])
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
        lines.append(f"- hardware: {h['device']} ({h['device_name']}), {h['cpu_count']} CPU cores, {h['torch_threads']} torch threads per job, host {h['host']}, torch {h['torch']}")
    lines.append(f"- wall time: {_wall(runs)}")
    lines.append(f"- runs: {len(runs)} (" + ", ".join(f"{v} {k}" for k, v in sorted(counts.items())) + f"), {len(summary)} cells, metric: final {sw.metric}")
    if sw.unfinished:  # first thing after the provenance: these runs are missing from every table below
        lines += ["", "## Jobs that failed or did not finish", ""]
        lines += [f"- `{d}`: {why}" for d, why in sw.unfinished]
    lines += ["", "## Warnings", ""]
    lines += [f"- {w}" for w in warns] or ["- none"]
    lines += ["", "## Files", "", "- `runs.csv` (one row per run), `summary.csv` (cells), `best_lr.csv`, `alpha.csv`, `table.md`, `table.tex`"]
    lines += [f"- `{f}`" for f in figures]
    lines += ["", "## Tables", ""]
    for title, header, rows in tables[1:]:
        lines += [f"### {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(r) + " |" for r in rows] + [""]
    lines.append("The per-cell table is in `table.md`.")
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
    alpha = alpha_table(sw, summary)
    sw.runs.to_csv(out / "runs.csv", index=False)
    summary.to_csv(out / "summary.csv", index=False)
    best.to_csv(out / "best_lr.csv", index=False)
    alpha.to_csv(out / "alpha.csv", index=False)
    tables = _tables(sw, summary, best, alpha)
    write_markdown(out / "table.md", tables)
    write_latex(out / "table.tex", tables)
    curve_warnings: list[str] = []
    figures = report_plots.all_figures(sw, summary, best, alpha, out, lambda d: curves(d, curve_warnings)) if figures else []
    for name in set(report_plots.FIGURES) - {f.name for f in figures}:
        (out / name).unlink(missing_ok=True)  # a figure from an earlier report of another sweep would mislead
    warns = report_warnings(sw, summary, best) + curve_warnings
    write_readme(out / "README.md", sw, summary, [f.name for f in figures], tables, warns)
    return {"out": out, "figures": figures, "summary": summary, "best": best, "alpha": alpha, "warnings": warns, "tables": tables}


def print_summary(res: dict, file=sys.stdout, warn_file=sys.stderr) -> None:
    """The best-LR and alpha tables and the figure paths (``file``), and every warning (``warn_file``), for a terminal."""
    for title, header, rows in res["tables"][1:]:
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
