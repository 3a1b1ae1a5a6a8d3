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
from bench.schedules import DECAY_HARNESS_KEYS, WARMUP_HARNESS_KEYS, Schedule, build, length_from_beta2

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
