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
