"""Digits: scikit-learn's bundled 8x8 handwritten digits and a small CNN.

The whole data set (1797 images) lives on the device as one tensor, so a batch is
an index into it: no loader, no host copies in the step loop.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from bench.errors import bad
from tasks import checks
from tasks.base import Task, count_parameters

DIGITS_IMAGES = 1797  # scikit-learn's bundled set: a fixed size, so split sizes are known without loading it


def _read_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled digits as (1797, 8, 8) float64 pixel counts in 0..16 and int labels.

    Read straight from the CSV that scikit-learn ships (64 pixels then the label per row), as
    ``sklearn.datasets.load_digits`` does: importing ``sklearn.datasets`` costs ~2 s per process.
    """
    spec = importlib.util.find_spec("sklearn")  # finds the package without importing it
    csv = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz" if spec and spec.origin else None
    if csv is None or not csv.is_file():  # a scikit-learn that keeps its data elsewhere
        from sklearn.datasets import load_digits

        data = load_digits()
        return data.images, data.target
    rows = np.loadtxt(csv, delimiter=",")
    return rows[:, :-1].reshape(-1, 8, 8), rows[:, -1].astype(np.int64)


def load_digits_split(val_fraction: float, split_seed: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Images as float32 (N, 1, 8, 8) scaled to [0, 1] and int64 labels, split by a fixed permutation."""
    images, target = _read_digits()
    x = torch.tensor(images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(target, dtype=torch.int64)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(split_seed))
    n_val = round(len(x) * val_fraction)
    val, train = perm[:n_val], perm[n_val:]
    return x[train], y[train], x[val], y[val]


def digits_train_size(val_fraction: float) -> int:
    """Training images left by :func:`load_digits_split` (same rounding), without loading them."""
    return DIGITS_IMAGES - round(DIGITS_IMAGES * val_fraction)


def check_split(cfg: DictConfig) -> None:
    """``task.val_fraction`` and ``task.split_seed``, shared by the classifier and the digits GAN."""
    vf = checks.number_in("task.val_fraction", cfg.val_fraction, 0, 1, "a fraction in (0, 1)", low_open=True, high_open=True)
    if not 0 < round(DIGITS_IMAGES * vf) < DIGITS_IMAGES:  # the rounding load_digits_split applies
        raise bad("task.val_fraction", vf, f"a fraction that leaves images in both splits of the {DIGITS_IMAGES} digits")
    checks.int_at_least("task.split_seed", cfg.split_seed, 0)


class DigitsCNN(nn.Module):
    """conv3x3(c1) - ReLU - conv3x3(c2) - ReLU - maxpool2 - linear(hidden) - ReLU - linear(10).

    PyTorch's default (Kaiming-uniform) initialisation; no normalisation layers, so the
    batch size only enters through the gradient noise.
    """

    def __init__(self, channels: tuple[int, int], hidden: int, classes: int = 10):
        super().__init__()
        c1, c2 = channels
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)
        self.fc1 = nn.Linear(c2 * 4 * 4, hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.conv1(x))
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class DigitsTask(Task):
    """Classify 8x8 digits; metrics: val_acc (primary, higher is better) and val_loss."""

    metrics = {"val_acc": "max", "val_loss": "min"}

    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        check_split(cfg)
        checks.int_pair("task.channels", cfg.channels, "two positive conv widths, e.g. [32, 64]")
        checks.int_at_least("task.hidden", cfg.hidden, 1)

    @classmethod
    def static_train_size(cls, cfg: DictConfig) -> int:
        return digits_train_size(cfg.val_fraction)

    def __init__(self, cfg: DictConfig, seed: int, device: torch.device):
        super().__init__(cfg, seed, device)
        xt, yt, xv, yv = load_digits_split(cfg.val_fraction, cfg.split_seed)
        self.x_train, self.y_train = xt.to(device), yt.to(device)
        self.x_val, self.y_val = xv.to(device), yv.to(device)
        self.model = DigitsCNN(tuple(cfg.channels), cfg.hidden).to(device)

    @property
    def models(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def train_size(self) -> int:
        return len(self.x_train)

    def train_batches(self, batch_size: int, epoch: int, start: int, generator: torch.Generator) -> Iterator:
        perm = torch.randperm(len(self.x_train), generator=generator).to(self.device)
        for i in range(start, len(perm) // batch_size):
            idx = perm[i * batch_size : (i + 1) * batch_size]
            yield self.x_train[idx], self.y_train[idx]

    def loss(self, name: str, model: nn.Module, batch) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(x), y)

    def evaluate(self) -> dict[str, float]:
        self.model.eval()
        logits = self.model(self.x_val).float()
        self.model.train()
        return {
            "val_loss": F.cross_entropy(logits, self.y_val).item(),
            "val_acc": (logits.argmax(1) == self.y_val).float().mean().item(),
        }

    def extra_record(self) -> dict:
        return {"train_examples": len(self.x_train), "val_examples": len(self.x_val), "parameters": count_parameters(self.model)}
