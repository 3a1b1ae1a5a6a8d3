"""Curvature and noise probes against ground truth: Lanczos on a known spectrum, the sharpness and the
preconditioned sharpness of a small MLP against its dense Hessian (torch.autograd.functional.hessian), the
noise-scale estimators on a problem whose gradient noise is known, and the Adam-state percentiles."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn
from torch.func import functional_call

from bench.errors import ConfigError
from bench.hessian import hvp, top_eigenvalue
from bench.probes import AdaptiveStep, NoiseScale, PrecondSharpness, ProbeContext, Sharpness, adam_preconditioner


class Regression:
    """A tiny task: 10-class softmax regression through a 6-8-3 MLP on fixed random data (the Task methods the probes call)."""

    def __init__(self, n=96, seed=0):
        g = torch.Generator().manual_seed(seed)
        self.x, self.y = torch.randn(n, 6, generator=g), torch.randint(0, 3, (n,), generator=g)

    def train_batches(self, size, epoch, start, generator):
        perm = torch.randperm(len(self.x), generator=generator)
        for i in range(start, len(perm) // size):
            idx = perm[i * size : (i + 1) * size]
            yield self.x[idx], self.y[idx]

    def split(self, batch, parts):
        return list(zip(*(t.chunk(parts) for t in batch)))

    def loss(self, name, model, batch):
        x, y = batch
        return nn.functional.cross_entropy(model(x), y)


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))


def _dense_hessian(model, task, batch):
    names = [n for n, _ in model.named_parameters()]
    shapes = [p.shape for p in model.parameters()]
    flat0 = torch.cat([p.detach().flatten() for p in model.parameters()])

    def f(flat):
        parts, i = {}, 0
        for n, s in zip(names, shapes):
            k = math.prod(s)
            parts[n] = flat[i : i + k].view(s)
            i += k
        x, y = batch
        return nn.functional.cross_entropy(functional_call(model, parts, (x,)), y)

    return torch.autograd.functional.hessian(f, flat0)


def _ctx(task, model, opt, lr, batch_size):
    cache = {}

    def measure_batch(size):
        if size not in cache:
            cache[size] = next(iter(task.train_batches(size, 0, 0, torch.Generator().manual_seed(123))))
        return cache[size]

    return ProbeContext(step=5, task=task, models={"model": model}, optimizers={"model": opt}, lrs={"model": lr}, measure_batch=measure_batch), measure_batch(batch_size)


def test_lanczos_is_exact_on_a_known_spectrum():
    h = torch.tensor([10.0 / i for i in range(1, 51)])
    top, vec, used = top_eigenvalue(lambda v: [h * v[0]], [torch.zeros(50)], iters=60, tol=1e-12, generator=torch.Generator().manual_seed(0))
    assert top == pytest.approx(10.0, rel=1e-6) and used <= 50
    assert abs(float(vec[0][0])) == pytest.approx(1.0, abs=1e-4)  # the eigenvector is the first axis


def test_hvp_matches_the_dense_hessian():
    task, model = Regression(), _mlp()
    batch = (task.x[:32], task.y[:32])
    H = _dense_hessian(model, task, batch)
    v = [torch.randn_like(p) for p in model.parameters()]
    hv = torch.cat([x.flatten() for x in hvp(lambda: task.loss("model", model, batch), list(model.parameters()), v)])
    assert torch.allclose(hv, H @ torch.cat([x.flatten() for x in v]), atol=1e-5)
    assert all(p.grad is None for p in model.parameters())  # nothing written to .grad


def test_sharpness_probe_equals_the_dense_top_eigenvalue_and_logs_the_limit():
    task, model = Regression(), _mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    ctx, batch = _ctx(task, model, opt, 0.05, 48)
    out = Sharpness(every=1, batch=48, iters=40, tol=1e-10).measure(ctx)
    dense = float(torch.linalg.eigvalsh(_dense_hessian(model, task, batch))[-1])
    assert out["sharpness"] == pytest.approx(dense, rel=1e-4)
    assert out["sharpness_limit"] == pytest.approx((2 + 2 * 0.9) / 0.05)


def test_precond_sharpness_equals_the_dense_preconditioned_top_eigenvalue():
    task, model = Regression(), _mlp()
    opt = torch.optim.Adam(model.parameters(), lr=0.01, betas=(0.9, 0.99), eps=1e-8)
    for s in range(3):
        opt.zero_grad()
        task.loss("model", model, (task.x[s * 16 : s * 16 + 16], task.y[s * 16 : s * 16 + 16])).backward()
        opt.step()
    ctx, batch = _ctx(task, model, opt, 0.01, 48)
    out = PrecondSharpness(every=1, batch=48, iters=40, tol=1e-10).measure(ctx)
    H = _dense_hessian(model, task, batch)
    v = torch.cat([opt.state[p]["exp_avg_sq"].flatten() for p in model.parameters()]) / (1 - 0.99**3)
    s = (v.sqrt() + 1e-8).rsqrt()
    dense = float(torch.linalg.eigvalsh(s[:, None] * H * s[None, :])[-1])
    assert out["precond_sharpness"] == pytest.approx(dense, rel=1e-4)
    assert out["precond_sharpness_limit"] == pytest.approx(3.8 / (0.1 * 0.01))
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    assert adam_preconditioner(sgd, list(model.parameters())) is None
    assert PrecondSharpness(every=1, batch=48).measure(_ctx(task, model, sgd, 0.1, 48)[0]) == {}


class Gaussian:
    """Per-example loss 0.5 |w - x_j|^2 with x_j ~ N(mu, sigma^2 I): per-example gradient w - x_j, so
    G = w - mu and tr(Sigma) = d sigma^2 exactly."""

    d, sigma = 20, 0.7

    def __init__(self):
        self.mu = torch.linspace(-1, 1, self.d)

    def train_batches(self, size, epoch, start, generator):
        yield self.mu + self.sigma * torch.randn(size, self.d, generator=generator)

    def split(self, batch, parts):
        return list(batch.chunk(parts))

    def loss(self, name, model, batch):
        return 0.5 * ((model.w - batch) ** 2).sum(1).mean()


def test_noise_scale_estimators_are_unbiased_on_a_known_noise():
    task = Gaussian()
    model = nn.Module()
    model.w = nn.Parameter(torch.zeros(task.d))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    probe = NoiseScale(every=1, batch=64, parts=8, ema=0.0)
    traces, grads = [], []
    for step in range(400):
        ctx = ProbeContext(step=step, task=task, models={"model": model}, optimizers={"model": opt}, lrs={"model": 0.1}, measure_batch=None)
        t, g = probe.estimates(ctx, "model")
        traces.append(t)
        grads.append(g)
    true_trace, true_g2 = task.d * task.sigma**2, float((task.mu**2).sum())
    tt, gg = torch.tensor(traces), torch.tensor(grads)
    assert abs(tt.mean() - true_trace) < 4 * tt.std() / math.sqrt(len(tt))  # within 4 standard errors
    assert abs(gg.mean() - true_g2) < 4 * gg.std() / math.sqrt(len(gg))
    smoothed = NoiseScale(every=1, batch=64, parts=8, ema=0.9)
    for step in range(200):
        out = smoothed.measure(ProbeContext(step=step, task=task, models={"model": model}, optimizers={"model": opt}, lrs={"model": 0.1}, measure_batch=None))
    assert out["noise_scale"] == pytest.approx(true_trace / true_g2, rel=0.15) and set(out) == {"noise_scale", "noise_trace", "noise_grad_sq"}


def test_adaptive_step_percentiles():
    task, model = Regression(), _mlp()
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    opt.zero_grad()
    task.loss("model", model, (task.x, task.y)).backward()
    opt.step()
    ctx, _ = _ctx(task, model, opt, 0.01, 32)
    out = AdaptiveStep(every=1, percentiles=[1, 50, 99]).measure(ctx)
    v = torch.cat([opt.state[p]["exp_avg_sq"].flatten() for p in model.parameters()]) / (1 - 0.999)
    step = 0.01 / (v.sqrt() + 1e-8)
    assert out["adaptive_step_p50"] == pytest.approx(float(step.double().quantile(0.5)), rel=1e-5)
    assert out["v_hat_p99"] == pytest.approx(float(v.double().quantile(0.99)), rel=1e-4)


@pytest.mark.parametrize("make, message", [
    (lambda: Sharpness(every=10, batch=0), "diagnostics.sharpness.batch=0"),
    (lambda: Sharpness(every=10, tol=2), "diagnostics.sharpness.tol=2"),
    (lambda: NoiseScale(every=10, batch=100, parts=8), "diagnostics.noise_scale.parts=8 is not allowed: a divisor"),
    (lambda: NoiseScale(every=10, ema=1.0), "diagnostics.noise_scale.ema=1.0"),
    (lambda: AdaptiveStep(every=10, percentiles=[50, 120]), "diagnostics.adaptive_step.percentiles"),
])
def test_bad_settings_are_refused(make, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        make()


@pytest.mark.slow
def test_a_sweep_with_probes_gets_the_probe_figures(tmp_path):
    from conftest import run_bench

    sweep = tmp_path / "s"
    p = run_bench("-m", "diagnostics=[sharpness,noise_scale]", "diagnostics.sharpness.every=10", "diagnostics.noise_scale.every=10",
                  "diagnostics.noise_scale.batch=64", "warmup=none,linear", "warmup.steps=10", "train.steps=30", "hardware.threads=1",
                  f"hydra.sweep.dir={sweep}")
    assert p.returncode == 0, p.stderr[-2000:]
    for name in ("sharpness.png", "noise_scale.png"):
        assert (sweep / "report" / name).stat().st_size > 10_000
    # digits evaluates its training set at the end: the record has it and the report the generalization gap
    import json

    import pandas as pd

    rec = json.loads(next(sweep.rglob("result.json")).read_text())
    assert set(rec["train_set"]) == {"train_set_loss", "train_set_acc"}
    runs = pd.read_csv(sweep / "report" / "runs.csv")
    assert (runs["gap_loss"] - (runs["final_val_loss"] * 0 + runs["gap_loss"])).abs().max() == 0 and runs["gap_loss"].notna().all()
    assert "gap: test_loss − train-set loss" in (sweep / "report" / "table.md").read_text()
    plain = tmp_path / "plain"
    assert run_bench("-m", "warmup=none,linear", "warmup.steps=10", "train.steps=20", "hardware.threads=1", f"hydra.sweep.dir={plain}").returncode == 0
    assert not (plain / "report" / "sharpness.png").exists()  # no probe columns, no probe figures


# ---------------------------------------------------------------- ground truth: the noisy quadratic model


def _nqm(**over):
    from omegaconf import OmegaConf

    from conftest import ROOT
    from tasks.nqm import NoisyQuadraticTask

    cfg = OmegaConf.load(ROOT / "conf" / "task" / "nqm.yaml")
    cfg.pop("defaults")
    cfg.merge_with(over)
    return NoisyQuadraticTask(cfg, seed=0, device=torch.device("cpu"))


def _nqm_ctx(task, step, opt=None, lr=0.1):
    model = task.models["model"]
    opt = opt or torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    cache = {}

    def measure_batch(size):
        if size not in cache:
            cache[size] = next(iter(task.train_batches(size, 0, 0, torch.Generator().manual_seed(1))))
        return cache[size]

    return ProbeContext(step=step, task=task, models={"model": model}, optimizers={"model": opt}, lrs={"model": lr}, measure_batch=measure_batch)


def test_sharpness_is_h_max_on_the_nqm_at_any_step():
    task = _nqm(dim=40, h_max=3.0)
    model = task.models["model"]
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    probe = Sharpness(every=1, batch=16, iters=40, tol=1e-10)
    gen = torch.Generator().manual_seed(0)
    for step in range(30):  # train a little between measurements: the Hessian never changes
        opt.zero_grad()
        res = task.loss("model", model, next(iter(task.train_batches(16, step, 0, gen))))
        (res[0] if isinstance(res, tuple) else res).backward()
        opt.step()
        if step % 10 == 0:
            out = probe.measure(_nqm_ctx(task, step, opt))
            assert out["sharpness"] == pytest.approx(3.0, abs=1e-4) and out["sharpness_limit"] == pytest.approx(3.8 / 0.1)


def test_noise_scale_matches_the_nqm_analytic_value():
    """Per-example gradient noise c H, true gradient H theta: B_simple = c tr(H) / |H theta|^2 exactly."""
    task = _nqm(dim=30, h_max=2.0, noise=0.5, init_scale=1.0)
    h = torch.as_tensor(task.h, dtype=torch.float64)
    theta = task.models["model"].theta.detach().double().flatten()
    true_trace, true_g2 = float(0.5 * h.sum()), float(((h * theta) ** 2).sum())
    probe = NoiseScale(every=1, batch=256, parts=8, ema=0.0)
    est = torch.tensor([probe.estimates(_nqm_ctx(task, s), "model") for s in range(300)], dtype=torch.float64)
    for col, truth in ((0, true_trace), (1, true_g2)):
        v = est[:, col]
        assert abs(float(v.mean()) - truth) < 4 * float(v.std()) / math.sqrt(len(v)), (col, float(v.mean()), truth)


def test_rmsprop_state_is_read_as_a_preconditioner():
    task, model = Regression(), _mlp()
    opt = torch.optim.RMSprop(model.parameters(), lr=0.01, alpha=0.99, eps=1e-8)
    for _ in range(2):
        opt.zero_grad()
        task.loss("model", model, (task.x, task.y)).backward()
        opt.step()
    pre = adam_preconditioner(opt, list(model.parameters()))
    assert all(torch.allclose(d, opt.state[p]["square_avg"].sqrt() + 1e-8) for d, p in zip(pre, model.parameters()))
    ctx, _ = _ctx(task, model, opt, 0.01, 48)
    out = PrecondSharpness(every=1, batch=48, iters=5).measure(ctx)
    assert out["precond_sharpness_limit"] == pytest.approx(2 / 0.01) and out["precond_sharpness"] > 0
    assert "adaptive_step_p50" in AdaptiveStep(every=1).measure(ctx)


def test_a_probe_batch_larger_than_the_data_is_named():
    task = Regression(n=40)
    model = _mlp()
    ctx = ProbeContext(step=0, task=task, models={"model": model}, optimizers={"model": torch.optim.SGD(model.parameters(), lr=0.1)},
                       lrs={"model": 0.1}, measure_batch=None)
    task.train_size = lambda: 40
    with pytest.raises(ConfigError, match=r"diagnostics\.noise_scale\.batch=64 is not allowed: at most the training set size 40"):
        NoiseScale(every=1, batch=64, parts=8).estimates(ctx, "model")
