"""Optimizers the suite adds to torch's: :class:`GIAdam`, Adam with a choice of second-moment start
(GI-Adam, Kalra & Barkeshli 2024) and a switch for bias correction; :func:`preconditioner` reads Adam's
P = sqrt(v_hat) + eps from torch's Adam/AdamW and from GIAdam alike.

GIAdam's update of a parameter theta with gradient g_t at step t = 1, 2, ... (t is ``state["step"]``
after the step, as in torch.optim.Adam), LR eta, weight decay lambda:

    g_t <- g_t + lambda theta_{t-1}                 weight decay as L2 (torch.optim.Adam), or, with
    theta_{t-1} <- (1 - eta lambda) theta_{t-1}     decoupled_weight_decay=true, as AdamW
    v_0 = 0 (second_moment_init=zero) or g_1^2 (grad_sq: set at the first step, before the update)
    m_t = beta1 m_{t-1} + (1 - beta1) g_t           m_0 = 0
    v_t = beta2 v_{t-1} + (1 - beta2) g_t^2
    m_hat = m_t / (1 - beta1^t)                     if bias_correction, else m_t
    v_hat = v_t / (1 - beta2^t)                     if bias_correction and second_moment_init=zero, else v_t
    theta_t = theta_{t-1} - eta m_hat / (sqrt(v_hat) + eps)

With ``grad_sq`` the second moment is an average of squared gradients from the first step on, not biased
toward 0, so it is never divided by 1 - beta2^t; v_1 = beta2 g_1^2 + (1 - beta2) g_1^2 = g_1^2 (set as g_1^2
exactly). ``bias_correction=false`` drops m's correction and, with zero init, v's. ``second_moment_init=zero``
with ``bias_correction=true`` is torch.optim.Adam (amsgrad off, not maximizing), the same float operations
in the same order: identical parameters step for step on the CPU.

State per parameter under torch's names (``step`` a float32 CPU tensor, ``exp_avg`` = m, ``exp_avg_sq`` = v)
and, in each param group besides ``lr``, ``betas``, ``eps``, ``weight_decay``: ``second_moment_init``,
``bias_correction`` and ``decoupled_weight_decay``; :func:`v_hat_is_corrected` says from a group whether
v_hat = v / (1 - beta2^t) or v.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch.optim import Optimizer

SECOND_MOMENT_INITS = ("zero", "grad_sq")


def _check_number(name: str, value: Any, ok, allowed: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(float(value)):
        raise ValueError(f"{name}={value!r} is not allowed: {allowed}")
    return float(value)


class GIAdam(Optimizer):
    """Adam with ``second_moment_init`` (``zero``: plain Adam; ``grad_sq``: GI-Adam, v_0 = g_0^2) and
    ``bias_correction`` (true: m_hat = m / (1 - beta1^t), and v / (1 - beta2^t) for zero init only; false: none).
    The update and its step convention are in the module docstring. Real dense parameters only."""

    def __init__(
        self,
        params,
        lr: float = 1e-3,
        betas: Sequence[float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        second_moment_init: str = "grad_sq",
        bias_correction: bool = True,
        decoupled_weight_decay: bool = False,
    ):
        lr = _check_number("lr", lr, lambda v: v >= 0, "a number >= 0")
        eps = _check_number("eps", eps, lambda v: v >= 0, "a number >= 0")
        weight_decay = _check_number("weight_decay", weight_decay, lambda v: v >= 0, "a number >= 0")
        if isinstance(betas, (str, bytes)) or not isinstance(betas, Sequence) or len(betas) != 2:
            shown = list(betas) if isinstance(betas, Sequence) and not isinstance(betas, (str, bytes)) else betas
            raise ValueError(f"betas={shown!r} is not allowed: two numbers (beta1, beta2), each in [0, 1)")
        betas = tuple(_check_number(f"betas[{i}]", b, lambda v: 0 <= v < 1, "a number in [0, 1)") for i, b in enumerate(betas))
        if second_moment_init not in SECOND_MOMENT_INITS:
            raise ValueError(f"second_moment_init={second_moment_init!r} is not allowed: one of {', '.join(SECOND_MOMENT_INITS)}")
        for name, flag in (("bias_correction", bias_correction), ("decoupled_weight_decay", decoupled_weight_decay)):
            if not isinstance(flag, bool):
                raise ValueError(f"{name}={flag!r} is not allowed: true or false")
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, second_moment_init=second_moment_init,
                        bias_correction=bias_correction, decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            grad_sq_init = group["second_moment_init"] == "grad_sq"
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse or torch.is_complex(p):
                    raise RuntimeError("GIAdam supports real dense gradients only")
                state = self.state[p]
                if not state:
                    state["step"] = torch.tensor(0.0, dtype=torch.float32)
                    state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
                exp_avg, exp_avg_sq, step_t = state["exp_avg"], state["exp_avg_sq"], state["step"]
                step_t += 1
                step = step_t.item()
                if wd != 0:
                    if group["decoupled_weight_decay"]:
                        p.mul_(1 - lr * wd)
                    else:
                        grad = grad.add(p, alpha=wd)
                # the same operations in the same order as torch.optim.Adam's single-tensor step
                exp_avg.lerp_(grad, 1 - beta1)
                if grad_sq_init and step == 1:
                    # v_0 = g^2, then beta2 v_0 + (1 - beta2) g^2 = g^2: written directly, without rounding
                    exp_avg_sq.copy_(grad * grad)
                else:
                    exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                if group["bias_correction"]:
                    bias_correction1 = 1 - beta1**step
                    bias_correction2 = 1.0 if grad_sq_init else 1 - beta2**step
                else:
                    bias_correction1 = bias_correction2 = 1.0
                step_size = lr / bias_correction1
                denom = (exp_avg_sq.sqrt() / bias_correction2**0.5).add_(eps)
                p.addcdiv_(exp_avg, denom, value=-step_size)
        return loss


def v_hat_is_corrected(group: Mapping) -> bool:
    """Whether an Adam-family param group divides v by 1 - beta2^t: true for torch's Adam/AdamW (no such
    keys), and for GIAdam only with ``bias_correction`` and ``second_moment_init=zero``."""
    return bool(group.get("bias_correction", True)) and group.get("second_moment_init", "zero") == "zero"


def preconditioner(group: Mapping, state: Mapping) -> torch.Tensor:
    """P = sqrt(v_hat) + eps of one parameter, as its last update divided by (torch's Adam/AdamW with or
    without amsgrad, or GIAdam); ``group`` is its param group, ``state`` its optimizer state."""
    v = state["max_exp_avg_sq"] if group.get("amsgrad") else state["exp_avg_sq"]
    step = float(state["step"])
    correction = 1 - group["betas"][1] ** step if v_hat_is_corrected(group) else 1.0
    return v.sqrt() / correction**0.5 + group["eps"]
