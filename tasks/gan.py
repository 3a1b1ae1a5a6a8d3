"""GAN tasks: two models (discriminator, then generator), each with its own optimizer and schedule.

- :class:`MixtureGanTask` (``gan_ring``): MLP generator and discriminator on a 2-D mixture of Gaussians
  (8 on a ring); metrics from :func:`tasks.gan_metrics.mode_stats`.
- :class:`DigitsGanTask` (``dcgan_digits``): a DCGAN-style convolutional pair on scikit-learn's 8x8
  digits; metrics: Fréchet distance in the feature space of a small digits classifier (trained once
  and cached on disk), with its real-vs-real floor, and the entropy of that classifier's labels on
  generated images.

Every evaluation also scores D (:meth:`GanTask.d_accuracy`): ``d_acc_real`` on held-out real examples and
``d_acc_fake`` on the evaluation's generated samples, the balance between the two models.

Losses, with D(x) the discriminator's logit and G(z) a generated sample, z ~ N(0, I):

- non-saturating (Goodfellow et al. 2014): L_D = softplus(-D(x)) + softplus(D(G(z))),
  L_G = softplus(-D(G(z))), i.e. -log sigmoid(D(G(z)));
- hinge (Lim & Ye 2017; Miyato et al. 2018): L_D = relu(1 - D(x)) + relu(1 + D(G(z))), L_G = -D(G(z)).

Each harness step updates D on (real batch, fresh fakes), then G through the just-updated D; the
loop clears every model's gradients before each update, so G's backward pass through D leaves
nothing behind. ``task.warmup_on`` names the model(s) the ``warmup`` group applies to; the other
model trains at its peak LR from step 0. Per-model peak LRs are ``optimizer.lr x task.lr_mult.<model>``
(two time-scale update rule, Heusel et al. 2017, when the multipliers differ).

Randomness: the real data order/sampling comes from the harness's per-epoch generator; latent
noise for training comes from torch's global RNG; evaluation uses a fixed latent batch
(``task.eval_seed``) so every evaluation of every run looks at the same z.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path
from typing import Iterator

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from bench.errors import bad
from tasks import checks
from tasks.base import ModelSpec, Task, count_parameters
from tasks.digits import DigitsCNN, check_split, digits_train_size, load_digits_split
from tasks.gan_metrics import frechet_distance, frechet_floor, label_entropy, mode_stats, ring_centres

MODELS = ("discriminator", "generator")
WARMUP_ON = ("generator", "discriminator", "both", "none")
LOSSES = ("non_saturating", "hinge")


# ---------------------------------------------------------------- losses


def d_loss(kind: str, d_real: torch.Tensor, d_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator loss on real and fake logits (mean over the batch); see the module docstring."""
    if kind == "hinge":
        return F.relu(1 - d_real).mean() + F.relu(1 + d_fake).mean()
    return F.softplus(-d_real).mean() + F.softplus(d_fake).mean()


def g_loss(kind: str, d_fake: torch.Tensor) -> torch.Tensor:
    """Generator loss on the discriminator's logits for fakes (mean over the batch)."""
    if kind == "hinge":
        return -d_fake.mean()
    return F.softplus(-d_fake).mean()


# ---------------------------------------------------------------- shared GAN task


class GanTask(Task):
    """What both GAN families share: the two models, losses, per-model LRs, warm-up target, collapse."""

    loss_ratio_divergence = False  # GAN losses do not start at their maximum; only non-finite losses diverge
    stall_ratio = None  # a GAN's losses need not fall as it learns: collapse is its failure, not a flat loss
    outcomes = {"collapsed": False}  # trained to the end but covers too few modes/classes: see final_status
    # the report pairs warm-up on G, on D or on both, and two time scales, with the same no-warm-up baseline (1/1)
    arm_keys = {"task.warmup_on": None, "task.lr_mult.discriminator": 1.0, "task.lr_mult.generator": 1.0}

    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        checks.choice("task.warmup_on", cfg.warmup_on, WARMUP_ON, f"one of {', '.join(WARMUP_ON)} (the model(s) the warmup group applies to)")
        checks.choice("task.loss", cfg.loss, LOSSES)
        if not isinstance(cfg.lr_mult, DictConfig) or set(cfg.lr_mult) != set(MODELS):
            value = OmegaConf.to_container(cfg.lr_mult) if isinstance(cfg.lr_mult, DictConfig) else cfg.lr_mult
            raise bad("task.lr_mult", value, f"a multiplier for each of {', '.join(MODELS)}")
        for name in MODELS:
            checks.positive(f"task.lr_mult.{name}", cfg.lr_mult[name], "a number > 0 (this model's peak LR = optimizer.lr x multiplier)")
        checks.int_at_least("task.z_dim", cfg.z_dim, 1, "an integer >= 1 (latent dimensions)")
        checks.int_at_least("task.eval_samples", cfg.eval_samples, 2, "an integer >= 2 (generated samples per evaluation)")
        checks.int_at_least("task.eval_seed", cfg.eval_seed, 0)
        checks.int_at_least("task.test_seed", cfg.test_seed, 0)
        if cfg.test_seed == cfg.eval_seed:
            raise bad("task.test_seed", cfg.test_seed, f"a seed other than task.eval_seed={cfg.eval_seed}: the test samples must be fresh")
        if cfg.samples_file is not None:  # an output: it stays inside the job's output directory
            checks.relative_path("task.samples_file", cfg.samples_file, "a file name relative to the job's output directory (no absolute path, no '..'), or null for none")

    def __init__(self, cfg: DictConfig, seed: int, device: torch.device):
        super().__init__(cfg, seed, device)
        self.kind = cfg.loss
        self.z_dim = cfg.z_dim
        self.samples_file = checks.job_path(cfg.samples_file) if cfg.samples_file is not None else None
        self.discriminator: nn.Module
        self.generator: nn.Module

    @classmethod
    def static_models(cls, cfg: DictConfig) -> dict[str, ModelSpec]:
        """Per-model peak LR ``base_lr x lr_mult.<model>``; the warm-up applies to the model(s) ``warmup_on`` names."""
        return {
            name: ModelSpec(optimizer={"lr": float(cfg.base_lr) * float(cfg.lr_mult[name])}, warmup=cfg.warmup_on in ("both", name))
            for name in MODELS
        }

    @property
    def models(self) -> dict[str, nn.Module]:
        return {"discriminator": self.discriminator, "generator": self.generator}

    def optimizer_overrides(self, name: str) -> dict:
        return dict(type(self).static_models(self.cfg)[name].optimizer)

    def warmup_applies_to(self, name: str) -> bool:
        return type(self).static_models(self.cfg)[name].warmup

    def real(self, batch) -> torch.Tensor:
        """The real examples in a batch (the batch itself for tensors)."""
        return batch

    def loss(self, name: str, model: nn.Module, batch):
        real = self.real(batch)
        z = torch.randn(real.shape[0], self.z_dim, device=real.device)
        if name == "discriminator":
            with torch.no_grad():
                fake = self.generator(z)
            d_real, d_fake = model(real).float(), model(fake).float()
            stats = {
                "d_acc_real": (d_real > 0).float().mean(),  # D calls a real example real
                "d_acc_fake": (d_fake < 0).float().mean(),  # D calls a fake example fake
            }
            return d_loss(self.kind, d_real, d_fake), stats
        d_fake = self.discriminator(model(z)).float()
        # D's accuracy on this step's fakes, measured after D's update: how far G lags behind D
        return g_loss(self.kind, d_fake), {"d_acc_fake": (d_fake < 0).float().mean()}

    def eval_noise(self, n: int, split: str = "val") -> torch.Tensor:
        """The fixed latent batch of a split (independent of the global RNG): ``task.eval_seed`` for
        every validation evaluation, ``task.test_seed`` for the test evaluation at the end."""
        seed = self.cfg.test_seed if split == "test" else self.cfg.eval_seed
        gen = torch.Generator().manual_seed(int(seed))
        return torch.randn(n, self.z_dim, generator=gen).to(self.device)

    @torch.no_grad()
    def d_accuracy(self, real: torch.Tensor, fake: torch.Tensor) -> dict[str, float]:
        """D's accuracy at an evaluation, in eval mode: ``d_acc_real`` = share of held-out real examples with logit > 0
        (called real), ``d_acc_fake`` = share of the evaluation's generated samples with logit < 0 (called fake).

        Both near 1: D wins (G's gradients vanish); both near 0.5: D cannot tell them apart. The balance between the models.
        """
        was = self.discriminator.training
        self.discriminator.eval()
        acc_real = (self.discriminator(real).float() > 0).float().mean().item()
        acc_fake = (self.discriminator(fake).float() < 0).float().mean().item()
        self.discriminator.train(was)
        return {"d_acc_real": acc_real, "d_acc_fake": acc_fake}

    @torch.no_grad()
    def generate(self, n: int, split: str = "val") -> torch.Tensor:
        """``n`` samples from the generator in eval mode, on the split's fixed noise."""
        was = self.generator.training
        self.generator.eval()
        x = self.generator(self.eval_noise(n, split)).float()
        self.generator.train(was)
        return x

    def save_samples(self, samples: torch.Tensor) -> None:
        """Overwrite ``task.samples_file`` (atomically) with the latest evaluation's samples, for figures."""
        if self.samples_file is None:
            return
        self.samples_file.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.samples_file.with_suffix(".tmp")
        torch.save(samples.detach().cpu(), tmp)
        os.replace(tmp, self.samples_file)


# ---------------------------------------------------------------- 2-D mixtures


def mlp(sizes: list[int], act: type[nn.Module]) -> nn.Sequential:
    """Linear layers between consecutive ``sizes`` with ``act`` between them (none after the last)."""
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(act())
    return nn.Sequential(*layers)


class MixtureGanTask(GanTask):
    """A 2-D mixture of equal-weight isotropic Gaussians (std ``sigma``), sampled fresh every batch: ``modes``
    centres on a circle of radius ``scale``. An epoch is a nominal ``epoch_samples`` examples (the data is
    infinite). Generator: MLP z -> 2; discriminator: MLP 2 -> 1.
    """

    metrics = {"modes": "max", "hq_frac": "max", "mode_kl": "min"}

    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        super().check_config(cfg)
        checks.int_at_least("task.modes", cfg.modes, 1, "an integer >= 1: a mixture needs at least one mode")
        checks.positive("task.sigma", cfg.sigma)
        checks.positive("task.scale", cfg.scale)
        checks.number_in("task.min_mode_share", cfg.min_mode_share, 0, 1, "a fraction in [0, 1]")
        checks.number_in("task.collapse_coverage", cfg.collapse_coverage, 0, 1, "a fraction of the modes in [0, 1]")
        checks.int_at_least("task.epoch_samples", cfg.epoch_samples, 1, "an integer >= 1 (nominal examples per epoch)")
        checks.int_at_least("task.hidden", cfg.hidden, 1, "an integer >= 1 (MLP width)")
        checks.int_at_least("task.layers", cfg.layers, 1, "an integer >= 1 (hidden layers in each MLP)")

    @classmethod
    def static_train_size(cls, cfg: DictConfig) -> int:
        return cfg.epoch_samples

    def __init__(self, cfg: DictConfig, seed: int, device: torch.device):
        super().__init__(cfg, seed, device)
        self.centres = ring_centres(cfg.modes, cfg.scale)
        h = cfg.hidden
        self.generator = mlp([cfg.z_dim] + [h] * cfg.layers + [2], nn.ReLU).to(device)
        self.discriminator = mlp([2] + [h] * cfg.layers + [1], lambda: nn.LeakyReLU(0.2)).to(device)
        # held-out real samples for D's accuracy at each evaluation: fixed per split, drawn outside the training stream
        self.real_eval = {split: self.sample_real(cfg.eval_samples, torch.Generator().manual_seed(int(seed_))).to(device)
                          for split, seed_ in (("val", cfg.eval_seed), ("test", cfg.test_seed))}

    def sample_real(self, n: int, generator: torch.Generator) -> torch.Tensor:
        """``n`` mixture samples (on the CPU): a uniformly chosen centre plus N(0, sigma² I) noise."""
        idx = torch.randint(len(self.centres), (n,), generator=generator)
        return self.centres[idx] + self.cfg.sigma * torch.randn(n, 2, generator=generator)

    def train_size(self) -> int:
        return self.cfg.epoch_samples

    def train_batches(self, batch_size: int, epoch: int, start: int, generator: torch.Generator) -> Iterator:
        # draw (and drop) the skipped batches so that a resumed epoch continues the same stream
        for i in range(self.cfg.epoch_samples // batch_size):
            x = self.sample_real(batch_size, generator)
            if i >= start:
                yield x.to(self.device)

    def evaluate(self, split: str = "val") -> dict[str, float]:
        x = self.generate(self.cfg.eval_samples, split)
        if split == "val":
            self.save_samples(x)
        s = mode_stats(x, self.centres, self.cfg.sigma, self.cfg.min_mode_share)
        real = self.real_eval["test" if split == "test" else "val"]
        return {"modes": float(s["modes"]), "hq_frac": s["hq_frac"], "mode_kl": s["mode_kl"], **self.d_accuracy(real, x)}

    def final_status(self, final_metrics) -> str | None:
        modes = final_metrics.get("modes")
        if modes is not None and modes < self.cfg.collapse_coverage * len(self.centres):
            return "collapsed"
        return None

    def extra_record(self) -> dict:
        return {
            "modes": len(self.centres),
            "centres": self.centres.tolist(),
            "collapse_below_modes": self.cfg.collapse_coverage * len(self.centres),
            "parameters": {n: count_parameters(m) for n, m in self.models.items()},
        }


# ---------------------------------------------------------------- digits DCGAN


class DCGenerator(nn.Module):
    """z -> linear -> (w·2^k, 4, 4) -> k x [ConvTranspose(4, stride 2) - BN - ReLU] -> conv3x3 -> tanh.

    k = log2(size / 4) doublings, so the output is (1, size, size) in [-1, 1] with size = 4·2^k.
    Batch norm and ReLU in the generator, tanh output, no pooling: the DCGAN recipe (Radford et al. 2016).
    """

    def __init__(self, z_dim: int, width: int, size: int):
        super().__init__()
        k = int(math.log2(size // 4))
        c = width * 2**k
        self.c0 = c
        self.project = nn.Sequential(nn.Linear(z_dim, c * 16), nn.BatchNorm1d(c * 16), nn.ReLU())
        ups: list[nn.Module] = []
        for _ in range(k):
            ups += [nn.ConvTranspose2d(c, c // 2, 4, 2, 1), nn.BatchNorm2d(c // 2), nn.ReLU()]
            c //= 2
        self.ups = nn.Sequential(*ups)
        self.out = nn.Conv2d(c, 1, 3, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        x = self.project(z).view(z.shape[0], self.c0, 4, 4)
        return torch.tanh(self.out(self.ups(x)))


class DCDiscriminator(nn.Module):
    """conv3x3(w) - LReLU -> k x [Conv(4, stride 2) doubling width - LReLU(0.2)] -> linear -> logit.

    No batch norm: real and fake batches go through D separately, and batch statistics would let
    D tell them apart by their batch, not their examples.
    """

    def __init__(self, width: int, size: int):
        super().__init__()
        k = int(math.log2(size // 4))
        layers: list[nn.Module] = [nn.Conv2d(1, width, 3, padding=1), nn.LeakyReLU(0.2)]
        c = width
        for _ in range(k):
            layers += [nn.Conv2d(c, c * 2, 4, 2, 1), nn.LeakyReLU(0.2)]
            c *= 2
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(c * 16, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x).flatten(1)).squeeze(1)


def classifier_settings(cfg: DictConfig) -> dict:
    """Everything the cached classifier depends on (its cache key)."""
    c = cfg.classifier
    return {
        "arch": "DigitsCNN",
        "channels": list(c.channels),
        "hidden": c.hidden,
        "epochs": c.epochs,
        "lr": c.lr,
        "batch_size": c.batch_size,
        "seed": c.seed,
        "val_fraction": cfg.val_fraction,
        "split_seed": cfg.split_seed,
    }


def load_or_train_classifier(cfg: DictConfig, data: tuple, device: torch.device) -> tuple[DigitsCNN, float, Path]:
    """The digits classifier for the metrics: loaded from ``classifier.cache_dir`` (under the cache root,
    :func:`tasks.checks.cache_root`) or trained once and saved there.

    The file name carries a hash of :func:`classifier_settings`, so changed settings train a new one.
    Training uses its own seeded RNG inside ``fork_rng``, so a run's random stream is the same whether
    or not the classifier was cached. Returns (model in eval mode, validation accuracy, path).
    """
    settings = classifier_settings(cfg)
    key = hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
    path = checks.cache_path(cfg.classifier.cache_dir) / f"digits_classifier_{key}.pt"
    model = DigitsCNN(tuple(settings["channels"]), settings["hidden"])
    if path.exists():
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["state_dict"])
        return model.to(device).eval(), float(state["val_acc"]), path
    xt, yt, xv, yv = data
    c = cfg.classifier
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(c.seed)
        opt = torch.optim.Adam(model.parameters(), lr=c.lr)
        for _ in range(c.epochs):
            perm = torch.randperm(len(xt))
            for i in range(len(xt) // c.batch_size):
                idx = perm[i * c.batch_size : (i + 1) * c.batch_size]
                loss = F.cross_entropy(model(xt[idx]), yt[idx])
                opt.zero_grad()
                loss.backward()
                opt.step()
    model.eval()
    with torch.no_grad():
        acc = (model(xv).argmax(1) == yv).float().mean().item()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # parallel jobs may train at once: each writes its own, last rename wins
    torch.save({"state_dict": model.state_dict(), "val_acc": acc, "settings": settings}, tmp)
    os.replace(tmp, path)
    return model.to(device), acc, path


class DigitsGanTask(GanTask):
    """DCGAN on the 8x8 digits (train split), resized to ``image_size`` and scaled to [-1, 1].

    Metrics, on ``eval_samples`` generated images (mapped back to [0, 1] and 8x8):
    ``fd`` = Fréchet distance to the real train images in the classifier's feature space;
    ``class_entropy`` = entropy (nats) of the classifier's labels (ln 10 = 2.30 when uniform);
    ``classes`` = classes that receive at least ``min_class_share`` of the samples.
    """

    metrics = {"fd": "min", "class_entropy": "max", "classes": "max"}

    @classmethod
    def check_config(cls, cfg: DictConfig) -> None:
        super().check_config(cfg)
        size = cfg.image_size
        if not checks.is_int(size) or size < 8 or size & (size - 1):
            raise bad("task.image_size", size, "8, 16, 32 or 64: the generator doubles a 4x4 map, so a power of two >= 8")
        check_split(cfg)
        checks.int_at_least("task.width", cfg.width, 1, "an integer >= 1 (base conv width)")
        checks.number_in("task.collapse_entropy", cfg.collapse_entropy, 0, math.log(10), f"nats in [0, ln 10 = {math.log(10):.3f}]")
        checks.number_in("task.min_class_share", cfg.min_class_share, 0, 1, "a fraction in [0, 1]")
        checks.int_at_least("task.floor_splits", cfg.floor_splits, 1, "an integer >= 1 (random real-vs-real splits averaged into the FD floor)")
        c = cfg.classifier
        checks.int_pair("task.classifier.channels", c.channels, "two positive conv widths")
        for key in ("epochs", "batch_size", "hidden"):
            checks.int_at_least(f"task.classifier.{key}", c[key], 1, "an integer >= 1")
        checks.positive("task.classifier.lr", c.lr, "a learning rate > 0 (Adam)")
        checks.int_at_least("task.classifier.seed", c.seed, 0)
        checks.relative_path("task.classifier.cache_dir", c.cache_dir, f"a folder name under the cache root (${checks.CACHE_ENV}, default {checks.DEFAULT_CACHE}): no absolute path, no '..'")

    @classmethod
    def static_train_size(cls, cfg: DictConfig) -> int:
        return digits_train_size(cfg.val_fraction)

    def __init__(self, cfg: DictConfig, seed: int, device: torch.device):
        super().__init__(cfg, seed, device)
        size = cfg.image_size
        data = load_digits_split(cfg.val_fraction, cfg.split_seed)
        xt, _, xv, _ = data
        if cfg.classifier.batch_size > len(xt):
            raise bad("task.classifier.batch_size", cfg.classifier.batch_size, f"at most the {len(xt)} training images (else no training step)")
        self.classifier, self.classifier_acc, self.classifier_path = load_or_train_classifier(cfg, data, device)
        for p in self.classifier.parameters():
            p.requires_grad_(False)
        self.size = size
        x = xt if size == 8 else F.interpolate(xt, size=(size, size), mode="bilinear", align_corners=False)
        self.x_train = (x * 2 - 1).to(device)  # tanh range
        xv_sized = xv if size == 8 else F.interpolate(xv, size=(size, size), mode="bilinear", align_corners=False)
        self.x_heldout = (xv_sized * 2 - 1).to(device)  # the val images as D sees images: its real examples at evaluations
        with torch.no_grad():
            self.ref_features = self.classifier.features(xt.to(device))
            val_features = self.classifier.features(xv.to(device))
            self.fd_real_val = frechet_distance(val_features, self.ref_features)
            # the floor: real vs real at an evaluation's size, from all the digits (train + val)
            every = torch.cat([self.ref_features, val_features])
            self.floor_sizes = self._floor_sizes(cfg.eval_samples, len(every))
            self.fd_floor, self.fd_floor_std = frechet_floor(every, self.floor_sizes[0], cfg.floor_splits, cfg.eval_seed)
        self.generator = DCGenerator(cfg.z_dim, cfg.width, size).to(device)
        self.discriminator = DCDiscriminator(cfg.width, size).to(device)

    @staticmethod
    def _floor_sizes(eval_samples: int, total: int) -> tuple[int, int]:
        """(|A|, |B|) of the floor's two real sets: A as large as an evaluation's sample when the digits allow
        (B the rest, at least half as many), else an even split."""
        n = eval_samples if eval_samples <= total // 3 * 2 else total // 2
        return n, total - n

    def train_size(self) -> int:
        return len(self.x_train)

    def train_batches(self, batch_size: int, epoch: int, start: int, generator: torch.Generator) -> Iterator:
        perm = torch.randperm(len(self.x_train), generator=generator).to(self.device)
        for i in range(start, len(perm) // batch_size):
            yield self.x_train[perm[i * batch_size : (i + 1) * batch_size]]

    def to_classifier(self, x: torch.Tensor) -> torch.Tensor:
        """Generator output in [-1, 1] at ``image_size`` -> classifier input in [0, 1] at 8x8 (area average)."""
        x = (x.clamp(-1, 1) + 1) / 2
        return x if self.size == 8 else F.adaptive_avg_pool2d(x, 8)

    def evaluate(self, split: str = "val") -> dict[str, float]:
        generated = self.generate(self.cfg.eval_samples, split)
        x = self.to_classifier(generated)
        if split == "val":
            self.save_samples(x[:100])
        feats = self.classifier.features(x)
        labels = self.classifier.fc2(feats).argmax(1)
        counts = torch.bincount(labels, minlength=10)
        return {
            "fd": frechet_distance(feats, self.ref_features),
            "class_entropy": label_entropy(labels, 10),
            "classes": float((counts >= self.cfg.min_class_share * len(labels)).sum().item()),
            # held-out real digits: the val images for both splits (the digits have no test images of their own)
            **self.d_accuracy(self.x_heldout, generated),
        }

    def final_status(self, final_metrics) -> str | None:
        h = final_metrics.get("class_entropy")
        if h is not None and h < self.cfg.collapse_entropy:
            return "collapsed"
        return None

    def extra_record(self) -> dict:
        return {
            "train_examples": len(self.x_train),
            "image_size": self.size,
            "classifier_val_acc": self.classifier_acc,
            "classifier_file": str(self.classifier_path),
            "fd_real_val_vs_train": self.fd_real_val,
            # what real digits score: the report shows task_info.floor next to the metric it names
            "floor": {"fd": self.fd_floor},
            "fd_floor": {"mean": self.fd_floor, "std": self.fd_floor_std, "sizes": list(self.floor_sizes), "splits": self.cfg.floor_splits,
                         "reference": len(self.ref_features), "eval_samples": self.cfg.eval_samples},
            "collapse_below_entropy": self.cfg.collapse_entropy,
            "parameters": {n: count_parameters(m) for n, m in self.models.items()},
        }

