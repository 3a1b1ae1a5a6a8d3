"""Batch-size LR scaling rules.

The LR is stored in batch-normalised form: ``optimizer.lr`` is the peak LR at
``batch.base_size``; a run with global batch B uses

    none:   peak = lr
    linear: peak = lr * B / base            (Goyal et al. 2017)
    sqrt:   peak = lr * sqrt(B / base)      (Krizhevsky 2014; Malladi et al. 2022 for Adam)
"""

from __future__ import annotations

import math

RULES = ("none", "linear", "sqrt")


def lr_scale(rule: str, size: int, base_size: int) -> float:
    """Multiplier applied to the base LR for a global batch ``size``."""
    k = size / base_size
    if rule == "none":
        return 1.0
    if rule == "linear":
        return k
    if rule == "sqrt":
        return math.sqrt(k)
    raise ValueError(f"unknown batch.scaling {rule!r}; allowed: {', '.join(RULES)}")


def peak_lr(lr: float, rule: str, size: int, base_size: int) -> float:
    """Effective peak LR for base LR ``lr`` under ``rule``."""
    return lr * lr_scale(rule, size, base_size)
