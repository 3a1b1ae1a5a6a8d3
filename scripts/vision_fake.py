"""Tiny stand-in data sets in the real on-disk formats, for tests and the throughput script.

The files have the exact layout the real data have (CIFAR's pickled batches, an ImageFolder tree
of PNGs), so the real readers run on them; the pixels are noise with a class-dependent colour
shift, so a model can learn something in a few steps. They are not CIFAR or ImageNet: never
report numbers measured on them as such.

It lives in scripts/, not in the ``tasks`` package: it is test and benchmark tooling, and the package
holds only what a run needs. scripts/bench_vision.py imports it as a sibling; the tests load it by
path (``tests/conftest.py: load_script``). By hand:

    python scripts/vision_fake.py /tmp/fake --n-train 32 --n-test 16       # CIFAR-10 layout
    python scripts/vision_fake.py /tmp/fake --dataset imagefolder           # a 3-class ImageFolder tree
    python scripts/vision_fake.py /tmp/fake --dataset fashion_mnist         # the four IDX files, gzipped
"""

from __future__ import annotations

import argparse
import gzip
import pickle
import sys
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from any directory: find tasks/

from tasks.vision_data import CIFAR_CLASSES, CIFAR_FOLDERS  # noqa: E402


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


def write_idx(path: str | Path, array: np.ndarray, gz: bool = True) -> Path:
    """Write a uint8 array as an IDX file (magic 0x0000 0x08 ndim, big-endian uint32 sizes, the bytes);
    gzipped (``path`` + ".gz") when ``gz``. Returns the path written."""
    head = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    data = head + np.ascontiguousarray(array, dtype=np.uint8).tobytes()
    path = Path(str(path) + ".gz") if gz else Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with (gzip.open(path, "wb") if gz else open(path, "wb")) as f:
        f.write(data)
    return path


def write_fashion(root: str | Path, n_train: int = 200, n_test: int = 50, gz: bool = True, seed: int = 0) -> Path:
    """Write the four Fashion-MNIST IDX files under ``root`` (28x28 uint8 images, labels 0..9, balanced);
    each class is a bright horizontal band at its own height plus noise, so a model learns it quickly."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("t10k", n_test)):
        labels = (np.arange(n) % 10).astype(np.uint8)
        rng.shuffle(labels)
        images = rng.integers(0, 60, size=(n, 28, 28))
        for c in range(10):
            images[labels == c, 2 + 2 * c : 4 + 2 * c, :] += 180
        write_idx(Path(root) / f"{split}-images-idx3-ubyte", np.clip(images, 0, 255).astype(np.uint8), gz)
        write_idx(Path(root) / f"{split}-labels-idx1-ubyte", labels, gz)
    return Path(root)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="Write a tiny stand-in data set in the real on-disk format.")
    ap.add_argument("root", type=Path)
    ap.add_argument("--dataset", choices=["cifar10", "cifar100", "imagefolder", "fashion_mnist"], default="cifar10")
    ap.add_argument("--n-train", type=int, default=100, help="CIFAR: training images (ImageFolder: per class)")
    ap.add_argument("--n-test", type=int, default=40, help="CIFAR: test images (ImageFolder: validation images per class)")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    if args.dataset == "fashion_mnist":
        write_fashion(args.root, args.n_train, args.n_test, seed=args.seed)
    elif args.dataset == "imagefolder":
        write_imagefolder(args.root, train_per_class=args.n_train, val_per_class=args.n_test, seed=args.seed)
    else:
        write_cifar(args.root, args.dataset, args.n_train, args.n_test, args.seed)
    print(f"wrote stand-in {args.dataset} data under {args.root}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
