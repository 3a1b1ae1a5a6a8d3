"""Every bad input is refused at start-up: one `error:` line naming key and value, exit 2, no record."""

import pytest

from conftest import run_bench

pytestmark = pytest.mark.slow

CASES = [
    (["optimizer.lr=-1"], "optimizer.lr=-1"),
    (["optimizer.lr=0"], "optimizer.lr=0"),
    (["optimizer.lr=fast"], "optimizer.lr='fast'"),
    (["batch.size=0"], "batch.size=0"),
    (["batch.size=64", "batch.micro_size=48"], "batch.micro_size=48"),
    (["batch.scaling=cubic"], "batch.scaling='cubic'"),
    (["warmup=linear", "warmup.steps=5000", "train.epochs=null", "train.steps=100"], "longer than the training budget of 100 steps"),
    (["train.epochs=null", "train.steps=0"], "train.steps=0"),
    (["train.epochs=-2"], "train.epochs=-2"),
    (["train.epochs=3", "train.steps=100"], "set at most one"),
    (["warmup=linear", "warmup.steps=10", "warmup.fraction=0.1"], "set at most one of warmup.steps"),
    (["warmup=untuned_linear", "optimizer=sgd"], "needs an optimizer with betas"),
    (["warmup=untuned_exponential", "optimizer=lars"], "needs an optimizer with betas"),
    (["warmup=linear", "warmup.start_factor=0"], "warmup.start_factor=0"),
    (["warmup=linear", "warmup.start_factor=1.5"], "warmup.start_factor=1.5"),
    (["warmup=constant", "warmup.start_factor=2"], "warmup.start_factor=2"),
    (["hardware=gpu"], "hardware.device='cuda'"),
    (["batch.size=5000"], "batch.size=5000"),
]


@pytest.mark.parametrize("overrides,needle", CASES, ids=[" ".join(c[0]) for c in CASES])
def test_refused_at_start_up(tmp_path, overrides, needle):
    p = run_bench(*overrides, f"hydra.run.dir={tmp_path}")
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), p.stderr
    assert needle in lines[0], lines[0]
    assert not (tmp_path / "result.json").exists()
    assert not (tmp_path / "metrics.jsonl").exists()


def test_unknown_group_option_lists_choices(tmp_path):
    p = run_bench("warmup=cosine", f"hydra.run.dir={tmp_path}")
    assert p.returncode != 0
    assert "Could not find 'warmup/cosine'" in p.stderr
    assert "linear" in p.stderr and "untuned_linear" in p.stderr  # Hydra lists the available options
