"""Vision tasks end to end through the real CLI on tiny stand-in data in the real formats."""

from __future__ import annotations

import json

import pytest

from conftest import load_script, metrics, results, run_bench

_fake = load_script("vision_fake")  # scripts/vision_fake.py: tiny stand-in data in the real formats
write_cifar, write_imagefolder = _fake.write_cifar, _fake.write_imagefolder

pytestmark = pytest.mark.slow

TINY = {  # narrow models; validation splits that fit the stand-in data (CIFAR: 40 - 8 = 32 to train on; ImageFolder: one per class)
    "cifar10_resnet": ["+task.model_kwargs.channels=[8,16,32,64]", "task.val_size=8"],
    "cifar100_resnet": ["+task.model_kwargs.channels=[8,16,32,64]", "task.val_size=8"],
    "cifar10_vit": ["+task.model_kwargs.embed_dim=32", "+task.model_kwargs.depth=2", "+task.model_kwargs.num_heads=2", "task.val_size=8"],
    "imagenet_resnet50": ["+task.model_kwargs.channels=[8,16,32,64]", "+task.model_kwargs.stem_width=8", "task.image_size=32", "task.val_resize=36", "task.workers=0", "task.val_size=3"],
}


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    r = tmp_path_factory.mktemp("data")
    write_cifar(r, "cifar10", n_train=40, n_test=16)
    write_cifar(r, "cifar100", n_train=40, n_test=16)
    write_imagefolder(r / "imagenet", classes=3, train_per_class=3, val_per_class=1, size=40)
    return r


def _root(data, task):
    return data / "imagenet" if task.startswith("imagenet") else data


@pytest.mark.parametrize("task", ["cifar100_resnet", "cifar10_vit", "imagenet_resnet50"])  # cifar10_resnet: next test
def test_each_task_trains_through_the_cli(task, data, tmp_path):
    bs = 2 if task.startswith("imagenet") else 8
    p = run_bench(f"task={task}", f"task.data_root={_root(data, task)}", *TINY[task], "hardware.threads=1", f"batch.size={bs}", "train.steps=2", "train.log_every=1", f"hydra.run.dir={tmp_path}")
    assert p.returncode == 0, p.stderr
    r = json.loads((tmp_path / "result.json").read_text())
    # 2 steps rarely lower the loss by 5 %: "stalled" (Task.stall_ratio) is a run that trained to its end all the same
    assert r["status"] in ("completed", "stalled") and r["steps"] == 2 and r["task"] == task
    expected = {"val_acc", "val_loss"} | ({"val_acc5"} if task.startswith("imagenet") else set())
    assert set(r["final"]) == expected and r["primary_metric"] == "val_acc"
    assert set(r["test"]) == {k.replace("val_", "test_") for k in expected}  # the official test set, once at the end
    assert set(r["chance"]) == expected
    info = r["task_info"]
    sizes = (6, 3, 3) if task.startswith("imagenet") else (32, 8, 16)  # train, held-out validation, test
    assert (info["train_examples"], info["val_examples"], info["test_examples"]) == sizes and info["split_seed"] == 0
    rows = metrics(tmp_path)
    assert [row["step"] for row in rows if row["kind"] == "train"] == [0, 1]
    assert all(row["train_loss"] > 0 for row in rows if row["kind"] == "train")


def test_device_and_dataloader_paths_give_the_same_run(data, tmp_path):
    """cifar10_resnet through the CLI; with the same seed the GPU-resident loader (here on the CPU) and the
    torchvision DataLoader in worker processes give byte-identical logs."""
    common = ["task=cifar10_resnet", f"task.data_root={data}", *TINY["cifar10_resnet"], "batch.size=8", "train.steps=6", "train.log_every=1", "seed=3", "hardware.threads=1"]
    a = run_bench(*common, "task.loader=device", f"hydra.run.dir={tmp_path / 'device'}")
    b = run_bench(*common, "task.loader=dataloader", "task.workers=2", f"hydra.run.dir={tmp_path / 'loader'}")
    assert a.returncode == 0, a.stderr
    assert b.returncode == 0, b.stderr
    for d, loader in (("device", "device"), ("loader", "dataloader")):
        r = json.loads((tmp_path / d / "result.json").read_text())
        assert r["status"] == "completed" and r["steps"] == 6 and r["task_info"]["loader"] == loader
        assert set(r["test"]) == {"test_acc", "test_loss"} and 0 <= r["test"]["test_acc"] <= 1
        assert r["chance"]["val_acc"] == pytest.approx(0.1)
    tests = [json.loads((tmp_path / d / "result.json").read_text())["test"] for d in ("device", "loader")]
    assert tests[0] == tests[1]
    log_a = (tmp_path / "device" / "metrics.jsonl").read_text()
    assert log_a == (tmp_path / "loader" / "metrics.jsonl").read_text()
    assert len(log_a.splitlines()) == 7  # 6 train rows (an epoch is 32 // 8 = 4 steps, so one epoch boundary) + 1 eval


def test_missing_data_is_one_line_and_exit_2(tmp_path):
    p = run_bench("task=cifar100_resnet", f"task.data_root={tmp_path}", f"hydra.run.dir={tmp_path / 'run'}")
    assert p.returncode == 2
    err = p.stderr.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: task.data_root=") and "cifar-100-python/ holds train, test, meta" in err[0]
    assert not (tmp_path / "run" / "result.json").exists()


def test_goyal_cifar_preset_scaled_down(data, tmp_path):
    """The preset's structure end to end, scaled down: 2 batch sizes x 3 warm-ups x 1 seed on 32 stand-in images."""
    sweep = tmp_path / "sweep"
    p = run_bench(
        "-m", "experiment=goyal_cifar", "hardware=cpu", "hardware.threads=1", f"task.data_root={data}", *TINY["cifar10_resnet"],
        "batch.base_size=8", "batch.size=8,16", "seed=0", "train.epochs=6", "warmup.epochs=1", "task.train_subset=32",
        "train.log_every=1", "train.check_every=1", "train.checkpoint_every=0", "task.val_subset=8",
        f"hydra.sweep.dir={sweep}", "report=false",
    )  # fmt: skip
    assert p.returncode == 0, p.stderr
    rs = results(sweep)
    assert len(rs) == 6 and all(r["status"] == "completed" for r in rs)
    got = {(r["batch_size"], r["warmup"]): r for r in rs}
    assert set(got) == {(b, w) for b in (8, 16) for w in ("none", "constant", "linear")}
    r = got[(16, "linear")]
    assert r["lr_peak"] == pytest.approx(0.2) and r["steps_planned"] == 6 * 2  # 32 // 16 = 2 steps per epoch
    assert r["warmup_steps"] == {"model": 2} and r["config"]["decay"]["name"] == "step"
    assert r["config"]["optimizer"]["weight_decay"] == pytest.approx(5e-4)
    assert got[(8, "constant")]["warmup_steps"] == {"model": 4}  # 4 steps per epoch x 1 warm-up epoch
    lrs = {w: [row["lr"] for row in metrics(got[(16, w)]["output_dir"]) if row["kind"] == "train"] for w in ("none", "constant", "linear")}
    # k = 16 / 8 = 2: no warm-up starts at the peak 0.2; constant and gradual start at the baseline LR 0.1 (1/k of the peak);
    # x0.1 from step round(12 / 3) = 4 on
    assert lrs["none"][:5] == pytest.approx([0.2, 0.2, 0.2, 0.2, 0.02])
    assert lrs["constant"][:5] == pytest.approx([0.1, 0.1, 0.2, 0.2, 0.02])
    assert lrs["linear"][:5] == pytest.approx([0.1, 0.2, 0.2, 0.2, 0.02])
