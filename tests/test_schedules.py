"""Every warm-up and decay at steps 0, w-1, w and the last step, against hand-computed values.

The functions are built from their shipped YAMLs (conf/warmup, conf/decay), so these tests also
check that each YAML names the right function with the right parameters.
"""

import math

import pytest
import torch
from omegaconf import OmegaConf
from torch.optim.lr_scheduler import LambdaLR

from bench.app import CONF_DIR
from bench.errors import ConfigError
from bench.scaling import lr_scale, peak_lr, sde_optimizer
from bench.schedules import DECAY_HARNESS_KEYS, WARMUP_HARNESS_KEYS, Schedule, build, length_from_beta2, mean_matched_schedule, mean_multiplier

T = 100  # budget
W = 10  # warm-up length


def plugin(group: str, option: str, **params):
    """The function of conf/<group>/<option>.yaml with ``params`` overriding its keys."""
    node = {**OmegaConf.to_container(OmegaConf.load(f"{CONF_DIR}/{group}/{option}.yaml")), **params}
    return build(node, group, WARMUP_HARNESS_KEYS if group == "warmup" else DECAY_HARNESS_KEYS)


def sched(warmup="none", w=0, decay="constant", total=T, **kw):
    wkeys = {k: v for k, v in kw.items() if k in ("start_factor",)}
    dkeys = {k: v for k, v in kw.items() if k not in wkeys}
    return Schedule(warmup=plugin("warmup", warmup, **wkeys), warmup_steps=w, decay=plugin("decay", decay, **dkeys), total_steps=total)


def test_none():
    s = sched()
    assert [s(0), s(W - 1), s(W), s(T - 1)] == [1.0, 1.0, 1.0, 1.0]


def test_constant_warmup():
    s = sched("constant", W, start_factor=0.1)
    assert s(0) == 0.1 and s(W - 1) == 0.1
    assert s(W) == 1.0 and s(T - 1) == 1.0


def test_linear_warmup_seed_formula():
    # nu_j = nu0 + j*delta, delta = (1 - 0.1)/(10 - 1) = 0.1: 0.1, 0.2, ..., 1.0 at j = 9
    s = sched("linear", W, start_factor=0.1)
    assert s(0) == pytest.approx(0.1)
    assert s(1) == pytest.approx(0.2)
    assert s(5) == pytest.approx(0.6)
    assert s(W - 1) == 1.0
    assert s(W) == 1.0 and s(T - 1) == 1.0


def test_linear_warmup_single_step_is_peak():
    assert sched("linear", 1, start_factor=0.25)(0) == 1.0


def test_exponential_warmup():
    s = sched("exponential", W)
    assert s(0) == pytest.approx(1 - math.exp(-1 / 10))
    assert s(W - 1) == pytest.approx(1 - math.exp(-1))
    assert s(W) == pytest.approx(1 - math.exp(-11 / 10))
    assert s(T - 1) == pytest.approx(1 - math.exp(-10))


def test_untuned_lengths():
    lin = OmegaConf.load(f"{CONF_DIR}/warmup/untuned_linear.yaml").beta2_multiple
    exp = OmegaConf.load(f"{CONF_DIR}/warmup/untuned_exponential.yaml").beta2_multiple
    assert length_from_beta2(0.999, lin) == 2000
    assert length_from_beta2(0.999, exp) == 1000
    assert length_from_beta2(0.99, lin) == 200
    assert length_from_beta2(0.98, exp) == 50


def test_untuned_linear():
    s = sched("untuned_linear", 200, total=1000)
    assert s(0) == pytest.approx(1 / 200)
    assert s(199) == 1.0  # w - 1
    assert s(200) == 1.0 and s(999) == 1.0
    assert s(99) == pytest.approx(0.5)


def test_untuned_exponential():
    s = sched("untuned_exponential", 100, total=1000)
    assert s(0) == pytest.approx(1 - math.exp(-0.01))
    assert s(99) == pytest.approx(1 - math.exp(-1))
    assert s(100) == pytest.approx(1 - math.exp(-1.01))


def test_cosine_decay():
    s = sched(decay="cosine", floor=0.1)
    assert s(0) == 1.0
    assert s(T - 1) == pytest.approx(0.1)
    mid = (T - 1) / 2  # 49.5: halfway between 1 and the floor
    assert s(int(mid)) > 0.55 > s(int(mid) + 1)
    assert s(W) == pytest.approx(0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * 10 / 99)))


def test_linear_decay():
    s = sched(decay="linear", floor=0.0)
    assert s(0) == 1.0 and s(T - 1) == 0.0
    assert s(W) == pytest.approx(1 - 10 / 99)


def test_step_decay():
    s = sched(decay="step", milestones=(0.5, 0.75), gamma=0.1)
    assert s(0) == 1.0 and s(49) == 1.0
    assert s(50) == pytest.approx(0.1) and s(74) == pytest.approx(0.1)
    assert s(75) == pytest.approx(0.01) and s(T - 1) == pytest.approx(0.01)


def test_inverse_sqrt_decay():
    s = sched(decay="inverse_sqrt", timescale=W)
    assert s(0) == 1.0 and s(W - 1) == 1.0
    assert s(W) == pytest.approx(math.sqrt(10 / 11))
    assert s(T - 1) == pytest.approx(math.sqrt(10 / 100))


def test_inverse_sqrt_default_timescale_is_a_fraction_of_the_budget():
    s = sched(decay="inverse_sqrt")  # timescale null, timescale_fraction 0.05: t0 = 5 of T = 100
    assert s(4) == 1.0 and s(5) == pytest.approx(math.sqrt(5 / 6))
    # the same decay whatever the warm-up: only the warm-up factor differs
    a, b = sched("none", 0, decay="inverse_sqrt"), sched("linear", W, decay="inverse_sqrt", start_factor=0.1)
    assert [a(s) for s in range(W - 1, T)] == [b(s) for s in range(W - 1, T)]


@pytest.mark.parametrize(
    "group, option, params, message",
    [
        ("warmup", "linear", {"start_factor": 0}, "warmup.start_factor=0 is not allowed: a number in (0, 1]"),
        ("warmup", "constant", {"start_factor": 1.5}, "warmup.start_factor=1.5"),
        ("warmup", "linear", {"foo": 1}, "unexpected keyword argument 'foo'; its parameters after (step, length) are: start_factor"),
        ("warmup", "linear", {"start_factor": None, "_target_": "bench.schedules.nope"}, "warmup._target_='bench.schedules.nope' cannot be loaded"),
        ("decay", "cosine", {"floor": -0.1}, "decay.floor=-0.1 is not allowed: a number in [0, 1]"),
        ("decay", "step", {"milestones": [0.7, 0.3]}, "decay.milestones=[0.7, 0.3]"),
        ("decay", "step", {"gamma": 0}, "decay.gamma=0"),
        ("decay", "inverse_sqrt", {"timescale": 0}, "decay.timescale=0 is not allowed: an integer >= 1, or null"),
    ],
)
def test_each_plugin_checks_its_own_keys(group, option, params, message):
    with pytest.raises(ConfigError) as e:
        plugin(group, option, **params)
    assert message in str(e.value)


def test_warmup_multiplies_decay():
    s = sched("linear", W, decay="cosine", start_factor=0.1, floor=0.0)
    for step in (0, 3, W - 1, W, 50, T - 1):
        assert s(step) == pytest.approx(s.warmup_multiplier(step) * s.decay_multiplier(step))
    assert s(0) == pytest.approx(0.1)  # cos(0) = 1


def test_lambdalr_applies_step_s_multiplier_to_update_s():
    """The LR torch's scheduler shows the optimizer before update s is peak * m(s)."""
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.5)
    s = sched("linear", W, start_factor=0.1)
    sch = LambdaLR(opt, s)
    seen = []
    for _ in range(W + 2):
        seen.append(opt.param_groups[0]["lr"])
        opt.step()
        sch.step()
    assert seen[0] == pytest.approx(0.05)
    assert seen[W - 1] == pytest.approx(0.5)
    assert seen[W] == pytest.approx(0.5)


# ---------------------------------------------------------------- the mean-matched control (warmup=mean_matched)


def reference(total, w, decay="constant", start_factor=0.1, **dkeys):
    return sched("linear", w, decay, total, start_factor=start_factor, **dkeys)


def test_mean_matched_by_hand():
    # T = 10, linear from 0.5 over w = 2 steps (0.5, 1, 1, ...), linear decay 1 - s/9 (mean 0.5):
    # reference sum = sum(1 - s/9) - 0.5 * 1 = 5 - 0.5, mean 0.45
    ref = reference(10, 2, "linear", start_factor=0.5, floor=0.0)
    assert ref.mean == pytest.approx(0.45, abs=1e-12)
    flat = mean_matched_schedule(ref, "constant")
    assert [flat(0), flat(5), flat(9)] == [pytest.approx(0.45)] * 3 and flat.warmup_steps == 0
    scaled = mean_matched_schedule(ref, "decay")  # the decay from a peak of 0.45 / 0.5 = 0.9
    assert scaled(0) == pytest.approx(0.9) and scaled(9) == 0.0 and scaled(3) == pytest.approx(0.9 * (1 - 3 / 9))
    # constant decay: reference 0.5, 1 x 9 -> 0.95, and both shapes are the flat 0.95
    ref = reference(10, 2, start_factor=0.5)
    assert mean_matched_schedule(ref, "constant")(7) == mean_matched_schedule(ref, "decay")(7) == pytest.approx(0.95)


@pytest.mark.parametrize("shape", ["constant", "decay"])
@pytest.mark.parametrize("decay, dkeys", [("constant", {}), ("linear", {"floor": 0.0}), ("cosine", {"floor": 0.1}), ("step", {}), ("inverse_sqrt", {})])
@pytest.mark.parametrize("total, fraction", [(7, 0.3), (100, 0.02), (1000, 0.05), (1000, 0.1), (1503, 0.1), (2000, 1.0)])
def test_mean_matched_mean_equals_the_reference(shape, decay, dkeys, total, fraction):
    ref = reference(total, max(1, round(fraction * total)), decay, **dkeys)
    ctrl = mean_matched_schedule(ref, shape)
    assert abs(mean_multiplier(ctrl, total) - mean_multiplier(ref, total)) < 1e-9
    assert ctrl.warmup_steps == 0 and 0 < ctrl.level <= 1
    values = [ctrl(s) for s in range(total)]
    assert max(values) <= 1.0 and (len(set(values)) == 1 if shape == "constant" else values == [ctrl.level * ref.decay_multiplier(s) for s in range(total)])


def test_mean_matched_refuses_a_decay_of_mean_zero():
    ref = Schedule(warmup=plugin("warmup", "linear"), warmup_steps=2, decay=lambda s, t: 0.0, total_steps=10)
    with pytest.raises(ConfigError, match="the decay's mean multiplier over 10 steps is 0"):
        mean_matched_schedule(ref, "decay")
    assert mean_matched_schedule(ref, "constant")(3) == 0.0


def _plan(*overrides, total=1000):
    from hydra import compose, initialize_config_dir

    from bench.plan import resolve_plan, validate

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["optimizer=adam", "optimizer.lr=0.002", f"train.steps={total}", "train.epochs=null", *overrides])
    validate(cfg)
    return resolve_plan(cfg, train_size=10_000, models={"model": ({}, True)})


@pytest.mark.parametrize("decay", ["linear", "cosine", "constant"])
def test_mean_matched_through_the_plan_matches_the_warmup_arm(decay):
    """warmup=mean_matched at a base LR has the lr_mean (recorded in every result.json) of warmup=linear at
    the reference's start and fraction, at the same base LR."""
    arm = _plan("warmup=linear", "warmup.fraction=0.1", "warmup.start_factor=0.1", f"decay={decay}")
    for shape in ("constant", "decay"):
        ctrl = _plan("warmup=mean_matched", f"warmup.shape={shape}", f"decay={decay}")
        assert abs(ctrl.lr_mean - arm.lr_mean) < 1e-12 and ctrl.mean_lrs()["model"] == pytest.approx(arm.lr_mean, abs=1e-12)
        assert ctrl.schedules["model"].warmup_steps == 0 and arm.schedules["model"].warmup_steps == 100
    if decay == "linear":  # linear from 0.1 over 100 of 1000 steps, then linear decay: mean 0.4565 (see mean_matched_schedule)
        assert arm.lr_mean == pytest.approx(0.002 * 0.4564714714714715)
    assert _plan("warmup=none", f"decay={decay}").lr_mean > arm.lr_mean  # warm-up lowers the mean LR


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["warmup.shape=triangle"], "warmup.shape='triangle' is not allowed: one of constant, decay"),
        (["warmup.reference.fraction=0"], "warmup.reference.fraction=0 is not allowed: a number in (0, 1]"),
        (["warmup.reference.fraction=1.5"], "warmup.reference.fraction=1.5 is not allowed: a number in (0, 1]"),
        (["warmup.reference.start_factor=0"], "warmup.reference.start_factor=0 is not allowed: a number in (0, 1]"),
        (["warmup.reference.start_factor=null"], "warmup.reference.start_factor=None is not allowed: a number in (0, 1]"),
        (["+warmup.reference.steps=10"], "warmup.reference.steps=10 is not allowed: not a key of the reference"),
        (["warmup.reference=0.1"], "warmup.reference=0.1 is not allowed: a mapping with the keys start_factor, fraction"),
        (["warmup.steps=100"], "warmup.steps=100 is not allowed: null: warmup=mean_matched has no warm-up"),
        (["warmup.fraction=0.1"], "warmup.fraction=0.1 is not allowed: null: warmup=mean_matched has no warm-up"),
        (["warmup.reference.fraction=0.0001"], "warmup.reference.fraction=0.0001 gives a reference warm-up of 0 steps at a budget of 1000 steps"),
    ],
)
def test_mean_matched_bad_values_are_one_line(overrides, message):
    with pytest.raises(ConfigError) as e:
        _plan("warmup=mean_matched", *overrides)
    assert message in str(e.value) and "\n" not in str(e.value)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["warmup=linear", "+warmup.shape=constant"], "warmup.shape='constant' is not allowed: null unless warmup.reference is set"),
        (["warmup=linear", "+warmup.reference={start_factor:0.1,fraction:0.1}", "+warmup.shape=constant"],
         "warmup.reference={'start_factor': 0.1, 'fraction': 0.1} is not allowed: null for warmup=linear"),
    ],
)
def test_only_the_mean_matched_control_takes_a_reference(overrides, message):
    with pytest.raises(ConfigError) as e:
        _plan(*overrides)
    assert message in str(e.value)


@pytest.mark.parametrize(
    "rule,size,base,expect",
    [("none", 1024, 64, 1.0), ("linear", 1024, 64, 16.0), ("sqrt", 1024, 64, 4.0), ("linear", 32, 128, 0.25), ("sqrt", 32, 128, 0.5),
     ("sde", 1024, 64, 4.0), ("sde", 32, 128, 0.5)],
)
def test_scaling_rules(rule, size, base, expect):
    assert lr_scale(rule, size, base) == pytest.approx(expect)
    assert peak_lr(0.1, rule, size, base) == pytest.approx(0.1 * expect)


def test_sde_rule_scales_adam_betas_and_eps():
    """Malladi et al. 2022: batch x k -> LR x sqrt(k), 1 - beta x k, eps / sqrt(k)."""
    adam = {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.0}
    up = sde_optimizer(adam, 1024, 256)
    assert up["betas"] == pytest.approx([0.6, 0.996]) and up["eps"] == pytest.approx(5e-9) and up["lr"] == 1e-3
    down = sde_optimizer(adam, 16, 256)
    assert down["betas"] == pytest.approx([1 - 0.1 / 16, 1 - 0.001 / 16]) and down["eps"] == pytest.approx(4e-8)
    assert sde_optimizer(adam, 256, 256)["betas"] == pytest.approx([0.9, 0.999])
    with pytest.raises(ConfigError, match=r"batch.scaling='sde' is not allowed: a batch.size/batch.base_size ratio k .* \(k = 16 gives -0.6"):
        sde_optimizer(adam, 4096, 256)
    with pytest.raises(ConfigError, match="an optimizer with betas and eps"):
        sde_optimizer({"lr": 0.1, "momentum": 0.9}, 1024, 256)


def test_goyal_linear_rule():
    # Goyal et al.: 0.1 per 256 images -> 3.2 at batch 8k
    assert peak_lr(0.1, "linear", 8192, 256) == pytest.approx(3.2)
