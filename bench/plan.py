"""Start-up validation and the resolved run plan.

Every config value is checked here once, before any training or record writing;
an error names the key, the value and what is allowed (``bench.errors.ConfigError``).
Nothing downstream re-checks or clamps.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Real
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from bench.errors import ConfigError, bad
from bench.scaling import RULES, lr_scale
from bench.schedules import DECAYS, WARMUPS, Schedule, untuned_length


def _is_number(v: Any) -> bool:
    return isinstance(v, Real) and not isinstance(v, bool) and math.isfinite(v)


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _positive_int(key: str, v: Any, allow_none: bool = False) -> None:
    if v is None and allow_none:
        return
    if not _is_int(v) or v < 1:
        raise bad(key, v, "an integer >= 1" + (" or null" if allow_none else ""))


def _unit_interval(key: str, v: Any, low_open: bool = True) -> None:
    ok = _is_number(v) and (0 < v <= 1 if low_open else 0 <= v <= 1)
    if not ok:
        raise bad(key, v, "a number in (0, 1]" if low_open else "a number in [0, 1]")


def validate(cfg: DictConfig) -> None:
    """Checks that need no task: LR, batch, budget keys, warm-up and schedule parameters."""
    lr = cfg.optimizer.lr
    if not _is_number(lr) or lr <= 0:
        raise bad("optimizer.lr", lr, "a number > 0")
    b = cfg.batch
    _positive_int("batch.size", b.size)
    _positive_int("batch.base_size", b.base_size)
    if b.scaling not in RULES:
        raise bad("batch.scaling", b.scaling, f"one of {', '.join(RULES)}")
    _positive_int("batch.micro_size", b.micro_size, allow_none=True)
    if b.micro_size is not None and b.size % b.micro_size:
        raise bad("batch.micro_size", b.micro_size, f"a divisor of batch.size={b.size}")
    if not _is_int(cfg.seed):
        raise bad("seed", cfg.seed, "an integer")

    t = cfg.train
    if t.steps is not None and t.epochs is not None:
        raise ConfigError(f"train.steps={t.steps} and train.epochs={t.epochs} are both set: set at most one (the other null)")
    for key in ("steps", "epochs", "default_epochs"):
        v = t[key]
        if v is not None and (not _is_int(v) or v < 1):
            raise bad(f"train.{key}", v, "an integer >= 1 (a positive training budget)")
    if t.steps is None and t.epochs is None and t.default_epochs is None:
        raise ConfigError("no training budget: set train.steps or train.epochs to an integer >= 1")
    for key in ("eval_every", "log_every", "check_every"):
        _positive_int(f"train.{key}", t[key])
    if not (_is_int(t.checkpoint_every) and t.checkpoint_every >= 0):
        raise bad("train.checkpoint_every", t.checkpoint_every, "an integer >= 0 (0 = only on preemption)")
    if t.diverge_factor is not None and (not _is_number(t.diverge_factor) or t.diverge_factor <= 1):
        raise bad("train.diverge_factor", t.diverge_factor, "a number > 1, or null")
    if t.clip_grad is not None and (not _is_number(t.clip_grad) or t.clip_grad <= 0):
        raise bad("train.clip_grad", t.clip_grad, "a number > 0, or null")

    w = cfg.warmup
    if w.name not in WARMUPS:
        raise bad("warmup.name", w.name, f"one of {', '.join(WARMUPS)}")
    given = [k for k in ("steps", "epochs", "fraction") if w.get(k) is not None]
    if len(given) > 1:
        set_ = ", ".join(f"warmup.{k}={w[k]}" for k in given)
        raise ConfigError(f"{set_}: set at most one of warmup.steps / warmup.epochs / warmup.fraction (the others null)")
    if w.name.startswith("untuned") and given:
        k = given[0]
        raise bad(f"warmup.{k}", w[k], f"null: warmup={w.name} derives its length from the optimizer's beta2")
    if w.get("steps") is not None:
        _positive_int("warmup.steps", w.steps)
    if w.get("epochs") is not None and (not _is_number(w.epochs) or w.epochs <= 0):
        raise bad("warmup.epochs", w.epochs, "a number > 0")
    if w.get("fraction") is not None:
        _unit_interval("warmup.fraction", w.fraction)
    if w.name == "constant":
        _unit_interval("warmup.factor", w.factor)
    if w.name == "linear":
        _unit_interval("warmup.start_factor", w.start_factor)
    if w.name.startswith("untuned"):
        beta2(cfg.optimizer, w.name)

    s = cfg.schedule
    if s.name not in DECAYS:
        raise bad("schedule.name", s.name, f"one of {', '.join(DECAYS)}")
    if s.name in ("cosine", "linear"):
        _unit_interval("schedule.floor", s.floor, low_open=False)
    if s.name == "step":
        _unit_interval("schedule.gamma", s.gamma)
        ms = list(s.milestones)
        if not all(_is_number(m) and 0 < m < 1 for m in ms) or ms != sorted(ms):
            raise bad("schedule.milestones", ms, "increasing fractions of the budget in (0, 1)")
    if s.name == "inverse_sqrt" and s.timescale is not None:
        _positive_int("schedule.timescale", s.timescale)

    hw = cfg.hardware
    if hw.precision not in ("fp32", "bf16"):
        raise bad("hardware.precision", hw.precision, "fp32 or bf16")
    _positive_int("hardware.threads", hw.threads, allow_none=True)


def beta2(opt_cfg: Mapping, warmup_name: str) -> float:
    """The optimizer's beta2, required by the untuned warm-ups."""
    betas = opt_cfg.get("betas")
    target = opt_cfg.get("_target_", "?")
    if betas is None or len(betas) != 2:
        raise ConfigError(
            f"warmup={warmup_name} needs an optimizer with betas (beta2), but optimizer {target} has none: "
            "use adam, adamw, radam or lamb, or another warm-up"
        )
    b2 = betas[1]
    if not _is_number(b2) or not 0 < b2 < 1:
        raise bad("optimizer.betas[1]", b2, "a number in (0, 1)")
    return float(b2)


@dataclass(frozen=True)
class Plan:
    """Everything the loop needs, resolved from config and task size."""

    total_steps: int
    steps_per_epoch: int
    micro_batches: int  # per process per step
    world_size: int
    lr_base: float
    lr_scale: float
    schedules: dict[str, Schedule] = field(default_factory=dict)
    optimizer_cfgs: dict[str, dict] = field(default_factory=dict)

    @property
    def lr_peak(self) -> float:
        return self.lr_base * self.lr_scale

    def peak_lrs(self) -> dict[str, float]:
        return {n: c["lr"] * self.lr_scale for n, c in self.optimizer_cfgs.items()}


def make_plan(cfg: DictConfig, task, world_size: int = 1) -> Plan:
    """Resolve budget, warm-up length, schedules and per-model optimizer configs against the task."""
    b = cfg.batch
    if b.size % world_size:
        raise bad("batch.size", b.size, f"a multiple of the world size {world_size} (the global batch is split over processes)")
    micro = b.micro_size or b.size // world_size
    per_rank = b.size // world_size
    if per_rank % micro:
        raise bad("batch.micro_size", b.micro_size, f"a divisor of the per-process batch {per_rank} (batch.size={b.size} over {world_size} processes)")
    n = task.train_size()
    spe = n // b.size
    if spe < 1:
        raise bad("batch.size", b.size, f"at most the training set size {n} of task {cfg.task.name}")
    t = cfg.train
    total = t.steps if t.steps is not None else (t.epochs if t.epochs is not None else t.default_epochs) * spe

    optimizer_cfgs, schedules = {}, {}
    base = OmegaConf.to_container(cfg.optimizer, resolve=True)
    for name in task.models:
        oc = {**base, **task.optimizer_overrides(name)}
        if not _is_number(oc["lr"]) or oc["lr"] <= 0:
            raise bad(f"task lr for {name}", oc["lr"], "a number > 0")
        optimizer_cfgs[name] = oc
        wname = cfg.warmup.name if task.warmup_applies_to(name) else "none"
        w = _warmup_steps(cfg, wname, oc, total, spe)
        schedules[name] = _schedule(cfg, wname, w, total)
    return Plan(
        total_steps=total,
        steps_per_epoch=spe,
        micro_batches=per_rank // micro,
        world_size=world_size,
        lr_base=float(cfg.optimizer.lr),
        lr_scale=lr_scale(b.scaling, b.size, b.base_size),
        schedules=schedules,
        optimizer_cfgs=optimizer_cfgs,
    )


def _warmup_steps(cfg: DictConfig, name: str, opt_cfg: Mapping, total: int, spe: int) -> int:
    w = cfg.warmup
    if name == "none":
        return 0
    if name.startswith("untuned"):
        steps, key = untuned_length(beta2(opt_cfg, name), name), f"warmup={name} (from beta2)"
    elif w.steps is not None:
        steps, key = w.steps, f"warmup.steps={w.steps}"
    elif w.epochs is not None:
        steps, key = round(w.epochs * spe), f"warmup.epochs={w.epochs}"
    else:
        frac = w.fraction if w.fraction is not None else w.default_fraction
        steps, key = max(1, round(frac * total)), f"warmup.fraction={frac}"
    if steps > total:
        raise ConfigError(f"{key} gives a warm-up of {steps} steps, longer than the training budget of {total} steps: shorten the warm-up or raise train.steps/train.epochs")
    return max(1, steps)


def _schedule(cfg: DictConfig, warmup: str, w: int, total: int) -> Schedule:
    s, wc = cfg.schedule, cfg.warmup
    return Schedule(
        warmup=warmup,
        warmup_steps=w,
        total_steps=total,
        decay=s.name,
        factor=float(wc.factor) if warmup == "constant" else 1.0,
        start_factor=float(wc.start_factor) if warmup == "linear" else 1.0,
        floor=float(s.floor) if s.name in ("cosine", "linear") else 0.0,
        milestones=tuple(s.milestones) if s.name == "step" else (),
        gamma=float(s.gamma) if s.name == "step" else 1.0,
        timescale=int(s.timescale or w or 1) if s.name == "inverse_sqrt" else 1,
    )
