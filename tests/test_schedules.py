"""Every warm-up and decay at steps 0, w-1, w and the last step, against hand-computed values."""

import math

import pytest
import torch
from torch.optim.lr_scheduler import LambdaLR

from bench.scaling import lr_scale, peak_lr
from bench.schedules import Schedule, untuned_length

T = 100  # budget
W = 10  # warm-up length


def sched(warmup="none", w=0, decay="constant", **kw):
    return Schedule(warmup=warmup, warmup_steps=w, total_steps=T, decay=decay, **kw)


def test_none():
    s = sched()
    assert [s(0), s(W - 1), s(W), s(T - 1)] == [1.0, 1.0, 1.0, 1.0]


def test_constant_warmup():
    s = sched("constant", W, factor=0.1)
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
    assert untuned_length(0.999, "untuned_linear") == 2000
    assert untuned_length(0.999, "untuned_exponential") == 1000
    assert untuned_length(0.99, "untuned_linear") == 200
    assert untuned_length(0.98, "untuned_exponential") == 50


def test_untuned_linear():
    s = Schedule(warmup="untuned_linear", warmup_steps=200, total_steps=1000, decay="constant")
    assert s(0) == pytest.approx(1 / 200)
    assert s(199) == 1.0  # w - 1
    assert s(200) == 1.0 and s(999) == 1.0
    assert s(99) == pytest.approx(0.5)


def test_untuned_exponential():
    s = Schedule(warmup="untuned_exponential", warmup_steps=100, total_steps=1000, decay="constant")
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
    [("none", 1024, 64, 1.0), ("linear", 1024, 64, 16.0), ("sqrt", 1024, 64, 4.0), ("linear", 32, 128, 0.25), ("sqrt", 32, 128, 0.5)],
)
def test_scaling_rules(rule, size, base, expect):
    assert lr_scale(rule, size, base) == pytest.approx(expect)
    assert peak_lr(0.1, rule, size, base) == pytest.approx(0.1 * expect)


def test_goyal_linear_rule():
    # Goyal et al.: 0.1 per 256 images -> 3.2 at batch 8k
    assert peak_lr(0.1, "linear", 8192, 256) == pytest.approx(3.2)
