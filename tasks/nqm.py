"""The noisy quadratic model (Zhang et al. 2019, "Which algorithmic choices matter at which batch sizes?").

A task whose expected loss curve is known in closed form, so the harness's runs can be compared
with theory step by step.

Model: theta in R^dim, started at ``init_scale`` x ones (deterministic: E[theta_0^2] = init_scale^2
exactly). Curvatures ``h_i = h_max / i`` (i = 1..dim), or ``task.spectrum`` when given; H = diag(h).
Expected (population) loss: L(theta) = 1/2 sum_i h_i theta_i^2.

Data: an "example" is a noise vector z_j ~ N(0, I_dim), drawn from the harness's generator (so the data
order depends only on (seed, epoch)). A batch of B examples has the loss

    L_B(theta) = 1/2 theta' H theta + sqrt(c) theta' H^(1/2) zbar,        zbar = mean_j z_j,

whose gradient H theta + sqrt(c) H^(1/2) zbar has mean H theta and covariance c H / B (c = ``task.noise``),
and whose Hessian is exactly H. The batch loss is linear in zbar, so the mean of the losses of equal
micro-batches is the loss of the whole batch: accumulation gives the same update. E[L_B] = L for any
theta independent of the batch, so the training loss is an unbiased (but noisy, possibly negative)
estimate of the expected loss; each train row also carries the exact L(theta) before the update
(``exact_loss/model``), and evaluation reports it as ``val_loss``.

Closed form (:func:`expected_loss_curve`): for SGD with heavy-ball momentum as torch.optim.SGD does it
(dampening 0, no Nesterov, no weight decay), per coordinate the second moments of (theta, buf) follow
a linear recursion, so E[L]_t is exact for any per-step LR list.
"""

from __future__ import annotations

import math
from typing import Iterator, Sequence

import numpy as np
import torch
from omegaconf import DictConfig
from torch import nn

from bench.errors import bad
from tasks import checks
from tasks.base import Task


def curvatures(cfg: DictConfig) -> np.ndarray:
    """The spectrum h (float64, shape (dim,)): ``task.spectrum`` when set, else ``h_max / i`` for i = 1..dim."""
    if cfg.spectrum is not None:
        return np.asarray(list(cfg.spectrum), dtype=np.float64)
    return cfg.h_max / np.arange(1, cfg.dim + 1, dtype=np.float64)


def initial_loss(h: np.ndarray, init_scale: float) -> float:
    """L(theta_0) = 1/2 init_scale^2 sum_i h_i: the loss of a model that learned nothing."""
    return 0.5 * init_scale**2 * float(np.sum(h))


def expected_loss_curve(h, c: float, batch, lrs, momentum: float = 0.0, init_sq=1.0) -> np.ndarray:
    """E[L(theta_t)] for t = 0..T under SGD with heavy-ball momentum on the noisy quadratic.

    ``h``: curvatures, shape (dim,). ``c``: per-example noise scale (gradient covariance c H / batch).
    ``batch``: examples per step, a number or an array of shape S. ``lrs``: the LR of each update,
    shape (T,) or (T, *S) (several schedules at once, e.g. an LR grid). ``momentum``: beta.
    ``init_sq``: E[theta_0^2], a number or shape (dim,) (buf_0 = 0). Returns shape (T+1, *S) (broadcast).

    The update, as torch.optim.SGD implements it (dampening 0): g_t = H theta_t + xi_t with
    E[xi_t] = 0, E[xi_t xi_t'] = c H / B, xi_t independent of (theta_t, buf_t);
    buf_{t+1} = beta buf_t + g_t (the first step's buf = g_0 is this with buf_0 = 0);
    theta_{t+1} = theta_t - lr_t buf_{t+1}.

    Per coordinate (h, s = c h / B, eta = lr_t), with A = E[theta^2], C = E[theta buf], D = E[buf^2]
    (raw second moments, so the deterministic mean of theta is included):

        D' = beta^2 D + 2 beta h C + h^2 A + s          (E[buf_{t+1}^2])
        P  = beta C + h A                                (E[theta_t buf_{t+1}])
        C' = P - eta D'                                  (E[theta_{t+1} buf_{t+1}])
        A' = A - 2 eta P + eta^2 D'                      (E[theta_{t+1}^2])

    and E[L]_t = 1/2 sum_i h_i A_i,t. With beta = 0 this is A' = (1 - eta h)^2 A + eta^2 c h / B.
    An LR above the stability limit makes the moments grow geometrically: once they overflow, E[L] is inf.
    """
    h = np.asarray(h, dtype=np.float64)
    lrs = np.asarray(lrs, dtype=np.float64)
    if lrs.ndim == 0:
        raise ValueError("lrs must hold one LR per update (shape (T,) or (T, *S))")
    b = np.asarray(batch, dtype=np.float64)[..., None]
    s = c * h / b
    shape = np.broadcast_shapes(lrs.shape[1:] + (1,), b.shape, h.shape)
    A = np.broadcast_to(np.asarray(init_sq, dtype=np.float64), shape).copy()
    C = np.zeros(shape)
    D = np.zeros(shape)
    beta = float(momentum)
    out = np.empty((lrs.shape[0] + 1,) + shape[:-1])
    out[0] = 0.5 * (h * A).sum(-1)
    with np.errstate(over="ignore", invalid="ignore"):  # a diverging schedule is a result, not an error
        for t in range(lrs.shape[0]):
            eta = lrs[t][..., None]
            D = beta * beta * D + 2.0 * beta * h * C + h * h * A + s
            P = beta * C + h * A
            C = P - eta * D
            A = A - 2.0 * eta * P + eta * eta * D
            out[t + 1] = 0.5 * (h * A).sum(-1)
    out[np.isnan(out)] = np.inf  # inf - inf after an overflow: the loss has diverged
    return out


class NoisyQuadratic(nn.Module):
    """theta (the one parameter) and the batch loss 1/2 theta' H theta + sqrt(c) theta' H^(1/2) zbar.

    ``replicas``: None for the task's single model, theta of shape (dim,); an integer R gives R independent
    copies, theta of shape (R, dim), batches of shape (B, R, dim) and the sum of the R batch losses as the
    loss, so each copy's gradient is its own (vectorised simulation of many runs in the tests).
    """

    def __init__(self, h: np.ndarray | Sequence[float], noise: float, init_scale: float, replicas: int | None = None):
        super().__init__()
        h = torch.as_tensor(np.asarray(h, dtype=np.float64), dtype=torch.float32)
        shape = (len(h),) if replicas is None else (replicas, len(h))
        self.theta = nn.Parameter(torch.full(shape, float(init_scale)))
        # not persistent: a checkpoint holds theta only; h comes from the config
        self.register_buffer("h", h, persistent=False)
        self.register_buffer("sqrt_h", h.sqrt(), persistent=False)
        self.noise_scale = math.sqrt(noise)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """The mean loss of the examples z (shape (B, dim), or (B, R, dim) with replicas)."""
        zbar = z.mean(0)
        return 0.5 * (self.h * self.theta * self.theta).sum() + self.noise_scale * (self.theta * self.sqrt_h * zbar).sum()

    def expected_loss(self) -> torch.Tensor:
        """L(theta) = 1/2 sum_i h_i theta_i^2 (per replica when there are several), without gradient."""
        with torch.no_grad():
            return 0.5 * (self.h * self.theta * self.theta).sum(-1)


class NoisyQuadraticTask(Task):
    """The noisy quadratic model; metric: val_loss = the exact expected loss 1/2 sum h_i theta_i^2.

    There is no data split: "val" and "test" both give the exact expected loss. ``chance`` is the
    loss at theta_0 (what a model that learned nothing scores); a run is ``stalled`` when its final
    val_loss is at least ``stall_ratio`` x that initial loss (the first training loss, a noisy
    estimate that can be negative, is no reference). Divergence is a non-finite loss only
    (``loss_ratio_divergence = False``) for the same reason: a run above the stability limit grows
    geometrically and overflows.
    """

    metrics = {"val_loss": "min"}
    loss_ratio_divergence = False

    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        checks.int_at_least("task.dim", cfg.dim, 1, "an integer >= 1 (the number of coordinates)")
        checks.positive("task.h_max", cfg.h_max, "a number > 0 (the largest curvature)")
        sp = cfg.spectrum
        if sp is not None:
            vals = list(sp) if not isinstance(sp, (str, int, float, bool)) else None
            if not vals or not all(checks.is_number(v) and v > 0 for v in vals):
                raise bad("task.spectrum", vals if vals is not None else sp, "null or a non-empty list of curvatures > 0")
        checks.number_in("task.noise", cfg.noise, 0, math.inf, "a number >= 0 (per-example gradient noise scale c; 0 = full-batch GD)", high_open=True)
        checks.positive("task.init_scale", cfg.init_scale, "a number > 0 (every coordinate starts there)")
        checks.int_at_least("task.epoch_size", cfg.epoch_size, 1, "an integer >= 1 (nominal examples per epoch)")

    @classmethod
    def static_train_size(cls, cfg: DictConfig) -> int:
        return cfg.epoch_size

    def __init__(self, cfg: DictConfig, seed: int, device: torch.device):
        super().__init__(cfg, seed, device)
        self.h = curvatures(cfg)
        self.model = NoisyQuadratic(self.h, cfg.noise, cfg.init_scale).to(device)
        self.initial_loss = initial_loss(self.h, cfg.init_scale)
        self.chance = {"val_loss": self.initial_loss}

    @property
    def models(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def train_size(self) -> int:
        return self.cfg.epoch_size

    def train_batches(self, batch_size: int, epoch: int, start: int, generator: torch.Generator) -> Iterator[torch.Tensor]:
        dim = len(self.h)
        # draw (and drop) the skipped batches so that a resumed epoch continues the same stream
        for i in range(self.cfg.epoch_size // batch_size):
            z = torch.randn(batch_size, dim, generator=generator)
            if i >= start:
                yield z.to(self.device)

    def loss(self, name: str, model: nn.Module, batch: torch.Tensor) -> tuple[torch.Tensor, dict]:
        theta = next(model.parameters()).detach()
        exact = 0.5 * (self.model.h * theta * theta).sum()
        return model(batch), {"exact_loss": exact}

    def evaluate(self, split: str = "val") -> dict[str, float]:
        # in float64, with the curvatures the model trains on (float32, the Hessian autograd sees)
        theta, h = self.model.theta.detach().double(), self.model.h.double()
        return {"val_loss": 0.5 * float((h * theta * theta).sum())}

    def is_stalled(self, first_loss, last_loss, final_metrics) -> bool:
        final = final_metrics.get("val_loss")
        return self.stall_ratio is not None and final is not None and final >= self.stall_ratio * self.initial_loss

    def extra_record(self) -> dict:
        return {"dim": len(self.h), "h_max": float(self.h.max()), "h_min": float(self.h.min()), "trace_h": float(self.h.sum()),
                "noise": self.cfg.noise, "initial_loss": self.initial_loss}
