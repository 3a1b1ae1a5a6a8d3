"""GAN metrics on hand-made sample sets whose values can be checked by hand."""

import math

import pytest
import torch

from tasks.gan import d_loss, g_loss
from tasks.gan_metrics import frechet_distance, frechet_floor, label_entropy, mode_stats, ring_centres

RING = ring_centres(8, 2.0)
SIGMA = 0.05


def test_centres():
    assert RING.shape == (8, 2)
    assert RING[0].tolist() == pytest.approx([2.0, 0.0])
    assert RING[2].tolist() == pytest.approx([0.0, 2.0], abs=1e-6)
    assert torch.linalg.norm(RING, dim=1).tolist() == pytest.approx([2.0] * 8)


def test_all_modes_equally_hit():
    x = RING.repeat_interleave(10, 0)  # 10 samples exactly on each centre
    s = mode_stats(x, RING, SIGMA, min_share=0.025)
    assert s["modes"] == 8
    assert s["hq_frac"] == 1.0
    assert s["mode_kl"] == pytest.approx(0.0, abs=1e-12)
    assert s["mode_counts"] == [10] * 8


def test_one_mode():
    x = RING[3].repeat(80, 1) + 0.01  # within 3 sigma = 0.15 of centre 3
    s = mode_stats(x, RING, SIGMA, min_share=0.025)
    assert s["modes"] == 1
    assert s["hq_frac"] == 1.0
    assert s["mode_kl"] == pytest.approx(math.log(8))  # all mass on one of 8 modes


def test_far_off_samples_are_low_quality():
    x = torch.zeros(50, 2)  # the ring's centre: 2.0 away from every mode
    s = mode_stats(x, RING, SIGMA, min_share=0.025)
    assert s["modes"] == 0 and s["hq_frac"] == 0.0
    assert s["mode_kl"] == pytest.approx(math.log(8))  # no high-quality sample: the worst value


def test_three_sigma_boundary_and_min_share():
    # 2 modes: 60 samples on mode 0, 40 at 2.9 sigma from mode 1, 100 just beyond 3 sigma from mode 2
    off = torch.tensor([0.0, 2.9 * SIGMA])
    x = torch.cat([RING[0].repeat(60, 1), (RING[1] + off).repeat(40, 1), (RING[2] + torch.tensor([3.1 * SIGMA, 0.0])).repeat(100, 1)])
    s = mode_stats(x, RING, SIGMA, min_share=0.25)  # a mode needs 50 of the 200 samples
    assert s["hq_frac"] == pytest.approx(0.5)
    assert s["mode_counts"][:3] == [60, 40, 0]
    assert s["modes"] == 1  # mode 1 has 40 < 50
    p = torch.tensor([0.6, 0.4])
    assert s["mode_kl"] == pytest.approx((p * (p * 8).log()).sum().item())


def test_true_mixture_samples_are_98_9_percent_high_quality():
    gen = torch.Generator().manual_seed(0)
    idx = torch.randint(8, (20000,), generator=gen)
    x = RING[idx] + SIGMA * torch.randn(20000, 2, generator=gen)
    s = mode_stats(x, RING, SIGMA, min_share=0.025)
    assert s["modes"] == 8
    assert s["hq_frac"] == pytest.approx(1 - math.exp(-4.5), abs=0.003)  # chi-2 with 2 dof at 9
    assert s["mode_kl"] < 0.002


def test_non_finite_samples_count_as_far_off():
    x = torch.cat([RING[:4], torch.full((4, 2), float("nan"))])
    s = mode_stats(x, RING, SIGMA, min_share=0.1)
    assert s["hq_frac"] == 0.5 and s["modes"] == 4


def test_frechet_distance_self_zero_and_shift():
    gen = torch.Generator().manual_seed(0)
    a = torch.randn(500, 16, generator=gen) @ torch.randn(16, 16, generator=gen)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shift = torch.zeros(16)
    shift[0], shift[5] = 3.0, 4.0
    assert frechet_distance(a, a + shift) == pytest.approx(25.0, rel=1e-6)  # equal covariances: |shift|^2
    d1, d2 = frechet_distance(a, a + 0.5), frechet_distance(a, a + 1.0)
    assert 0 < d1 < d2


def test_frechet_distance_of_known_gaussians():
    # N(0, I) vs N(0, 4I) in D dims: tr(I) + tr(4I) - 2 tr(2I) = D
    d = 4
    a = torch.randn(200000, d, generator=torch.Generator().manual_seed(1))
    assert frechet_distance(a, 2 * a) == pytest.approx(d, rel=0.02)


def test_frechet_floor_by_hand():
    """Rows 0, 0, 2, 2 split into two disjoint pairs: {0, 0} vs {2, 2} (2 of the 6 choices of the first pair) gives
    FD = (0 - 2)^2 = 4; a mixed pair against the other mixed pair gives equal means and variances, FD 0. So the
    floor's expectation is 4 x 2/6 = 4/3 and each split's value is 0 or 4, std 4 sqrt(1/3 x 2/3) = 1.886."""
    f = torch.tensor([[0.0], [0.0], [2.0], [2.0]])
    state = torch.get_rng_state()
    mean, std = frechet_floor(f, 2, 600, seed=0)
    assert torch.equal(torch.get_rng_state(), state)  # its own generator: the run's random stream does not move
    assert mean == pytest.approx(4 / 3, abs=0.31)  # 4 standard errors of 600 splits
    assert std == pytest.approx(4 * math.sqrt(2) / 3, abs=0.1)
    assert frechet_floor(f, 2, 600, seed=0) == (mean, std)  # the seed fixes the splits
    assert frechet_floor(torch.ones(6, 3), 3, 5, seed=1) == (0.0, 0.0)  # identical rows: nothing to tell apart
    one = frechet_floor(f, 2, 1, seed=0)
    assert one[0] in (pytest.approx(0.0, abs=1e-9), pytest.approx(4.0)) and one[1] == 0.0
    with pytest.raises(ValueError, match="n=3"):
        frechet_floor(f, 3, 1, seed=0)  # the other set would have one row: no covariance


def test_label_entropy():
    assert label_entropy(torch.arange(10).repeat(5), 10) == pytest.approx(math.log(10))
    assert label_entropy(torch.full((30,), 7), 10) == 0.0
    assert label_entropy(torch.tensor([0, 0, 1, 1]), 10) == pytest.approx(math.log(2))


def test_losses_by_hand():
    zero = torch.zeros(4)
    assert d_loss("non_saturating", zero, zero).item() == pytest.approx(2 * math.log(2))  # D undecided
    assert g_loss("non_saturating", zero).item() == pytest.approx(math.log(2))
    real, fake = torch.tensor([2.0, 0.5]), torch.tensor([-2.0, 0.0])
    assert d_loss("hinge", real, fake).item() == pytest.approx((0 + 0.5) / 2 + (0 + 1) / 2)
    assert g_loss("hinge", fake).item() == pytest.approx(1.0)
