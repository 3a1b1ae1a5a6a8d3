"""The plug-in seams, used as a researcher extending the suite would: a warm-up, a decay, a task
outcome and a probe defined outside the package (a module on PYTHONPATH and YAMLs in a config
directory added with ``hydra.searchpath``), the decay's independence from the warm-up, probes that
leave training unchanged, and the pre-flight refusing a bad grid point."""

from __future__ import annotations

import json
import math
import os
import textwrap
from pathlib import Path

import pytest

from conftest import metrics, results, run_bench

ONE = "hardware.threads=1"

OUTSIDE_MODULE = '''
"""A researcher's own plug-ins, outside the warmup-bench package."""
import math

from bench.probes import Probe
from bench.rules import fraction, params
from tasks.digits import DigitsTask


@params(power=fraction())
def sqrt_warmup(step, warmup_steps, power):
    """(s + 1) / w raised to ``power``, capped at 1."""
    return min(1.0, ((step + 1) / warmup_steps) ** power)


def halving_decay(step, total_steps, every):
    return 0.5 ** (step // every)


class ParamCount(Probe):
    @classmethod
    def key(cls):
        return "param_count"

    def measure(self, ctx):
        return {"param_count": float(sum(p.numel() for m in ctx.models.values() for p in m.parameters()))}


class JudgedDigits(DigitsTask):
    """Digits with an outcome of its own: a run below 30% validation accuracy (chance 10%) is "underfit", a failure."""

    outcomes = {"underfit": False}

    def final_status(self, final):
        return "underfit" if final["val_acc"] < 0.3 else None
'''


@pytest.fixture
def outside(tmp_path) -> tuple[Path, Path]:
    """(module dir, config dir) of plug-ins that live outside the package."""
    mod = tmp_path / "mine"
    mod.mkdir()
    (mod / "my_plugins.py").write_text(textwrap.dedent(OUTSIDE_MODULE))
    conf = tmp_path / "myconf"
    for group, name, body in [
        ("warmup", "sqrt", "_target_: my_plugins.sqrt_warmup\n_partial_: true\nname: sqrt\nsteps: 8\npower: 0.5\n"),
        ("decay", "halving", "_target_: my_plugins.halving_decay\n_partial_: true\nname: halving\nevery: 10\n"),
        ("diagnostics", "param_count", "param_count:\n  _target_: my_plugins.ParamCount\n  every: 5\n"),
        ("task", "judged_digits", "defaults:\n  - digits\n  - _self_\n_target_: my_plugins.JudgedDigits\nname: judged_digits\n"),
    ]:
        (conf / group).mkdir(parents=True, exist_ok=True)
        (conf / group / f"{name}.yaml").write_text(body)
    return mod, conf


def run_outside(outside, *args):
    mod, conf = outside
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = f"{mod}{os.pathsep}{env_path}" if env_path else str(mod)
    try:
        return run_bench(*args, f"hydra.searchpath=[file://{conf}]")
    finally:
        if env_path:
            os.environ["PYTHONPATH"] = env_path
        else:
            del os.environ["PYTHONPATH"]


@pytest.mark.slow
def test_outside_warmup_decay_and_probe_need_no_edit_of_bench(outside, tmp_path):
    out = tmp_path / "run"
    p = run_outside(outside, "warmup=sqrt", "decay=halving", "diagnostics=param_count", "optimizer.lr=0.1", "train.steps=30",
                    "train.log_every=1", ONE, f"hydra.run.dir={out}")
    assert p.returncode == 0, p.stderr
    r = json.loads((out / "result.json").read_text())
    assert r["warmup"] == "sqrt" and r["decay"] == "halving" and r["warmup_steps"] == {"model": 8}
    rows = [x for x in metrics(out) if x["kind"] == "train"]
    for x in rows:
        s = x["step"]
        assert x["lr"] == pytest.approx(0.1 * min(1.0, ((s + 1) / 8) ** 0.5) * 0.5 ** (s // 10), rel=1e-12)
    assert rows[5]["param_count"] > 1000 and "param_count" not in rows[1]  # every=5


@pytest.mark.slow
def test_outside_plugin_keys_are_checked_next_to_it(outside, tmp_path):
    p = run_outside(outside, "warmup=sqrt", "warmup.power=2", "train.steps=30", ONE, f"hydra.run.dir={tmp_path / 'r'}")
    assert p.returncode == 2
    assert p.stderr.strip().splitlines()[-1] == "error: warmup.power=2 is not allowed: a number in (0, 1]"
    assert not (tmp_path / "r" / "result.json").exists()


@pytest.mark.slow
def test_a_task_declares_its_own_outcome(outside, tmp_path):
    """The record, the skip-completed check and the report read the task's declaration."""
    sweep = tmp_path / "s"
    args = ["-m", "task=judged_digits", "optimizer.lr=0.00001,0.1", "train.steps=60", ONE, f"hydra.sweep.dir={sweep}"]
    p = run_outside(outside, *args)
    assert p.returncode == 0, p.stderr
    by_lr = {r["lr_base"]: r for r in results(sweep)}
    low, high = by_lr[0.00001], by_lr[0.1]
    assert low["status"] == "underfit" and low["success"] is False  # 60 steps at LR 1e-5 learn nothing (val acc ~0.1)
    assert low["outcomes"] == {"completed": True, "stalled": False, "underfit": False}
    assert high["status"] == "completed" and high["success"] is True  # LR 0.1: val acc 0.6-0.9 after 60 steps
    summary = (sweep / "report" / "summary.csv").read_text()
    assert "n_underfit" in summary.splitlines()[0]
    again = run_outside(outside, *args)  # a rerun skips both: "underfit" is a finished state of this task
    assert again.returncode == 0 and (again.stdout + again.stderr).count("skipped") == 2, again.stderr


@pytest.mark.slow
def test_inverse_sqrt_decay_does_not_depend_on_the_warmup(tmp_path):
    lrs = {}
    for warm in ("warmup=none", "warmup=linear warmup.steps=10"):
        out = tmp_path / warm.split()[0].replace("=", "-")
        p = run_bench(*warm.split(), "decay=inverse_sqrt", "train.steps=60", "train.log_every=1", ONE, f"hydra.run.dir={out}")
        assert p.returncode == 0, p.stderr
        lrs[warm] = {x["step"]: x["lr"] for x in metrics(out) if x["kind"] == "train"}
    none, linear = lrs.values()
    assert [none[s] for s in range(10, 60)] == [linear[s] for s in range(10, 60)]
    assert none[0] != linear[0]


def _without(rows: list[dict], keys: set[str]) -> list[dict]:
    return [{k: v for k, v in r.items() if k.split("/")[0] not in keys} for r in rows if r["kind"] != "probe"]


@pytest.mark.slow
@pytest.mark.parametrize(
    "task_args",
    [["task=digits", "train.steps=40"], ["task=gan_ring", "optimizer=adam", "optimizer.lr=0.001", "optimizer.betas=[0.5,0.999]", "train.steps=40", "train.eval_every=20"]],
    ids=["digits", "gan_ring"],
)
def test_probes_leave_training_byte_identical(task_args, tmp_path):
    """Every probe changes no other value (the GAN draws its latents from the global RNG): grad_norm at every step,
    update_ratio every 3, and the curvature, noise and Adam-state probes every 7 (precond_sharpness and adaptive_step
    skip SGD's model)."""
    rows = {}
    curvature = ["diagnostics.sharpness.every=7", "diagnostics.sharpness.iters=5", "diagnostics.sharpness.batch=32",
                 "diagnostics.precond_sharpness.every=7", "diagnostics.precond_sharpness.iters=5", "diagnostics.precond_sharpness.batch=32",
                 "diagnostics.noise_scale.every=7", "diagnostics.noise_scale.batch=64", "diagnostics.adaptive_step.every=7"]
    on_args = ["diagnostics=[grad_norm,update_ratio,sharpness,precond_sharpness,noise_scale,adaptive_step]",
               "diagnostics.grad_norm.every=1", "diagnostics.update_ratio.every=3", *curvature]
    for name, extra in (("off", []), ("on", on_args)):
        out = tmp_path / name
        p = run_bench(*task_args, *extra, "train.log_every=2", ONE, "task.samples_file=null" if "gan" in task_args[0] else "seed=0", f"hydra.run.dir={out}")
        assert p.returncode == 0, p.stderr
        rows[name] = metrics(out)
    on = rows["on"]
    probe_keys = {"grad_norm", "update_ratio", "sharpness", "sharpness_limit", "precond_sharpness", "precond_sharpness_limit",
                  "noise_scale", "noise_trace", "noise_grad_sq"}
    assert _without([{k: v for k, v in r.items() if not k.startswith(("adaptive_step_p", "v_hat_p"))} for r in on], probe_keys) == rows["off"]
    probe_rows = [r for r in on if r["kind"] == "probe"]
    assert probe_rows and all(r["step"] % 2 == 1 for r in probe_rows)  # odd steps are not logged: their probes get rows of their own
    keys = set().union(*on)
    models = ["discriminator", "generator"] if "gan" in task_args[0] else []
    expect = {f"grad_norm/{m}" for m in models} | {f"update_ratio/{m}" for m in models} if models else {"grad_norm", "update_ratio"}
    assert expect <= keys
    ratios = [r[k] for r in on for k in r if k.startswith("update_ratio")]
    assert ratios and all(0 < v < 1 for v in ratios)
    sharp = [r[k] for r in on for k in r if k.split("/")[0] in ("sharpness", "precond_sharpness")]
    assert sharp and all(math.isfinite(v) for v in sharp)
    if models:  # Adam on both GAN models: the preconditioned probes measure both
        assert {f"precond_sharpness/{m}" for m in models} | {f"adaptive_step_p50/{m}" for m in models} <= keys
    else:  # momentum SGD: the limit is (2 + 2 x 0.9) / lr and no Adam-state probe is logged
        lim = [r for r in on if "sharpness_limit" in r]
        assert lim and all(r["sharpness_limit"] == pytest.approx(3.8 / r["lr"]) for r in lim if "lr" in r)
        assert not any(k.startswith(("precond_sharpness", "adaptive_step")) for k in keys)
    # each record states what its probes cost: their own seconds inside the training time, and that share
    thr = {name: json.loads((tmp_path / name / "result.json").read_text())["throughput"] for name in rows}
    assert "probe_time_s" not in thr["off"] and "probe_overhead" not in thr["off"]
    assert 0 < thr["on"]["probe_time_s"] and thr["on"]["probe_overhead"] > 0


@pytest.mark.slow
def test_preflight_refuses_a_bad_task_grid_point(tmp_path):
    sweep = tmp_path / "s"
    p = run_bench("-m", "task.hidden=128,-1", "train.steps=5", ONE, f"hydra.sweep.dir={sweep}")
    assert p.returncode == 2
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith("error: task.hidden=-1 is not allowed") and "(job #1: task.hidden=-1 " in last
    assert not list(sweep.rglob("result.json")) if sweep.exists() else True  # no job ran


@pytest.mark.slow
def test_schedule_is_a_deprecated_alias_of_decay(tmp_path):
    p = run_bench("schedule=cosine", "train.steps=20", "train.log_every=1", ONE, f"hydra.run.dir={tmp_path}")
    assert p.returncode == 0, p.stderr
    assert "schedule=cosine is deprecated" in p.stdout + p.stderr
    r = json.loads((tmp_path / "result.json").read_text())
    assert r["decay"] == "cosine" and r["choices"]["decay"] == "cosine" and "schedule" not in r["choices"]
    assert metrics(tmp_path)[19]["lr"] == pytest.approx(0.0)  # cosine to floor 0 at the last step
