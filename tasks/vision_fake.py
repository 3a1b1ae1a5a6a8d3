"""Tiny stand-in data sets in the real on-disk formats, for tests and the throughput script.

The files have the exact layout the real data have (CIFAR's pickled batches, an ImageFolder tree
of PNGs), so the real readers run on them; the pixels are noise with a class-dependent colour
shift, so a model can learn something in a few steps. They are not CIFAR or ImageNet: never
report numbers measured on them as such.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from tasks.vision_data import CIFAR_CLASSES, CIFAR_FOLDERS


def _images(rng: np.random.Generator, labels: np.ndarray, palette: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, size, size, 3): noise around the colour ``palette[label]``."""
    noise = rng.normal(0, 30, size=(len(labels), size, size, 3))
    return np.clip(palette[labels][:, None, None, :] + noise, 0, 255).astype(np.uint8)


def _dump(path: Path, obj: dict) -> None:
    with open(path, "wb") as f:
        pickle.dump(obj, f, protocol=2)


def write_cifar(root: str | Path, dataset: str = "cifar10", n_train: int = 100, n_test: int = 40, seed: int = 0) -> Path:
    """Write ``root/cifar-10-batches-py`` (5 train batches + test + meta) or ``root/cifar-100-python``; returns root.

    Rows are 3072 uint8 values, the red plane then green then blue, as in the real files.
    """
    classes = CIFAR_CLASSES[dataset]
    rng = np.random.default_rng(seed)
    palette = rng.integers(40, 216, size=(classes, 3))
    folder = Path(root) / CIFAR_FOLDERS[dataset]
    folder.mkdir(parents=True, exist_ok=True)

    def rows(n: int):
        labels = rng.integers(0, classes, n)
        hwc = _images(rng, labels, palette, 32)
        return hwc.transpose(0, 3, 1, 2).reshape(n, 3072), labels.tolist()

    if dataset == "cifar10":
        per = np.full(5, n_train // 5)
        per[: n_train % 5] += 1
        for i, n in enumerate(per, 1):
            data, labels = rows(int(n))
            _dump(folder / f"data_batch_{i}", {"batch_label": f"training batch {i} of 5", "labels": labels, "data": data, "filenames": [f"img{j}.png" for j in range(n)]})
        data, labels = rows(n_test)
        _dump(folder / "test_batch", {"batch_label": "testing batch 1 of 1", "labels": labels, "data": data, "filenames": [f"t{j}.png" for j in range(n_test)]})
        _dump(folder / "batches.meta", {"label_names": [f"class{c}" for c in range(classes)], "num_cases_per_batch": int(per[0]), "num_vis": 3072})
    else:
        for split, n in (("train", n_train), ("test", n_test)):
            data, labels = rows(n)
            _dump(folder / split, {"batch_label": split, "fine_labels": labels, "coarse_labels": [l // 5 for l in labels], "data": data, "filenames": [f"{split}{j}.png" for j in range(n)]})
        _dump(folder / "meta", {"fine_label_names": [f"fine{c}" for c in range(classes)], "coarse_label_names": [f"coarse{c}" for c in range(20)]})
    return Path(root)


def write_imagefolder(root: str | Path, classes: int = 3, train_per_class: int = 4, val_per_class: int = 2, size: int = 48, seed: int = 0) -> Path:
    """Write ``root/{train,val}/classK/*.png`` (RGB PNGs of ``size`` x ``size``, a little wider for odd aspect); returns root."""
    rng = np.random.default_rng(seed)
    palette = rng.integers(40, 216, size=(classes, 3))
    for split, per in (("train", train_per_class), ("val", val_per_class)):
        for c in range(classes):
            d = Path(root) / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            imgs = _images(rng, np.full(per, c), palette, size)
            for j, img in enumerate(imgs):
                wide = np.concatenate([img, img[:, : size // 4]], axis=1)  # non-square, as real photos are
                Image.fromarray(wide).save(d / f"{split}_{c}_{j}.png")
    return Path(root)
