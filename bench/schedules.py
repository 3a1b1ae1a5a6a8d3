"""Learning-rate multipliers: warm-up times decay, as pure functions of the step.

Step convention (used everywhere in the suite): ``s`` is the 0-based index of an
optimizer update, ``s = 0 .. T-1`` for a budget of ``T`` updates. The LR used by
update ``s`` is ``peak_lr * warmup(s, w) * decay(s, T)``. The peak LR is the effective
LR after batch-size scaling (see :mod:`bench.scaling`).

Warm-ups and decays are plug-ins: each is a plain function, instantiated from its YAML in
``conf/warmup/`` or ``conf/decay/`` by ``_target_`` with ``_partial_: true``.

- warm-up: ``f(step: int, warmup_steps: int, **params) -> float`` in [0, 1]; the harness
  resolves ``warmup_steps`` (from ``warmup.steps`` / ``epochs`` / ``fraction``, or from the
  optimizer's beta2 when the YAML sets ``beta2_multiple``) before it calls ``f``;
- decay: ``f(step: int, total_steps: int, **params) -> float`` in [0, 1].

One option is not a multiplier of its own: ``warmup=mean_matched`` (a ``warmup.reference``
node) is the no-warm-up control at the mean LR of a reference warm-up, a constant level the
harness computes from the budget and the decay (:func:`mean_matched_schedule`).

Warm-up and decay are independent: the decay sees only ``s`` and ``T``, so two runs that
differ only in warm-up follow the same decay curve once warm-up is over. A function's own
keyword parameters are checked by the rules attached with :func:`bench.rules.params`.
"""

from __future__ import annotations

import functools
import inspect
import math
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence

from bench.errors import ConfigError
from bench.rules import fraction, increasing_fractions, int_at_least, params

#: Keys of a ``warmup`` node that the harness reads (length, naming); all others are the function's.
WARMUP_HARNESS_KEYS = ("name", "steps", "epochs", "fraction", "default_fraction", "beta2_multiple", "reference", "shape")
#: ``warmup.shape`` of a mean-matched control (:func:`mean_matched_schedule`).
MEAN_MATCHED_SHAPES = ("constant", "decay")
#: Keys of a ``decay`` node that the harness reads.
DECAY_HARNESS_KEYS = ("name",)

WarmupFn = Callable[[int, int], float]
DecayFn = Callable[[int, int], float]


# ---------------------------------------------------------------- warm-ups


def no_warmup(step: int, warmup_steps: int, **ignored) -> float:
    """1: the peak LR from step 0.

    Takes and ignores any warm-up parameter, so that a sweep can cross ``none`` with the
    parameters it sets for the other warm-ups (e.g. ``warmup.start_factor``).
    """
    return 1.0


@params(start_factor=fraction())
def constant_warmup(step: int, warmup_steps: int, start_factor: float) -> float:
    """``start_factor`` for ``s < w``, then 1 (an abrupt switch; Goyal et al. 2017 sec. 2.2).

    The key is shared with :func:`linear_warmup` (both start the warm-up at ``start_factor`` x
    the peak), so one preset can cross constant and gradual warm-up at the same start LR.
    """
    return start_factor if step < warmup_steps else 1.0


@params(start_factor=fraction())
def linear_warmup(step: int, warmup_steps: int, start_factor: float) -> float:
    """The seed document's gradual warm-up, as a fraction of the peak LR nu.

    nu_s = nu_0 + s * delta with delta = (nu - nu_0) / (w - 1), so the LR is nu_0 =
    start_factor * nu at s = 0 and exactly nu at s = w - 1; 1 from then on.
    With w = 1 the single warm-up step is already at nu.
    """
    w = warmup_steps
    if step >= w - 1:
        return 1.0
    return start_factor + step * (1.0 - start_factor) / (w - 1)


def exponential_warmup(step: int, warmup_steps: int) -> float:
    """``1 - exp(-(s + 1) / tau)`` with tau = ``warmup_steps`` (pytorch_warmup's ExponentialWarmup).

    Approaches 1 and never reaches it: at s = tau - 1 the multiplier is 1 - 1/e.
    """
    return 1.0 - math.exp(-(step + 1) / warmup_steps)


def untuned_linear_warmup(step: int, warmup_steps: int) -> float:
    """``min(1, (s + 1) / w)``: linear from 1/w at s = 0 to 1 at s = w - 1 (Ma & Yarats 2019)."""
    return min(1.0, (step + 1) / warmup_steps)


def length_from_beta2(beta2: float, multiple: float) -> int:
    """Warm-up length from Adam's beta2 (Ma & Yarats 2019): ``floor(multiple / (1 - beta2))``.

    multiple 2 gives the untuned linear length (2000 for beta2 = 0.999), multiple 1 the untuned
    exponential tau (1000). A tiny epsilon guards floor() against 1/(1-0.999) = 999.9999999999999.
    """
    return int(math.floor(multiple / (1.0 - beta2) + 1e-9))


# ---------------------------------------------------------------- decays


def constant_decay(step: int, total_steps: int) -> float:
    """1: no decay."""
    return 1.0


@params(floor=fraction(low_open=False))
def cosine_decay(step: int, total_steps: int, floor: float) -> float:
    """``floor + (1 - floor) * (1 + cos(pi * s / (T - 1))) / 2``: 1 at s = 0, ``floor`` at s = T - 1."""
    if total_steps <= 1:
        return 1.0
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps - 1) / (total_steps - 1)))


@params(floor=fraction(low_open=False))
def linear_decay(step: int, total_steps: int, floor: float) -> float:
    """``1 - (1 - floor) * s / (T - 1)``: 1 at s = 0, ``floor`` at s = T - 1."""
    if total_steps <= 1:
        return 1.0
    return 1.0 - (1.0 - floor) * min(step, total_steps - 1) / (total_steps - 1)


@params(milestones=increasing_fractions(), gamma=fraction())
def step_decay(step: int, total_steps: int, milestones: Sequence[float], gamma: float) -> float:
    """``gamma ** k`` where k counts milestones m (fractions of T) with s >= round(m * T)."""
    k = sum(1 for m in milestones if step >= round(m * total_steps))
    return gamma**k


@params(timescale=int_at_least(1).or_none(), timescale_fraction=fraction())
def inverse_sqrt_decay(step: int, total_steps: int, timescale: int | None, timescale_fraction: float) -> float:
    """``min(1, sqrt(t0 / (s + 1)))``: flat for the first t0 steps, then proportional to 1/sqrt(s+1).

    t0 = ``timescale`` steps, or ``max(1, round(timescale_fraction * T))`` when it is None: a
    function of the budget only, never of the warm-up, so a warm-up sweep under this decay
    compares warm-ups on one decay curve. With a linear warm-up of w = t0 steps this is
    Vaswani et al.'s d^-0.5 min(s^-0.5, s w^-1.5) up to the constant the peak LR absorbs.
    """
    t0 = timescale if timescale is not None else max(1, round(timescale_fraction * total_steps))
    return min(1.0, math.sqrt(t0 / (step + 1)))


# ---------------------------------------------------------------- plug-in building


def build(node: Mapping[str, Any], group: str, harness_keys: Sequence[str]) -> functools.partial:
    """Instantiate a warm-up or decay node (``_target_`` + ``_partial_: true``) into a partial.

    The harness's own keys are removed first; the function's keywords are checked against its
    signature (the step and length arguments are bound by the harness) and its value rules.
    Raises :class:`ConfigError` naming ``group.key``.
    """
    import hydra  # lazy: keeps this module importable without Hydra's instantiate machinery loaded

    spec = {k: v for k, v in dict(node).items() if k not in harness_keys}
    target = spec.get("_target_")
    if not target:
        raise ConfigError(f"{group}._target_ is missing: a {group} option names its function with _target_ (and _partial_: true)")
    spec["_partial_"] = True
    try:
        fn = hydra.utils.instantiate(spec)
    except Exception as e:  # import errors, bad targets: hydra wraps them all
        cause = e.__cause__ or e
        raise ConfigError(f"{group}._target_={target!r} cannot be loaded: {type(cause).__name__}: {cause}".splitlines()[0]) from None
    if not isinstance(fn, functools.partial) or not callable(fn.func):
        raise ConfigError(f"{group}._target_={target!r} is not a function")
    # a plain partial of the resolved function: Hydra's own partial re-runs its target-policy checks on
    # every call (tens of microseconds), and the schedule is called once per optimizer step
    fn = functools.partial(fn.func, *fn.args, **fn.keywords)
    check_params(fn, group)
    return fn


def check_params(fn: functools.partial, group: str) -> None:
    """Refuse keywords the function does not take, missing ones, and values its rules refuse."""
    kwargs = dict(fn.keywords)
    func = fn.func
    try:
        sig = inspect.signature(func)
        sig.bind(0, 1, *fn.args, **kwargs)
    except TypeError as e:
        names = [p for p in list(inspect.signature(func).parameters)[2:]]
        raise ConfigError(
            f"{group}: {func.__module__}.{func.__qualname__} {e}; its parameters after (step, length) are: {', '.join(names) or 'none'}"
        ) from None
    for key, rule in getattr(func, "param_rules", {}).items():
        if key in kwargs:
            rule.check(f"{group}.{key}", kwargs[key])


def check_range(fn: Callable[[int, int], float], steps: range, length: int, what: str) -> None:
    """Refuse a plug-in whose multiplier leaves [0, 1] (or is not a number) on ``steps``."""
    for s in steps:
        try:
            v = float(fn(s, length))
        except Exception as e:
            raise ConfigError(f"{what} fails at step {s}: {type(e).__name__}: {e}") from None
        if not (0.0 <= v <= 1.0):
            raise ConfigError(f"{what} gives the multiplier {v!r} at step {s}: a warm-up or decay multiplier must lie in [0, 1]")


# ---------------------------------------------------------------- composition


@dataclass(frozen=True)
class Schedule:
    """A resolved LR multiplier for one model: ``level`` times a warm-up of ``warmup_steps`` times a decay.

    ``warmup_steps`` is w (tau for the exponential kinds) in optimizer steps; 0 means no warm-up
    (the warm-up function is not called). ``level`` in (0, 1] is 1 except for a mean-matched
    control (:func:`mean_matched_schedule`), where it lowers the whole curve to a target mean.
    """

    warmup: WarmupFn
    warmup_steps: int
    decay: DecayFn
    total_steps: int
    level: float = 1.0

    def warmup_multiplier(self, s: int) -> float:
        return 1.0 if self.warmup_steps == 0 else self.warmup(s, self.warmup_steps)

    def decay_multiplier(self, s: int) -> float:
        return self.decay(s, self.total_steps)

    def __call__(self, s: int) -> float:
        """LR multiplier for 0-based update ``s``."""
        return self.level * self.warmup_multiplier(s) * self.decay_multiplier(s)

    @functools.cached_property
    def mean(self) -> float:
        """The mean multiplier over the budget (:func:`mean_multiplier`): the run's mean LR / peak LR.
        Computed once, a step at a time (a few seconds for 10^6 steps)."""
        return mean_multiplier(self, self.total_steps)


def mean_multiplier(fn: Callable[[int], float], total_steps: int) -> float:
    """``(1/T) * sum_{s=0}^{T-1} fn(s)``: the mean of an LR multiplier over a budget of T updates."""
    return math.fsum(fn(s) for s in range(total_steps)) / total_steps


def mean_matched_schedule(reference: Schedule, shape: str) -> Schedule:
    """A control without warm-up whose mean multiplier equals ``reference.mean`` = m_ref.

    So that a warm-up arm and its control differ in the shape of the early LR only, not in the
    average LR (a warm-up lowers the mean: linear from 0.1 over 10 % of a linearly decayed run
    gives m_ref = 0.4565 at T = 1000,
    where the decay alone gives 0.5).

    - ``shape="constant"``: a flat multiplier m_ref at every step (the reference's decay is only
      used to compute m_ref);
    - ``shape="decay"``: the reference's decay without its warm-up, scaled by m_ref / m_decay
      (m_decay the decay's own mean), i.e. the same decay curve from a lower peak.

    Both levels are at most 1, since a warm-up multiplier is at most 1. Raises ConfigError when
    the decay's mean is 0 (no level can match it).
    """
    m_ref, total = reference.mean, reference.total_steps
    if shape == "constant":
        return Schedule(warmup=no_warmup, warmup_steps=0, decay=constant_decay, total_steps=total, level=m_ref)
    m_decay = mean_multiplier(reference.decay_multiplier, total)
    if m_decay <= 0.0:
        raise ConfigError(f"warmup.shape=decay cannot match a mean LR: the decay's mean multiplier over {total} steps is 0 (use warmup.shape=constant)")
    return Schedule(warmup=no_warmup, warmup_steps=0, decay=reference.decay, total_steps=total, level=m_ref / m_decay)
