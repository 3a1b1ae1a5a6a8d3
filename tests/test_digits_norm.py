"""The digits CNN's ``task.norm`` (none: the network of every earlier study; batch: BatchNorm before each
ReLU), and the goyal_warmup preset that compares them: its two parts and their job counts."""

import json
import re

import pytest
import torch
from omegaconf import OmegaConf
from torch import nn

from bench.callbacks import planned_jobs
from conftest import ROOT, metrics
from tasks.digits import DigitsCNN

# conv1 32x1x3x3 + 32, conv2 64x32x3x3 + 64, fc1 (64*4*4)x128 + 128, fc2 128x10 + 10
NONE_PARAMS = (288 + 32) + (18432 + 64) + (131072 + 128) + (1280 + 10)
# the same without the three biases before a BatchNorm (32 + 64 + 128), plus weight and shift per BatchNorm channel
BATCH_PARAMS = NONE_PARAMS - (32 + 64 + 128) + 2 * (32 + 64 + 128)


def _params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def test_norm_none_is_the_network_of_the_earlier_studies():
    model = DigitsCNN((32, 64), 128)
    assert _params(model) == NONE_PARAMS == 151_306
    assert [n for n, _ in model.named_modules()] == ["", "conv1", "conv2", "fc1", "fc2"]
    assert list(model.state_dict()) == [f"{m}.{p}" for m in ("conv1", "conv2", "fc1", "fc2") for p in ("weight", "bias")]


def test_norm_batch_puts_batchnorm_before_each_relu_without_the_bias_before_it():
    model = DigitsCNN((32, 64), 128, batch_norm=True)
    assert _params(model) == BATCH_PARAMS == 151_530
    assert [type(m).__name__ for m in model.norms] == ["BatchNorm2d", "BatchNorm2d", "BatchNorm1d"]
    assert model.conv1.bias is None and model.conv2.bias is None and model.fc1.bias is None and model.fc2.bias is not None
    seen = {}
    model.norms[2].register_forward_hook(lambda module, args, out: seen.update(out=out))
    h = model.features(torch.rand(8, 1, 8, 8))
    assert h.shape == (8, 128) and torch.equal(h, torch.relu(seen["out"]))  # the ReLU comes after fc1's BatchNorm
    assert seen["out"].mean(0).abs().max() < 1e-5  # train mode: each unit normalised over the batch (initial shift 0)
    assert model.norms[0].num_batches_tracked.item() == 1  # and the running statistics updated


def test_norm_batch_trains_and_records_its_norm(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    from bench import run

    r = run(["task.norm=batch", "train.steps=30", "train.eval_every=30", "train.log_every=1", "hardware.threads=1"], output_dir=tmp_path)
    assert r["status"] == "completed" and r["steps"] == 30
    assert r["task_info"]["norm"] == "batch" and r["task_info"]["parameters"] == BATCH_PARAMS
    losses = [row["train_loss"] for row in metrics(tmp_path) if row["kind"] == "train"]
    assert losses[-1] < 0.5 * losses[0]  # momentum SGD at 0.1, 64 images per step: 2.3-2.5 -> 0.02-0.05 over seeds 0-2
    assert r["final"]["val_acc"] > 0.8  # chance is 0.1; seen 0.955-0.989 over seeds 0-2
    from hydra.core.hydra_config import HydraConfig

    assert not HydraConfig.initialized()  # bench.run leaves no Hydra job behind in the caller's process


def test_bad_norm_is_refused_naming_the_allowed_values():
    from bench.errors import ConfigError
    from tasks.digits import DigitsTask

    cfg = OmegaConf.create({"val_fraction": 0.2, "test_fraction": 0.2, "split_seed": 0, "channels": [32, 64], "hidden": 128, "norm": "layer"})
    with pytest.raises(ConfigError) as err:
        DigitsTask.check_config(cfg)
    assert str(err.value).startswith("task.norm='layer' is not allowed: one of none, batch")


# ---------------------------------------------------------------- the goyal_warmup study's two parts


def _study_parts() -> list[list[str]]:
    """The key=value overrides of each `python -m bench -m` line of scripts/study_goyal_warmup.sh (shell variables dropped)."""
    text = (ROOT / "scripts" / "study_goyal_warmup.sh").read_text()
    lines = [ln for ln in text.splitlines() if re.match(r'^"\$PY" -m bench -m ', ln)]
    return [[t for t in ln.split()[4:] if "=" in t and "$" not in t and not t.startswith('"')] for ln in lines]


def _jobs(tmp_path, overrides: list[str]) -> int:
    """Jobs of `-m` with the goyal_warmup preset's grid and ``overrides`` (the command line wins for a key in both)."""
    from hydra import compose, initialize_config_dir

    from bench.app import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=["experiment=goyal_warmup"], return_hydra_config=True)  # the preset's grid
    mr = tmp_path / "multirun.yaml"
    params = OmegaConf.to_container(cfg.hydra.sweeper.params)
    OmegaConf.save(OmegaConf.create({"hydra": {"sweeper": {"params": params}, "overrides": {"task": overrides}}}), mr)
    return planned_jobs(mr)


def test_study_script_runs_the_two_parts_the_preset_describes(tmp_path):
    parts = _study_parts()
    assert parts == [
        ["experiment=goyal_warmup", "report=false"],
        ["experiment=goyal_warmup", "warmup=none", "warmup.steps=null", "batch.size=16,64,256", "report=false"],
    ]
    # part 1: batch 64, 256 x norm 2 x warm-up length 3 x 5 seeds; part 2: batch 3 x norm 2 x 5 seeds, one length (none has none)
    assert [_jobs(tmp_path, p) for p in parts] == [60, 30]
    header = (ROOT / "conf" / "experiment" / "goyal_warmup.yaml").read_text()
    assert "= 60 jobs" in header and "= 30 jobs" in header and "90 jobs in all" in header
    for part in parts:  # the commands in the preset's header are the script's
        assert " ".join(p for p in part if p != "report=false") in header
