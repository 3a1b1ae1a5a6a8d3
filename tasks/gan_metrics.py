"""GAN sample-quality metrics as pure functions of tensors (no models, no state).

- :func:`mode_stats`: mode coverage, high-quality fraction and mode-histogram KL for
  samples of a Gaussian mixture with known centres (the 2-D ring task).
- :func:`frechet_distance`: the Fréchet distance between two Gaussians fitted to
  feature sets (as in FID, here in a small digits classifier's feature space).
- :func:`frechet_floor`: the Fréchet distance between disjoint halves of real data, over random
  splits: what a generator as good as the data itself would score.
- :func:`label_entropy`: entropy of a predicted-label histogram (class coverage).

All inputs are torch tensors; the results are Python floats and ints.
"""

from __future__ import annotations

import math

import torch


def ring_centres(modes: int, radius: float) -> torch.Tensor:
    """``modes`` centres evenly spaced on a circle: (r cos 2πk/K, r sin 2πk/K), k = 0..K-1; shape (K, 2)."""
    angle = 2 * math.pi * torch.arange(modes, dtype=torch.float64) / modes
    return (radius * torch.stack([angle.cos(), angle.sin()], 1)).float()


def mode_stats(samples: torch.Tensor, centres: torch.Tensor, sigma: float, min_share: float) -> dict:
    """Coverage metrics of 2-D ``samples`` (N, 2) against mixture ``centres`` (K, 2) of std ``sigma``.

    A sample is *high quality* when its Euclidean distance to the nearest centre is at most 3σ
    (for a true isotropic 2-D Gaussian that holds for 1 - exp(-9/2) ≈ 98.9% of samples); it is
    then assigned to that mode. With n_k the high-quality count of mode k:

    - ``hq_frac`` = Σ n_k / N;
    - ``modes`` = #{k : n_k >= min_share · N} (a mode counts when it gets at least that share of
      *all* samples);
    - ``mode_kl`` = KL(p || uniform) = Σ p_k ln(K p_k) in nats, with p_k = n_k / Σ n_k and
      0 ln 0 = 0: 0 for a perfectly balanced histogram, ln K when every high-quality sample
      sits in one mode; ln K (the worst value) when there is no high-quality sample at all.

    Non-finite samples count as far off (never high quality).
    """
    k = centres.shape[0]
    x = samples.detach().double()
    c = centres.to(x.device, torch.float64)
    dist = torch.cdist(x, c)  # (N, K)
    dist = torch.where(torch.isfinite(dist), dist, torch.full_like(dist, math.inf))
    nearest_d, nearest = dist.min(1)
    hq = nearest_d <= 3 * sigma
    counts = torch.bincount(nearest[hq], minlength=k).double()
    n = x.shape[0]
    total = counts.sum().item()
    if total == 0:
        kl = math.log(k)
    else:
        p = counts / total
        nz = p > 0
        kl = (p[nz] * (p[nz] * k).log()).sum().item()
    return {
        "modes": int((counts >= min_share * n).sum().item()),
        "hq_frac": total / n,
        "mode_kl": max(0.0, kl),
        "mode_counts": counts.long().tolist(),
    }


def gaussian_fit(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean (D,) and unbiased covariance (D, D) of ``features`` (N, D), in float64."""
    f = features.detach().double()
    mu = f.mean(0)
    d = f - mu
    return mu, d.T @ d / (f.shape[0] - 1)


def _sqrt_psd(m: torch.Tensor) -> torch.Tensor:
    """Symmetric square root of a positive semi-definite matrix via its eigen-decomposition."""
    vals, vecs = torch.linalg.eigh((m + m.T) / 2)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def frechet_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """Fréchet distance between Gaussians fitted to feature sets ``a`` (N, D) and ``b`` (M, D).

    FD = |μ_a - μ_b|² + tr(Σ_a) + tr(Σ_b) - 2 tr((Σ_a Σ_b)^{1/2}), in squared feature units.
    tr((Σ_a Σ_b)^{1/2}) is computed as Σ sqrt(λ_i) over the eigenvalues λ_i of the symmetric
    PSD matrix Σ_a^{1/2} Σ_b Σ_a^{1/2}, which has the same spectrum as Σ_a Σ_b. 0 for a set
    against itself (up to rounding, clamped at 0); grows with a shift of either set.
    """
    mu_a, cov_a = gaussian_fit(a)
    mu_b, cov_b = gaussian_fit(b)
    s = _sqrt_psd(cov_a)
    cross = torch.linalg.eigvalsh(s @ cov_b @ s).clamp_min(0).sqrt().sum()
    fd = (mu_a - mu_b).square().sum() + cov_a.trace() + cov_b.trace() - 2 * cross
    return max(0.0, fd.item())


def frechet_floor(features: torch.Tensor, n: int, splits: int, seed: int) -> tuple[float, float]:
    """(mean, std) over ``splits`` random splits of real ``features`` (N, D) of FD(A, B), with A the first ``n``
    rows of a random permutation and B the other N - n: two disjoint real sets, A of an evaluation's size.

    The estimator's bias grows as the sets shrink (roughly with 1/|A| + 1/|B|), so the floor is only
    comparable with an evaluation of the same sizes; the std (ddof 1; 0 for one split) is the spread over
    splits. The permutations come from a ``torch.Generator`` seeded with ``seed``, never the global RNG.
    """
    if not 2 <= n <= features.shape[0] - 2:
        raise ValueError(f"n={n}: each set needs at least 2 of the {features.shape[0]} rows")
    gen = torch.Generator().manual_seed(seed)
    values = []
    for _ in range(splits):
        perm = torch.randperm(features.shape[0], generator=gen).to(features.device)
        values.append(frechet_distance(features[perm[:n]], features[perm[n:]]))
    mean = sum(values) / len(values)
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return mean, std


def label_entropy(labels: torch.Tensor, classes: int) -> float:
    """Entropy H = -Σ_c p_c ln p_c (nats) of the histogram of integer ``labels`` over ``classes``.

    ln(classes) for a uniform histogram (2.303 for 10 digits), 0 when every label is the same;
    exp(H) is the effective number of classes generated.
    """
    counts = torch.bincount(labels.flatten().long(), minlength=classes).double()
    p = counts[counts > 0] / counts.sum()
    return max(0.0, -(p * p.log()).sum().item())
