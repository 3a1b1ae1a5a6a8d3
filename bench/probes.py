"""Training probes: measurements taken during training without changing it.

A probe is built from ``conf/diagnostics/<name>.yaml`` (``_target_`` with its own ``every``) and
is called by the loop on the steps ``s`` with ``s % every == 0`` and on the last step:

1. ``before_update(step, name, model, optimizer)`` for each model, after its backward pass and
   just before its optimizer step (gradients and pre-update weights are there);
2. ``after_update(step, name, model, optimizer)`` right after that model's optimizer step;
3. ``measure(ctx) -> {key: float}`` once after the whole step; the scalars go into that step's
   train row when it is a logged step, else into a ``kind="probe"`` row, and to every logger.

The guarantee every probe keeps: turning it on changes no other value in metrics.jsonl. The
loop runs ``measure`` under :func:`torch.random.fork_rng` (random draws do not move the training
RNG); a probe must not write to parameters, gradients, optimizer state or module buffers (use
:func:`frozen_buffers` around forward passes that would update BatchNorm statistics).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping

import torch
from torch import nn

from bench.hessian import hvp
from bench.rules import int_at_least


@dataclass
class ProbeContext:
    """What a probe's ``measure`` may read after step ``step``."""

    step: int
    task: Any  # the Task: its ``loss(name, model, batch)`` evaluates a model on a batch
    models: Mapping[str, nn.Module]
    optimizers: Mapping[str, torch.optim.Optimizer]
    lrs: Mapping[str, float]  # the LR each model's update used at this step
    measure_batch: Callable[[int], Any] = field(repr=False)  # measure_batch(size): a fixed training batch


class Probe:
    """Base class: override the hooks a measurement needs; ``measure`` returns the scalars."""

    every: int = 1

    def __init__(self, every: int = 1):
        int_at_least(1).check(f"diagnostics.{self.key()}.every", every)
        self.every = every

    @classmethod
    def key(cls) -> str:
        return cls.__name__

    def due(self, step: int, last: int) -> bool:
        return step % self.every == 0 or step == last

    def before_update(self, step: int, name: str, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        pass

    def after_update(self, step: int, name: str, model: nn.Module, optimizer: torch.optim.Optimizer) -> None:
        pass

    def measure(self, ctx: ProbeContext) -> Mapping[str, float]:
        return {}


def _suffix(name: str, multi: bool) -> str:
    return f"/{name}" if multi else ""


class GradNorm(Probe):
    """The global L2 norm of each model's gradient before its update (clipping comes after it).

    Logged as ``grad_norm`` (single-model tasks) or ``grad_norm/<model>``. Cost: one pass over the
    gradients (``torch.linalg.vector_norm`` per tensor), about one optimizer step's memory traffic.
    """

    def __init__(self, every: int = 1):
        super().__init__(every)
        self._norms: dict[str, torch.Tensor] = {}

    @classmethod
    def key(cls) -> str:
        return "grad_norm"

    @torch.no_grad()
    def before_update(self, step, name, model, optimizer):
        grads = [p.grad for p in model.parameters() if p.grad is not None]
        self._norms[name] = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.float()) for g in grads])) if grads else torch.zeros(())

    def measure(self, ctx):
        multi = len(ctx.models) > 1
        out = {f"grad_norm{_suffix(n, multi)}": float(v) for n, v in self._norms.items()}
        self._norms.clear()
        return out


class UpdateRatio(Probe):
    """``||w_after - w_before|| / ||w_before||`` per model: the relative size of one update.

    A standard sign of a too-large LR (values far above ~1e-3 per step early in training).
    Logged as ``update_ratio`` or ``update_ratio/<model>``. Cost: a copy of the weights before the
    update and two norms after it.
    """

    def __init__(self, every: int = 1):
        super().__init__(every)
        self._before: dict[str, list[torch.Tensor]] = {}
        self._ratios: dict[str, float] = {}

    @classmethod
    def key(cls) -> str:
        return "update_ratio"

    @torch.no_grad()
    def before_update(self, step, name, model, optimizer):
        self._before[name] = [p.detach().clone() for p in model.parameters()]

    @torch.no_grad()
    def after_update(self, step, name, model, optimizer):
        before = self._before.pop(name)
        params = [p.detach() for p in model.parameters()]
        delta = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm((p - b).float()) for p, b in zip(params, before)]))
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(b.float()) for b in before]))
        self._ratios[name] = float(delta / norm) if norm > 0 else float("nan")

    def measure(self, ctx):
        multi = len(ctx.models) > 1
        out = {f"update_ratio{_suffix(n, multi)}": v for n, v in self._ratios.items()}
        self._ratios.clear()
        return out


@contextlib.contextmanager
def frozen_buffers(model: nn.Module):
    """Run forward passes in train mode without keeping changes to buffers (BatchNorm statistics)."""
    saved = {n: b.detach().clone() for n, b in model.named_buffers()}
    try:
        yield model
    finally:
        with torch.no_grad():
            for n, b in model.named_buffers():
                b.copy_(saved[n])


@contextlib.contextmanager
def frozen_all(models: Mapping[str, nn.Module]):
    """:func:`frozen_buffers` for every model (a GAN's generator loss runs through the discriminator)."""
    with contextlib.ExitStack() as stack:
        for m in models.values():
            stack.enter_context(frozen_buffers(m))
        yield


def _params(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.parameters() if p.requires_grad]


def _loss_fn(ctx: ProbeContext, name: str, batch, seed: int):
    """The task's loss of model ``name`` on ``batch`` as a closure; each call reseeds torch's RNG, so dropout
    masks or sampled noise are the same in every Hessian-vector product (the operator stays fixed)."""
    model = ctx.models[name]

    def f() -> torch.Tensor:
        torch.manual_seed(seed)
        res = ctx.task.loss(name, model, batch)
        return (res[0] if isinstance(res, tuple) else res).float()

    return f


def _check_common(key: str, every: int, batch: int, iters: int | None = None, tol: float | None = None) -> None:
    from bench.rules import int_at_least as at_least
    from bench.errors import bad

    at_least(1).check(f"diagnostics.{key}.batch", batch)
    if iters is not None:
        at_least(2).check(f"diagnostics.{key}.iters", iters)
    if tol is not None and not (isinstance(tol, (int, float)) and not isinstance(tol, bool) and 0 < tol < 1):
        raise bad(f"diagnostics.{key}.tol", tol, "a relative tolerance in (0, 1), e.g. 1e-3")


def sgd_limit(group: Mapping[str, Any], lr: float) -> float | None:
    """The edge-of-stability sharpness of an SGD step: 2/lr, or (2 + 2 beta)/lr with heavy-ball momentum beta
    (Cohen et al. 2021). None for preconditioned optimizers (betas or alpha in the group) and Nesterov momentum."""
    if "betas" in group or "alpha" in group or group.get("nesterov") or lr <= 0:
        return None
    beta = float(group.get("momentum", 0.0) or 0.0)
    return (2 + 2 * beta) / lr


class Sharpness(Probe):
    """The top eigenvalue of the training-loss Hessian of each model, ``sharpness``, beside ``sharpness_limit``.

    On a fixed measurement batch of ``batch`` training examples (drawn once, with its own seed; see
    ``ProbeContext.measure_batch``), in train mode with buffers frozen (BatchNorm uses the batch's statistics,
    as in training, and keeps its running statistics), by Lanczos on Hessian-vector products
    (:mod:`bench.hessian`) for at most ``iters`` products or until the top Ritz value moves less than ``tol``
    (relative); each measurement starts from the previous eigenvector, so later ones converge in a few
    products. ``sharpness_limit`` is 2/lr for SGD, (2 + 2 beta)/lr with heavy-ball momentum beta (Cohen et al.
    2021), at the LR the step used; not logged for Adam-like optimizers (see ``precond_sharpness``).
    Cost per call: up to ``iters`` Hessian-vector products, each about three forward/backward passes over
    ``batch`` examples.
    """

    def __init__(self, every: int = 1000, batch: int = 128, iters: int = 20, tol: float = 1e-2, seed: int = 0):
        super().__init__(every)
        _check_common(self.key(), every, batch, iters, tol)
        self.batch, self.iters, self.tol, self.seed = batch, iters, tol, seed
        self._vecs: dict[str, list[torch.Tensor]] = {}

    @classmethod
    def key(cls) -> str:
        return "sharpness"

    def operator(self, ctx: ProbeContext, name: str, params):
        """The matrix-vector product whose top eigenvalue is logged (here: H)."""
        f = _loss_fn(ctx, name, ctx.measure_batch(self.batch), self.seed)
        return lambda v: hvp(f, params, v)

    def limit(self, ctx: ProbeContext, name: str) -> float | None:
        return sgd_limit(ctx.optimizers[name].param_groups[0], ctx.lrs[name])

    def measure(self, ctx):
        from bench.hessian import top_eigenvalue

        multi = len(ctx.models) > 1
        out = {}
        for name, model in ctx.models.items():
            params = _params(model)
            op = self.operator(ctx, name, params)
            if op is None:
                continue
            gen = torch.Generator().manual_seed(self.seed)
            with frozen_all(ctx.models):
                top, vec, _ = top_eigenvalue(op, params, self.iters, self.tol, gen, self._vecs.get(name))
            self._vecs[name] = vec
            out[f"{self.key()}{_suffix(name, multi)}"] = top
            lim = self.limit(ctx, name)
            if lim is not None:
                out[f"{self.key()}_limit{_suffix(name, multi)}"] = lim
        return out


def adam_preconditioner(optimizer: torch.optim.Optimizer, params) -> list[torch.Tensor] | None:
    """Adam's current preconditioner diag(sqrt(v_hat) + eps) per parameter (Cohen et al. 2022), or None when the
    optimizer keeps no second moment (not Adam-like or RMSprop) or a parameter has no state yet. RMSprop's is
    sqrt(square_avg) + eps (its centred variant subtracts the squared mean gradient), with no bias correction.

    v_hat = exp_avg_sq (max_exp_avg_sq with amsgrad) / (1 - beta2^step), unless the group says its second moment is
    not bias-corrected (GI-Adam; :func:`bench.optim.preconditioner` reads both kinds)."""
    from bench.optim import preconditioner

    by_param = {id(p): g for g in optimizer.param_groups for p in g["params"]}
    out = []
    for p in params:
        st = optimizer.state.get(p, {})
        g = by_param.get(id(p))
        if g is not None and "square_avg" in st and "alpha" in g:  # RMSprop: sqrt(v) + eps, v never bias-corrected
            v = st["square_avg"] if not g.get("centered") else st["square_avg"] - st["grad_avg"] ** 2
            out.append(v.float().sqrt() + g["eps"])
            continue
        if g is None or "exp_avg_sq" not in st or "betas" not in g:
            return None
        out.append(preconditioner(g, st).float())
    return out


class PrecondSharpness(Sharpness):
    """For Adam-like optimizers: the top eigenvalue of P^-1 H, P = diag(sqrt(v_hat) + eps) the optimizer's current
    preconditioner (Cohen et al. 2022), as ``precond_sharpness`` beside ``precond_sharpness_limit`` =
    (2 + 2 beta1) / ((1 - beta1) lr). Computed as the top eigenvalue of the symmetric P^-1/2 H P^-1/2 (same
    spectrum) with the settings and cost of :class:`Sharpness`; models whose optimizer keeps no second moment
    are skipped."""

    @classmethod
    def key(cls) -> str:
        return "precond_sharpness"

    def operator(self, ctx, name, params):
        pre = adam_preconditioner(ctx.optimizers[name], params)
        if pre is None:
            return None
        scale = [d.rsqrt().to(p.dtype) for d, p in zip(pre, params)]
        f = _loss_fn(ctx, name, ctx.measure_batch(self.batch), self.seed)

        def op(v):
            hv = hvp(f, params, [s * x for s, x in zip(scale, v)])
            return [s * x for s, x in zip(scale, hv)]

        return op

    def limit(self, ctx, name):
        g = ctx.optimizers[name].param_groups[0]
        lr = ctx.lrs[name]
        if lr <= 0:
            return None
        if "betas" in g:
            b1 = float(g["betas"][0])
            return (2 + 2 * b1) / ((1 - b1) * lr)
        if "alpha" in g:  # RMSprop: the preconditioned step is plain (or heavy-ball) gradient descent
            return sgd_limit({"momentum": g.get("momentum", 0.0)}, lr)
        return None


class NoiseScale(Probe):
    """The simple gradient noise scale B_simple = tr(Sigma) / |G|^2 (McCandlish et al. 2018) of each model.

    At each call a fresh batch of ``batch`` training examples (drawn with the probe's own generator, seeded by
    the step) is cut into ``parts`` micro-batches of b = batch/parts; their gradients g_i and their mean G_B
    (the full batch's gradient) give the unbiased estimates of McCandlish et al.'s appendix A:
    |G|^2 ~ (B |G_B|^2 - b mean|g_i|^2) / (B - b) and tr(Sigma) ~ (mean|g_i|^2 - |G_B|^2) / (1/b - 1/B).
    Both are smoothed separately by an exponential moving average (``ema``, bias-corrected as Adam's moments
    are) and their ratio is logged as ``noise_scale``, with the two parts as ``noise_trace`` and ``noise_grad_sq``.
    Cost per call: ``parts`` forward/backward passes over ``batch`` examples in all.
    """

    def __init__(self, every: int = 1000, batch: int = 512, parts: int = 8, ema: float = 0.9, seed: int = 0):
        super().__init__(every)
        from bench.errors import bad

        _check_common(self.key(), every, batch)
        int_at_least(2).check(f"diagnostics.{self.key()}.parts", parts)
        if batch % parts:
            raise bad(f"diagnostics.{self.key()}.parts", parts, f"a divisor of diagnostics.{self.key()}.batch={batch}")
        if not (isinstance(ema, (int, float)) and not isinstance(ema, bool) and 0 <= ema < 1):
            raise bad(f"diagnostics.{self.key()}.ema", ema, "a smoothing factor in [0, 1) (0: no smoothing)")
        self.batch, self.parts, self.ema, self.seed = batch, parts, ema, seed
        self._avg: dict[str, list[float]] = {}  # name -> [trace EMA, grad_sq EMA, number of updates]

    @classmethod
    def key(cls) -> str:
        return "noise_scale"

    def estimates(self, ctx: ProbeContext, name: str) -> tuple[float, float]:
        """(tr(Sigma), |G|^2) estimated from one fresh batch."""
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + ctx.step)
        batch = next(iter(ctx.task.train_batches(self.batch, 0, 0, gen)), None)
        if batch is None:
            from bench.errors import bad

            raise bad(f"diagnostics.{self.key()}.batch", self.batch, f"at most the training set size {ctx.task.train_size()}")
        params = _params(ctx.models[name])
        total, small_sq = None, 0.0
        with frozen_all(ctx.models):
            for k, part in enumerate(ctx.task.split(batch, self.parts)):
                f = _loss_fn(ctx, name, part, self.seed + k)
                with torch.enable_grad():
                    g = torch.autograd.grad(f(), params, allow_unused=True)
                g = [torch.zeros_like(p) if x is None else x.detach().float() for p, x in zip(params, g)]
                small_sq += float(sum((x * x).sum() for x in g))
                total = g if total is None else [a + b for a, b in zip(total, g)]
        small_sq /= self.parts
        big_sq = float(sum((x * x).sum() for x in total)) / self.parts**2
        B, b = self.batch, self.batch // self.parts
        return (small_sq - big_sq) / (1 / b - 1 / B), (B * big_sq - b * small_sq) / (B - b)

    def measure(self, ctx):
        multi = len(ctx.models) > 1
        out = {}
        for name in ctx.models:
            trace, grad_sq = self.estimates(ctx, name)
            avg = self._avg.setdefault(name, [0.0, 0.0, 0])
            avg[0] = self.ema * avg[0] + (1 - self.ema) * trace
            avg[1] = self.ema * avg[1] + (1 - self.ema) * grad_sq
            avg[2] += 1
            corr = 1 - self.ema ** avg[2]
            t, g2 = avg[0] / corr, avg[1] / corr
            sfx = _suffix(name, multi)
            out[f"noise_trace{sfx}"] = t
            out[f"noise_grad_sq{sfx}"] = g2
            out[f"noise_scale{sfx}"] = t / g2 if g2 > 0 else float("nan")
        return out


class AdaptiveStep(Probe):
    """For Adam-like optimizers: percentiles of the per-parameter effective step lr / (sqrt(v_hat) + eps) and of
    v_hat (the quantity whose early variance RAdam rectifies), over every weight of each model, as
    ``adaptive_step_p<q>`` and ``v_hat_p<q>`` for q in ``percentiles``. Models whose optimizer keeps no second
    moment are skipped. Above ``max_elements`` weights an evenly strided subset is used. Cost per call: a pass
    over the optimizer state and a sort."""

    def __init__(self, every: int = 20, percentiles: tuple = (1, 50, 99), max_elements: int = 1 << 14):
        super().__init__(every)
        from bench.errors import bad

        qs = list(percentiles) if not isinstance(percentiles, (str, int, float)) else None
        if not qs or not all(isinstance(q, (int, float)) and not isinstance(q, bool) and 0 <= q <= 100 for q in qs):
            raise bad(f"diagnostics.{self.key()}.percentiles", percentiles, "a non-empty list of percentiles in [0, 100], e.g. [1, 50, 99]")
        int_at_least(1).check(f"diagnostics.{self.key()}.max_elements", max_elements)
        self.percentiles, self.max_elements = qs, max_elements

    @classmethod
    def key(cls) -> str:
        return "adaptive_step"

    @torch.no_grad()
    def measure(self, ctx):
        multi = len(ctx.models) > 1
        out = {}
        for name, model in ctx.models.items():
            params = _params(model)
            pre = adam_preconditioner(ctx.optimizers[name], params)
            if pre is None:
                continue
            d = torch.cat([x.flatten() for x in pre])
            if d.numel() > self.max_elements:
                d = d[:: -(-d.numel() // self.max_elements)]
            eps = float(ctx.optimizers[name].param_groups[0]["eps"])
            v_hat = (d - eps).clamp_min(0) ** 2
            q = torch.tensor([p / 100 for p in self.percentiles], dtype=torch.float64)
            step = (ctx.lrs[name] / d.double()).quantile(q)
            vq = v_hat.double().quantile(q)
            sfx = _suffix(name, multi)
            for p, s, v in zip(self.percentiles, step.tolist(), vq.tolist()):
                out[f"adaptive_step_p{p:g}{sfx}"] = s
                out[f"v_hat_p{p:g}{sfx}"] = v
        return out


def build_probes(node: Mapping[str, Any] | None) -> list[Probe]:
    """Instantiate each entry of the ``diagnostics`` node (name -> ``_target_`` config)."""
    import hydra

    from bench.errors import ConfigError

    probes = []
    for key, spec in (dict(node or {})).items():
        if not isinstance(spec, Mapping) or "_target_" not in spec:
            raise ConfigError(f"diagnostics.{key} must be a probe config with _target_ (see conf/diagnostics/)")
        try:
            p = hydra.utils.instantiate(spec)
        except Exception as e:
            cause = e.__cause__ or e
            if isinstance(cause, ConfigError):
                raise cause from None
            raise ConfigError(f"diagnostics.{key}: {type(cause).__name__}: {cause}".splitlines()[0]) from None
        if not isinstance(p, Probe):
            raise ConfigError(f"diagnostics.{key}._target_={spec['_target_']!r} is not a bench.probes.Probe")
        probes.append(p)
    return probes
