"""Every task brings its own defaults: `task=X` alone picks X's optimizer, LR, batch, budget and eval
cadence (its defaults list), a command-line choice still wins, and each task trains with them."""

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from conftest import ROOT, load_script, run_bench

_fake = load_script("vision_fake")  # scripts/vision_fake.py: tiny stand-in data in the real formats
write_cifar, write_imagefolder, write_fashion = _fake.write_cifar, _fake.write_imagefolder, _fake.write_fashion

TASKS = sorted(p.stem for p in (ROOT / "conf" / "task").glob("*.yaml"))


def _compose(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


@pytest.mark.parametrize("task, optimizer, lr, batch", [
    ("digits", "sgd", 0.1, 64), ("gan_ring", "adam_gan", 0.002, 64), ("dcgan_digits", "adam_gan", 0.002, 64),
    ("lm_preln", "adamw", 0.001, 32), ("bert_mlm", "adamw", 0.001, 32), ("cifar10_resnet", "sgd", 0.1, 128),
    ("cifar10_vit", "adamw", 0.001, 128), ("imagenet_resnet50", "sgd", 0.1, 256), ("fashion_mnist", "sgd", 0.1, 128),
    ("nqm", "sgd", 0.1, 16),
])
def test_task_alone_picks_its_optimizer_and_batch(task, optimizer, lr, batch):
    cfg = _compose(f"task={task}")
    assert cfg.hydra.runtime.choices.optimizer == optimizer and cfg.optimizer.lr == lr and cfg.batch.size == batch


def test_command_line_optimizer_wins_and_nothing_leaks():
    cfg = _compose("task=gan_ring", "optimizer=sgd")
    assert cfg.optimizer._target_ == "torch.optim.SGD" and "betas" not in cfg.optimizer and cfg.optimizer.lr == 0.1
    gan = _compose("task=gan_ring").optimizer
    assert list(gan.betas) == [0.5, 0.999] and gan._target_ == "torch.optim.Adam"
    lm = _compose("task=lm_postln", "optimizer=radam", "train.steps=50", "batch.size=8")
    assert lm.optimizer._target_ == "torch.optim.RAdam" and lm.train.steps == 50 and lm.batch.size == 8


def test_presets_keep_their_own_choices():
    """A preset's `override /optimizer` wins over its task's (the preset is read first)."""
    assert _compose("experiment=gan_warmup").hydra.runtime.choices.optimizer == "adam"
    tw = _compose("experiment=transformer_warmup")
    assert tw.hydra.runtime.choices.optimizer == "adam" and tw.batch.size == 16 and tw.train.steps == 1000 and tw.hydra.runtime.choices.decay == "linear"
    assert _compose("experiment=goyal_cifar").train.eval_every == 351  # once per epoch of the 45,000 training images


# Short budgets; vision models shrunk (as in test_vision_cli) but trained at their default batch and LR on fake data.
SHORT = {"gan_": ["train.steps=200"], "dcgan_": ["train.steps=100"], "lm_": ["train.steps=30"], "gpt2_": ["train.steps=20"], "bert_": ["train.steps=20"],
         "digits": ["train.steps=60"], "fashion": ["train.steps=60"], "cifar": ["train.steps=3"], "imagenet": ["train.steps=2"],
         "nqm": ["train.steps=200"]}
TINY = {
    "cifar10_resnet": ["+task.model_kwargs.channels=[8,16,32,64]"],
    "cifar100_resnet": ["+task.model_kwargs.channels=[8,16,32,64]"],
    "cifar10_vit": ["+task.model_kwargs.embed_dim=32", "+task.model_kwargs.depth=2", "+task.model_kwargs.num_heads=2"],
    "imagenet_resnet50": ["+task.model_kwargs.channels=[8,16,32,64]", "+task.model_kwargs.stem_width=8", "task.image_size=32", "task.val_resize=36", "task.workers=0"],
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    r = tmp_path_factory.mktemp("data")
    write_cifar(r, "cifar10", n_train=256 + 16, n_test=16)  # two batches of the default 128 after 16 held out for validation
    write_cifar(r, "cifar100", n_train=256 + 16, n_test=16)
    write_imagefolder(r / "imagenet", classes=2, train_per_class=130, val_per_class=2, size=36)  # one batch of 256 after 4 held out
    write_fashion(r / "fashion", n_train=256 + 20, n_test=20)  # two batches of the default 128 after 20 held out
    return r


@pytest.mark.slow
@pytest.mark.parametrize("task", TASKS)
def test_every_task_trains_with_its_defaults(task, data, tmp_path, monkeypatch):
    budget = next(v for k, v in SHORT.items() if task.startswith(k))
    extra = list(TINY.get(task, []))
    if task.startswith(("cifar", "imagenet")):
        extra.append(f"task.data_root={data / 'imagenet' if task.startswith('imagenet') else data}")
        extra.append(f"task.val_size={4 if task.startswith('imagenet') else 16}")  # the stand-in sets are far smaller than the defaults assume
    if task == "fashion_mnist":
        extra += [f"task.data_root={data / 'fashion'}", "task.val_size=20"]
    if task == "dcgan_digits":
        monkeypatch.setenv("BENCH_CACHE", str(tmp_path))  # the classifier trains into this test's own cache root
        extra.append("task.classifier.cache_dir=cache")
    p = run_bench(f"task={task}", *budget, *extra, "hardware.threads=1", f"hydra.run.dir={tmp_path / 'run'}")
    assert p.returncode == 0, p.stderr[-3000:]
    r = json.loads((tmp_path / "run" / "result.json").read_text())
    assert r["status"] not in ("diverged", "failed"), (r["status"], r.get("diverged_reason"))
    assert r["choices"]["task"] == task and r["final"], r
