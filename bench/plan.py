"""Start-up validation and the resolved run plan.

:func:`validate` is the one place where a job's config is checked, before any task is built or
record written; the multirun pre-flight (:mod:`bench.cluster`) calls it for every grid point. It
runs, in order: the typed schema of the core keys (:data:`SCHEMA`), the rules that tie keys
together (:func:`cross_checks`), the optimizer's own argument checks, the warm-up's, decay's
and probes' parameter rules (next to each plug-in), and the task's ``check_config``. Every
error names the key, the value and what is allowed (:class:`bench.errors.ConfigError`).
Nothing downstream re-checks or clamps.

:func:`make_plan` then resolves what needs the task's size: the budget in steps, each model's
warm-up length and schedule, its optimizer config and peak LR. Its checks also run without a task
(:func:`check_plan`, from the size and models a task states in config), so the multirun pre-flight
refuses a grid point whose warm-up outlasts its budget before the first job starts.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Any, Mapping

from omegaconf import DictConfig, OmegaConf

from bench.errors import ConfigError, bad
from bench.rules import Rule, boolean, fraction, int_at_least, is_int, is_number, number_above, one_of
from bench.scaling import RULES, lr_scale, sde_optimizer
from bench.schedules import (
    DECAY_HARNESS_KEYS,
    MEAN_MATCHED_SHAPES,
    WARMUP_HARNESS_KEYS,
    Schedule,
    build,
    check_range,
    length_from_beta2,
    linear_warmup,
    mean_matched_schedule,
    no_warmup,
)

#: The typed schema of the core keys: key -> rule. Plug-in and task keys are checked by their owners.
SCHEMA: dict[str, Rule] = {
    "seed": Rule(lambda v: is_int(v) and 0 <= v < 2**63, "an integer in [0, 2^63)"),
    "optimizer.lr": number_above(0),
    "batch.size": int_at_least(1),
    "batch.base_size": int_at_least(1),
    "batch.scaling": one_of(*RULES),
    "batch.micro_size": int_at_least(1).or_none(),
    "train.steps": Rule(lambda v: is_int(v) and v >= 1, "an integer >= 1 (a positive training budget)", none_ok=True),
    "train.epochs": Rule(lambda v: is_int(v) and v >= 1, "an integer >= 1 (a positive training budget)", none_ok=True),
    "train.default_epochs": Rule(lambda v: is_int(v) and v >= 1, "an integer >= 1 (a positive training budget)", none_ok=True),
    "train.eval_every": int_at_least(1),
    "train.log_every": int_at_least(1),
    "train.check_every": int_at_least(1),
    "train.checkpoint_every": Rule(lambda v: is_int(v) and v >= 0, "an integer >= 0 (0 = only on preemption)"),
    "train.diverge_factor": Rule(lambda v: is_number(v) and v > 1, "a number > 1", none_ok=True),
    "train.clip_grad": number_above(0).or_none(),
    "train.force": boolean(),
    "train.save_final": boolean(),
    "train.average_last": int_at_least(1).or_none(),
    "warmup.steps": int_at_least(1).or_none(),
    "warmup.epochs": number_above(0).or_none(),
    "warmup.fraction": fraction().or_none(),
    "warmup.default_fraction": fraction().or_none(),
    "warmup.beta2_multiple": number_above(0).or_none(),
    "hardware.device": one_of("cpu", "cuda"),
    "hardware.precision": one_of("fp32", "bf16"),
    "hardware.threads": int_at_least(1).or_none(),
    "hardware.deterministic": boolean(),
    "hardware.compile": boolean(),
    "hardware.channels_last": boolean(),
}


def _get(cfg: DictConfig, key: str) -> Any:
    return OmegaConf.select(cfg, key, default=None)


def validate(cfg: DictConfig) -> None:
    """Every check that needs no task data; raises ConfigError on the first bad value."""
    for key, rule in SCHEMA.items():
        rule.check(key, _get(cfg, key))
    cross_checks(cfg)
    check_optimizer(cfg.optimizer)
    warmup_fn(cfg)
    decay_fn(cfg)
    from bench.probes import build_probes  # lazy: torch-level code the plan does not need

    build_probes(cfg.get("diagnostics"))
    from bench.loggers import logger_factories

    logger_factories(cfg.get("logger"))
    import hydra

    try:
        task_cls = hydra.utils.get_class(cfg.task._target_)
    except Exception as e:
        raise ConfigError(f"task._target_={cfg.task.get('_target_')!r} cannot be loaded: {e}".splitlines()[0]) from None
    if hasattr(task_cls, "check_config"):
        task_cls.check_config(cfg.task)


def cross_checks(cfg: DictConfig) -> None:
    """Rules that involve more than one key."""
    b, t, w = cfg.batch, cfg.train, cfg.warmup
    if b.micro_size is not None and b.size % b.micro_size:
        raise bad("batch.micro_size", b.micro_size, f"a divisor of batch.size={b.size}")
    if t.steps is not None and t.epochs is not None:
        raise ConfigError(f"train.steps={t.steps} and train.epochs={t.epochs} are both set: set at most one (the other null)")
    if t.steps is None and t.epochs is None and t.default_epochs is None:
        raise ConfigError("no training budget: set train.steps or train.epochs to an integer >= 1")
    given = [k for k in ("steps", "epochs", "fraction") if w.get(k) is not None]
    if len(given) > 1:
        set_ = ", ".join(f"warmup.{k}={w[k]}" for k in given)
        raise ConfigError(f"{set_}: set at most one of warmup.steps / warmup.epochs / warmup.fraction (the others null)")
    if w.get("beta2_multiple") is not None:
        if given:
            k = given[0]
            raise bad(f"warmup.{k}", w[k], f"null: warmup={warmup_name(cfg)} derives its length from the optimizer's beta2")
        beta2(cfg.optimizer, warmup_name(cfg))
    check_mean_matched(cfg)


#: ``warmup.reference`` of a mean-matched control: key -> rule (the reference is the seed's linear warm-up).
REFERENCE_KEYS: dict[str, Rule] = {"start_factor": fraction(), "fraction": fraction()}


def check_mean_matched(cfg: DictConfig) -> None:
    """``warmup.reference`` and ``warmup.shape`` (warmup=mean_matched): both or neither, on a warm-up without its
    own multiplier, with no length of its own (the reference's ``fraction`` is the length it matches)."""
    w = cfg.warmup
    ref, shape = w.get("reference"), w.get("shape")
    if ref is None:
        if shape is not None:
            raise bad("warmup.shape", shape, "null unless warmup.reference is set (warmup=mean_matched)")
        return
    name = warmup_name(cfg)
    if not OmegaConf.is_dict(ref):
        raise bad("warmup.reference", ref, f"a mapping with the keys {', '.join(REFERENCE_KEYS)} (the linear warm-up whose mean LR is matched)")
    unknown = sorted(set(ref) - set(REFERENCE_KEYS))
    if unknown:
        raise bad(f"warmup.reference.{unknown[0]}", ref[unknown[0]], f"not a key of the reference: it takes {', '.join(REFERENCE_KEYS)} only")
    for key, rule in REFERENCE_KEYS.items():
        rule.check(f"warmup.reference.{key}", ref.get(key))
    one_of(*MEAN_MATCHED_SHAPES).check("warmup.shape", shape)
    for k in ("steps", "epochs", "fraction", "beta2_multiple"):
        if w.get(k) is not None:
            raise bad(f"warmup.{k}", w[k], f"null: warmup={name} has no warm-up; the length it matches is warmup.reference.fraction")
    if warmup_fn(cfg).func is not no_warmup:
        raise bad("warmup.reference", OmegaConf.to_container(ref), f"null for warmup={name}: only the mean-matched control (warmup=mean_matched, no warm-up of its own) takes a reference")


def check_optimizer(opt_cfg: DictConfig) -> None:
    """Build the optimizer once on a dummy parameter, so its own argument checks run at start-up."""
    import hydra
    import torch

    spec = OmegaConf.to_container(opt_cfg, resolve=True)
    target = spec.get("_target_", "?")
    if "betas" in spec and spec["betas"] is not None:
        spec["betas"] = tuple(spec["betas"])
    try:
        factory = hydra.utils.instantiate(spec)
        factory([torch.zeros(1, requires_grad=True)])
    except Exception as e:
        cause = e.__cause__ or e
        raise ConfigError(f"optimizer ({target}) refused its arguments: {type(cause).__name__}: {cause}".splitlines()[0]) from None


def warmup_name(cfg: DictConfig) -> str:
    return cfg.warmup.get("name") or str(cfg.warmup.get("_target_", "?")).rsplit(".", 1)[-1]


def decay_name(cfg: DictConfig) -> str:
    return cfg.decay.get("name") or str(cfg.decay.get("_target_", "?")).rsplit(".", 1)[-1]


def warmup_fn(cfg: DictConfig) -> functools.partial:
    return build(OmegaConf.to_container(cfg.warmup, resolve=True), "warmup", WARMUP_HARNESS_KEYS)


def decay_fn(cfg: DictConfig) -> functools.partial:
    return build(OmegaConf.to_container(cfg.decay, resolve=True), "decay", DECAY_HARNESS_KEYS)


def beta2(opt_cfg: Mapping, warmup: str) -> float:
    """The optimizer's beta2, required by warm-ups whose length derives from it."""
    betas = opt_cfg.get("betas")
    target = opt_cfg.get("_target_", "?")
    if betas is None or len(betas) != 2:
        raise ConfigError(
            f"warmup={warmup} needs an optimizer with betas (beta2), but optimizer {target} has none: "
            "use adam, adamw, radam or lamb, or another warm-up"
        )
    b2 = betas[1]
    if not is_number(b2) or not 0 < b2 < 1:
        raise bad("optimizer.betas[1]", b2, "a number in (0, 1)")
    return float(b2)


@dataclass(frozen=True)
class TrainSettings:
    """The loop's per-step settings as plain values (an OmegaConf read costs microseconds per step)."""

    eval_every: int
    log_every: int
    check_every: int
    checkpoint_every: int
    diverge_factor: float | None
    clip_grad: float | None
    average_last: int | None = None  # evaluations averaged into result.json's final_avg; None = off


@dataclass(frozen=True)
class Plan:
    """Everything the loop needs, resolved from config and task size."""

    total_steps: int
    steps_per_epoch: int
    micro_batches: int  # per process per step
    world_size: int
    lr_base: float
    lr_scale: float
    seed: int = 0
    batch_size: int = 1
    train: TrainSettings | None = None
    precision: str = "fp32"
    compile: bool = False
    save_final: bool = False
    config_hash: str = ""
    schedules: dict[str, Schedule] = field(default_factory=dict)
    optimizer_cfgs: dict[str, dict] = field(default_factory=dict)

    @property
    def lr_peak(self) -> float:
        return self.lr_base * self.lr_scale

    def peak_lrs(self) -> dict[str, float]:
        return {n: c["lr"] * self.lr_scale for n, c in self.optimizer_cfgs.items()}

    def mean_lrs(self) -> dict[str, float]:
        """Per model: its peak LR x its schedule's mean multiplier, the LR averaged over the run's updates."""
        peaks = self.peak_lrs()
        return {n: peaks[n] * s.mean for n, s in self.schedules.items()}

    @property
    def lr_mean(self) -> float:
        """``lr_peak`` x the mean multiplier of the warmed-up models' schedule: the mean LR the warm-up and decay
        choices give at this base LR, comparable across arms. Every model shares the decay and a warm-up only
        lowers the multiplier, so that is the lowest mean over the models (one model: its mean)."""
        return self.lr_peak * min((s.mean for s in self.schedules.values()), default=1.0)


def make_plan(cfg: DictConfig, task, world_size: int = 1, config_hash: str = "") -> Plan:
    """Resolve budget, warm-up length, schedules and per-model optimizer configs against the task."""
    models = {name: (task.optimizer_overrides(name), task.warmup_applies_to(name)) for name in task.models}
    return resolve_plan(cfg, task.train_size(), models, world_size, config_hash)


def check_plan(cfg: DictConfig, train_size: int | None, models: Mapping[str, tuple[Mapping, bool]] | None, world_size: int = 1) -> None:
    """:func:`make_plan`'s checks without a task: what the multirun pre-flight runs for every grid point.

    ``train_size`` and ``models`` (``name -> (optimizer overrides, warm-up applies)``) come from the
    task's data-free ``static_train_size`` / ``static_models``; None means unknown, and the checks that
    need it (batch vs training set, an epoch budget, a warm-up in epochs; per-model LRs and warm-up
    lengths) are left to the job's own :func:`make_plan`. Raises ConfigError like make_plan.
    """
    _batch_split(cfg, world_size)
    _peak_lr(cfg)
    spe = _steps_per_epoch(cfg, train_size) if train_size is not None else None
    total = _budget(cfg, spe)
    if total is None:
        return
    check_range(decay_fn(cfg), _probe_steps(total), total, f"decay={decay_name(cfg)}")
    if models is None or (spe is None and cfg.warmup.get("epochs") is not None):
        return
    _model_schedules(cfg, models, total, spe)


def resolve_plan(cfg: DictConfig, train_size: int, models: Mapping[str, tuple[Mapping, bool]], world_size: int = 1, config_hash: str = "") -> Plan:
    """The plan from config, the training-set size and ``name -> (optimizer overrides, warm-up applies)``."""
    per_rank, micro = _batch_split(cfg, world_size)
    lr_base, scale = _peak_lr(cfg)
    spe = _steps_per_epoch(cfg, train_size)
    total = _budget(cfg, spe)
    check_range(decay_fn(cfg), _probe_steps(total), total, f"decay={decay_name(cfg)}")
    optimizer_cfgs, schedules = _model_schedules(cfg, models, total, spe)
    t = cfg.train
    return Plan(
        total_steps=total,
        steps_per_epoch=spe,
        micro_batches=per_rank // micro,
        world_size=world_size,
        lr_base=lr_base,
        lr_scale=scale,
        seed=int(cfg.seed),
        batch_size=int(cfg.batch.size),
        train=TrainSettings(
            eval_every=t.eval_every, log_every=t.log_every, check_every=t.check_every, checkpoint_every=t.checkpoint_every,
            diverge_factor=t.diverge_factor, clip_grad=t.clip_grad, average_last=t.get("average_last"),
        ),
        precision=cfg.hardware.precision,
        compile=bool(cfg.hardware.compile),
        save_final=bool(cfg.train.get("save_final", False)),
        config_hash=config_hash,
        schedules=schedules,
        optimizer_cfgs=optimizer_cfgs,
    )


def _batch_split(cfg: DictConfig, world_size: int) -> tuple[int, int]:
    """(examples per process per step, micro-batch size); the global batch must split evenly."""
    b = cfg.batch
    if b.size % world_size:
        raise bad("batch.size", b.size, f"a multiple of the world size {world_size} (the global batch is split over processes)")
    micro = b.micro_size or b.size // world_size
    per_rank = b.size // world_size
    if per_rank % micro:
        raise bad("batch.micro_size", b.micro_size, f"a divisor of the per-process batch {per_rank} (batch.size={b.size} over {world_size} processes)")
    return per_rank, micro


def _peak_lr(cfg: DictConfig) -> tuple[float, float]:
    """(base LR, scale factor); their product, the peak LR, must be a finite number."""
    b = cfg.batch
    lr_base = float(cfg.optimizer.lr)
    scale = lr_scale(b.scaling, b.size, b.base_size)
    if not is_number(lr_base * scale):
        raise bad("optimizer.lr", lr_base, f"a base LR whose scaled peak (x {scale:g} for batch.scaling={b.scaling}) is a finite number")
    return lr_base, scale


def _steps_per_epoch(cfg: DictConfig, n: int) -> int:
    spe = n // cfg.batch.size
    if spe < 1:
        raise bad("batch.size", cfg.batch.size, f"at most the training set size {n} of task {cfg.task.name}")
    return spe


def _budget(cfg: DictConfig, spe: int | None) -> int | None:
    """The budget in steps; None when it is given in epochs and the epoch length is unknown."""
    t = cfg.train
    if t.steps is not None:
        return t.steps
    epochs = t.epochs if t.epochs is not None else t.default_epochs
    return None if spe is None else epochs * spe


def _model_schedules(cfg: DictConfig, models: Mapping[str, tuple[Mapping, bool]], total: int, spe: int | None) -> tuple[dict, dict]:
    """Per model: its optimizer config (base + overrides) and its Schedule; checks each LR and warm-up length."""
    warmup, decay = warmup_fn(cfg), decay_fn(cfg)
    matched = _mean_matched(cfg, decay, total) if cfg.warmup.get("reference") is not None else None
    optimizer_cfgs, schedules = {}, {}
    base = OmegaConf.to_container(cfg.optimizer, resolve=True)
    for name, (overrides, applies_to) in models.items():
        oc = {**base, **overrides}
        if cfg.batch.scaling == "sde":
            oc = sde_optimizer(oc, cfg.batch.size, cfg.batch.base_size)
        if not is_number(oc["lr"]) or oc["lr"] <= 0:
            raise bad(f"task lr for {name}", oc["lr"], "a number > 0")
        optimizer_cfgs[name] = oc
        if matched is not None:
            schedules[name] = matched if applies_to else Schedule(warmup=warmup, warmup_steps=0, decay=decay, total_steps=total)
            continue
        # no_warmup needs no length: a preset may still set one for the other warm-ups it sweeps
        applies = applies_to and warmup.func is not no_warmup
        w = _warmup_steps(cfg, oc, total, spe) if applies else 0
        if w:
            check_range(warmup, range(min(w + 1, total)), w, f"warmup={warmup_name(cfg)}")
        schedules[name] = Schedule(
            warmup=warmup,  # never called with warmup_steps 0 (Schedule.warmup_multiplier)
            warmup_steps=w,
            decay=decay,
            total_steps=total,
        )
    return optimizer_cfgs, schedules


def _mean_matched(cfg: DictConfig, decay, total: int) -> Schedule:
    """The mean-matched control (:func:`bench.schedules.mean_matched_schedule`) of the linear warm-up from
    ``warmup.reference.start_factor`` over ``round(warmup.reference.fraction x T)`` steps followed by the run's decay."""
    ref = cfg.warmup.reference
    w = round(ref.fraction * total)
    if w < 1:
        raise ConfigError(f"warmup.reference.fraction={ref.fraction} gives a reference warm-up of {w} steps at a budget of {total} steps: ask for at least 1 step")
    reference = Schedule(warmup=functools.partial(linear_warmup, start_factor=ref.start_factor), warmup_steps=w, decay=decay, total_steps=total)
    return mean_matched_schedule(reference, cfg.warmup.shape)


def _probe_steps(total: int) -> list[int]:
    """Steps at which a decay's range is checked: both ends and up to 200 points between."""
    stride = max(1, total // 200)
    return sorted({*range(0, total, stride), total - 1})


def _warmup_steps(cfg: DictConfig, opt_cfg: Mapping, total: int, spe: int) -> int:
    """Warm-up length in steps: from beta2, or warmup.steps / epochs / fraction, or default_fraction; 0 for none."""
    w = cfg.warmup
    name = warmup_name(cfg)
    if w.get("beta2_multiple") is not None:
        steps, key = length_from_beta2(beta2(opt_cfg, name), w.beta2_multiple), f"warmup={name} (from beta2)"
    elif w.get("steps") is not None:
        steps, key = w.steps, f"warmup.steps={w.steps}"
    elif w.get("epochs") is not None:
        steps, key = round(w.epochs * spe), f"warmup.epochs={w.epochs}"
    elif w.get("fraction") is not None or w.get("default_fraction") is not None:
        frac = w.fraction if w.get("fraction") is not None else w.default_fraction
        steps, key = round(frac * total), f"warmup.fraction={frac}"
    else:
        return 0  # no length given and none derivable: a warm-up without length (none)
    if steps < 1:
        raise ConfigError(f"{key} gives a warm-up of {steps} steps at a budget of {total} steps ({spe} per epoch): ask for at least 1 step, or use warmup=none")
    if steps > total:
        raise ConfigError(f"{key} gives a warm-up of {steps} steps, longer than the training budget of {total} steps: shorten the warm-up or raise train.steps/train.epochs")
    return steps
