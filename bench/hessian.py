"""Curvature of a training loss without forming the Hessian: Hessian-vector products and Lanczos.

``hvp(loss_fn, params, v)`` computes H v by double backward (Pearlmutter's trick): the gradient is built
with ``create_graph=True`` and differentiated again along ``v``. Nothing is written to ``.grad``.

``top_eigenvalue(matvec, dim_like, iters, tol, generator)`` runs the Lanczos iteration with full
re-orthogonalisation on a symmetric linear operator given as a matrix-vector product over lists of tensors
(one per parameter) and returns the largest Ritz value, its vector, and the number of products used. Lanczos
converges on the extreme eigenvalues in far fewer products than power iteration, and is exact for a
spectrum of at most ``iters`` distinct values (the noisy quadratic model).
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

Vec = list[torch.Tensor]


def dot(a: Sequence[torch.Tensor], b: Sequence[torch.Tensor]) -> torch.Tensor:
    return sum((x * y).sum() for x, y in zip(a, b))


def axpy(alpha, x: Sequence[torch.Tensor], y: Sequence[torch.Tensor]) -> Vec:
    """alpha * x + y."""
    return [alpha * a + b for a, b in zip(x, y)]


def hvp(loss_fn: Callable[[], torch.Tensor], params: Sequence[torch.Tensor], v: Sequence[torch.Tensor]) -> Vec:
    """H v for the Hessian of ``loss_fn()`` with respect to ``params`` (double backward; ``.grad`` untouched)."""
    with torch.enable_grad():
        loss = loss_fn()
        grads = torch.autograd.grad(loss, params, create_graph=True)
        out = torch.autograd.grad(grads, params, grad_outputs=list(v), allow_unused=True)
    return [torch.zeros_like(p) if h is None else h.detach() for p, h in zip(params, out)]


def top_eigenvalue(matvec: Callable[[Vec], Vec], like: Sequence[torch.Tensor], iters: int, tol: float,
                   generator: torch.Generator | None = None, start: Sequence[torch.Tensor] | None = None) -> tuple[float, Vec, int]:
    """(largest eigenvalue, its unit eigenvector, products used) of the symmetric operator ``matvec``.

    Lanczos from ``start`` (or a Gaussian vector from ``generator``), with full re-orthogonalisation in
    float64 coefficients; stops after ``iters`` products, when the Krylov space is exhausted, or when the
    top Ritz value changes by less than ``tol`` relative to its size between two iterations.
    """
    if start is None:
        q = [torch.randn(p.shape, generator=generator, dtype=torch.float32).to(device=p.device, dtype=p.dtype) for p in like]
    else:
        q = [s.detach().clone() for s in start]
    norm = dot(q, q).sqrt()
    q = [x / norm for x in q]
    basis: list[Vec] = []
    alphas: list[float] = []
    betas: list[float] = []
    top, prev, vec = float("nan"), None, q
    used = 0
    for _ in range(iters):
        basis.append(q)
        w = matvec(q)
        used += 1
        a = float(dot(w, q))
        alphas.append(a)
        for b in basis:  # full re-orthogonalisation: twice is enough in practice (Gram-Schmidt)
            w = axpy(-dot(w, b), b, w)
        for b in basis:
            w = axpy(-dot(w, b), b, w)
        t = torch.diag(torch.tensor(alphas, dtype=torch.float64))
        if betas:
            off = torch.tensor(betas, dtype=torch.float64)
            t += torch.diag(off, 1) + torch.diag(off, -1)
        evals, evecs = torch.linalg.eigh(t)
        top = float(evals[-1])
        coeffs = evecs[:, -1]
        vec = [sum(float(c) * b[i] for c, b in zip(coeffs, basis)) for i in range(len(like))]
        if prev is not None and abs(top - prev) <= tol * max(abs(top), 1e-30):
            break
        prev = top
        beta = float(dot(w, w).sqrt())
        if beta <= 1e-10 * max(abs(top), 1.0):  # invariant subspace: the Ritz values are exact
            break
        betas.append(beta)
        q = [x / beta for x in w]
    return top, vec, used
