"""The task interface: what a workload gives the harness.

A task owns its data, its model(s), its loss and its metrics. The harness owns
everything else: optimizers, LR schedules, batch scaling, accumulation, DDP,
precision, divergence checks, records, checkpoints.

A task trains one or more *models*, each with its own optimizer and LR schedule.
``models`` is an ordered mapping; each harness step updates the models in that
order, one optimizer step each (a GAN lists ``discriminator`` then ``generator``).
Single-model tasks name theirs ``model``.

Batches are whatever the task likes (a tensor, a tuple or dict of tensors) as
long as :meth:`Task.split` can cut one into equal parts along the example axis;
the default handles tensors and (nested) tuples, lists and dicts of tensors.

Randomness: data order must depend only on ``(seed, epoch)`` through the generator
the harness passes in; any other randomness (dropout, masking, noise) must come
from torch's global RNG, which the harness seeds and checkpoints.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import torch
from omegaconf import DictConfig
from torch import nn

Batch = Any


@dataclass(frozen=True)
class ModelSpec:
    """What the plan needs to know of one model without building it: its optimizer overrides and
    whether the ``warmup`` group applies to it (see :meth:`Task.optimizer_overrides`, :meth:`Task.warmup_applies_to`)."""

    optimizer: Mapping[str, Any] = field(default_factory=dict)
    warmup: bool = True


class Task(ABC):
    """Base class for workloads. Subclasses are built by Hydra from ``conf/task/*.yaml``.

    Constructor contract: ``Task(cfg, seed, device)`` where ``cfg`` is the ``task``
    config node. The task's own keys are validated by :meth:`check_config` (data-free,
    run by the harness's start-up validation for every grid point); checks that need the
    data belong in the constructor and raise :class:`bench.errors.ConfigError` naming key,
    value and what is allowed. The constructor runs before any record is written.
    """

    #: Validation metrics and the direction that is better; the first one is the primary metric.
    metrics: Mapping[str, str] = {"val_loss": "min"}

    #: When False the harness only treats non-finite losses as divergence (GAN losses
    #: do not start at their maximum, so a ratio to the first loss means nothing).
    loss_ratio_divergence: bool = True

    #: Metric -> the value a model that learned nothing scores (e.g. ``{"val_acc": 0.1}`` for 10
    #: balanced classes): the report scores failed runs at it. Metrics without one are left out.
    chance: Mapping[str, float] = {}

    #: A run that trained to its end is ``stalled`` (a failure) when its last logged training loss
    #: is at least this fraction of its first: it never learned. None: no such rule (GAN losses).
    stall_ratio: float | None = 0.95

    #: Whether :meth:`evaluate` also takes ``split="train"``: the metrics on the training set (or a fixed part of
    #: it), in evaluation mode, named as for validation. The harness then scores it once at the end of a run that
    #: trained to its last step and records it as ``train_set`` (``train_set_loss``, ...): test minus train is the
    #: generalization gap.
    train_eval: bool = False

    #: Task-specific end states of a run that trained to its last step, each with whether it
    #: counts as a success (e.g. ``{"collapsed": False}`` for a GAN). :meth:`final_status`
    #: may return only these names. The harness adds them to its own statuses (``completed``
    #: is a success; ``diverged``, ``failed``, ``preempted``, ``running``) and stores the
    #: declaration in every result.json under ``outcomes``, so records, reports and the
    #: skip-completed check need no list of task statuses.
    outcomes: Mapping[str, bool] = {}

    #: Config keys besides the ``warmup`` group (dotted from the config root, e.g. ``task.warmup_on``) that make an
    #: *arm* the report compares with its no-warm-up baseline, each with its value in the baseline, or None when the
    #: key only qualifies a warm-up (which model it acts on) and any value goes with ``warmup=none``. E.g. a GAN's
    #: two-time-scale multipliers: ``{"task.lr_mult.discriminator": 1.0}``, so a run at 2 is an arm, not a baseline.
    #: Stored in every result.json under ``arm_keys``; see docs/report.md (Warm-up effect).
    arm_keys: Mapping[str, Any] = {}

    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        """Refuse bad values of this task's own keys (``cfg`` is the ``task`` node).

        Runs before any job starts (the multirun pre-flight calls it for every grid point),
        so it must not load data, build models or touch the disk beyond cheap ``stat`` calls.
        Raise :class:`bench.errors.ConfigError` (see :func:`bench.errors.bad`) naming the key,
        the value and what is allowed. The constructor may assume the keys passed this check.
        """

    @classmethod
    def static_train_size(cls, cfg: DictConfig) -> int | None:
        """:meth:`train_size` as known from config alone (``cfg`` is the ``task`` node, already checked
        by :meth:`check_config`), or None when only the data can tell.

        The multirun pre-flight uses it to run the plan's size-dependent checks (batch size vs the
        training set, an epoch budget, a warm-up in epochs) for every grid point before any job
        starts; with None those checks wait for the job itself. Same rules as :meth:`check_config`:
        no data loading. It must equal what :meth:`train_size` returns once the task is built.
        """
        return None

    @classmethod
    def static_models(cls, cfg: DictConfig) -> Mapping[str, ModelSpec] | None:
        """``name -> ModelSpec`` in :attr:`models` order, from config alone, or None when unknown.

        The default (one model named ``model``, no optimizer overrides, warm-up applied) holds for
        every task that keeps the base :meth:`optimizer_overrides` and :meth:`warmup_applies_to`;
        a task that overrides either returns None here unless it overrides this too.
        """
        if cls.optimizer_overrides is Task.optimizer_overrides and cls.warmup_applies_to is Task.warmup_applies_to:
            return {"model": ModelSpec()}
        return None

    def __init__(self, cfg: DictConfig, seed: int, device: torch.device):
        # the harness checked these keys already; a task built directly (a notebook, a script,
        # a test) gets the same one-line errors instead of a traceback deep in the data code
        type(self).check_config(cfg)
        self.cfg = cfg
        self.seed = seed
        self.device = device

    # ------------------------------------------------------------ required

    @property
    @abstractmethod
    def models(self) -> Mapping[str, nn.Module]:
        """Ordered ``name -> module``, on ``self.device``; one optimizer and schedule each."""

    @abstractmethod
    def train_size(self) -> int:
        """Examples in one epoch (an epoch has ``train_size() // batch.size`` steps)."""

    @abstractmethod
    def train_batches(self, batch_size: int, epoch: int, start: int, generator: torch.Generator) -> Iterator[Batch]:
        """Global batches of ``batch_size`` examples for ``epoch``, beginning at batch ``start``.

        The order must be a function of the generator (seeded by the harness from
        ``(seed, epoch)``) so that a resumed run sees the same batches.
        """

    @abstractmethod
    def loss(self, name: str, model: nn.Module, batch: Batch) -> torch.Tensor | tuple[torch.Tensor, dict]:
        """Mean loss of model ``name`` on ``batch`` (a micro-batch), as a scalar tensor.

        ``model`` is the module to call: it may be the DDP- or compile-wrapped
        version of ``self.models[name]``. May also return ``(loss, stats)`` where
        ``stats`` maps names to scalar tensors (averaged over micro-batches and
        written as ``name/<model>`` in logged rows; keep them on-device).
        """

    @abstractmethod
    def evaluate(self, split: str = "val") -> dict[str, float]:
        """Metrics on ``split``: "val" (the validation split, during training and for model
        selection) or "test" (the held-out test split, once at the end of a run that trained to
        its last step). Keys of :attr:`metrics` at least, named as for validation (``val_acc``)
        for both splits; the harness records test metrics as ``test_<name>`` (``test_acc``).
        Called under ``torch.no_grad``.
        """

    # ------------------------------------------------------------ optional

    def train_shards(self, batch_size: int, epoch: int, start: int, generator: torch.Generator, rank: int, world_size: int) -> Iterator[Batch]:
        """This process's share of each global batch: part ``rank`` of ``split(batch, world_size)``.

        The default reads every global batch and keeps one part; a task whose loader can read
        only its share (an image folder decoded from disk) overrides this to save the work.
        """
        for batch in self.train_batches(batch_size, epoch, start, generator):
            yield batch if world_size == 1 else self.split(batch, world_size)[rank]

    def split(self, batch: Batch, parts: int) -> list[Batch]:
        """Cut a batch into ``parts`` equal pieces along the example axis."""
        return _split(batch, parts)

    def optimizer_overrides(self, name: str) -> Mapping[str, Any]:
        """Keys merged into the ``optimizer`` config for model ``name`` (e.g. a TTUR LR or betas)."""
        return {}

    def optimizer_params(self, name: str, model: nn.Module):
        """What model ``name``'s optimizer is built on: ``model.parameters()`` by default, or a list of
        parameter-group dicts (e.g. :func:`decay_groups`: no weight decay on norm and bias parameters).
        Keys a group sets win over the ``optimizer`` config for that group; the LR schedule scales every group."""
        return model.parameters()

    def warmup_applies_to(self, name: str) -> bool:
        """Whether the ``warmup`` group's warm-up applies to model ``name`` (all models by default)."""
        return True

    def units_per_example(self) -> Mapping[str, float]:
        """Throughput units besides examples, per example: e.g. ``{"tokens": context_length}``."""
        return {}

    def is_stalled(self, first_loss: float | None, last_loss: float | None, final_metrics: Mapping[str, float]) -> bool:
        """Whether a run that trained to its last step never learned: by default its last logged
        training loss is at least :attr:`stall_ratio` x its first (e.g. still ~ln 10 for 10 classes)."""
        if self.stall_ratio is None or first_loss is None or last_loss is None:
            return False
        return last_loss >= self.stall_ratio * first_loss

    def final_status(self, final_metrics: Mapping[str, float]) -> str | None:
        """One of :attr:`outcomes` to record instead of ``completed`` at the end of a run, or None."""
        return None

    def extra_record(self) -> dict:
        """Task facts to store in result.json under ``task_info`` (dataset sizes, parameter counts)."""
        return {}


class TensorClassifier(Task):
    """A classifier whose three splits live on the device as tensors (digits, Fashion-MNIST): a batch is an index.

    Subclasses set ``self.model`` and ``x_train``, ``y_train``, ``x_val``, ``y_val``, ``x_test``, ``y_test`` in their
    constructor. Metrics: ``val_acc`` (primary) and ``val_loss``; ``evaluate("train")`` scores the training split.
    ``eval_batch_size`` (None: one pass over the split) bounds the memory of an evaluation.
    """

    metrics = {"val_acc": "max", "val_loss": "min"}
    train_eval = True  # evaluate("train"): the whole training split, for the generalization gap
    eval_batch_size: int | None = None
    model: nn.Module

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
        return torch.nn.functional.cross_entropy(model(x), y)

    def evaluate(self, split: str = "val") -> dict[str, float]:
        x, y = {"test": (self.x_test, self.y_test), "train": (self.x_train, self.y_train)}.get(split, (self.x_val, self.y_val))
        self.model.eval()
        if self.eval_batch_size is None:
            logits = self.model(x).float()
            out = {"val_loss": torch.nn.functional.cross_entropy(logits, y).item(), "val_acc": (logits.argmax(1) == y).float().mean().item()}
        else:
            loss_sum, correct = 0.0, 0
            for lo in range(0, len(x), self.eval_batch_size):
                logits = self.model(x[lo : lo + self.eval_batch_size]).float()
                yy = y[lo : lo + self.eval_batch_size]
                loss_sum += torch.nn.functional.cross_entropy(logits, yy, reduction="sum").item()
                correct += int((logits.argmax(1) == yy).sum())
            out = {"val_loss": loss_sum / len(x), "val_acc": correct / len(x)}
        self.model.train()
        return out

    def split_sizes(self) -> dict:
        return {"train_examples": len(self.x_train), "val_examples": len(self.x_val), "test_examples": len(self.x_test),
                "parameters": count_parameters(self.model)}


def _split(batch: Batch, parts: int) -> list[Batch]:
    if parts == 1:
        return [batch]
    if isinstance(batch, torch.Tensor):
        if batch.shape[0] % parts:
            raise ValueError(f"cannot split a batch of {batch.shape[0]} into {parts} equal parts")
        return list(batch.chunk(parts))
    if isinstance(batch, (tuple, list)):
        cols = [_split(b, parts) for b in batch]
        return [type(batch)(c[i] for c in cols) for i in range(parts)]
    if isinstance(batch, dict):
        cols = {k: _split(v, parts) for k, v in batch.items()}
        return [{k: v[i] for k, v in cols.items()} for i in range(parts)]
    raise TypeError(f"cannot split a batch of type {type(batch).__name__}; override Task.split")


def decay_groups(module: nn.Module) -> list[dict]:
    """Two parameter groups: weights of linear and conv layers (decayed at ``optimizer.weight_decay``),
    then normalisation scales/shifts and biases (every parameter with fewer than 2 dimensions) at
    weight decay 0, as Goyal et al. 2017 (sec. 5.1) do for BatchNorm's gamma and beta."""
    decay, no_decay = [], []
    for p in module.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    return [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]


def count_parameters(module: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
