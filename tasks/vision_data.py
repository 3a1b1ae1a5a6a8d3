"""Vision data from local disk: CIFAR-10/100 (python pickles) and ImageFolder trees.

Nothing is downloaded. A missing data set is a :class:`bench.errors.ConfigError` that names the
files expected and where.

Validation images are held out of the official training set by :func:`stratified_holdout` before any
loader is built, so the loaders below only ever hold training images (whole or as DDP shares).

Augmentation randomness comes from the generator the harness passes to ``train_batches``
(seeded from ``(seed, epoch)``), never from a worker's global RNG, so the batches of an epoch
depend only on ``(seed, epoch)``: not on the number of loader workers, and a resumed run sees
the same images.

CIFAR has two loaders that give identical batches for the same generator:

- ``device``: the uint8 training set lives on the task's device (150 MB for 50k images),
  padded once; a batch is one gather that crops and flips every image at once, then
  normalisation. No host work or host sync per step.
- ``dataloader``: a ``torch.utils.data.DataLoader`` over torchvision's CIFAR dataset that
  pads/crops/flips each image with torchvision's functional ops in worker processes, pinned
  memory and non-blocking copies on CUDA; normalisation on the device.

Both draw, per epoch and in this order: the permutation ``perm = randperm(N)``, the crop
offsets ``top, left ~ U{0..2p}`` and the flips ``flip = rand < 0.5`` for each position of
the permutation. Per image this is exactly torchvision's ``RandomCrop(32, padding=p)`` then
``RandomHorizontalFlip()``: pad with zeros by ``p``, take the 32x32 window at ``(top, left)``,
mirror if ``flip``. The one difference from a stock torchvision pipeline is where the three
random numbers come from (the epoch generator, drawn up front, instead of each worker's global
RNG one image at a time); tests check both the equality of the two loaders and the per-image
equality with torchvision's transforms.
"""

from __future__ import annotations

import hashlib
import os
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, get_worker_info
from torchvision import datasets
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as TF

from bench.errors import ConfigError

CIFAR_FOLDERS = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}
CIFAR_FILES = {
    "cifar10": ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch", "batches.meta"],
    "cifar100": ["train", "test", "meta"],
}
CIFAR_CLASSES = {"cifar10": 10, "cifar100": 100}
CIFAR_SOURCE = {
    "cifar10": "cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html",
    "cifar100": "cifar-100-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html",
}


# ---------------------------------------------------------------- CIFAR on disk


def _torchvision_class(dataset: str):
    base = datasets.CIFAR10 if dataset == "cifar10" else datasets.CIFAR100

    class LocalCIFAR(base):
        """torchvision's reader with an existence check in place of the MD5 check.

        The MD5 check would reject subsets and the tiny sets the tests write; whether the files
        are the official ones is recorded separately (:func:`cifar_files_official`).
        """

        def _check_integrity(self) -> bool:
            folder = Path(self.root) / self.base_folder
            return all((folder / name).is_file() for name, _ in self.train_list + self.test_list)

        def _load_meta(self) -> None:
            with open(Path(self.root) / self.base_folder / self.meta["filename"], "rb") as f:
                self.classes = pickle.load(f, encoding="latin1")[self.meta["key"]]
            self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    return LocalCIFAR


def cifar_missing_message(dataset: str, root: str | os.PathLike) -> str | None:
    """One line saying which files are missing under ``root``, or None when all are there."""
    folder = Path(root) / CIFAR_FOLDERS[dataset]
    missing = [f for f in CIFAR_FILES[dataset] if not (folder / f).is_file()]
    if not missing:
        return None
    what = f"no folder {folder}/" if not folder.is_dir() else f"{folder}/ lacks {', '.join(missing)}"
    return (
        f"task.data_root={str(root)!r}: {dataset} not found ({what}); extract {CIFAR_SOURCE[dataset]} into {root}/ "
        f"so that {CIFAR_FOLDERS[dataset]}/ holds {', '.join(CIFAR_FILES[dataset])}, or set task.data_root (env BENCH_DATA) to the folder that holds it"
    )


def load_cifar(dataset: str, root: str | os.PathLike, train: bool):
    """torchvision's CIFAR dataset (``download=False``): ``.data`` uint8 (N, 32, 32, 3), ``.targets``."""
    msg = cifar_missing_message(dataset, root)
    if msg:
        raise ConfigError(msg)
    return _torchvision_class(dataset)(str(root), train=train, download=False)


def cifar_files_official(dataset: str, root: str | os.PathLike) -> bool:
    """Whether every file has the MD5 that torchvision lists for the official release."""
    cls = datasets.CIFAR10 if dataset == "cifar10" else datasets.CIFAR100
    folder = Path(root) / cls.base_folder
    listed = cls.train_list + cls.test_list + [[cls.meta["filename"], cls.meta["md5"]]]
    for name, md5 in listed:
        h = hashlib.md5()
        with open(folder / name, "rb") as f:
            for chunk in iter(lambda: f.read(1 << 22), b""):
                h.update(chunk)
        if h.hexdigest() != md5:
            return False
    return True


def to_chw_tensor(data: np.ndarray) -> torch.Tensor:
    """(N, H, W, C) uint8 numpy -> (N, C, H, W) uint8 tensor."""
    return torch.from_numpy(np.ascontiguousarray(data)).permute(0, 3, 1, 2).contiguous()


# ---------------------------------------------------------------- the validation split


def holdout_counts(labels: torch.Tensor, n_holdout: int) -> torch.Tensor:
    """Images per class to hold out: ``n_holdout`` shared in proportion to the class sizes.

    Class ``c`` with ``n_c`` of the ``N`` images gets ``floor(n_holdout * n_c / N)``; the images left
    over go one each to the classes with the largest remainders (ties: lower class index first), so
    the counts sum to ``n_holdout`` exactly. Balanced classes get equal shares (CIFAR-10, 5000: 500 each).
    Returns int64 counts indexed by class (classes absent from ``labels`` get 0).
    """
    sizes = torch.bincount(labels)
    total = len(labels)
    base = n_holdout * sizes // total  # integer floor of the proportional share
    rest = n_holdout * sizes - base * total  # remainder x total, compared exactly in integers
    order = sorted(range(len(sizes)), key=lambda c: (-int(rest[c]), c))
    base[order[: n_holdout - int(base.sum())]] += 1
    return base


def stratified_holdout(labels, n_holdout: int, split_seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split image indices ``0..N-1`` into (train, held-out) with :func:`holdout_counts` images of each class held out.

    One permutation of all N indices from a generator seeded with ``split_seed``; each class holds out its
    first ``count_c`` images in that order. The split depends on the labels and ``split_seed`` only (never on
    a run's seed). Both index tensors are sorted, so the training images keep the order of the files.
    """
    labels = torch.as_tensor(labels, dtype=torch.int64)
    counts = holdout_counts(labels, n_holdout)
    perm = torch.randperm(len(labels), generator=torch.Generator().manual_seed(split_seed))
    lab = labels[perm]
    by_class = torch.argsort(lab, stable=True)  # positions of perm grouped by class, in perm order within a class
    first = torch.cumsum(torch.bincount(lab, minlength=len(counts)), 0) - torch.bincount(lab, minlength=len(counts))
    rank = torch.empty_like(lab)
    rank[by_class] = torch.arange(len(lab)) - first[lab[by_class]]  # 0, 1, 2, ... within each class
    held = rank < counts[lab]
    return perm[~held].sort().values, perm[held].sort().values


def spread(n_items: int, n: int | None) -> torch.Tensor:
    """``n`` of positions ``0..n_items-1`` spread evenly from first to last (all when ``n`` is None).

    On a list sorted by class this keeps every class in its share, without randomness.
    """
    if n is None or n >= n_items:
        return torch.arange(n_items)
    return torch.linspace(0, n_items - 1, n).round().long().unique()


# ---------------------------------------------------------------- augmentation parameters


@dataclass
class EpochAugment:
    """One epoch's order and per-position crop/flip: ``perm[k]`` is shown with ``top[k], left[k], flip[k]``."""

    perm: torch.Tensor  # int64 (N,)
    top: torch.Tensor  # int64 (N,), in [0, 2 * padding]
    left: torch.Tensor  # int64 (N,)
    flip: torch.Tensor  # bool (N,)

    def to(self, device: torch.device) -> "EpochAugment":
        return EpochAugment(*(t.to(device) for t in (self.perm, self.top, self.left, self.flip)))


def draw_epoch(n: int, padding: int, flip: bool, generator: torch.Generator) -> EpochAugment:
    """Draw the permutation, then the crop offsets, then the flips, from ``generator`` (on the CPU)."""
    perm = torch.randperm(n, generator=generator)
    top = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    left = torch.randint(0, 2 * padding + 1, (n,), generator=generator)
    flips = torch.rand(n, generator=generator) < 0.5
    if not flip:
        flips = torch.zeros(n, dtype=torch.bool)
    return EpochAugment(perm, top, left, flips)


def crop_flip(padded: torch.Tensor, top: torch.Tensor, left: torch.Tensor, flip: torch.Tensor, size: int) -> torch.Tensor:
    """Batched crop-and-mirror by one gather: out[b, c, r, q] = padded[b, c, top_b + r, left_b + q'].

    ``q' = q`` or ``size - 1 - q`` when ``flip_b``. ``padded`` is (B, C, H + 2p, W + 2p);
    returns (B, C, size, size) in the same dtype. Runs on whatever device the inputs are on.
    """
    dev = padded.device
    ar = torch.arange(size, device=dev)
    rows = top[:, None] + ar  # (B, size)
    cols = left[:, None] + torch.where(flip[:, None], size - 1 - ar, ar)  # (B, size)
    b = torch.arange(padded.shape[0], device=dev)[:, None, None, None]
    c = torch.arange(padded.shape[1], device=dev)[None, :, None, None]
    return padded[b, c, rows[:, None, :, None], cols[:, None, None, :]]  # (B, C, size, size), contiguous


def normalize(x: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """uint8 (B, C, H, W) -> float32 ``(x / 255 - mean) / std``, the order of torchvision's ToTensor + Normalize."""
    return x.float().div_(255).sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))


def batch_slices(n: int, batch_size: int, start: int, rank: int = 0, world_size: int = 1) -> Iterator[slice]:
    """Slices of the epoch's full batches from batch ``start`` (a tail smaller than a batch is dropped).

    With ``world_size`` > 1 each slice is process ``rank``'s contiguous share of the global batch,
    the same part that ``Task.split(batch, world_size)[rank]`` would keep.
    """
    per = batch_size // world_size
    for i in range(start, n // batch_size):
        lo = i * batch_size + rank * per
        yield slice(lo, lo + per)


class DeviceCifar:
    """The CIFAR training set resident on ``device`` (uint8, zero-padded once), augmented per batch there."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, padding: int, flip: bool, device: torch.device):
        self.n, self.size, self.padding, self.flip = len(images), images.shape[-1], padding, flip
        self.padded = TF.pad(images, [padding]).to(device)  # zeros, as torchvision's RandomCrop(padding=p)
        self.labels = labels.to(device)
        self.device = device

    def batches(self, batch_size: int, start: int, generator: torch.Generator, rank: int = 0, world_size: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """uint8 images (B, C, 32, 32) and int64 labels on the device (this process's share under DDP)."""
        aug = draw_epoch(self.n, self.padding, self.flip, generator).to(self.device)
        for sl in batch_slices(self.n, batch_size, start, rank, world_size):
            idx = aug.perm[sl]
            yield crop_flip(self.padded[idx], aug.top[sl], aug.left[sl], aug.flip[sl], self.size), self.labels[idx]


class _CifarItems(Dataset):
    """Items are ``(index, top, left, flip)`` tuples; returns the augmented uint8 CHW image and its label."""

    def __init__(self, data: np.ndarray, targets: Sequence[int], padding: int):
        self.data, self.targets, self.padding = data, targets, padding

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, item):
        i, top, left, flip = item
        img = torch.from_numpy(self.data[i]).permute(2, 0, 1)  # HWC -> CHW
        size = img.shape[-1]
        img = TF.crop(TF.pad(img, [self.padding]), top, left, size, size)
        if flip:
            img = TF.horizontal_flip(img)
        return img, self.targets[i]


class _EpochSampler:
    """Batch sampler whose batches are set per epoch (so persistent workers survive epochs)."""

    def __init__(self):
        self.batches: list[list] = []

    def __iter__(self):
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


def _loader(dataset: Dataset, sampler, workers: int, device: torch.device) -> DataLoader:
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        num_workers=workers,
        pin_memory=device.type == "cuda",  # page-locked buffers make the non_blocking copy asynchronous
        persistent_workers=workers > 0,
        prefetch_factor=4 if workers > 0 else None,
        generator=torch.Generator(),  # its per-iterator seed draw must not consume the harness's global RNG
    )


class LoaderCifar:
    """The CIFAR training set through a DataLoader with torchvision ops in workers; same batches as :class:`DeviceCifar`."""

    def __init__(self, data: np.ndarray, targets: Sequence[int], padding: int, flip: bool, workers: int, device: torch.device):
        self.n, self.padding, self.flip, self.device = len(data), padding, flip, device
        self.sampler = _EpochSampler()
        self.loader = _loader(_CifarItems(data, list(targets), padding), self.sampler, workers, device)

    def batches(self, batch_size: int, start: int, generator: torch.Generator, rank: int = 0, world_size: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        aug = draw_epoch(self.n, self.padding, self.flip, generator)
        cols = list(zip(aug.perm.tolist(), aug.top.tolist(), aug.left.tolist(), aug.flip.tolist()))
        self.sampler.batches = [cols[sl] for sl in batch_slices(self.n, batch_size, start, rank, world_size)]
        for x, y in self.loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


# ---------------------------------------------------------------- ImageFolder


def imagefolder_missing_message(root: str | os.PathLike) -> str | None:
    """One line saying what is missing under an ImageNet-style root, or None."""
    root = Path(root)
    missing = [s for s in ("train", "val") if not (root / s).is_dir() or not any(p.is_dir() for p in (root / s).iterdir())]
    if not missing:
        return None
    return (
        f"task.data_root={str(root)!r}: no ImageFolder data in {', '.join(str(root / m) + '/' for m in missing)}; "
        f"expected {root}/train/<class>/<image> and {root}/val/<class>/<image> (the same class folder names in both; "
        "ImageNet's validation images must be sorted into class folders), or point task.data_root (env BENCH_DATA) elsewhere"
    )


def load_imagefolder(root: str | os.PathLike, split: str) -> datasets.ImageFolder:
    msg = imagefolder_missing_message(root)
    if msg:
        raise ConfigError(msg)
    return datasets.ImageFolder(str(Path(root) / split))


class _SeededImages(Dataset):
    """Items are ``(index, seed)``; the transform runs under ``seed`` so the crop depends on the epoch generator only."""

    def __init__(self, folder: datasets.ImageFolder, transform):
        self.folder, self.transform = folder, transform

    def __len__(self) -> int:
        return len(self.folder)

    def __getitem__(self, item):
        i, seed = item
        path, label = self.folder.samples[i]
        img = self.folder.loader(path)
        if get_worker_info() is not None:  # a worker's global RNG is its own
            torch.manual_seed(seed)
            return self.transform(img), label
        with torch.random.fork_rng(devices=[]):  # in the main process: leave the harness's RNG alone
            torch.manual_seed(seed)
            return self.transform(img), label


class _PlainImages(Dataset):
    def __init__(self, folder: datasets.ImageFolder, transform, indices: Sequence[int]):
        self.folder, self.transform, self.indices = folder, transform, list(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k):
        path, label = self.folder.samples[self.indices[k]]
        return self.transform(self.folder.loader(path)), label


def train_transform(image_size: int, min_scale: float, flip: bool):
    """Random-resized crop (scale in [min_scale, 1], aspect 3/4..4/3) and mirror; output uint8 CHW."""
    ops = [v2.PILToTensor(), v2.RandomResizedCrop(image_size, scale=(min_scale, 1.0), antialias=True)]
    if flip:
        ops.append(v2.RandomHorizontalFlip())
    return v2.Compose(ops)


def val_transform(image_size: int, resize: int):
    """Resize the short side to ``resize`` then centre-crop ``image_size``; output uint8 CHW."""
    return v2.Compose([v2.PILToTensor(), v2.Resize(resize, antialias=True), v2.CenterCrop(image_size)])


class FolderLoader:
    """Training batches from an ImageFolder: per-epoch order and per-image seeds from the epoch generator."""

    def __init__(self, folder: datasets.ImageFolder, indices: Sequence[int], transform, workers: int, device: torch.device):
        self.indices = torch.as_tensor(list(indices), dtype=torch.int64)
        self.device = device
        self.sampler = _EpochSampler()
        self.loader = _loader(_SeededImages(folder, transform), self.sampler, workers, device)

    def batches(self, batch_size: int, start: int, generator: torch.Generator, rank: int = 0, world_size: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Decodes only this process's share of each global batch under DDP."""
        n = len(self.indices)
        perm = torch.randperm(n, generator=generator)
        seeds = torch.randint(0, 2**62, (n,), generator=generator)
        cols = list(zip(self.indices[perm].tolist(), seeds.tolist()))
        self.sampler.batches = [cols[sl] for sl in batch_slices(n, batch_size, start, rank, world_size)]
        for x, y in self.loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)


def eval_loader(folder: datasets.ImageFolder, indices: Sequence[int], transform, batch_size: int, workers: int, device: torch.device) -> DataLoader:
    return DataLoader(
        _PlainImages(folder, transform, indices),
        batch_size=batch_size,
        shuffle=False,
        num_workers=workers,
        pin_memory=device.type == "cuda",
        persistent_workers=workers > 0,
        generator=torch.Generator(),
    )
