"""Vision tasks on local data with timm models: CIFAR-10/100 (ResNet-18, ViT) and ImageFolder (ResNet-50).

Models come from timm's registry with ``pretrained=False`` (nothing is downloaded); the task
config names the model and passes ``model_kwargs`` to :func:`timm.create_model`.

CIFAR ResNet (``cifar_stem: true``): timm's ``resnet18`` (BasicBlock, [2, 2, 2, 2], 11.2M
parameters) with its ImageNet stem (7x7 stride-2 conv + 3x3 stride-2 max-pool, a 4x
down-sampling meant for 224 px) replaced by one 3x3 stride-1 conv and no pool, so the four
stages see 32, 16, 8, 4 px: the usual CIFAR ResNet-18 (He et al. 2016 sec. 4.2 use the same
stem for their CIFAR nets).

Splits: training and validation images both come from the official training set. ``task.val_size``
images are held out of it, stratified by class with a fixed ``task.split_seed``
(:func:`tasks.vision_data.stratified_holdout`), and never trained on; they are scored by
``evaluate("val")`` during training and for model selection. The official test set (CIFAR's test
batch, ImageNet's ``val/`` folder) is the test split, scored once by ``evaluate("test")`` at the end
of a run. ``task.val_subset`` caps the images scored in each of the two evaluation splits.

Batches are uint8 images on the device; normalisation ``(x / 255 - mean) / std`` happens on the
device inside :meth:`loss`, so host-to-device copies stay 4x smaller than float32 and the
GPU-resident CIFAR loader needs no host work per step. When the harness has put the model in
channels-last layout the input is converted too, so the first convolution needs no relayout.
"""

from __future__ import annotations

import math
from typing import Iterator

import timm
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from bench.errors import ConfigError, bad
from tasks import checks
from tasks import vision_data as vd
from tasks.base import Task, count_parameters


def _subset_fits(key: str, v, available: int, what: str = "found") -> None:
    if v is not None and v > available:
        raise bad(key, v, f"at most the {available} images {what}, or null for all")


def _holdout(labels, cfg: DictConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """(training, validation) indices into the official training set: ``task.val_size`` images held out,
    stratified, with ``task.split_seed``; ``task.train_subset`` then takes part of the rest."""
    n = len(labels)
    if cfg.val_size >= n:
        raise bad("task.val_size", cfg.val_size, f"fewer than the {n} training images found (the rest are trained on)")
    train_idx, val_idx = vd.stratified_holdout(labels, cfg.val_size, cfg.split_seed)
    _subset_fits("task.train_subset", cfg.train_subset, len(train_idx), f"left for training after task.val_size={cfg.val_size} are held out")
    return train_idx, val_idx


def _chance(num_classes: int, top5: bool) -> dict[str, float]:
    """Scores of a uniform guess over ``num_classes`` balanced classes: accuracy 1/C, top-5 min(5, C)/C, loss ln C."""
    out = {"val_acc": 1 / num_classes, "val_loss": math.log(num_classes)}
    if top5:
        out["val_acc5"] = min(5, num_classes) / num_classes
    return out


def _channels(key: str, v) -> tuple[float, ...]:
    vals = list(v) if v is not None and not isinstance(v, (str, int, float)) else None
    if not vals or len(vals) != 3 or not all(checks.is_number(x) for x in vals):
        raise bad(key, v, "three per-channel numbers (R, G, B)")
    return tuple(float(x) for x in vals)


def _model_kwargs(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg.model_kwargs, resolve=True) if cfg.model_kwargs is not None else {}


def check_timm_model(cfg: DictConfig) -> None:
    """``task.model`` is in timm's registry (a dictionary lookup, nothing built) and ``task.model_kwargs``
    is a mapping without the two arguments the task sets itself."""
    if not isinstance(cfg.model, str) or not timm.is_model(cfg.model):
        raise bad("task.model", cfg.model, "a model name in timm's registry (see timm.list_models())")
    if cfg.model_kwargs is not None and not isinstance(cfg.model_kwargs, DictConfig):
        raise bad("task.model_kwargs", cfg.model_kwargs, "a mapping of keyword arguments for timm.create_model")
    kwargs = _model_kwargs(cfg)
    for key in ("pretrained", "num_classes"):
        if key in kwargs:
            raise bad(f"task.model_kwargs.{key}", kwargs[key], "not set here: pretrained is always False and num_classes comes from the data")


def create_timm_model(cfg: DictConfig, num_classes: int) -> nn.Module:
    """``timm.create_model(cfg.model, pretrained=False, num_classes=..., **cfg.model_kwargs)`` (keys checked by :func:`check_timm_model`).

    Arguments the model does not accept only show when it is built, so that error is raised here.
    """
    kwargs = _model_kwargs(cfg)
    try:
        return timm.create_model(cfg.model, pretrained=False, num_classes=num_classes, **kwargs)
    except TypeError as e:
        raise bad("task.model_kwargs", kwargs, f"arguments timm model {cfg.model} accepts ({e})") from None


def cifar_stem(model: nn.Module) -> nn.Module:
    """Swap a timm ResNet's 7x7/2 conv + max-pool stem for a 3x3/1 conv (init as timm's: Kaiming normal, fan-out)."""
    if not (isinstance(getattr(model, "conv1", None), nn.Conv2d) and hasattr(model, "maxpool")):
        raise ConfigError(f"task.cifar_stem=true needs a timm ResNet with a single conv1 stem and maxpool, not {type(model).__name__}: set task.cifar_stem=false")
    old = model.conv1
    model.conv1 = nn.Conv2d(old.in_channels, old.out_channels, 3, stride=1, padding=1, bias=False)
    nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    model.maxpool = nn.Identity()
    return model


def _channels_last(model: nn.Module) -> bool:
    for p in model.parameters():
        if p.dim() == 4:
            return p.is_contiguous(memory_format=torch.channels_last) and not p.is_contiguous()
    return False


class _ImageClassifier(Task):
    """Shared parts: one timm model, device-side normalisation, cross-entropy with optional label smoothing."""

    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        """Keys every image task has; the subclass adds its own and the ``data_root`` check."""
        _channels("task.mean", cfg.mean)
        if min(_channels("task.std", cfg.std)) <= 0:
            raise bad("task.std", list(cfg.std), "three numbers > 0")
        checks.number_in("task.label_smoothing", cfg.label_smoothing, 0, 1, "a number in [0, 1)", high_open=True)
        checks.int_at_least("task.eval_batch_size", cfg.eval_batch_size, 1)
        checks.int_at_least("task.train_subset", cfg.train_subset, 1, allow_none=True)
        checks.int_at_least("task.val_size", cfg.val_size, 1)
        checks.int_at_least("task.split_seed", cfg.split_seed, 0)
        checks.int_at_least("task.val_subset", cfg.val_subset, 1, allow_none=True)
        if cfg.val_subset is not None and cfg.val_subset > cfg.val_size:
            raise bad("task.val_subset", cfg.val_subset, f"at most task.val_size={cfg.val_size} (it caps the images scored in the validation and the test split), or null for all")
        checks.int_at_least("task.workers", cfg.workers, 0)
        checks.flag("task.flip", cfg.flip)
        checks.text("task.data_root", cfg.data_root, "the folder that holds the data set (env BENCH_DATA sets it)")
        check_timm_model(cfg)

    @classmethod
    def static_train_size(cls, cfg: DictConfig) -> int | None:
        """``train_subset`` when set (a larger one than the training images left after the validation split is
        refused when the data is read); else unknown: subsets and stand-in files are allowed, so the size is in the data."""
        return cfg.train_subset

    def __init__(self, cfg: DictConfig, seed: int, device: torch.device):
        super().__init__(cfg, seed, device)
        self.mean = torch.tensor(_channels("task.mean", cfg.mean), device=device)
        self.std = torch.tensor(_channels("task.std", cfg.std), device=device)

    @property
    def models(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def inputs(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 batch -> normalised float32, in the model's memory layout."""
        x = vd.normalize(x, self.mean, self.std)
        return x.contiguous(memory_format=torch.channels_last if _channels_last(self.model) else torch.contiguous_format)

    def loss(self, name: str, model: nn.Module, batch) -> torch.Tensor:
        x, y = batch
        return F.cross_entropy(model(self.inputs(x)), y, label_smoothing=float(self.cfg.label_smoothing))

    def train_size(self) -> int:
        return self.n_train  # set by the subclass with self.train_data (a loader with .batches)

    def train_batches(self, batch_size: int, epoch: int, start: int, generator: torch.Generator) -> Iterator:
        return self.train_data.batches(batch_size, start, generator)

    def train_shards(self, batch_size: int, epoch: int, start: int, generator: torch.Generator, rank: int, world_size: int) -> Iterator:
        return self.train_data.batches(batch_size, start, generator, rank, world_size)  # load only this process's share

    def _eval_batches(self, split: str) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def evaluate(self, split: str = "val") -> dict[str, float]:
        """Loss (no smoothing), top-1 and top-k accuracy (k = min(5, classes)), summed on the device.

        ``split``: "val" scores the images held out of the official training set, "test" the official
        test set; both at most ``task.val_subset`` images. Keys are ``val_*`` for both splits.
        """
        if split not in ("val", "test"):
            raise ValueError(f"split={split!r}: 'val' or 'test'")
        self.model.eval()
        k = min(5, self.num_classes)
        loss_sum = torch.zeros((), device=self.device)
        hit1 = torch.zeros((), device=self.device)
        hitk = torch.zeros((), device=self.device)
        n = 0
        for x, y in self._eval_batches(split):
            logits = self.model(self.inputs(x)).float()
            loss_sum += F.cross_entropy(logits, y, reduction="sum")
            top = logits.topk(k, dim=1).indices
            hit1 += (top[:, 0] == y).sum()
            hitk += (top == y[:, None]).any(1).sum()
            n += len(y)
        self.model.train()
        out = {"val_loss": loss_sum.item() / n, "val_acc": hit1.item() / n}
        if "val_acc5" in self.metrics:
            out["val_acc5"] = hitk.item() / n
        return out


class CifarTask(_ImageClassifier):
    """CIFAR-10/100 classification; metrics ``val_acc`` (top-1, primary) and ``val_loss``.

    Validation: ``task.val_size`` images held out of the 50k training images; test: the 10k test batch.
    """

    metrics = {"val_acc": "max", "val_loss": "min"}

    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        checks.choice("task.dataset", cfg.dataset, vd.CIFAR_FOLDERS)
        super().check_config(cfg)
        checks.choice("task.loader", cfg.loader, ("device", "dataloader"), "device (GPU-resident, augmented on the device) or dataloader (torchvision ops in worker processes)")
        checks.int_at_least("task.crop_padding", cfg.crop_padding, 0)
        checks.flag("task.cifar_stem", cfg.cifar_stem)
        msg = vd.cifar_missing_message(cfg.dataset, cfg.data_root)  # a few stat calls
        if msg:
            raise ConfigError(msg)

    def __init__(self, cfg: DictConfig, seed: int, device: torch.device):
        super().__init__(cfg, seed, device)
        self.num_classes = vd.CIFAR_CLASSES[cfg.dataset]
        self.chance = _chance(self.num_classes, top5=False)
        self.model = create_timm_model(cfg, self.num_classes)
        if cfg.cifar_stem:
            cifar_stem(self.model)
        self.model.to(device)

        train = vd.load_cifar(cfg.dataset, cfg.data_root, train=True)
        test = vd.load_cifar(cfg.dataset, cfg.data_root, train=False)
        train_idx, val_idx = _holdout(train.targets, cfg)
        _subset_fits("task.val_subset", cfg.val_subset, len(test.data), "in the test set")
        # the first N of each split in file order (CIFAR's files are in random order)
        self.train_idx, self.val_idx = train_idx[: cfg.train_subset].numpy(), val_idx[: cfg.val_subset].numpy()
        targets = torch.as_tensor(train.targets, dtype=torch.int64)
        data = train.data[self.train_idx]  # a copy without the validation images: no loader can draw them
        self.n_train, self.n_val, self.n_test = len(data), len(self.val_idx), len(test.data[: cfg.val_subset])
        self.official = vd.cifar_files_official(cfg.dataset, cfg.data_root)
        if cfg.loader == "device":
            images = vd.to_chw_tensor(data)
            self.train_data = vd.DeviceCifar(images, targets[self.train_idx], cfg.crop_padding, cfg.flip, device)
        else:
            self.train_data = vd.LoaderCifar(data, targets[self.train_idx].tolist(), cfg.crop_padding, cfg.flip, cfg.workers, device)
        self.eval_sets = {
            "val": (vd.to_chw_tensor(train.data[self.val_idx]).to(device), targets[self.val_idx].to(device)),
            "test": (vd.to_chw_tensor(test.data[: cfg.val_subset]).to(device), torch.as_tensor(test.targets[: cfg.val_subset], dtype=torch.int64, device=device)),
        }

    def _eval_batches(self, split: str):
        x, y = self.eval_sets[split]
        bs = self.cfg.eval_batch_size
        for i in range(0, len(y), bs):
            yield x[i : i + bs], y[i : i + bs]

    def extra_record(self) -> dict:
        return {
            "dataset": self.cfg.dataset,
            "official_files": self.official,
            "train_examples": self.n_train,
            "val_examples": self.n_val,
            "test_examples": self.n_test,
            "val_source": f"{self.cfg.val_size} images held out of the training set, stratified by class",
            "split_seed": self.cfg.split_seed,
            "model": self.cfg.model,
            "parameters": count_parameters(self.model),
            "loader": self.cfg.loader,
        }


class ImageFolderTask(_ImageClassifier):
    """ImageNet-style classification from ``data_root/{train,val}/<class>/``; metrics ``val_acc`` (top-1), ``val_acc5``, ``val_loss``.

    Validation: ``task.val_size`` images held out of ``train/``; test: the ``val/`` folder (ImageNet's official validation set).
    """

    metrics = {"val_acc": "max", "val_acc5": "max", "val_loss": "min"}

    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        super().check_config(cfg)
        checks.int_at_least("task.image_size", cfg.image_size, 8)
        checks.int_at_least("task.val_resize", cfg.val_resize, cfg.image_size)
        checks.number_in("task.min_scale", cfg.min_scale, 0, 1, "a number in (0, 1]", low_open=True)
        msg = vd.imagefolder_missing_message(cfg.data_root)  # stat calls and one listing of each split folder
        if msg:
            raise ConfigError(msg)

    def __init__(self, cfg: DictConfig, seed: int, device: torch.device):
        super().__init__(cfg, seed, device)
        train = vd.load_imagefolder(cfg.data_root, "train")
        val = vd.load_imagefolder(cfg.data_root, "val")
        if val.classes != train.classes:
            extra = sorted(set(val.classes) ^ set(train.classes))[:5]
            raise bad("task.data_root", cfg.data_root, f"train/ and val/ with the same class folders (differ in e.g. {extra})")
        self.num_classes = len(train.classes)
        self.chance = _chance(self.num_classes, top5=True)
        self.model = create_timm_model(cfg, self.num_classes).to(device)
        train_idx, val_idx = _holdout(train.targets, cfg)
        _subset_fits("task.val_subset", cfg.val_subset, len(val), "in val/")
        # subsets spread over the index lists, which are sorted by class: fixed and seed-independent, every class in its share
        self.train_idx = train_idx[vd.spread(len(train_idx), cfg.train_subset)].tolist()
        self.val_idx = val_idx[vd.spread(len(val_idx), cfg.val_subset)].tolist()
        test_idx = vd.spread(len(val), cfg.val_subset).tolist()
        self.n_train, self.n_val, self.n_test = len(self.train_idx), len(self.val_idx), len(test_idx)
        tf = vd.train_transform(cfg.image_size, float(cfg.min_scale), cfg.flip)
        self.train_data = vd.FolderLoader(train, self.train_idx, tf, cfg.workers, device)
        eval_tf = vd.val_transform(cfg.image_size, cfg.val_resize)
        self.eval_loaders = {
            "val": vd.eval_loader(train, self.val_idx, eval_tf, cfg.eval_batch_size, cfg.workers, device),  # held-out training images, evaluation transform
            "test": vd.eval_loader(val, test_idx, eval_tf, cfg.eval_batch_size, cfg.workers, device),
        }

    def _eval_batches(self, split: str):
        for x, y in self.eval_loaders[split]:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def extra_record(self) -> dict:
        return {
            "classes": self.num_classes,
            "train_examples": self.n_train,
            "val_examples": self.n_val,
            "test_examples": self.n_test,
            "val_source": f"{self.cfg.val_size} images held out of train/, stratified by class",
            "split_seed": self.cfg.split_seed,
            "model": self.cfg.model,
            "parameters": count_parameters(self.model),
            "image_size": self.cfg.image_size,
        }
