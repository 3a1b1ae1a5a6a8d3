"""Fashion-MNIST: the IDX readers on files the tests write, the split, ghost BatchNorm, zero-init and
weight-decay groups, bad input, and (where Debian's files are installed) the real data and a default run."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from bench.errors import ConfigError
from conftest import ROOT, load_script, run_bench
from tasks import fashion
from tasks.base import decay_groups

_fake = load_script("vision_fake")
DEBIAN = Path(fashion.DEBIAN_ROOT)
HAVE_DEBIAN = all((DEBIAN / f"{stem}.gz").is_file() for stem in fashion.FILES.values())


def _cfg(**over):
    cfg = OmegaConf.load(ROOT / "conf" / "task" / "fashion_mnist.yaml")
    cfg.pop("defaults")
    cfg.merge_with(over)
    return cfg


@pytest.fixture(scope="module")
def fake(tmp_path_factory) -> Path:
    return _fake.write_fashion(tmp_path_factory.mktemp("fashion"), n_train=300, n_test=60)


@pytest.mark.parametrize("gz", [True, False])
def test_idx_round_trip(tmp_path, gz):
    a = np.arange(2 * 28 * 28, dtype=np.uint8).reshape(2, 28, 28)
    path = _fake.write_idx(tmp_path / "x-idx3-ubyte", a, gz=gz)
    assert fashion.idx_header(path) == (2, 28, 28)
    back, sha = fashion.read_idx(path)
    assert np.array_equal(back, a) and len(sha) == 64


def test_corrupt_files_are_refused_in_one_line(tmp_path):
    bad_magic = tmp_path / "bad-idx3-ubyte"
    bad_magic.write_bytes(b"\x00\x00\x0d\x03" + b"\x00" * 12)  # float data, not unsigned bytes
    with pytest.raises(ConfigError, match="not an IDX file of unsigned bytes"):
        fashion.read_idx(bad_magic)
    short = _fake.write_idx(tmp_path / "s-idx3-ubyte", np.zeros((3, 28, 28), np.uint8), gz=False)
    short.write_bytes(short.read_bytes()[:-5])
    with pytest.raises(ConfigError, match="announces 3x28x28 = 2352 bytes of data but the file holds 2347"):
        fashion.read_idx(short)
    not_gz = tmp_path / "n-idx3-ubyte.gz"
    not_gz.write_bytes(b"plain bytes")
    with pytest.raises(ConfigError, match="cannot be read as an IDX file"):
        fashion.read_idx(not_gz)


def test_missing_files_name_all_four_and_where(tmp_path):
    with pytest.raises(ConfigError) as e:
        fashion.find_files(str(tmp_path))
    msg = str(e.value)
    assert "\n" not in msg and "apt-get install dataset-fashion-mnist" in msg
    assert all(stem in msg for stem in fashion.FILES.values())


def test_search_order(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_DATA", str(tmp_path))
    assert fashion.candidate_roots(None) == [tmp_path / "fashion-mnist", tmp_path, DEBIAN]
    assert fashion.candidate_roots("/x") == [Path("/x")]  # task.data_root alone when set
    _fake.write_fashion(tmp_path, n_train=20, n_test=10, gz=False)
    assert fashion.find_files(None)["train_images"] == tmp_path / "train-images-idx3-ubyte"
    _fake.write_fashion(tmp_path / "fashion-mnist", n_train=20, n_test=10)  # the sub-folder comes first
    assert fashion.find_files(None)["test_labels"] == tmp_path / "fashion-mnist" / "t10k-labels-idx1-ubyte.gz"


def test_split_is_stratified_fixed_and_recorded(fake):
    t = fashion.FashionTask(_cfg(data_root=str(fake), val_size=50), seed=0, device=torch.device("cpu"))
    assert (len(t.x_train), len(t.x_val), len(t.x_test)) == (250, 50, 60)
    assert torch.bincount(t.y_val, minlength=10).tolist() == [5] * 10
    again = fashion.FashionTask(_cfg(data_root=str(fake), val_size=50), seed=7, device=torch.device("cpu"))
    assert torch.equal(t.x_val, again.x_val)  # the run's seed never moves the split
    assert fashion.FashionTask.static_train_size(_cfg(data_root=str(fake), val_size=50)) == 250
    info = t.extra_record()
    assert info["train_examples"] == 250 and info["official_data"] is False
    raw = gzip.open(fake / "train-labels-idx1-ubyte.gz").read()
    import hashlib
    assert info["sha256"]["train_labels"] == hashlib.sha256(raw).hexdigest()


def test_ghost_batchnorm_normalises_each_group():
    torch.manual_seed(0)
    x = torch.randn(70, 6) * 3 + 1
    ghost = fashion.GhostBatchNorm1d(6, ghost_size=32)
    ref = [torch.nn.BatchNorm1d(6) for _ in range(3)]
    y = ghost(x)
    parts = [ref[0](x[:32]), ref[1](x[32:64]), ref[2](x[64:])]  # two full groups and the remainder of 6
    assert torch.allclose(y, torch.cat(parts), atol=1e-5)
    # running statistics: the mean of the groups' statistics (full groups, then the remainder's update)
    two = fashion.GhostBatchNorm1d(6, ghost_size=32)
    two(x[:64])
    assert torch.allclose(two.running_mean, (ref[0].running_mean + ref[1].running_mean) / 2, atol=1e-6)
    assert torch.allclose(two.running_var, (ref[0].running_var + ref[1].running_var) / 2, atol=1e-6)
    small = fashion.GhostBatchNorm2d(4, ghost_size=32)  # a batch no larger than a group is one group
    z = torch.randn(16, 4, 5, 5)
    assert torch.allclose(small(z), torch.nn.BatchNorm2d(4)(z), atol=1e-5)
    ghost.eval()
    assert torch.allclose(ghost(x), torch.nn.functional.batch_norm(x, ghost.running_mean, ghost.running_var, ghost.weight, ghost.bias, False, 0, ghost.eps))


def test_ghost_groups_do_not_depend_on_the_batch():
    """Per-example outputs of a group are the same whether the group is alone or inside a bigger batch."""
    torch.manual_seed(1)
    x = torch.randn(128, 3, 4, 4)
    bn = fashion.GhostBatchNorm2d(3, ghost_size=32)
    assert torch.allclose(bn(x)[32:64], bn(x[32:64]), atol=1e-5)


@pytest.mark.parametrize("norm", ["batch", "ghost", "none"])
def test_resnet_blocks_start_as_identity(norm):
    m = fashion.SmallResNet([8, 16], 2, norm, 32, zero_init_last=True)
    for block in m.stages:
        last = block.conv2[-1]
        assert torch.count_nonzero(last.weight) == 0
    x = torch.randn(4, 8, 14, 14).relu()
    first = m.stages[0]
    first.eval()
    assert torch.allclose(first(x), x)  # identity shortcut + zero branch, then ReLU of a non-negative input
    assert m(torch.randn(4, 1, 28, 28)).shape == (4, 10)


def test_weight_decay_skips_norm_and_bias(fake):
    t = fashion.FashionTask(_cfg(data_root=str(fake), val_size=50, model="resnet", norm="batch"), seed=0, device=torch.device("cpu"))
    groups = t.optimizer_params("model", t.model)
    assert [g.get("weight_decay") for g in groups] == [None, 0.0]
    assert all(p.ndim >= 2 for p in groups[0]["params"]) and all(p.ndim == 1 for p in groups[1]["params"])
    assert len(groups[0]["params"]) + len(groups[1]["params"]) == len(list(t.model.parameters()))
    bns = [m for m in t.model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert {id(m.weight) for m in bns} <= {id(p) for p in groups[1]["params"]}
    opt = torch.optim.SGD(decay_groups(t.model), lr=0.1, weight_decay=5e-4)
    assert [g["weight_decay"] for g in opt.param_groups] == [5e-4, 0.0]
    every = fashion.FashionTask(_cfg(data_root=str(fake), val_size=50, decay_norm_bias=True), seed=0, device=torch.device("cpu"))
    assert len(list(every.optimizer_params("model", every.model))) == len(list(every.model.parameters()))


def test_cli_trains_on_written_files_and_weight_decay_reaches_the_optimizer(fake, tmp_path):
    p = run_bench("task=fashion_mnist", f"task.data_root={fake}", "task.val_size=50", "task.norm=ghost", "task.ghost_size=8",
                  "batch.size=25", "train.steps=40", "optimizer.weight_decay=0.01", "train.save_final=true",
                  "hardware.threads=1", f"hydra.run.dir={tmp_path}")
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads((tmp_path / "result.json").read_text())
    assert r["status"] == "completed" and r["task_info"]["val_examples"] == 50
    assert r["final"]["val_acc"] > 0.5 and r["test"]["test_acc"] > 0.5  # the bands are easy to learn
    state = torch.load(tmp_path / "final.pt", weights_only=True)
    groups = state["optimizers"]["model"]["param_groups"]
    assert [g["weight_decay"] for g in groups] == [0.01, 0.0]


@pytest.mark.parametrize("override, message", [
    ("task.norm=layer", "task.norm='layer' is not allowed"),
    ("task.model=vit", "task.model='vit' is not allowed"),
    ("task.ghost_size=1", "task.ghost_size=1 is not allowed"),
    ("task.widths=[]", "task.widths=[] is not allowed"),
    ("task.val_size=300", "task.val_size=300 is not allowed"),
])
def test_bad_values_are_refused(fake, tmp_path, override, message):
    p = run_bench("task=fashion_mnist", f"task.data_root={fake}", override, f"hydra.run.dir={tmp_path}")
    assert p.returncode == 2 and message in p.stderr, p.stderr[-2000:]
    assert len([l for l in p.stderr.splitlines() if l.strip()]) == 1
    assert not (tmp_path / "result.json").exists()


def test_missing_data_is_one_line(tmp_path):
    p = run_bench("task=fashion_mnist", f"task.data_root={tmp_path / 'nowhere'}", f"hydra.run.dir={tmp_path / 'run'}")
    assert p.returncode == 2 and "Fashion-MNIST not found" in p.stderr and "t10k-labels-idx1-ubyte" in p.stderr
    assert not (tmp_path / "run" / "result.json").exists()


@pytest.mark.skipif(not HAVE_DEBIAN, reason="Debian's dataset-fashion-mnist is not installed (scripts/setup.sh installs it as root)")
def test_debian_files_are_the_official_data():
    files = fashion.find_files(None)
    arrays, sums = fashion.load_fashion(files)
    assert arrays["train_images"].shape == (60000, 28, 28) and arrays["test_images"].shape == (10000, 28, 28)
    assert np.bincount(arrays["train_labels"]).tolist() == [6000] * 10
    assert sums == fashion.OFFICIAL_SHA256


@pytest.mark.slow
@pytest.mark.skipif(not HAVE_DEBIAN, reason="Debian's dataset-fashion-mnist is not installed (scripts/setup.sh installs it as root)")
def test_default_run_learns_the_real_data(tmp_path):
    """`python -m bench task=fashion_mnist` with its own defaults (MLP, 10 epochs): > 85 % test accuracy."""
    p = run_bench("task=fashion_mnist", "hardware.threads=1", f"hydra.run.dir={tmp_path}")
    assert p.returncode == 0, p.stderr[-2000:]
    r = json.loads((tmp_path / "result.json").read_text())
    assert r["status"] == "completed" and r["test"]["test_acc"] > 0.85, r["test"]
    assert r["task_info"]["official_data"] is True and r["task_info"]["train_examples"] == 55000


@pytest.mark.parametrize("preset,jobs", [("goyal_fashion", 75), ("lr_batch_fashion", 72), ("warmup_mechanism", 90)])
def test_fashion_presets_compose_and_count_their_jobs(tmp_path, preset, jobs):
    from hydra import compose, initialize_config_dir

    from bench.app import CONF_DIR
    from bench.callbacks import planned_jobs

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"experiment={preset}"], return_hydra_config=True)
        assert cfg.task.name == "fashion_mnist" and "joblib" in cfg.hydra.launcher._target_
        mr = tmp_path / "multirun.yaml"
        OmegaConf.save(OmegaConf.create({"hydra": {"sweeper": {"params": OmegaConf.to_container(cfg.hydra.sweeper.params)}, "overrides": {"task": []}}}), mr)
        assert planned_jobs(mr) == jobs
        if preset == "goyal_fashion":  # Goyal's constant and gradual warm-ups start at eta0 = 1/k of the peak
            k32 = compose("config", overrides=[f"experiment={preset}", "batch.size=1024"])
            assert k32.warmup.start_factor == pytest.approx(1 / 32) and k32.batch.base_size == 32
        elif preset == "warmup_mechanism":
            assert {"sharpness", "precond_sharpness", "adaptive_step"} <= set(cfg.diagnostics) and cfg.task.norm == "none"
            assert cfg.train.diverge_factor is None  # a catapult (transient spike) is not a failure here
        else:  # lr = lr_ref[optimizer] x lr_centre[batch] x lr_mult
            c = compose("config", overrides=[f"experiment={preset}", "optimizer=adam", "batch.size=64", "lr_mult=0.5", "lr_centre={16:1,32:1,64:4,128:1,256:1,512:1,1024:1,2048:1}"], return_hydra_config=True)
            from hydra.core.hydra_config import HydraConfig

            saved = HydraConfig.instance().cfg
            HydraConfig.instance().set_config(c)  # ${hydra:runtime.choices.optimizer} needs the Hydra config
            try:
                assert c.optimizer.lr == pytest.approx(0.002 * 4 * 0.5)
            finally:  # global state: later tests (W&B's sweep group) read whether a Hydra job is running
                HydraConfig.instance().cfg = saved
