"""Fashion-MNIST (Xiao et al. 2017) from its four IDX files, with an MLP or a small ResNet, each with
BatchNorm, ghost BatchNorm or no normalisation.

Data: the official 60k training and 10k test images (28x28 grey, 10 balanced classes) as the four IDX
files ``{train,t10k}-{images-idx3,labels-idx1}-ubyte``, gzipped or not, read from ``task.data_root`` or,
when that is null, from the first of ``$BENCH_DATA/fashion-mnist``, ``$BENCH_DATA`` and Debian's
``/usr/share/datasets/fashion-mnist`` (package ``dataset-fashion-mnist``) that holds all four. Nothing
is downloaded.

Splits: ``task.val_size`` images (5,000 by default, 500 per class) are held out of the official training
set, stratified, with a fixed ``task.split_seed`` (:func:`tasks.vision_data.stratified_holdout`); the rest
(55,000) are trained on. The official 10k test set is scored once at the end of a run. The whole data set
lives on the task's device as normalised float32 tensors, so a batch is one index.

Models (``task.model``):

- ``mlp``: 784 -> ``widths`` -> 10, each hidden layer linear -> norm -> ReLU.
- ``resnet``: a 3x3 stride-2 stem conv (28 -> 14 px), then one stage per entry of ``channels`` (the first
  at the stem's resolution, each later one halving it) of ``blocks`` basic residual blocks
  (conv3x3-norm-ReLU-conv3x3-norm plus the shortcut, then ReLU; a 1x1 conv-norm shortcut where the shape
  changes), global average pooling and a linear classifier.

``task.norm``: ``batch`` (BatchNorm over the micro-batch), ``ghost`` (BatchNorm over fixed groups of
``task.ghost_size`` examples whatever the batch: Goyal et al. 2017's per-worker BN over 32 images) or
``none`` (layers keep their biases). With ``task.zero_init_last`` the last norm of each residual branch
starts at gamma = 0 (Goyal et al. sec. 5.1), so each block starts as the identity; without norm layers the
branch's last conv starts at zero instead, to the same effect. With ``task.decay_norm_bias: false`` weight
decay skips norm and bias parameters (:func:`tasks.base.decay_groups`).
"""

from __future__ import annotations

import gzip
import hashlib
import math
import os
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from omegaconf import DictConfig
from torch import nn

from bench.errors import ConfigError, bad
from tasks import checks
from tasks.base import TensorClassifier, decay_groups

DEBIAN_ROOT = "/usr/share/datasets/fashion-mnist"
FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
# SHA-256 of each file's decompressed bytes in Zalando's release (as Debian ships it): the record says
# whether the data are the official ones, whatever the compression.
OFFICIAL_SHA256 = {
    "train_images": "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
    "train_labels": "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
    "test_images": "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
    "test_labels": "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
}
CLASSES = 10
MODELS = ("mlp", "resnet")
NORMS = ("batch", "ghost", "none")
IDX_UBYTE = 0x08


# ---------------------------------------------------------------- finding and reading the files


def _file_in(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    return None


def candidate_roots(data_root: str | None) -> list[Path]:
    """The folders searched for the four files, in order: ``task.data_root`` alone when set, else
    ``$BENCH_DATA/fashion-mnist``, ``$BENCH_DATA`` and Debian's folder."""
    if data_root is not None:
        return [Path(data_root).expanduser()]
    env = os.environ.get("BENCH_DATA")
    roots = [Path(env).expanduser() / "fashion-mnist", Path(env).expanduser()] if env else []
    return roots + [Path(DEBIAN_ROOT)]


def find_files(data_root: str | None) -> dict[str, Path]:
    """``{train_images, train_labels, test_images, test_labels} -> path`` in the first folder of
    :func:`candidate_roots` that holds all four (a few ``stat`` calls); a :class:`ConfigError` naming
    the files and where they go when none does."""
    roots = candidate_roots(data_root)
    for root in roots:
        found = {k: _file_in(root, stem) for k, stem in FILES.items()}
        if all(found.values()):
            return found  # type: ignore[return-value]
    names = ", ".join(f"{s}[.gz]" for s in FILES.values())
    where = f"task.data_root={data_root!r} lacks them" if data_root is not None else "searched " + ", ".join(str(r) for r in roots)
    raise ConfigError(
        f"Fashion-MNIST not found ({where}): put the four IDX files {names} in one folder and set task.data_root "
        f"(or env BENCH_DATA) to it, or install them with `apt-get install dataset-fashion-mnist` (Debian: {DEBIAN_ROOT})"
    )


def _open(path: Path):
    return gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")


def idx_header(path: Path) -> tuple[int, ...]:
    """The shape stored in an IDX file's header (reads only the first bytes)."""
    try:
        with _open(path) as f:
            head = f.read(4)
            if len(head) < 4 or head[0] or head[1] or head[2] != IDX_UBYTE or not 1 <= head[3] <= 3:
                raise ConfigError(f"{path}: not an IDX file of unsigned bytes (magic {head.hex() or 'empty'}; expected 000008 then the number of dimensions)")
            dims = f.read(4 * head[3])
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise ConfigError(f"{path}: cannot be read as an IDX file ({e})") from None
    if len(dims) < 4 * head[3]:
        raise ConfigError(f"{path}: the IDX header is cut short")
    return tuple(int.from_bytes(dims[4 * i : 4 * i + 4], "big") for i in range(head[3]))


def read_idx(path: Path) -> tuple[np.ndarray, str]:
    """An IDX file of unsigned bytes as a uint8 array of its stored shape, and the SHA-256 of its
    decompressed bytes. A file whose size disagrees with its header is refused in one line."""
    shape = idx_header(path)
    try:
        with _open(path) as f:
            raw = f.read()
    except (OSError, EOFError, gzip.BadGzipFile) as e:
        raise ConfigError(f"{path}: cannot be read as an IDX file ({e})") from None
    start = 4 + 4 * len(shape)
    want = int(np.prod(shape))
    if len(raw) - start != want:
        raise ConfigError(f"{path}: the header announces {'x'.join(map(str, shape))} = {want} bytes of data but the file holds {len(raw) - start}")
    return np.frombuffer(raw, dtype=np.uint8, offset=start).reshape(shape), hashlib.sha256(raw).hexdigest()


def load_fashion(files: dict[str, Path]) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """The four arrays (images (N, 28, 28), labels (N,)) checked against each other, and their SHA-256s."""
    arrays, sums = {}, {}
    for key, path in files.items():
        arrays[key], sums[key] = read_idx(path)
    for split in ("train", "test"):
        images, labels = arrays[f"{split}_images"], arrays[f"{split}_labels"]
        if images.ndim != 3 or images.shape[1:] != (28, 28):
            raise ConfigError(f"{files[f'{split}_images']}: images of shape {images.shape}; Fashion-MNIST has N x 28 x 28")
        if labels.ndim != 1 or len(labels) != len(images):
            raise ConfigError(f"{files[f'{split}_labels']}: {labels.shape} labels for {len(images)} images in {files[f'{split}_images'].name}")
        if len(labels) and labels.max() >= CLASSES:
            raise ConfigError(f"{files[f'{split}_labels']}: label {int(labels.max())}; Fashion-MNIST has classes 0..9")
    return arrays, sums


# ---------------------------------------------------------------- normalisation layers


class _GhostMixin:
    """BatchNorm over fixed groups of ``ghost_size`` examples in training (Hoffer et al. 2017; Goyal et al.'s
    per-worker BN): a batch of N is cut into N // ghost_size groups in order (and a last, smaller group
    for the remainder; a remainder of one example joins the group before it), each normalised by its own mean and variance; the running statistics move
    toward the mean of the groups' statistics. Evaluation uses the running statistics, as BatchNorm does."""

    ghost_size: int

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, g = x.shape[0], self.ghost_size
        if not self.training or n <= g:
            return super().forward(x)  # type: ignore[misc]
        groups = n // g
        if n - groups * g == 1:  # one example cannot be normalised alone
            groups -= 1
        full = groups * g
        parts = [self._ghost(x[:full], groups)] if groups else []
        if full < n:
            parts.append(self._ghost(x[full:], 1))
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    def _ghost(self, x: torch.Tensor, groups: int) -> torch.Tensor:
        # (G*g, C, ...) -> (g, G*C, ...): each (group, channel) pair is one channel of an ordinary batch norm
        c, rest = x.shape[1], x.shape[2:]
        xg = x.reshape(groups, -1, c, *rest).transpose(0, 1).reshape(-1, groups * c, *rest)
        mean, var = self.running_mean.repeat(groups), self.running_var.repeat(groups)  # type: ignore[attr-defined]
        y = F.batch_norm(xg, mean, var, self.weight.repeat(groups), self.bias.repeat(groups), True, self.momentum, self.eps)  # type: ignore[attr-defined]
        with torch.no_grad():
            self.running_mean.copy_(mean.view(groups, c).mean(0))  # type: ignore[attr-defined]
            self.running_var.copy_(var.view(groups, c).mean(0))  # type: ignore[attr-defined]
            self.num_batches_tracked += 1  # type: ignore[attr-defined]
        return y.reshape(-1, groups, c, *rest).transpose(0, 1).reshape(x.shape)


class GhostBatchNorm1d(_GhostMixin, nn.BatchNorm1d):
    def __init__(self, features: int, ghost_size: int):
        super().__init__(features)
        self.ghost_size = ghost_size


class GhostBatchNorm2d(_GhostMixin, nn.BatchNorm2d):
    def __init__(self, features: int, ghost_size: int):
        super().__init__(features)
        self.ghost_size = ghost_size


def make_norm(kind: str, features: int, dims: int, ghost_size: int) -> nn.Module | None:
    """A norm layer for ``features`` channels of ``dims``-d data (1: vectors, 2: images), or None."""
    if kind == "none":
        return None
    if kind == "ghost":
        return (GhostBatchNorm1d if dims == 1 else GhostBatchNorm2d)(features, ghost_size)
    return (nn.BatchNorm1d if dims == 1 else nn.BatchNorm2d)(features)


# ---------------------------------------------------------------- models


class MLP(nn.Module):
    """784 -> widths -> 10; each hidden layer linear (no bias before a norm) -> norm -> ReLU."""

    def __init__(self, widths: list[int], norm: str, ghost_size: int):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        d = 28 * 28
        for w in widths:
            n = make_norm(norm, w, 1, ghost_size)
            layers += [nn.Linear(d, w, bias=n is None)] + ([n] if n is not None else []) + [nn.ReLU()]
            d = w
        layers.append(nn.Linear(d, CLASSES))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class _ConvNorm(nn.Sequential):
    def __init__(self, cin: int, cout: int, k: int, stride: int, norm: str, ghost_size: int):
        n = make_norm(norm, cout, 2, ghost_size)
        super().__init__(nn.Conv2d(cin, cout, k, stride, k // 2, bias=n is None), *([n] if n is not None else []))

    def zero_last(self) -> None:
        """Make this layer output zeros at init: gamma = 0 of its norm, else the conv's weight and bias."""
        last = self[-1]
        nn.init.zeros_(last.weight)
        if last.bias is not None and isinstance(last, nn.Conv2d):
            nn.init.zeros_(last.bias)


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, norm: str, ghost_size: int, zero_init_last: bool):
        super().__init__()
        self.conv1 = _ConvNorm(cin, cout, 3, stride, norm, ghost_size)
        self.conv2 = _ConvNorm(cout, cout, 3, 1, norm, ghost_size)
        self.shortcut = _ConvNorm(cin, cout, 1, stride, norm, ghost_size) if stride != 1 or cin != cout else None
        if zero_init_last:
            self.conv2.zero_last()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.conv2(F.relu(self.conv1(x)))
        return F.relu(y + (x if self.shortcut is None else self.shortcut(x)))


class SmallResNet(nn.Module):
    """Stem conv3x3/2 -> stages of basic blocks (each later stage halves the resolution) -> avg pool -> linear."""

    def __init__(self, channels: list[int], blocks: int, norm: str, ghost_size: int, zero_init_last: bool):
        super().__init__()
        self.stem = _ConvNorm(1, channels[0], 3, 2, norm, ghost_size)
        stages, cin = [], channels[0]
        for i, c in enumerate(channels):
            for b in range(blocks):
                stages.append(BasicBlock(cin, c, 2 if i > 0 and b == 0 else 1, norm, ghost_size, zero_init_last))
                cin = c
        self.stages = nn.Sequential(*stages)
        self.fc = nn.Linear(cin, CLASSES)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stages(F.relu(self.stem(x)))
        return self.fc(x.mean((2, 3)))


def _positive_ints(key: str, v, allowed: str) -> list[int]:
    vals = list(v) if v is not None and not isinstance(v, (str, int, float, bool)) else None
    if not vals or not all(checks.is_int(x) and x >= 1 for x in vals):
        raise bad(key, vals if vals is not None else v, allowed)
    return vals


# ---------------------------------------------------------------- the task


class FashionTask(TensorClassifier):
    """Classify Fashion-MNIST; metrics: val_acc (primary, higher is better) and val_loss."""

    chance = {"val_acc": 1 / CLASSES, "val_loss": math.log(CLASSES)}

    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        if cfg.data_root is not None:
            checks.text("task.data_root", cfg.data_root, "the folder that holds the four IDX files, or null to search $BENCH_DATA and " + DEBIAN_ROOT)
        checks.choice("task.model", cfg.model, MODELS)
        checks.choice("task.norm", cfg.norm, NORMS)
        checks.int_at_least("task.ghost_size", cfg.ghost_size, 2, "an integer >= 2 (examples per ghost BatchNorm group)")
        _positive_ints("task.widths", cfg.widths, "a non-empty list of positive hidden widths, e.g. [256, 256]")
        _positive_ints("task.channels", cfg.channels, "a non-empty list of positive stage widths, e.g. [16, 32]")
        checks.int_at_least("task.blocks", cfg.blocks, 1, "an integer >= 1 (residual blocks per stage)")
        checks.flag("task.zero_init_last", cfg.zero_init_last)
        checks.flag("task.decay_norm_bias", cfg.decay_norm_bias)
        checks.int_at_least("task.val_size", cfg.val_size, 1, "an integer >= 1 (images held out of the training set)")
        checks.int_at_least("task.split_seed", cfg.split_seed, 0)
        checks.int_at_least("task.eval_batch_size", cfg.eval_batch_size, 1)
        find_files(cfg.data_root)  # a few stat calls: a missing data set is refused before any job starts

    @classmethod
    def static_train_size(cls, cfg: DictConfig) -> int:
        n = idx_header(find_files(cfg.data_root)["train_labels"])[0]  # the header only
        if cfg.val_size >= n:
            raise bad("task.val_size", cfg.val_size, f"fewer than the {n} training images found (the rest are trained on)")
        return n - cfg.val_size

    def __init__(self, cfg: DictConfig, seed: int, device: torch.device):
        super().__init__(cfg, seed, device)
        from tasks.vision_data import stratified_holdout

        files = find_files(cfg.data_root)
        arrays, self.sha256 = load_fashion(files)
        self.files = files
        labels = torch.from_numpy(arrays["train_labels"].astype(np.int64))
        n = len(labels)
        if cfg.val_size >= n:
            raise bad("task.val_size", cfg.val_size, f"fewer than the {n} training images found (the rest are trained on)")
        train_idx, val_idx = stratified_holdout(labels, cfg.val_size, cfg.split_seed)
        images = self._normalise(arrays["train_images"])
        self.x_train, self.y_train = images[train_idx].to(device), labels[train_idx].to(device)
        self.x_val, self.y_val = images[val_idx].to(device), labels[val_idx].to(device)
        self.x_test = self._normalise(arrays["test_images"]).to(device)
        self.y_test = torch.from_numpy(arrays["test_labels"].astype(np.int64)).to(device)
        if cfg.model == "mlp":
            self.model = MLP(list(cfg.widths), cfg.norm, cfg.ghost_size)
        else:
            self.model = SmallResNet(list(cfg.channels), cfg.blocks, cfg.norm, cfg.ghost_size, cfg.zero_init_last)
        self.model.to(device)
        self.eval_batch_size = cfg.eval_batch_size

    def _normalise(self, images: np.ndarray) -> torch.Tensor:
        """uint8 (N, 28, 28) -> float32 (N, 1, 28, 28) as ``(x / 255 - mean) / std``."""
        x = torch.from_numpy(images.copy()).float().div_(255).unsqueeze(1)
        return x.sub_(self.cfg.mean).div_(self.cfg.std)

    def optimizer_params(self, name: str, model: nn.Module):
        return model.parameters() if self.cfg.decay_norm_bias else decay_groups(model)

    def extra_record(self) -> dict:
        return self.split_sizes() | {
            "data_folder": str(self.files["train_images"].parent),
            "sha256": self.sha256,  # of each file's decompressed bytes
            "official_data": self.sha256 == OFFICIAL_SHA256,
        }
