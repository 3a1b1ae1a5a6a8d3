"""bench.optim.GIAdam: torch.optim.Adam step for step with zero init, GI-Adam's first step by hand, the
bias-correction switch, state under torch's names that round-trips, one-line refusals of bad values,
and a CLI run on digits that trains and resumes from its checkpoint byte for byte."""

import io
import json
import math
import signal
import subprocess
import sys

import pytest
import torch
from hydra import compose, initialize_config_dir
from torch import nn

from bench.errors import ConfigError
from bench.optim import GIAdam, preconditioner, v_hat_is_corrected
from bench.plan import check_optimizer, validate
from conftest import ROOT, bench_env, metrics, run_bench

B1, B2, EPS = 0.9, 0.999, 1e-8


def small_model(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Linear(8, 3))


def train(model: nn.Module, opt: torch.optim.Optimizer, steps: int, seed: int = 1) -> None:
    """``steps`` updates on fixed random regression batches, the LR changed every step (a warm-up)."""
    gen = torch.Generator().manual_seed(seed)
    base = opt.param_groups[0]["lr"]
    for s in range(steps):
        x, y = torch.randn(16, 5, generator=gen), torch.randn(16, 3, generator=gen)
        for g in opt.param_groups:
            g["lr"] = base * min(1.0, (s + 1) / 5)
        opt.zero_grad()
        nn.functional.mse_loss(model(x), y).backward()
        opt.step()


@pytest.mark.parametrize("kwargs", [{}, {"weight_decay": 0.05}, {"weight_decay": 0.05, "decoupled_weight_decay": True}],
                         ids=["plain", "l2", "decoupled"])
def test_zero_init_with_correction_is_torch_adam_step_for_step(kwargs):
    a, b = small_model(), small_model()
    ref = torch.optim.Adam(a.parameters(), lr=3e-3, betas=(B1, B2), eps=EPS, **kwargs)
    ours = GIAdam(b.parameters(), lr=3e-3, betas=(B1, B2), eps=EPS, second_moment_init="zero", bias_correction=True, **kwargs)
    train(a, ref, 25)
    train(b, ours, 25)
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        assert torch.equal(pa, pb)  # bit for bit on the CPU
        sa, sb = ref.state[pa], ours.state[pb]
        assert torch.equal(sa["exp_avg"], sb["exp_avg"]) and torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"])
        assert sa["step"].item() == sb["step"].item() == 25 and sb["step"].dtype == sa["step"].dtype


def _one_param(g: torch.Tensor, **kwargs):
    p = nn.Parameter(torch.tensor([0.5, -1.0, 2.0, 0.0]))
    opt = GIAdam([p], lr=0.01, betas=(B1, B2), eps=EPS, **kwargs)
    p.grad = g.clone()
    before = p.detach().clone()
    opt.step()
    return p.detach(), before, opt.state[p], opt


def test_gi_adam_first_step_by_hand():
    """v_1 = beta2 g^2 + (1 - beta2) g^2 = g^2 exactly; m_1 = (1 - beta1) g; update lr m_hat / (sqrt(v) + eps)
    with m_hat = m / (1 - beta1) and v not divided by 1 - beta2."""
    g = torch.tensor([0.3, -2.0, 1e-3, 0.0])
    after, before, state, _ = _one_param(g, second_moment_init="grad_sq")
    assert torch.equal(state["exp_avg_sq"], g * g)
    assert torch.equal(state["exp_avg"], torch.zeros(4).lerp_(g, 1 - B1))
    m_hat = state["exp_avg"] / (1 - B1)
    assert torch.allclose(after, before - 0.01 * m_hat / (g.abs() + EPS), rtol=0, atol=1e-7)
    assert torch.allclose(after[:3], before[:3] - 0.01 * g[:3].sign(), atol=1e-6)  # |m_hat| = |g|: a step of lr
    assert after[3] == before[3]  # a zero gradient moves nothing


def test_bias_correction_switch_on_the_first_step():
    g = torch.tensor([0.3, -2.0, 1e-3, 1.0])
    after, before, state, _ = _one_param(g, second_moment_init="grad_sq", bias_correction=False)
    assert torch.allclose(after, before - 0.01 * (1 - B1) * g / (g.abs() + EPS), atol=1e-7)  # m_hat = m
    after, before, state, _ = _one_param(g, second_moment_init="zero", bias_correction=False)
    v = (1 - B2) * g * g
    assert torch.allclose(state["exp_avg_sq"], v, rtol=1e-6)
    assert torch.allclose(after, before - 0.01 * (1 - B1) * g / (v.sqrt() + EPS), atol=1e-6)  # ~3.16 x lr per coordinate


def test_gi_adam_second_step_by_hand():
    p = nn.Parameter(torch.zeros(3))
    opt = GIAdam([p], lr=0.1, betas=(B1, B2), eps=EPS)
    g0, g1 = torch.tensor([1.0, -0.5, 2.0]), torch.tensor([0.2, 0.4, -1.0])
    for g in (g0, g1):
        p.grad = g.clone()
        opt.step()
    m = (1 - B1) * (B1 * g0 + g1)
    v = B2 * g0**2 + (1 - B2) * g1**2  # not divided by 1 - beta2^2
    first = -0.1 * g0 / (g0.abs() + EPS)
    expected = first - 0.1 * (m / (1 - B1**2)) / (v.sqrt() + EPS)
    assert torch.allclose(p.detach(), expected, atol=1e-6)
    assert torch.allclose(opt.state[p]["exp_avg_sq"], v, rtol=1e-6)


def test_state_round_trips_and_names_its_convention():
    a, b = small_model(), small_model()
    oa = GIAdam(a.parameters(), lr=1e-2)
    train(a, oa, 3)
    b.load_state_dict(a.state_dict())
    ob = GIAdam(b.parameters(), lr=1e-2, second_moment_init="zero", bias_correction=False)  # overwritten by the load
    buf = io.BytesIO()
    torch.save(oa.state_dict(), buf)  # through bytes, as a checkpoint goes, and loaded as the harness loads it
    buf.seek(0)
    ob.load_state_dict(torch.load(buf, weights_only=True))
    g = ob.param_groups[0]
    assert g["second_moment_init"] == "grad_sq" and g["bias_correction"] is True and not v_hat_is_corrected(g)
    train(a, oa, 4, seed=5)
    train(b, ob, 4, seed=5)
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters(), strict=True))
    assert set(ob.state[next(b.parameters())]) == {"step", "exp_avg", "exp_avg_sq"}


def test_preconditioner_reads_torch_adam_and_gi_adam():
    a, b = small_model(), small_model()
    ta, gb = torch.optim.Adam(a.parameters(), lr=1e-2), GIAdam(b.parameters(), lr=1e-2)
    train(a, ta, 3)
    train(b, gb, 3)
    pa, pb = next(a.parameters()), next(b.parameters())
    sa, sb = ta.state[pa], gb.state[pb]
    assert v_hat_is_corrected(ta.param_groups[0]) and not v_hat_is_corrected(gb.param_groups[0])
    assert torch.allclose(preconditioner(ta.param_groups[0], sa), (sa["exp_avg_sq"] / (1 - 0.999**3)).sqrt() + 1e-8, rtol=1e-6)
    assert torch.equal(preconditioner(gb.param_groups[0], sb), sb["exp_avg_sq"].sqrt() + 1e-8)


def _optimizer_node(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def test_shipped_config_is_gi_adam_and_validates():
    cfg = _optimizer_node("optimizer=gi_adam")
    validate(cfg)
    assert cfg.optimizer._target_ == "bench.optim.GIAdam" and cfg.optimizer.second_moment_init == "grad_sq" and cfg.optimizer.bias_correction is True


@pytest.mark.parametrize("overrides,needle", [
    (["optimizer.betas=[0.9,1.0]"], "betas[1]=1.0 is not allowed: a number in [0, 1)"),
    (["optimizer.betas=[-0.1,0.999]"], "betas[0]=-0.1 is not allowed"),
    (["optimizer.betas=[0.9]"], "betas=[0.9] is not allowed: two numbers"),
    (["optimizer.eps=-1e-8"], "eps=-1e-08 is not allowed: a number >= 0"),
    (["optimizer.weight_decay=-0.1"], "weight_decay=-0.1 is not allowed"),
    (["optimizer.second_moment_init=ones"], "second_moment_init='ones' is not allowed: one of zero, grad_sq"),
    (["optimizer.bias_correction=maybe"], "bias_correction='maybe' is not allowed: true or false"),
])
def test_bad_values_are_refused_with_one_line(overrides, needle):
    cfg = _optimizer_node("optimizer=gi_adam", *overrides)
    with pytest.raises(ConfigError) as err:
        check_optimizer(cfg.optimizer)
    msg = str(err.value)
    assert msg.startswith("optimizer (bench.optim.GIAdam) refused its arguments: ValueError: ") and needle in msg and "\n" not in msg, msg


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "radam"])
def test_torch_optimizers_refuse_bias_correction(optimizer):
    cfg = _optimizer_node(f"optimizer={optimizer}", "+optimizer.bias_correction=false")
    with pytest.raises(ConfigError, match="unexpected keyword argument 'bias_correction'") as err:
        check_optimizer(cfg.optimizer)
    assert "\n" not in str(err.value)


@pytest.mark.slow
def test_cli_gi_adam_on_digits_trains_and_resumes(tmp_path):
    """A digits run with optimizer=gi_adam lowers its loss; the same run killed after publishing its rows
    (checkpoint of step 40) resumes from the checkpoint, GI-Adam's state included, and ends with the same
    metrics.jsonl byte for byte."""
    args = ["optimizer=gi_adam", "optimizer.lr=0.002", "train.steps=60", "train.log_every=1", "train.eval_every=30",
            "train.checkpoint_every=20", "hardware.threads=1"]
    ref = tmp_path / "ref"
    p = run_bench(*args, f"hydra.run.dir={ref}")
    assert p.returncode == 0, p.stderr[-3000:]
    rows = [r for r in metrics(ref) if r["kind"] == "train"]
    assert rows[-1]["train_loss"] < 0.5 * rows[0]["train_loss"] and rows[0]["train_loss"] == pytest.approx(math.log(10), rel=0.1)
    run = tmp_path / "run"
    p = subprocess.run([sys.executable, "-m", "bench", *args, f"hydra.run.dir={run}"], cwd=ROOT,
                       env={**bench_env(), "BENCH_TEST_KILL_AT": "metrics"}, capture_output=True, text=True, timeout=600)
    assert p.returncode == -signal.SIGKILL, p.stderr[-3000:]
    assert (run / "checkpoint.pt").exists()
    p = run_bench(*args, f"hydra.run.dir={run}")
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads((run / "result.json").read_text())
    assert r["status"] == "completed" and r["resumed_from"] == 40
    assert (run / "metrics.jsonl").read_bytes() == (ref / "metrics.jsonl").read_bytes()
    assert r["config"]["optimizer"]["second_moment_init"] == "grad_sq"
