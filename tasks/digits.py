"""Digits: scikit-learn's bundled 8x8 handwritten digits and a small CNN.

The whole data set (1797 images) lives on the device as one tensor, so a batch is
an index into it: no loader, no host copies in the step loop.
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from bench.errors import bad
from tasks import checks
from tasks.base import TensorClassifier

DIGITS_IMAGES = 1797  # scikit-learn's bundled set: a fixed size, so split sizes are known without loading it
# images per class 0..9 in the bundled set (fixed data): the stratified split sizes follow without loading it
DIGITS_PER_CLASS = (178, 182, 177, 183, 181, 182, 181, 179, 174, 180)
NORMS = ("none", "batch")  # DigitsCNN's normalisation options (task.norm)


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


def three_way_counts(val_fraction: float, test_fraction: float) -> list[tuple[int, int, int]]:
    """(train, val, test) images per class of the stratified split: round(n_c * fraction) per class."""
    out = []
    for n in DIGITS_PER_CLASS:
        n_test, n_val = round(n * test_fraction), round(n * val_fraction)
        out.append((n - n_test - n_val, n_val, n_test))
    return out


def load_digits_three_way(val_fraction: float, test_fraction: float, split_seed: int) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """A fixed stratified train / validation / test split: ``{"train": (x, y), "val": ..., "test": ...}``.

    Images as float32 (N, 1, 8, 8) in [0, 1], int64 labels. Each class's images are permuted by a
    generator seeded with ``split_seed`` (class c uses seed ``split_seed * 10 + c``), the first
    round(n_c * test_fraction) go to test, the next round(n_c * val_fraction) to validation, the
    rest to training; so every split has each class in its share and the split never depends on
    the run's seed.
    """
    images, target = _read_digits()
    x = torch.tensor(images, dtype=torch.float32).unsqueeze(1) / 16.0
    y = torch.tensor(target, dtype=torch.int64)
    parts: dict[str, list[torch.Tensor]] = {"train": [], "val": [], "test": []}
    for c, (n_train, n_val, n_test) in enumerate(three_way_counts(val_fraction, test_fraction)):
        idx = torch.nonzero(y == c).flatten()
        idx = idx[torch.randperm(len(idx), generator=torch.Generator().manual_seed(split_seed * 10 + c))]
        parts["test"].append(idx[:n_test])
        parts["val"].append(idx[n_test : n_test + n_val])
        parts["train"].append(idx[n_test + n_val :])
    return {k: (x[torch.cat(v).sort().values], y[torch.cat(v).sort().values]) for k, v in parts.items()}


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
    """conv3x3(c1) - [BN] - ReLU - conv3x3(c2) - [BN] - ReLU - maxpool2 - linear(hidden) - [BN] - ReLU - linear(10).

    Without ``batch_norm`` (``task.norm=none``) there are no normalisation layers, so the batch size
    only enters through the gradient noise. With it (``task.norm=batch``), BatchNorm before each of
    the three ReLUs: batch statistics in training, running statistics in eval mode; the layer before
    a BatchNorm has no bias (BatchNorm's shift does that job). PyTorch's default (Kaiming-uniform)
    initialisation either way.
    """

    def __init__(self, channels: tuple[int, int], hidden: int, classes: int = 10, batch_norm: bool = False):
        super().__init__()
        c1, c2 = channels
        bias = not batch_norm
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1, bias=bias)
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1, bias=bias)
        self.fc1 = nn.Linear(c2 * 4 * 4, hidden, bias=bias)
        self.fc2 = nn.Linear(hidden, classes)
        # registered after the layers above, and only when asked for: without batch_norm the network has the
        # modules, the order and so the initial weights for a seed that it had before the option existed
        self.norms = nn.ModuleList([nn.BatchNorm2d(c1), nn.BatchNorm2d(c2), nn.BatchNorm1d(hidden)]) if batch_norm else None

    def _normed(self, i: int, h: torch.Tensor) -> torch.Tensor:
        return h if self.norms is None else self.norms[i](h)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """The penultimate activations (after fc1, its BatchNorm if any, and ReLU), shape (N, hidden);
        the feature space of the digits GAN's metrics (tasks/gan.py)."""
        h = F.relu(self._normed(0, self.conv1(x)))
        h = F.max_pool2d(F.relu(self._normed(1, self.conv2(h))), 2)
        return F.relu(self._normed(2, self.fc1(h.flatten(1))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.features(x))


class DigitsTask(TensorClassifier):
    """Classify 8x8 digits; metrics: val_acc (primary, higher is better) and val_loss.

    Three fixed stratified splits (train / validation / test, :func:`load_digits_three_way`):
    validation for evaluations during training and model selection, test once at the end.
    """

    chance = {"val_acc": 0.1, "val_loss": math.log(10)}  # 10 balanced classes: a uniform guess

    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        check_split(cfg)
        tf = checks.number_in("task.test_fraction", cfg.test_fraction, 0, 1, "a fraction in (0, 1)", low_open=True, high_open=True)
        if any(n < 1 for counts in three_way_counts(cfg.val_fraction, tf) for n in counts):
            raise bad("task.test_fraction", tf, f"a fraction that leaves every class in all three splits with task.val_fraction={cfg.val_fraction}")
        checks.int_pair("task.channels", cfg.channels, "two positive conv widths, e.g. [32, 64]")
        checks.int_at_least("task.hidden", cfg.hidden, 1)
        checks.choice("task.norm", cfg.norm, NORMS, f"one of {', '.join(NORMS)} (no normalisation, or BatchNorm before each ReLU)")

    @classmethod
    def static_train_size(cls, cfg: DictConfig) -> int:
        return sum(train for train, _, _ in three_way_counts(cfg.val_fraction, cfg.test_fraction))

    def __init__(self, cfg: DictConfig, seed: int, device: torch.device):
        super().__init__(cfg, seed, device)
        split = load_digits_three_way(cfg.val_fraction, cfg.test_fraction, cfg.split_seed)
        (xt, yt), (xv, yv), (xs, ys) = split["train"], split["val"], split["test"]
        self.x_train, self.y_train = xt.to(device), yt.to(device)
        self.x_val, self.y_val = xv.to(device), yv.to(device)
        self.x_test, self.y_test = xs.to(device), ys.to(device)
        self.model = DigitsCNN(tuple(cfg.channels), cfg.hidden, batch_norm=cfg.norm == "batch").to(device)

    def extra_record(self) -> dict:
        return self.split_sizes() | {"norm": self.cfg.norm}
