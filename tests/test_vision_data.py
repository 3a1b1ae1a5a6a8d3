"""Vision data: the real readers on tiny data sets in the real formats, augmentation, loader equality."""

from __future__ import annotations

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


TINY_RESNET = {"model_kwargs.channels": [8, 16, 32, 64]}


@pytest.mark.parametrize(
    "over, message",
    [
        ({"loader": "gpu"}, r"task.loader='gpu' is not allowed: device .* or dataloader"),
        ({"model": "resnet_nope"}, r"task.model='resnet_nope' is not allowed: a model name in timm's registry"),
        ({"model_kwargs.num_classes": 7}, r"task.model_kwargs.num_classes=7 is not allowed"),
        ({"model_kwargs.no_such_arg": 1}, r"task.model_kwargs=.* arguments timm model resnet18 accepts"),
        ({"train_subset": 38}, r"task.train_subset=38 is not allowed: at most the 37 images found"),
        ({"dataset": "svhn"}, r"task.dataset='svhn' is not allowed: one of cifar10, cifar100"),
        ({"label_smoothing": 1.5}, r"task.label_smoothing=1.5 is not allowed"),
    ],
)
def test_cifar_task_rejects_bad_config(root, over, message):
    cfg = _task_cfg("cifar10_resnet", data_root=str(root), **TINY_RESNET, **over)
    with pytest.raises(ConfigError, match=message):
        CifarTask(cfg, 0, CPU)


def test_cifar_task_model_and_eval(root):
    cfg = _task_cfg("cifar10_resnet", data_root=str(root), **TINY_RESNET)
    task = CifarTask(cfg, 0, CPU)
    m = task.models["model"]
    assert m.conv1.kernel_size == (3, 3) and m.conv1.stride == (1, 1) and isinstance(m.maxpool, torch.nn.Identity)
    assert m.layer1[0].bn2.weight.detach().abs().sum().item() == 0.0  # zero-init of each block's last BN
    assert task.train_size() == 37
    with torch.no_grad():
        metrics = task.evaluate()
    assert set(metrics) == {"val_loss", "val_acc"} and 0 <= metrics["val_acc"] <= 1
    m.to(memory_format=torch.channels_last)
    x = task.inputs(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))
    assert x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def test_imagefolder_task_metrics_and_errors(root, tmp_path):
    over = {"model_kwargs.channels": [8, 16, 32, 64], "model_kwargs.stem_width": 8, "image_size": 32, "val_resize": 36, "workers": 0}
    task = ImageFolderTask(_task_cfg("imagenet_resnet50", data_root=str(root / "imagenet"), **over), 0, CPU)
    assert task.num_classes == 3 and task.train_size() == 12
    with torch.no_grad():
        metrics = task.evaluate()
    assert set(metrics) == {"val_loss", "val_acc", "val_acc5"}
    assert metrics["val_acc5"] == 1.0  # 3 classes: the top-3 always holds the label
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
