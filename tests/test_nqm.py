"""task=nqm, the noisy quadratic model: its loss has Hessian exactly H and gradient noise c H / B, its
closed-form expected loss matches simulated SGD runs (Monte-Carlo, many seeds at once) and real CLI runs
within their sampling error, and the closed form reproduces the critical-batch shape of Zhang et al. 2019."""

import json
import math

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from torch.func import functional_call

from conftest import ROOT, load_script, results, run_bench
from tasks.nqm import NoisyQuadratic, NoisyQuadraticTask, curvatures, expected_loss_curve, initial_loss


def nqm_cfg(*overrides):
    """The composed config with task=nqm, as the CLI builds it."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=["task=nqm", *overrides])


def nqm_task(*overrides) -> NoisyQuadraticTask:
    return NoisyQuadraticTask(nqm_cfg(*overrides).task, 0, torch.device("cpu"))


def simulate(h, c, batch, lrs, momentum, init_scale, replicas, seed=0) -> torch.Tensor:
    """L(theta_t), t = 0..T, of ``replicas`` independent runs of torch.optim.SGD on the model (one
    vectorised module; each replica's gradient is its own), shape (T+1, replicas), float64."""
    model = NoisyQuadratic(h, c, init_scale, replicas=replicas)
    opt = torch.optim.SGD(model.parameters(), lr=float(lrs[0]), momentum=momentum)
    gen = torch.Generator().manual_seed(seed)
    losses = [model.expected_loss()]
    for lr in lrs:
        opt.param_groups[0]["lr"] = float(lr)
        opt.zero_grad()
        model(torch.randn(batch, replicas, len(h), generator=gen)).backward()
        opt.step()
        losses.append(model.expected_loss())
    return torch.stack(losses).double()


def warmup_then_cosine(peak: float, warmup: int, total: int) -> np.ndarray:
    s = np.arange(total)
    ramp = np.minimum(1.0, (s + 1) / warmup)
    return peak * ramp * 0.5 * (1 + np.cos(np.pi * s / total))


# ---------------------------------------------------------------- the loss


def test_hessian_is_exactly_h():
    task = nqm_task("task.dim=8", "task.h_max=3.0", "task.noise=2.0")
    z = torch.randn(16, 8, generator=torch.Generator().manual_seed(1))
    theta = torch.randn(8, generator=torch.Generator().manual_seed(2))
    hess = torch.autograd.functional.hessian(lambda th: functional_call(task.model, {"theta": th}, (z,)), theta)
    assert torch.equal(hess, torch.diag(task.model.h))  # every entry, off-diagonal zeros included
    assert torch.linalg.eigvalsh(hess.double()).max().item() == 3.0  # a sharpness probe gets h_max exactly


def test_gradient_noise_has_covariance_c_h_over_b():
    """Gradients of R batches at one theta: mean H theta, covariance c H / B, each entry within 5 standard
    errors of a sample covariance with known mean, sqrt((S_ii S_jj + S_ij^2) / R)."""
    h, c, batch, replicas = [2.0, 1.0, 0.3, 0.05], 1.5, 8, 40_000
    model = NoisyQuadratic(h, c, 1.0, replicas=replicas)
    theta0 = torch.tensor([0.5, -1.0, 2.0, 0.25])
    with torch.no_grad():
        model.theta.copy_(theta0.expand(replicas, 4))
    model(torch.randn(batch, replicas, 4, generator=torch.Generator().manual_seed(0))).backward()
    xi = (model.theta.grad - model.h * theta0).double()  # (R, dim): the noise of each batch's gradient
    sigma = c * torch.diag(torch.tensor(h, dtype=torch.float64)) / batch
    mean_se = (sigma.diagonal() / replicas).sqrt()
    assert (xi.mean(0).abs() <= 5 * mean_se).all(), (xi.mean(0), mean_se)
    cov = xi.T @ xi / replicas
    se = ((sigma.diagonal()[:, None] * sigma.diagonal()[None, :] + sigma**2) / replicas).sqrt()
    assert ((cov - sigma).abs() <= 5 * se).all(), (cov, sigma)


def test_accumulation_gives_the_same_update():
    """The harness averages micro-batch losses: the mean over 4 micro-batches of 4 examples has the loss
    and gradient of the whole batch of 16 (float rounding apart)."""
    task = nqm_task("task.dim=10", "task.epoch_size=64")
    with torch.no_grad():
        task.model.theta.copy_(torch.linspace(-1, 1, 10))
    batch = next(task.train_batches(16, 0, 0, torch.Generator().manual_seed(3)))
    whole, stats = task.loss("model", task.model, batch)
    (g_whole,) = torch.autograd.grad(whole, task.model.theta)
    micro = [task.loss("model", task.model, mb)[0] for mb in task.split(batch, 4)]
    accumulated = sum(m / 4 for m in micro)
    (g_micro,) = torch.autograd.grad(accumulated, task.model.theta)
    assert torch.allclose(g_micro, g_whole, rtol=1e-6, atol=1e-7) and abs(accumulated.item() - whole.item()) < 1e-6
    assert stats["exact_loss"].item() == pytest.approx(task.evaluate()["val_loss"], rel=1e-6)


def test_task_facts():
    task = nqm_task("task.epoch_size=256")
    assert task.train_size() == NoisyQuadraticTask.static_train_size(task.cfg) == 256
    l0 = 0.5 * sum(1.0 / i for i in range(1, 101))  # h_i = 1 / i, theta_0 = ones
    # the model trains on float32 curvatures: its exact loss differs from float64 theory by their rounding only
    assert task.evaluate("val")["val_loss"] == task.evaluate("test")["val_loss"] == pytest.approx(l0, rel=1e-7)
    assert task.chance == {"val_loss": pytest.approx(l0)} and task.initial_loss == pytest.approx(l0)
    assert task.is_stalled(-1.0, 0.0, {"val_loss": 0.96 * l0}) and not task.is_stalled(5.0, 5.0, {"val_loss": 0.9 * l0})
    # a resumed epoch continues the same stream: batches from start=5 are the tail of the whole epoch
    full = list(task.train_batches(16, 0, 0, torch.Generator().manual_seed(7)))
    tail = list(task.train_batches(16, 0, 5, torch.Generator().manual_seed(7)))
    assert len(full) == 16 and all(torch.equal(a, b) for a, b in zip(full[5:], tail, strict=True))
    spec = nqm_task("task.spectrum=[4.0,1.0,0.25]")
    assert spec.model.theta.shape == (3,) and list(curvatures(spec.cfg)) == [4.0, 1.0, 0.25]


# ---------------------------------------------------------------- the closed form


@pytest.mark.parametrize("momentum", [0.0, 0.9])
def test_closed_form_is_exact_without_noise(momentum):
    """c = 0: the recursion must reproduce torch.optim.SGD's deterministic trajectory (float64, curvatures exact in binary)."""
    h, lrs = [1.0, 0.5, 0.125, 0.0625], warmup_then_cosine(0.9, 5, 30)
    model = NoisyQuadratic(h, 0.0, 1.5).double()
    opt = torch.optim.SGD(model.parameters(), lr=lrs[0], momentum=momentum)
    measured = [model.expected_loss().item()]
    for lr in lrs:
        opt.param_groups[0]["lr"] = lr
        opt.zero_grad()
        model(torch.zeros(1, 4, dtype=torch.float64)).backward()
        opt.step()
        measured.append(model.expected_loss().item())
    assert np.allclose(measured, expected_loss_curve(h, 0.0, 1, lrs, momentum, 1.5**2), rtol=1e-12, atol=0)


@pytest.mark.parametrize("momentum,peak", [(0.0, 0.8), (0.9, 0.2)])
def test_closed_form_matches_monte_carlo(momentum, peak):
    """The mean loss of 50,000 simulated runs (torch.optim.SGD, warm-up then cosine decay) lies within
    5 standard errors of the closed form at every step."""
    h, c, batch, replicas = [1.0, 0.5, 0.2, 0.05], 1.0, 2, 50_000
    lrs = warmup_then_cosine(peak, 10, 40)
    runs = simulate(h, c, batch, lrs, momentum, 1.0, replicas)
    mean, se = runs.mean(1).numpy(), (runs.std(1) / math.sqrt(replicas)).numpy()
    theory = expected_loss_curve(h, c, batch, lrs, momentum, 1.0)
    assert theory[0] == pytest.approx(mean[0], rel=1e-6)  # deterministic start
    z = np.abs(mean[1:] - theory[1:]) / se[1:]
    assert z.max() < 5, (z.max(), int(z.argmax()) + 1)
    assert theory[-1] < 0.5 * theory[0]  # the comparison covers a curve that moves, not a flat line


def test_closed_form_broadcasts_over_an_lr_grid_and_batches():
    h = curvatures(nqm_cfg().task)
    grid = np.array([0.1, 0.5, 1.0])
    batches = np.array([[1], [8]])  # shape S = (2, 3) with the grid
    curves = expected_loss_curve(h, 1.0, batches, np.broadcast_to(grid, (50, 3)))
    assert curves.shape == (51, 2, 3)
    for i, b in enumerate((1, 8)):
        for j, lr in enumerate(grid):
            assert np.allclose(curves[:, i, j], expected_loss_curve(h, 1.0, b, np.full(50, lr)), rtol=1e-12)
    assert curves[0, 0, 0] == pytest.approx(initial_loss(h, 1.0))
    # above the stability limit 2 / h_max the moments overflow: inf, never nan
    assert np.isinf(expected_loss_curve(h, 1.0, 1, np.full(2000, 2.5))[-1])


def test_batch_sweep_shows_a_critical_batch():
    """Steps to reach 5 % of the initial loss, the LR tuned per batch on a grid (closed form, plain SGD,
    the task's default spectrum and noise): perfect scaling (steps ~ 1/B) at small batches, then a plateau."""
    cfg = nqm_cfg().task
    h = curvatures(cfg)
    target = 0.05 * initial_loss(h, cfg.init_scale)
    grid = 2.0 ** np.arange(-8, 1.51, 0.5)  # 0.0039 .. 2.83: past the stability limit 2 / h_max = 2
    batches = 2 ** np.arange(0, 11)  # 1 .. 1024
    curves = expected_loss_curve(h, cfg.noise, batches[:, None], np.broadcast_to(grid, (1500, len(grid))))
    reached = curves <= target
    steps_by_lr = np.where(reached.any(0), reached.argmax(0), np.inf)  # (batches, grid)
    best = steps_by_lr.argmin(1)
    steps = steps_by_lr[np.arange(len(batches)), best]
    tuned = grid[best]
    assert np.isfinite(steps).all() and (np.diff(steps) <= 0).all(), steps
    assert 0 < best.min() and best.max() < len(grid) - 1, tuned  # the tuned LR is inside the grid, never on its edge
    ratios = steps[:-1] / steps[1:]
    assert ratios[0] >= 1.6 and ratios[1] >= 1.6, ratios  # 1 -> 2 -> 4: doubling B halves the steps
    assert ratios[-1] <= 1.2 and ratios[-2] <= 1.2, ratios  # 256 -> 512 -> 1024: no gain left
    assert tuned[1] == 2 * tuned[0] and tuned[-1] < 2.0  # small batches: LR ~ B; large: near the limit 2 / h_max


# ---------------------------------------------------------------- the real CLI


@pytest.mark.slow
def test_cli_runs_follow_the_closed_form(tmp_path):
    """12 seeds of `python -m bench task=nqm` with a warm-up and a cosine decay: in each window of steps the
    seeds' mean exact loss lies within 5 standard errors (over seeds) of the closed form; scripts/nqm_theory.py
    rebuilds every logged LR exactly."""
    seeds = 12
    sweep = tmp_path / "s"
    p = run_bench("-m", "task=nqm", f"seed={','.join(map(str, range(seeds)))}", "train.steps=300", "warmup=linear",
                  "warmup.steps=50", "decay=cosine", "hardware.threads=1", "report=false", f"hydra.sweep.dir={sweep}")
    assert p.returncode == 0, p.stderr[-3000:]
    theory_script = load_script("nqm_theory")
    runs = results(sweep)
    assert len(runs) == seeds and all(r["status"] == "completed" for r in runs)
    rows = [theory_script.compare(r["output_dir"]) for r in runs]
    assert all(x["lr_mismatch"] == 0 and len(x["train"]) == 300 for x in rows)
    expected = np.array([t["expected"] for t in rows[0]["train"]])
    exact = np.array([[t["exact"] for t in x["train"]] for x in rows])  # (seeds, steps)
    assert np.allclose(exact[:, 0], expected[0], rtol=1e-6)  # theta_0 is deterministic
    for lo, hi in ((1, 10), (10, 50), (50, 150), (150, 300)):
        per_seed = exact[:, lo:hi].mean(1)
        se = per_seed.std(ddof=1) / math.sqrt(seeds)
        assert abs(per_seed.mean() - expected[lo:hi].mean()) < 5 * se, (lo, hi, per_seed.mean(), expected[lo:hi].mean(), se)
    evals = rows[0]["eval"]
    assert [e["step"] for e in evals] == [99, 199, 299]
    assert runs[0]["chance"] == {"val_loss": pytest.approx(expected[0])}


@pytest.mark.slow
def test_theory_script_prints_a_run_next_to_its_closed_form(tmp_path, capsys):
    p = run_bench("task=nqm", "train.steps=100", "hardware.threads=1", f"hydra.run.dir={tmp_path / 'run'}")
    assert p.returncode == 0, p.stderr[-3000:]
    assert load_script("nqm_theory").main([str(tmp_path / "run"), "--csv", str(tmp_path / "t.csv")]) == 0
    out = capsys.readouterr().out
    assert "status completed, 100 updates" in out and "last quarter" in out
    assert len((tmp_path / "t.csv").read_text().splitlines()) == 101
    r = json.loads((tmp_path / "run" / "result.json").read_text())
    assert r["task_info"]["h_max"] == 1.0 and r["choices"]["optimizer"] == "sgd"
