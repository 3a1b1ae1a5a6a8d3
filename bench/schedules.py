"""Learning-rate multipliers: warm-up times decay, as pure functions of the step.

Step convention (used everywhere in the suite): ``s`` is the 0-based index of an
optimizer update, ``s = 0 .. T-1`` for a budget of ``T`` updates. The LR used by
update ``s`` is ``peak_lr * warmup(s) * decay(s)``. The peak LR is the effective
LR after batch-size scaling (see :mod:`bench.scaling`).

Warm-up and decay are independent: the decay is a function of ``s`` and ``T`` only,
so two runs that differ only in warm-up follow the same decay curve once warm-up
is over. Every function returns a float multiplier in [0, 1].
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

Multiplier = Callable[[int], float]

WARMUPS = ("none", "constant", "linear", "exponential", "untuned_linear", "untuned_exponential")
DECAYS = ("constant", "cosine", "linear", "step", "inverse_sqrt")


# ---------------------------------------------------------------- warm-up


def constant_warmup(s: int, w: int, factor: float) -> float:
    """``factor`` for ``s < w``, then 1 (an abrupt switch; Goyal et al. 2017 sec. 2.2)."""
    return factor if s < w else 1.0


def linear_warmup(s: int, w: int, start_factor: float) -> float:
    """The seed document's gradual warm-up, as a fraction of the peak LR nu.

    nu_s = nu_0 + s * delta with delta = (nu - nu_0) / (w - 1), so the LR is nu_0 =
    start_factor * nu at s = 0 and exactly nu at s = w - 1; 1 from then on.
    With w = 1 the single warm-up step is already at nu.
    """
    if s >= w - 1:
        return 1.0
    return start_factor + s * (1.0 - start_factor) / (w - 1)


def exponential_warmup(s: int, tau: float) -> float:
    """``1 - exp(-(s + 1) / tau)`` (pytorch_warmup's ExponentialWarmup); approaches 1, never reaches it."""
    return 1.0 - math.exp(-(s + 1) / tau)


def untuned_linear_warmup(s: int, w: int) -> float:
    """``min(1, (s + 1) / w)``: linear from 1/w at s = 0 to 1 at s = w - 1 (Ma & Yarats 2019)."""
    return min(1.0, (s + 1) / w)


def untuned_length(beta2: float, kind: str) -> int:
    """Warm-up length from Adam's beta2 (Ma & Yarats 2019).

    linear: w = floor(2 / (1 - beta2)) (2000 for beta2 = 0.999);
    exponential: tau = floor(1 / (1 - beta2)) (1000 for beta2 = 0.999).
    A tiny epsilon guards floor() against 1/(1-0.999) = 999.9999999999999 in floating point.
    """
    num = 2.0 if kind == "untuned_linear" else 1.0
    return int(math.floor(num / (1.0 - beta2) + 1e-9))


# ---------------------------------------------------------------- decay


def cosine_decay(s: int, total: int, floor: float) -> float:
    """``floor + (1 - floor) * (1 + cos(pi * s / (T - 1))) / 2``: 1 at s = 0, ``floor`` at s = T - 1."""
    if total <= 1:
        return 1.0
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(s, total - 1) / (total - 1)))


def linear_decay(s: int, total: int, floor: float) -> float:
    """``1 - (1 - floor) * s / (T - 1)``: 1 at s = 0, ``floor`` at s = T - 1."""
    if total <= 1:
        return 1.0
    return 1.0 - (1.0 - floor) * min(s, total - 1) / (total - 1)


def step_decay(s: int, total: int, milestones: Sequence[float], gamma: float) -> float:
    """``gamma ** k`` where k counts milestones m (fractions of T) with s >= round(m * T)."""
    k = sum(1 for m in milestones if s >= round(m * total))
    return gamma**k


def inverse_sqrt_decay(s: int, timescale: int) -> float:
    """``min(1, sqrt(t0 / (s + 1)))``: flat for the first t0 steps, then proportional to 1/sqrt(s+1).

    With a linear warm-up of w = t0 steps this is Vaswani et al.'s d^-0.5 min(s^-0.5, s w^-1.5)
    up to the constant factor that the peak LR absorbs.
    """
    return min(1.0, math.sqrt(timescale / (s + 1)))


# ---------------------------------------------------------------- composition


@dataclass(frozen=True)
class Schedule:
    """A resolved LR multiplier: warm-up kind and length, decay kind and its parameters.

    ``warmup_steps`` is w (or tau for the exponential kinds) in optimizer steps, 0 for none.
    """

    warmup: str
    warmup_steps: int
    total_steps: int
    decay: str
    factor: float = 0.1
    start_factor: float = 0.1
    floor: float = 0.0
    milestones: tuple[float, ...] = ()
    gamma: float = 0.1
    timescale: int = 1

    def warmup_multiplier(self, s: int) -> float:
        w = self.warmup_steps
        if self.warmup == "none" or w == 0:
            return 1.0
        if self.warmup == "constant":
            return constant_warmup(s, w, self.factor)
        if self.warmup == "linear":
            return linear_warmup(s, w, self.start_factor)
        if self.warmup in ("exponential", "untuned_exponential"):
            return exponential_warmup(s, w)
        if self.warmup == "untuned_linear":
            return untuned_linear_warmup(s, w)
        raise ValueError(f"unknown warm-up {self.warmup!r}; allowed: {', '.join(WARMUPS)}")

    def decay_multiplier(self, s: int) -> float:
        if self.decay == "constant":
            return 1.0
        if self.decay == "cosine":
            return cosine_decay(s, self.total_steps, self.floor)
        if self.decay == "linear":
            return linear_decay(s, self.total_steps, self.floor)
        if self.decay == "step":
            return step_decay(s, self.total_steps, self.milestones, self.gamma)
        if self.decay == "inverse_sqrt":
            return inverse_sqrt_decay(s, self.timescale)
        raise ValueError(f"unknown schedule {self.decay!r}; allowed: {', '.join(DECAYS)}")

    def __call__(self, s: int) -> float:
        """LR multiplier for 0-based update ``s``."""
        return self.warmup_multiplier(s) * self.decay_multiplier(s)
