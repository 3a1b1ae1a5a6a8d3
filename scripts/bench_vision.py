"""Images per second of the vision tasks: the bare model step vs the harness, efficient settings vs plain.

For each task and each setting it measures, after ``--warmup`` untimed steps, ``--steps`` steps of

- ``step``: forward, backward and optimizer step on one fixed batch (no data loading);
- ``step+data``: the same, with batches from the task's own loader;
- ``harness``: the real training loop (:func:`bench.loop.train`: schedules, grad-norm and divergence
  checks at their intervals, metrics rows), timed as ``t(warmup + steps) - t(warmup)`` so start-up,
  the first steps and the final evaluation cancel out.

Settings:
- ``plain``: fp32, contiguous tensors, CIFAR through the torchvision DataLoader;
- ``efficient``: bf16 autocast, channels-last, CIFAR resident on the device and augmented there,
  ``torch.compile`` with ``--compile``.

Without ``--data-root`` it writes small stand-in data sets in the real formats to a temporary
folder (throughput only; nothing measured there is a CIFAR/ImageNet accuracy).

    python scripts/bench_vision.py --device cuda --batch 512 --steps 50            # on a GPU
    python scripts/bench_vision.py --batch 16 --steps 5 --image-size 64            # CPU, small
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from hydra import compose, initialize_config_dir  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from bench.app import CONF_DIR, build_plan, build_task  # noqa: E402
from bench.checkpoint import PreemptFlag  # noqa: E402
from bench.distributed import Dist  # noqa: E402
from bench.loggers import Loggers  # noqa: E402
from bench.loop import build_optimizers, train  # noqa: E402
from bench.plan import validate  # noqa: E402
from vision_fake import write_cifar, write_imagefolder  # noqa: E402  (scripts/vision_fake.py, beside this file)

TASKS = ["cifar10_resnet", "cifar100_resnet", "cifar10_vit", "imagenet_resnet50"]
# --tiny: narrow models for a quick check of the script itself (the test runs this)
TINY = {
    "cifar10_resnet": ["+task.model_kwargs.channels=[8,16,32,64]"],
    "cifar100_resnet": ["+task.model_kwargs.channels=[8,16,32,64]"],
    "cifar10_vit": ["+task.model_kwargs.embed_dim=32", "+task.model_kwargs.depth=2", "+task.model_kwargs.num_heads=2"],
    "imagenet_resnet50": ["+task.model_kwargs.channels=[8,16,32,64]", "+task.model_kwargs.stem_width=8"],
}


def settings(task: str, cuda: bool, use_compile: bool) -> dict[str, list[str]]:
    cifar = task.startswith("cifar")
    plain = ["hardware.precision=fp32", "hardware.channels_last=false", "hardware.compile=false"]
    eff = ["hardware.precision=bf16", "hardware.channels_last=true", f"hardware.compile={str(use_compile).lower()}"]
    if cifar:
        plain.append("task.loader=dataloader")
        eff.append("task.loader=device")
    return {"plain": plain, "efficient": eff}


def compose_cfg(task: str, device: str, overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose("config", overrides=[f"task={task}", f"hardware={'gpu' if device == 'cuda' else 'cpu'}", *overrides])
    validate(cfg)
    return cfg


def _autocast(device: torch.device, precision: str):
    if precision == "bf16":
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _batches(task, batch_size: int):
    """An endless stream of the task's training batches, epoch after epoch."""
    epoch = 0
    while True:
        yield from task.train_batches(batch_size, epoch, 0, torch.Generator().manual_seed(epoch))
        epoch += 1


def bare_rate(cfg: DictConfig, task, plan, fixed: bool, warmup: int, steps: int) -> float:
    """Images/s of forward + backward + optimizer step, on one fixed batch or the task's loader."""
    device, bs = task.device, cfg.batch.size
    model = task.models["model"]
    run = torch.compile(model) if cfg.hardware.compile else model
    opt = build_optimizers(plan, task.models)["model"]
    stream = _batches(task, bs)
    batch = next(stream)
    t0 = None
    for i in range(warmup + steps):
        if i == warmup:
            _sync(device)
            t0 = time.perf_counter()
        if not fixed:
            batch = next(stream)
        with _autocast(device, cfg.hardware.precision):
            loss = task.loss("model", run, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
    _sync(device)
    return steps * bs / (time.perf_counter() - t0)


def harness_rate(cfg: DictConfig, task, warmup: int, steps: int, out: Path) -> float:
    """Images/s of the real loop, from two runs of warmup and warmup + steps steps on the same task."""
    times = []
    for n in (warmup, warmup + steps):
        cfg.train.steps = n
        plan = build_plan(cfg, task)
        d = out / f"steps{n}"
        d.mkdir(parents=True, exist_ok=True)
        outcome = train(plan, task, Loggers(d, []), Dist(), d, PreemptFlag())
        times.append(outcome.train_time_s)
    dt = times[1] - times[0]
    return steps * cfg.batch.size / dt if dt > 0 else float("nan")  # nan: timing noise beat the steps, raise --steps


def measure(task_name: str, args, data_root: Path, work: Path) -> list[dict]:
    device = torch.device(args.device)
    rows = []
    for setting, extra in settings(task_name, device.type == "cuda", args.compile).items():
        root = data_root / "imagenet" if task_name.startswith("imagenet") else data_root
        overrides = [
            f"task.data_root={root}",
            f"batch.size={args.batch}",
            f"batch.base_size={args.batch}",
            "train.eval_every=1000000",  # only the final evaluation, which cancels out
            f"train.log_every={args.log_every}",
            f"train.check_every={args.log_every}",
            f"task.val_size={args.val_images}",  # the held-out validation split; the stand-in sets hold this many extra training images
            f"task.val_subset={args.val_images}",
            f"task.eval_batch_size={args.val_images}",
            f"task.workers={args.workers}",
            *extra,
        ]
        if args.train_images:
            overrides.append(f"task.train_subset={args.train_images}")
        if task_name.startswith("imagenet"):
            overrides += [f"task.image_size={args.image_size}", f"task.val_resize={round(args.image_size / 0.875)}"]
        if args.tiny:
            overrides += TINY[task_name]
        cfg = compose_cfg(task_name, args.device, overrides)
        task = build_task(cfg, device)  # seeds from cfg.seed, sets cuDNN benchmarking from hardware.deterministic
        plan = build_plan(cfg, task)
        row = {"task": task_name, "setting": setting, "batch": args.batch, "options": extra}
        row["step"] = bare_rate(cfg, task, plan, True, args.warmup, args.steps)
        row["step+data"] = bare_rate(cfg, task, plan, False, args.warmup, args.steps)
        row["harness"] = harness_rate(cfg, task, args.warmup, args.steps, work / task_name / setting)
        row["harness/step+data"] = row["harness"] / row["step+data"]
        rows.append(row)
        print(_fmt(row), flush=True)
        del task
    return rows


def _fmt(row: dict) -> str:
    return f"{row['task']:<18} {row['setting']:<10} {row['step']:>10.1f} {row['step+data']:>10.1f} {row['harness']:>10.1f} {row['harness/step+data']:>8.3f}"


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--tasks", default=",".join(TASKS), help="comma-separated task names")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    p.add_argument("--warmup", type=int, default=5, help="untimed steps first (cuDNN autotuning, compilation)")
    p.add_argument("--log-every", type=int, default=50, help="the harness's log/check interval during the timing")
    p.add_argument("--data-root", type=Path, default=None, help="holds cifar-10-batches-py/, cifar-100-python/, imagenet/; default: stand-in data in a temp dir")
    p.add_argument("--train-images", type=int, default=None, help="training subset (default: all; the stand-in sets have 8 x batch)")
    p.add_argument("--val-images", type=int, default=16)
    p.add_argument("--image-size", type=int, default=224, help="imagenet_resnet50 crop size")
    p.add_argument("--workers", type=int, default=4, help="DataLoader processes (imagenet, plain CIFAR)")
    p.add_argument("--compile", action="store_true", help="torch.compile in the efficient setting")
    p.add_argument("--tiny", action="store_true", help="narrow models (checks the script, not the models)")
    p.add_argument("--json", type=Path, default=None, help="also write the rows and environment here")
    args = p.parse_args(argv)
    tasks = args.tasks.split(",")
    for t in tasks:
        if t not in TASKS:
            p.error(f"--tasks: {t!r} is not one of {', '.join(TASKS)}")

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data_root = args.data_root
        if data_root is None:
            data_root = work / "data"
            n = max(8 * args.batch, args.val_images)
            write_cifar(data_root, "cifar10", n + args.val_images, args.val_images)  # n to train on after the validation hold-out
            write_cifar(data_root, "cifar100", n + args.val_images, args.val_images)
            classes = 4
            per = -(-n // classes)
            write_imagefolder(data_root / "imagenet", classes, per + -(-args.val_images // classes), -(-args.val_images // classes), size=round(args.image_size * 1.15))
            print(f"stand-in data ({n} training images per task) in {data_root}: throughput only", flush=True)
        env = {
            "device": torch.cuda.get_device_name() if args.device == "cuda" else platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "python": platform.python_version(),
        }
        print(f"images/s on {args.device} ({env['device']}), batch {args.batch}, {args.steps} timed steps after {args.warmup}")
        print(f"{'task':<18} {'setting':<10} {'step':>10} {'step+data':>10} {'harness':>10} {'h/(s+d)':>8}")
        rows = []
        for t in tasks:
            rows += measure(t, args, data_root, work / "runs")
    speedups = {}
    for t in tasks:
        r = {row["setting"]: row["harness"] for row in rows if row["task"] == t}
        speedups[t] = r["efficient"] / r["plain"]
        print(f"{t}: efficient / plain (harness) = {speedups[t]:.2f}x")
    result = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, "env": env, "rows": rows, "efficient_over_plain": speedups}
    if args.json:
        args.json.write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
