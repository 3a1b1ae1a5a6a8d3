"""Vision tasks on local data with timm models: CIFAR-10/100 (ResNet-18, ViT) and ImageFolder (ResNet-50).

Models come from timm's registry with ``pretrained=False`` (nothing is downloaded); the task
config names the model and passes ``model_kwargs`` to :func:`timm.create_model`.

CIFAR ResNet (``cifar_stem: true``): timm's ``resnet18`` (BasicBlock, [2, 2, 2, 2], 11.2M
parameters) with its ImageNet stem (7x7 stride-2 conv + 3x3 stride-2 max-pool, a 4x
down-sampling meant for 224 px) replaced by one 3x3 stride-1 conv and no pool, so the four
stages see 32, 16, 8, 4 px: the usual CIFAR ResNet-18 (He et al. 2016 sec. 4.2 use the same
stem for their CIFAR nets).

Batches are uint8 images on the device; normalisation ``(x / 255 - mean) / std`` happens on the
device inside :meth:`loss`, so host-to-device copies stay 4x smaller than float32 and the
GPU-resident CIFAR loader needs no host work per step. When the harness has put the model in
channels-last layout the input is converted too, so the first convolution needs no relayout.
"""

from __future__ import annotations

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


def _subset_fits(key: str, v, available: int) -> None:
    if v is not None and v > available:
        raise bad(key, v, f"at most the {available} images found, or null for all")


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
        checks.int_at_least("task.val_subset", cfg.val_subset, 1, allow_none=True)
        checks.int_at_least("task.workers", cfg.workers, 0)
        checks.flag("task.flip", cfg.flip)
        checks.text("task.data_root", cfg.data_root, "the folder that holds the data set (env BENCH_DATA sets it)")
        check_timm_model(cfg)

    @classmethod
    def static_train_size(cls, cfg: DictConfig) -> int | None:
        """``train_subset`` when set (a larger one than the data holds is refused when the data is read); else unknown."""
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

    def _eval_batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        raise NotImplementedError

    def evaluate(self) -> dict[str, float]:
        """Loss (no smoothing), top-1 and top-k accuracy over the validation set, summed on the device."""
        self.model.eval()
        k = min(5, self.num_classes)
        loss_sum = torch.zeros((), device=self.device)
        hit1 = torch.zeros((), device=self.device)
        hitk = torch.zeros((), device=self.device)
        n = 0
        for x, y in self._eval_batches():
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
    """CIFAR-10/100 classification; metrics ``val_acc`` (top-1, primary) and ``val_loss`` on the 10k test set."""

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
        self.model = create_timm_model(cfg, self.num_classes)
        if cfg.cifar_stem:
            cifar_stem(self.model)
        self.model.to(device)

        train = vd.load_cifar(cfg.dataset, cfg.data_root, train=True)
        val = vd.load_cifar(cfg.dataset, cfg.data_root, train=False)
        _subset_fits("task.train_subset", cfg.train_subset, len(train.data))
        _subset_fits("task.val_subset", cfg.val_subset, len(val.data))
        data, targets = train.data[: cfg.train_subset], train.targets[: cfg.train_subset]
        vdata, vtargets = val.data[: cfg.val_subset], val.targets[: cfg.val_subset]
        self.n_train, self.n_val = len(data), len(vdata)
        self.official = vd.cifar_files_official(cfg.dataset, cfg.data_root)
        if cfg.loader == "device":
            images = vd.to_chw_tensor(data)
            self.train_data = vd.DeviceCifar(images, torch.as_tensor(targets, dtype=torch.int64), cfg.crop_padding, cfg.flip, device)
        else:
            self.train_data = vd.LoaderCifar(data, targets, cfg.crop_padding, cfg.flip, cfg.workers, device)
        self.x_val = vd.to_chw_tensor(vdata).to(device)
        self.y_val = torch.as_tensor(vtargets, dtype=torch.int64, device=device)

    def _eval_batches(self):
        bs = self.cfg.eval_batch_size
        for i in range(0, self.n_val, bs):
            yield self.x_val[i : i + bs], self.y_val[i : i + bs]

    def extra_record(self) -> dict:
        return {
            "dataset": self.cfg.dataset,
            "official_files": self.official,
            "train_examples": self.n_train,
            "val_examples": self.n_val,
            "model": self.cfg.model,
            "parameters": count_parameters(self.model),
            "loader": self.cfg.loader,
        }


class ImageFolderTask(_ImageClassifier):
    """ImageNet-style classification from ``data_root/{train,val}/<class>/``; metrics ``val_acc`` (top-1), ``val_acc5``, ``val_loss``."""

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
        self.model = create_timm_model(cfg, self.num_classes).to(device)
        _subset_fits("task.train_subset", cfg.train_subset, len(train))
        _subset_fits("task.val_subset", cfg.val_subset, len(val))
        n_train, n_val = cfg.train_subset or len(train), cfg.val_subset or len(val)
        # a fixed, seed-independent subset spread over all classes (the folders are sorted by class)
        train_idx = torch.linspace(0, len(train) - 1, n_train).round().long().unique().tolist()
        val_idx = torch.linspace(0, len(val) - 1, n_val).round().long().unique().tolist()
        self.n_train, self.n_val = len(train_idx), len(val_idx)
        tf = vd.train_transform(cfg.image_size, float(cfg.min_scale), cfg.flip)
        self.train_data = vd.FolderLoader(train, train_idx, tf, cfg.workers, device)
        self.val_loader = vd.eval_loader(val, val_idx, vd.val_transform(cfg.image_size, cfg.val_resize), cfg.eval_batch_size, cfg.workers, device)

    def _eval_batches(self):
        for x, y in self.val_loader:
            yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def extra_record(self) -> dict:
        return {
            "classes": self.num_classes,
            "train_examples": self.n_train,
            "val_examples": self.n_val,
            "model": self.cfg.model,
            "parameters": count_parameters(self.model),
            "image_size": self.cfg.image_size,
        }
