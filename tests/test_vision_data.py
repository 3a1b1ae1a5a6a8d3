"""Vision data: the real readers on tiny data sets in the real formats, augmentation, loader equality,
the train / validation / test splits."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from torchvision import transforms as T

from bench.errors import ConfigError
from conftest import load_script
from tasks import vision_data as vd
from tasks.vision import CifarTask, ImageFolderTask

_fake = load_script("vision_fake")  # scripts/vision_fake.py: tiny stand-in data in the real formats
write_cifar, write_imagefolder = _fake.write_cifar, _fake.write_imagefolder

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def root(tmp_path_factory):
    r = tmp_path_factory.mktemp("data")
    write_cifar(r, "cifar10", n_train=37, n_test=11, seed=1)
    write_cifar(r, "cifar100", n_train=23, n_test=7, seed=2)
    write_imagefolder(r / "imagenet", classes=3, train_per_class=4, val_per_class=2, size=40)
    return r


def test_cifar_readers_on_the_real_formats(root):
    tr = vd.load_cifar("cifar10", root, train=True)
    assert tr.data.shape == (37, 32, 32, 3) and tr.data.dtype.name == "uint8"
    assert len(tr.targets) == 37 and set(tr.targets) <= set(range(10))
    assert tr.classes == [f"class{c}" for c in range(10)]
    assert vd.load_cifar("cifar10", root, train=False).data.shape == (11, 32, 32, 3)
    c100 = vd.load_cifar("cifar100", root, train=True)
    assert c100.data.shape == (23, 32, 32, 3) and len(c100.classes) == 100
    assert not vd.cifar_files_official("cifar10", root)  # stand-in files are not the release


def test_missing_data_names_the_files(tmp_path):
    with pytest.raises(ConfigError, match=r"task.data_root=.*cifar-10-batches-py/ holds data_batch_1, .*test_batch, batches.meta"):
        vd.load_cifar("cifar10", tmp_path, train=True)
    write_cifar(tmp_path, "cifar100", 5, 5)
    (tmp_path / "cifar-100-python" / "meta").unlink()
    with pytest.raises(ConfigError, match=r"cifar-100-python/ lacks meta"):
        vd.load_cifar("cifar100", tmp_path, train=True)
    with pytest.raises(ConfigError, match=r"train/<class>/<image> and .*val/<class>/<image>"):
        vd.load_imagefolder(tmp_path / "nothing", "train")


def test_crop_flip_is_torchvisions_random_crop_and_flip():
    """Same three random numbers -> the same pixels as RandomCrop(32, padding=4) + RandomHorizontalFlip()."""
    img = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    tv = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()])
    padded = vd.TF.pad(img[None], [4])
    flips = set()
    for seed in range(12):
        torch.manual_seed(seed)
        expected = tv(img)
        torch.manual_seed(seed)  # replay the draws torchvision makes: top, left, then the flip
        top, left = torch.randint(0, 9, (1,)), torch.randint(0, 9, (1,))
        flip = torch.rand(1) < 0.5
        flips.add(bool(flip))
        got = vd.crop_flip(padded, top, left, flip, 32)[0]
        assert torch.equal(got, expected), seed
    assert flips == {True, False}


def test_crop_flip_by_hand():
    x = torch.arange(2 * 1 * 4 * 4, dtype=torch.uint8).view(2, 1, 4, 4)
    out = vd.crop_flip(x, torch.tensor([0, 2]), torch.tensor([1, 0]), torch.tensor([False, True]), 2)
    assert out[0, 0].tolist() == [[1, 2], [5, 6]]
    assert out[1, 0].tolist() == [[25, 24], [29, 28]]  # rows 2-3, columns 0-1 of image 1, mirrored


def _cifar(root):
    tr = vd.load_cifar("cifar10", root, train=True)
    return tr.data, tr.targets


def test_device_loader_equals_torchvision_dataloader(root):
    data, targets = _cifar(root)
    dev = vd.DeviceCifar(vd.to_chw_tensor(data), torch.tensor(targets), 4, True, CPU)
    seq = vd.LoaderCifar(data, targets, 4, True, 0, CPU)
    par = vd.LoaderCifar(data, targets, 4, True, 2, CPU)
    runs = [list(l.batches(8, 0, torch.Generator().manual_seed(5))) for l in (dev, seq, par)]
    assert [len(r) for r in runs] == [4, 4, 4]  # 37 // 8 full batches, the tail dropped
    for a, b, c in zip(*runs):
        assert a[0].shape == (8, 3, 32, 32) and a[0].dtype == torch.uint8
        assert torch.equal(a[0], b[0]) and torch.equal(a[0], c[0])
        assert torch.equal(a[1], b[1]) and torch.equal(a[1], c[1])
    other = list(dev.batches(8, 0, torch.Generator().manual_seed(6)))
    assert not torch.equal(other[0][0], runs[0][0][0])
    resumed = list(dev.batches(8, 2, torch.Generator().manual_seed(5)))  # from batch 2: the same tail
    assert len(resumed) == 2 and all(torch.equal(r[0], f[0]) for r, f in zip(resumed, runs[0][2:]))


def test_augmentation_semantics(root):
    data, targets = _cifar(root)
    imgs = vd.to_chw_tensor(data)
    plain = vd.DeviceCifar(imgs, torch.tensor(targets), 0, False, CPU)  # no padding, no flip: just the permutation
    g = torch.Generator().manual_seed(3)
    perm = torch.randperm(37, generator=torch.Generator().manual_seed(3))
    x, y = next(plain.batches(8, 0, g))
    assert torch.equal(x, imgs[perm[:8]]) and y.tolist() == [targets[i] for i in perm[:8].tolist()]
    aug = list(vd.DeviceCifar(imgs, torch.tensor(targets), 4, True, CPU).batches(37, 0, torch.Generator().manual_seed(3)))[0][0]
    p = vd.draw_epoch(37, 4, True, torch.Generator().manual_seed(3))
    assert p.top.min() >= 0 and p.top.max() <= 8 and 0.2 < p.flip.float().mean() < 0.8
    for k in range(37):
        t, l, f, src = int(p.top[k]), int(p.left[k]), bool(p.flip[k]), imgs[p.perm[k]]
        if t == 0:
            assert (aug[k, :, :4] == 0).all()  # the top 4 rows are zero padding
        if l == 0 and not f:
            assert (aug[k, :, :, :4] == 0).all()
        if (t, l, f) == (4, 4, False):
            assert torch.equal(aug[k], src)
        if (t, l, f) == (4, 4, True):
            assert torch.equal(aug[k], src.flip(-1))


def test_normalize_matches_to_tensor_normalize():
    x = torch.randint(0, 256, (2, 3, 4, 4), dtype=torch.uint8)
    mean, std = torch.tensor([0.4914, 0.4822, 0.4465]), torch.tensor([0.2470, 0.2435, 0.2616])
    ref = torch.stack([T.Normalize(mean.tolist(), std.tolist())(T.ToTensor()(i.permute(1, 2, 0).numpy())) for i in x])
    assert torch.equal(vd.normalize(x, mean, std), ref)


def test_imagefolder_loader_deterministic_across_workers(root):
    folder = vd.load_imagefolder(root / "imagenet", "train")
    assert len(folder) == 12 and folder.classes == ["class0", "class1", "class2"]
    tf = vd.train_transform(24, 0.08, True)
    runs = []
    for workers in (0, 2):
        loader = vd.FolderLoader(folder, range(12), tf, workers, CPU)
        torch.manual_seed(123)
        runs.append(list(loader.batches(4, 0, torch.Generator().manual_seed(9))))
        after = torch.rand(1)
        torch.manual_seed(123)
        assert torch.equal(after, torch.rand(1))  # the main process's RNG is left alone
    assert len(runs[0]) == 3
    for (xa, ya), (xb, yb) in zip(*runs):
        assert xa.shape == (4, 3, 24, 24) and xa.dtype == torch.uint8
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    again = list(vd.FolderLoader(folder, range(12), tf, 0, CPU).batches(4, 0, torch.Generator().manual_seed(10)))
    assert not torch.equal(again[0][0], runs[0][0][0])


def _task_cfg(name, **over):
    cfg = OmegaConf.load(f"conf/task/{name}.yaml")
    for k, v in over.items():
        OmegaConf.update(cfg, k, v, force_add=True)
    return cfg


TINY_RESNET = {"model_kwargs.channels": [8, 16, 32, 64], "val_size": 7}  # 37 stand-in training images: 30 to train on
TINY_FOLDER = {"model_kwargs.channels": [8, 16, 32, 64], "model_kwargs.stem_width": 8, "image_size": 32, "val_resize": 36, "workers": 0, "val_size": 3}


@pytest.mark.parametrize(
    "over, message",
    [
        ({"loader": "gpu"}, r"task.loader='gpu' is not allowed: device .* or dataloader"),
        ({"model": "resnet_nope"}, r"task.model='resnet_nope' is not allowed: a model name in timm's registry"),
        ({"model_kwargs.num_classes": 7}, r"task.model_kwargs.num_classes=7 is not allowed"),
        ({"model_kwargs.no_such_arg": 1}, r"task.model_kwargs=.* arguments timm model resnet18 accepts"),
        ({"train_subset": 31}, r"task.train_subset=31 is not allowed: at most the 30 images left for training after task.val_size=7 are held out"),
        ({"val_size": 37}, r"task.val_size=37 is not allowed: fewer than the 37 training images found"),
        ({"val_subset": 6, "val_size": 5, "train_subset": None}, r"task.val_subset=6 is not allowed: at most task.val_size=5"),
        ({"val_size": 20, "val_subset": 12}, r"task.val_subset=12 is not allowed: at most the 11 images in the test set"),
        ({"dataset": "svhn"}, r"task.dataset='svhn' is not allowed: one of cifar10, cifar100"),
        ({"label_smoothing": 1.5}, r"task.label_smoothing=1.5 is not allowed"),
    ],
)
def test_cifar_task_rejects_bad_config(root, over, message):
    cfg = _task_cfg("cifar10_resnet", data_root=str(root), **{**TINY_RESNET, **over})
    with pytest.raises(ConfigError, match=message):
        CifarTask(cfg, 0, CPU)


def test_cifar_task_model_and_eval(root):
    cfg = _task_cfg("cifar10_resnet", data_root=str(root), **TINY_RESNET)
    task = CifarTask(cfg, 0, CPU)
    m = task.models["model"]
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1) and isinstance(m.maxpool, torch.nn.Identity)
    assert m.layer1[0].bn2.weight.detach().abs().sum().item() == 0.0  # zero-init of each block's last BN
    assert task.train_size() == 30
    with torch.no_grad():
        metrics = task.evaluate()
        test = task.evaluate("test")
    assert set(metrics) == set(test) == {"val_loss", "val_acc"} and 0 <= metrics["val_acc"] <= 1
    assert metrics != test  # 7 held-out training images vs the 11 test images
    assert task.chance == pytest.approx({"val_acc": 0.1, "val_loss": math.log(10)})
    info = task.extra_record()
    assert (info["train_examples"], info["val_examples"], info["test_examples"], info["split_seed"]) == (30, 7, 11, 0)
    with pytest.raises(ValueError, match="'val' or 'test'"):
        task.evaluate("train")
    m.to(memory_format=torch.channels_last)
    x = task.inputs(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def test_imagefolder_task_metrics_and_errors(root, tmp_path):
    over = TINY_FOLDER
    task = ImageFolderTask(_task_cfg("imagenet_resnet50", data_root=str(root / "imagenet"), **over), 0, CPU)
    assert task.num_classes == 3 and task.train_size() == 9  # 12 in train/, one per class held out
    with torch.no_grad():
        metrics = task.evaluate()
        test = task.evaluate("test")
    assert set(metrics) == set(test) == {"val_loss", "val_acc", "val_acc5"}
    assert metrics["val_acc5"] == test["val_acc5"] == 1.0  # 3 classes: the top-3 always holds the label
    assert task.chance == pytest.approx({"val_acc": 1 / 3, "val_acc5": 1.0, "val_loss": math.log(3)})
    info = task.extra_record()
    assert (info["train_examples"], info["val_examples"], info["test_examples"]) == (9, 3, 6)
    write_imagefolder(tmp_path, classes=2, train_per_class=1, val_per_class=1, size=16)
    (tmp_path / "val" / "class1").rename(tmp_path / "val" / "other")
    with pytest.raises(ConfigError, match=r"same class folders"):
        ImageFolderTask(_task_cfg("imagenet_resnet50", data_root=str(tmp_path), **over), 0, CPU)


def test_ddp_shards_are_the_split_of_the_global_batch(root):
    """Each process reads only its share, and the shares are exactly Task.split of the global batch."""
    from tasks.base import _split

    data, targets = _cifar(root)
    folder = vd.load_imagefolder(root / "imagenet", "train")
    loaders = {
        "device": vd.DeviceCifar(vd.to_chw_tensor(data), torch.tensor(targets), 4, True, CPU),
        "dataloader": vd.LoaderCifar(data, targets, 4, True, 0, CPU),
        "folder": vd.FolderLoader(folder, range(12), vd.train_transform(24, 0.08, True), 0, CPU),
    }
    for name, loader in loaders.items():
        full = list(loader.batches(8 if name != "folder" else 4, 0, torch.Generator().manual_seed(2)))
        shards = [list(loader.batches(8 if name != "folder" else 4, 0, torch.Generator().manual_seed(2), r, 2)) for r in (0, 1)]
        assert len(shards[0]) == len(shards[1]) == len(full)
        for k, batch in enumerate(full):
            parts = _split(batch, 2)
            for r in (0, 1):
                assert torch.equal(shards[r][k][0], parts[r][0]) and torch.equal(shards[r][k][1], parts[r][1]), (name, k, r)


# ---------------------------------------------------------------- the three splits


def test_holdout_counts_by_hand():
    labels = torch.tensor([0] * 7 + [1] * 3 + [2])  # 11 images
    # 5 held out: shares 35/11 = 3.18, 15/11 = 1.36, 5/11 = 0.45 -> floors 3, 1, 0; the one left goes to the largest remainder (class 2)
    assert vd.holdout_counts(labels, 5).tolist() == [3, 1, 1]
    assert vd.holdout_counts(labels, 4).tolist() == [3, 1, 0]  # 2.55, 1.09, 0.36 -> 2, 1, 0 + one for class 0
    assert vd.holdout_counts(torch.arange(50000) % 10, 5000).tolist() == [500] * 10  # CIFAR-10's default
    assert vd.holdout_counts(torch.arange(50000) % 100, 5000).tolist() == [50] * 100  # CIFAR-100's


def test_stratified_holdout_is_a_fixed_partition():
    labels = torch.randint(0, 4, (200,), generator=torch.Generator().manual_seed(0))
    train, val = vd.stratified_holdout(labels, 30, split_seed=0)
    assert sorted(train.tolist() + val.tolist()) == list(range(200))  # disjoint and complete
    assert torch.bincount(labels[val], minlength=4).tolist() == vd.holdout_counts(labels, 30).tolist()
    assert train.tolist() == sorted(train.tolist())  # training images keep the file order
    again = vd.stratified_holdout(labels, 30, split_seed=0)
    assert torch.equal(again[1], val)
    assert not torch.equal(vd.stratified_holdout(labels, 30, split_seed=1)[1], val)


def _keys(images: torch.Tensor) -> set[bytes]:
    """One key per uint8 image (the stand-in images are noise, so no two are equal)."""
    return {bytes(im.contiguous().numpy()) for im in images}


def test_cifar_splits_are_disjoint_stratified_and_fixed_across_run_seeds(root):
    cfg = _task_cfg("cifar10_resnet", data_root=str(root), **TINY_RESNET)
    a, b = CifarTask(cfg, 0, CPU), CifarTask(cfg, 7, CPU)  # two run seeds
    assert np.array_equal(a.val_idx, b.val_idx) and np.array_equal(a.train_idx, b.train_idx)
    assert sorted(a.train_idx.tolist() + a.val_idx.tolist()) == list(range(37))
    official = vd.load_cifar("cifar10", root, train=True)
    labels = torch.tensor(official.targets)
    assert torch.bincount(labels[a.val_idx], minlength=10).tolist() == vd.holdout_counts(labels, 7).tolist()
    train_keys, val_keys = _keys(vd.to_chw_tensor(official.data[a.train_idx])), _keys(a.eval_sets["val"][0])
    test_keys = _keys(a.eval_sets["test"][0])
    assert len(val_keys) == 7 and len(test_keys) == 11 and len(train_keys) == 30
    assert not (train_keys & val_keys) and not (train_keys & test_keys) and not (val_keys & test_keys)
    assert test_keys == _keys(vd.to_chw_tensor(vd.load_cifar("cifar10", root, train=False).data))  # test = the official test batch
    other = CifarTask(_task_cfg("cifar10_resnet", data_root=str(root), **{**TINY_RESNET, "split_seed": 1}), 0, CPU)
    assert not np.array_equal(other.val_idx, a.val_idx)


def test_cifar_train_batches_never_hold_a_validation_image(root):
    """No crop or flip, so each batch image is a stored image: it must be a training image, in both
    loaders, whole or sharded as under DDP, and the two loaders give the same bytes."""
    plain = {**TINY_RESNET, "crop_padding": 0, "flip": False}
    tasks = {loader: CifarTask(_task_cfg("cifar10_resnet", data_root=str(root), **plain, loader=loader, workers=0), 0, CPU) for loader in ("device", "dataloader")}
    official = vd.load_cifar("cifar10", root, train=True)
    train_keys = _keys(vd.to_chw_tensor(official.data[tasks["device"].train_idx]))
    val_keys = _keys(tasks["device"].eval_sets["val"][0])
    runs = {}
    for loader, task in tasks.items():
        full = list(task.train_batches(5, 0, 0, torch.Generator().manual_seed(4)))
        shards = [list(task.train_shards(10, 0, 0, torch.Generator().manual_seed(4), r, 2)) for r in (0, 1)]
        seen = _keys(torch.cat([x for x, _ in full]))
        assert len(seen) == 30 and seen == train_keys and not (seen & val_keys)  # 30 // 5 batches: every training image once
        sharded = _keys(torch.cat([x for part in shards for x, _ in part]))
        assert sharded == train_keys and not (sharded & val_keys)
        runs[loader] = full
    for (xa, ya), (xb, yb) in zip(runs["device"], runs["dataloader"]):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)


def test_imagefolder_splits_and_train_batches(root):
    cfg = _task_cfg("imagenet_resnet50", data_root=str(root / "imagenet"), **TINY_FOLDER)
    a, b = ImageFolderTask(cfg, 0, CPU), ImageFolderTask(cfg, 3, CPU)
    assert a.val_idx == b.val_idx and a.train_idx == b.train_idx  # fixed across run seeds
    assert sorted(a.train_idx + a.val_idx) == list(range(12)) and len(a.val_idx) == 3
    folder = vd.load_imagefolder(root / "imagenet", "train")
    assert sorted(folder.targets[i] for i in a.val_idx) == [0, 1, 2]  # one per class
    val_paths = {folder.samples[i][0] for i in a.val_idx}
    val_ds, test_ds = a.eval_loaders["val"].dataset, a.eval_loaders["test"].dataset
    assert {val_ds.folder.samples[i][0] for i in val_ds.indices} == val_paths  # validation scores the held-out training images
    assert Path(test_ds.folder.root).name == "val" and len(test_ds) == 6  # the official val/ folder is the test split
    for rank, world in ((0, 1), (0, 3), (1, 3), (2, 3)):
        list(a.train_shards(3, 0, 0, torch.Generator().manual_seed(1), rank, world))
        drawn = {i for batch in a.train_data.sampler.batches for i, _ in batch}
        assert drawn and drawn <= set(a.train_idx) and not (drawn & set(a.val_idx)), (rank, world)
