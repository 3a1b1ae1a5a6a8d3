"""The multirun pre-flight runs make_plan's checks for every grid point without building a task:
``bench.plan.check_plan`` fed by each task's data-free ``static_train_size`` / ``static_models``."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir

from bench.app import CONF_DIR
from bench.cluster import check_job
from bench.errors import ConfigError
from bench.plan import make_plan
from conftest import run_bench

ONE = "hardware.threads=1"
STEPS = ["train.epochs=null", "train.steps=100"]


def job_cfg(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True)


REFUSED = [
    (["warmup=linear", "warmup.steps=500", *STEPS], "warmup.steps=500 gives a warm-up of 500 steps, longer than the training budget of 100 steps"),
    # digits: 1797 images, val and test 0.2 each (stratified) -> 1079 train -> 16 steps per epoch at batch 64, 2 epochs = 32 steps
    (["warmup=linear", "warmup.epochs=3", "train.epochs=2"], "warmup.epochs=3 gives a warm-up of 48 steps, longer than the training budget of 32 steps"),
    (["warmup=linear", "warmup.fraction=0.001", *STEPS], "warmup.fraction=0.001 gives a warm-up of 0 steps"),
    (["batch.size=1080"], "batch.size=1080 is not allowed: at most the training set size 1079 of task digits"),
    (["optimizer.lr=1e308", "batch=linear", "batch.size=1024", "batch.base_size=1"], "optimizer.lr=1e+308 is not allowed"),
    (["task=gan_ring", "optimizer=adam", "warmup=linear", "warmup.steps=500", *STEPS], "longer than the training budget of 100 steps"),
    (["task=gan_ring", "task.epoch_samples=100", "batch.size=128"], "at most the training set size 100 of task gan_ring"),
    # pydoc at character level: 16 of 20 pieces, 372038 training characters -> (372038 - 1) // 64 = 5813 windows
    (["task=lm_postln", "batch.size=7000"], "at most the training set size 5813 of task lm_postln"),
    (["task=dcgan_digits", "task.val_fraction=0.5", "batch.size=900"], "at most the training set size 899 of task dcgan_digits"),
    (["task=nqm", "task.epoch_size=8"], "batch.size=16 is not allowed: at most the training set size 8 of task nqm"),
]


@pytest.mark.parametrize("overrides,needle", REFUSED, ids=[" ".join(c[0]) for c in REFUSED])
def test_preflight_runs_the_plan_checks(overrides, needle):
    with pytest.raises(ConfigError) as e:
        check_job(job_cfg(*overrides), cuda_available=False)
    assert needle in str(e.value)


ACCEPTED = [
    # the warm-up applies to no model of this GAN, so its length does not matter (as in make_plan)
    ["task=gan_ring", "optimizer=adam", "task.warmup_on=none", "warmup=linear", "warmup.steps=500", *STEPS],
    # a text corpus's size is known only from its tokens: the size checks wait for the job
    ["task=lm_postln", "task.tokenizer.kind=bpe", "task.tokenizer.vocab_size=300", "batch.size=100000"],
    ["warmup=none", "warmup.steps=500", *STEPS],  # a preset's length for the warm-ups it sweeps; none ignores it
]


@pytest.mark.parametrize("overrides", ACCEPTED, ids=[" ".join(c) for c in ACCEPTED])
def test_preflight_accepts_what_the_job_would_accept(overrides):
    check_job(job_cfg(*overrides), cuda_available=False)


def test_preflight_plan_checks_load_no_data(monkeypatch):
    import tasks.digits

    monkeypatch.setattr(tasks.digits, "load_digits_split", lambda *a: pytest.fail("data loaded by the pre-flight"))
    with pytest.raises(ConfigError, match="longer than the training budget"):
        check_job(job_cfg("warmup=linear", "warmup.steps=500", *STEPS), cuda_available=False)


@pytest.mark.parametrize("task,extra", [
    ("digits", ["task.val_fraction=0.3"]),
    ("gan_ring", ["task.samples_file=null", "task.epoch_samples=640"]),
    ("lm_preln", ["task.context_length=32", "task.width=16", "task.depth=1", "task.heads=2"]),
    ("nqm", ["task.epoch_size=1000"]),
])
def test_static_sizes_match_the_built_task(task, extra):
    """What the pre-flight assumes is what the job finds: static_train_size and static_models against the built task."""
    cfg = job_cfg(f"task={task}", "optimizer=adam", *extra)
    import hydra

    cls = hydra.utils.get_class(cfg.task._target_)
    built = cls(cfg.task, 0, torch.device("cpu"))
    assert cls.static_train_size(cfg.task) == built.train_size()
    specs = cls.static_models(cfg.task)
    assert list(specs) == list(built.models)
    for name, spec in specs.items():
        assert dict(spec.optimizer) == dict(built.optimizer_overrides(name)) and spec.warmup == built.warmup_applies_to(name)
    make_plan(cfg, built)  # the harness's own entry point still works


def test_gan_static_models_follow_warmup_on_and_lr_mult():
    cfg = job_cfg("task=gan_ring", "optimizer=adam", "optimizer.lr=0.001", "task.warmup_on=generator", "task.lr_mult.discriminator=4")
    import hydra

    specs = hydra.utils.get_class(cfg.task._target_).static_models(cfg.task)
    assert specs["discriminator"].optimizer == {"lr": pytest.approx(0.004)} and not specs["discriminator"].warmup
    assert specs["generator"].optimizer == {"lr": pytest.approx(0.001)} and specs["generator"].warmup


@pytest.mark.slow
def test_sweep_refuses_a_warmup_longer_than_one_points_budget_before_any_job(tmp_path):
    """Defect: job #1 (budget 5 < warm-up 10) used to end the sweep with exit 2 after job #0 had run."""
    sweep = tmp_path / "s"
    p = run_bench("-m", "train.epochs=null", "train.steps=20,5", "warmup=linear", "warmup.steps=10", ONE, f"hydra.sweep.dir={sweep}")
    assert p.returncode == 2, p.stderr
    lines = [ln for ln in p.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: warmup.steps=10 gives a warm-up of 10 steps, longer than the training budget of 5 steps")
    assert "(job #1: train.epochs=null train.steps=5 " in lines[0]
    assert not sweep.exists() or not list(sweep.rglob("result.json"))
