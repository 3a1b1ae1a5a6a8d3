"""Batch-size LR scaling rules.

The LR is stored in batch-normalised form: ``optimizer.lr`` is the peak LR at
``batch.base_size``; a run with global batch B uses

    none:   peak = lr
    linear: peak = lr * B / base            (Goyal et al. 2017)
    sqrt:   peak = lr * sqrt(B / base)      (Krizhevsky 2014; Malladi et al. 2022 for Adam)
    sde:    peak = lr * sqrt(B / base), and for Adam-family optimizers 1 - beta_i scaled by k = B / base
            and eps by 1 / sqrt(k): Malladi et al. 2022's square-root scaling rule, derived from the SDE
            that approximates Adam (the same epochs at every batch: steps scale by 1 / k)
"""

from __future__ import annotations

import math

RULES = ("none", "linear", "sqrt", "sde")


def lr_scale(rule: str, size: int, base_size: int) -> float:
    """Multiplier applied to the base LR for a global batch ``size``."""
    k = size / base_size
    if rule == "none":
        return 1.0
    if rule == "linear":
        return k
    if rule in ("sqrt", "sde"):
        return math.sqrt(k)
    raise ValueError(f"unknown batch.scaling {rule!r}; allowed: {', '.join(RULES)}")


def peak_lr(lr: float, rule: str, size: int, base_size: int) -> float:
    """Effective peak LR for base LR ``lr`` under ``rule``."""
    return lr * lr_scale(rule, size, base_size)


def sde_optimizer(opt: dict, size: int, base_size: int) -> dict:
    """An Adam-family optimizer config under ``batch.scaling=sde``: with k = size / base_size,
    beta_i' = 1 - k (1 - beta_i) and eps' = eps / sqrt(k) (the LR is scaled by :func:`lr_scale`).
    A config without ``betas`` and ``eps``, or a k that pushes a beta outside [0, 1), is a ConfigError."""
    from bench.errors import bad

    k = size / base_size
    if "betas" not in opt or "eps" not in opt:
        raise bad("batch.scaling", "sde", "an optimizer with betas and eps (the Adam family: adam, adamw, radam, lamb); use sqrt for the others")
    betas = [1.0 - k * (1.0 - float(b)) for b in opt["betas"]]
    if not all(0.0 <= b < 1.0 for b in betas):
        raise bad("batch.scaling", "sde", f"a batch.size/batch.base_size ratio k whose scaled betas 1 - k (1 - beta) stay in [0, 1) "
                  f"(k = {k:g} gives {', '.join(f'{b:.4g}' for b in betas)} from {list(opt['betas'])}); raise batch.base_size")
    return {**opt, "betas": betas, "eps": float(opt["eps"]) / math.sqrt(k)}
