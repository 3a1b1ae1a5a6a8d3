"""The training loop: one function, readable top to bottom.

Per optimizer step s (0-based, see :mod:`bench.schedules`):

1. take global batch s of the epoch, keep this process's shard, cut it into micro-batches;
2. for each model in the task's order: accumulate gradients over the micro-batches
   (each micro-batch loss weighted 1/n, so the update equals one big-batch update),
   optionally clip, step its optimizer at the LR its scheduler set for step s, advance
   the scheduler;
3. every ``check_every`` steps look at the losses for divergence; run the due probes
   (:mod:`bench.probes`); write a row at every warm-up step and the first after it, then every ``log_every``
   steps; every ``eval_every`` steps (and at the end) evaluate (:func:`evaluation_steps`);
4. checkpoint every ``checkpoint_every`` steps and when a preemption signal arrived.

With ``train.average_last = K`` the Outcome also holds ``final_avg``, each evaluation metric's mean over the
run's last K evaluations (:func:`bench.records.mean_of_evaluations`), and ``test_avg``, the test split scored at
the last K planned evaluation steps and averaged the same way, so that a metric that swings between evaluations
(a GAN's) is read off several of them instead of the last one.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Mapping, Sequence

import hydra
import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from bench import checkpoint as ckpt
from bench.distributed import Dist
from bench.plan import Plan
from bench.probes import Probe, ProbeContext
from bench.records import mean_of_evaluations, test_key, train_set_key
from bench.progress import JobProgress


@dataclass
class Outcome:
    """What the loop hands back for result.json."""

    status: str = "completed"
    steps: int = 0
    diverged_step: int | None = None
    diverged_reason: str | None = None
    final: dict = field(default_factory=dict)
    best: dict = field(default_factory=dict)
    best_step: dict = field(default_factory=dict)
    final_train_loss: float | None = None
    initial_loss: float | None = None  # the first step's loss (mean over processes)
    test: dict = field(default_factory=dict)  # metrics on the test split, once at the end of a run that trained to its last step
    final_avg: dict = field(default_factory=dict)  # train.average_last: each eval metric's mean over the last K evaluations
    final_avg_steps: list = field(default_factory=list)  # the steps of the evaluations averaged into final_avg
    test_avg: dict = field(default_factory=dict)  # the test metrics averaged over the same evaluation steps (runs that trained to the end)
    train_set: dict = field(default_factory=dict)  # the same metrics on the training set (tasks with train_eval), for the generalization gap
    train_time_s: float = 0.0
    probe_time_s: float = 0.0  # the part of train_time_s spent in the probes' measurements
    resumed_from: int | None = None
    preempted: bool = False


def evaluation_steps(total_steps: int, eval_every: int) -> list[int]:
    """The steps after which the loop evaluates: s with (s + 1) % eval_every == 0, and the last step T - 1.

    T = 250, every 100: [99, 199, 249]; T = 200: [99, 199].
    """
    steps = list(range(eval_every - 1, total_steps, eval_every))
    return steps if steps and steps[-1] == total_steps - 1 else [*steps, total_steps - 1]


def build_optimizers(plan: Plan, models: Mapping[str, nn.Module], task=None) -> dict[str, torch.optim.Optimizer]:
    """Instantiate each model's optimizer (a ``_partial_`` config) at its effective peak LR, on the
    parameters (or parameter groups) that ``task.optimizer_params`` names for it."""
    opts = {}
    for name, model in models.items():
        oc = dict(plan.optimizer_cfgs[name])
        oc["lr"] = oc["lr"] * plan.lr_scale
        if "betas" in oc:
            oc["betas"] = tuple(oc["betas"])
        params = task.optimizer_params(name, model) if task is not None else model.parameters()
        opts[name] = hydra.utils.instantiate(oc)(params)
    return opts


def _as_function(schedule):
    def multiplier(step: int) -> float:
        return schedule(step)

    return multiplier


def _better(mode: str, new: float, old: float | None) -> bool:
    if old is None:
        return True
    return new > old if mode == "max" else new < old


def train(plan: Plan, task, logger, dist: Dist, out_dir, preempt: "ckpt.PreemptFlag", probes: Sequence[Probe] = ()) -> Outcome:
    """Run the plan. Divergence and preemption end the loop early and are reported in the Outcome."""
    device = task.device
    t = plan.train
    seed, batch_size = plan.seed, plan.batch_size
    last = plan.total_steps - 1
    warmup_end = max((sch.warmup_steps for sch in plan.schedules.values()), default=0)
    models = task.models
    wrapped = {n: dist.wrap(m) for n, m in models.items()}
    if plan.compile:
        wrapped = {n: torch.compile(m) for n, m in wrapped.items()}
    opts = build_optimizers(plan, models, task)
    # each multiplier wrapped in a plain function: LambdaLR's state_dict then holds only numbers (weights_only loads)
    scheds = {n: LambdaLR(opts[n], _as_function(plan.schedules[n])) for n in models}
    multi = len(models) > 1
    bf16 = plan.precision == "bf16"
    autocast = (lambda: torch.autocast(device_type=device.type, dtype=torch.bfloat16)) if bf16 else contextlib.nullcontext
    metric_modes = dict(task.metrics)
    measure_batch = _MeasureBatch(task, seed)

    out = Outcome()
    k_avg = t.average_last
    # the last K evaluations so far (step, metrics); the test split is scored at the last K planned evaluation steps
    recent: deque = deque(maxlen=k_avg or 1)
    recent_test: list[dict] = []
    test_at = set(evaluation_steps(plan.total_steps, t.eval_every)[-k_avg:]) if k_avg else set()
    start, initial_loss = 0, None
    state = ckpt.load(out_dir, plan.config_hash)
    if state is not None:
        start = ckpt.restore(state, models, opts, scheds)
        initial_loss = state["initial_loss"]
        out.best, out.best_step, out.final = state["best"], state["best_step"], state["final"]
        recent.extend((s, m) for s, m in state.get("recent_evals", []))
        recent_test = list(state.get("recent_tests", []))
        out.resumed_from = start
    if dist.is_main:
        logger.open(state["metrics_offset"] if state is not None else None)

    progress = JobProgress(plan.total_steps, enabled=dist.is_main, start=start)
    pending: list[tuple[int, torch.Tensor]] = []  # (step, total loss) not yet checked
    batches, epoch_of_iter = None, -1
    t0 = time.perf_counter()
    step = start
    for step in range(start, plan.total_steps):
        epoch, idx = divmod(step, plan.steps_per_epoch)
        if epoch != epoch_of_iter:
            gen = torch.Generator().manual_seed(seed * 100_003 + epoch)
            batches, epoch_of_iter = iter(task.train_shards(batch_size, epoch, idx, gen, dist.rank, dist.world_size)), epoch
        micros = task.split(next(batches), plan.micro_batches)
        # every step during warm-up, so the curves show its real shape; then every log_every steps
        log_now = step <= warmup_end or step % t.log_every == 0 or step == last  # and the first step after it: the switch is drawn where it happens
        due_probes = [p for p in probes if p.due(step, last)] if probes else ()

        row = {"kind": "train", "step": step, "epoch": step / plan.steps_per_epoch}
        total_loss = None
        lrs = {}
        for name, model in wrapped.items():
            opt = opts[name]
            lr = opt.param_groups[0]["lr"]
            lrs[name] = lr
            # zero before the forward rather than after the update: measurably faster on the CPU (allocator reuse);
            # with several models every one is zeroed, since a loss may run through the others (G's through D)
            for o in opts.values() if multi else (opt,):
                o.zero_grad(set_to_none=True)
            loss_sum, stats_sum = None, {}
            n = len(micros)
            for i, mb in enumerate(micros):
                with dist.no_sync(model, i == n - 1), autocast():
                    res = task.loss(name, model, mb)
                loss, stats = res if isinstance(res, tuple) else (res, {})
                (loss if n == 1 else loss / n).backward()
                d = loss.detach()
                loss_sum = d if loss_sum is None else loss_sum + d
                for k, v in stats.items():
                    stats_sum[k] = v.detach() if k not in stats_sum else stats_sum[k] + v.detach()
            loss_mean = loss_sum if n == 1 else loss_sum / n
            for p in due_probes:
                p.before_update(step, name, models[name], opt)
            if t.clip_grad is not None:
                torch.nn.utils.clip_grad_norm_(models[name].parameters(), t.clip_grad)
            opt.step()
            scheds[name].step()
            for p in due_probes:
                p.after_update(step, name, models[name], opt)
            total_loss = loss_mean if total_loss is None else total_loss + loss_mean
            if log_now:
                suffix = f"/{name}" if multi else ""
                row[f"lr{suffix}"] = lr
                if multi:
                    row[f"train_loss{suffix}"] = loss_mean
                for k, v in stats_sum.items():
                    row[f"{k}/{name}"] = v / n
        pending.append((step, total_loss))
        due = t.checkpoint_every and (step + 1) % t.checkpoint_every == 0 and step + 1 < plan.total_steps
        stop = dist.any(preempt.is_set())  # all processes stop at the same step, even if one rank got the signal

        # a checkpoint must not carry unchecked losses: a resumed run would never look at them
        if log_now or due or stop or (step + 1) % t.check_every == 0 or step == last:
            bad, initial_loss = _check(pending, initial_loss, t.diverge_factor if task.loss_ratio_divergence else None, dist)
            pending.clear()
            if bad is not None:
                out.status, (out.diverged_step, out.diverged_reason) = "diverged", bad
                out.steps = bad[0] + 1
                if dist.is_main:
                    logger.log({"kind": "train", "step": bad[0], "epoch": bad[0] / plan.steps_per_epoch, "diverged": bad[1]})
                break
        probed = {}
        if due_probes:
            t_probe = time.perf_counter()
            probed = _measure(due_probes, step, task, models, opts, lrs, measure_batch)
            out.probe_time_s += time.perf_counter() - t_probe
        if log_now:
            row["train_loss"] = dist.all_mean(total_loss)  # the global batch's loss, not this shard's
            row.update(probed)
            row = {k: (v.item() if isinstance(v, torch.Tensor) else v) for k, v in row.items()}
            out.final_train_loss = row["train_loss"]
            if dist.is_main:
                logger.log(row)
            progress.update(step, row)
        elif probed and dist.is_main:
            logger.log({"kind": "probe", "step": step, "epoch": step / plan.steps_per_epoch, **probed})

        if (step + 1) % t.eval_every == 0 or step == last:
            metrics = _evaluate(task, device, plan.precision, dist)
            if dist.is_main:
                logger.log({"kind": "eval", "step": step, "epoch": (step + 1) / plan.steps_per_epoch, **metrics})
            out.final = metrics
            for k, v in metrics.items():
                if k in metric_modes and _better(metric_modes[k], v, out.best.get(k)):
                    out.best[k], out.best_step[k] = v, step
            if k_avg:
                recent.append((step, metrics))
                if step in test_at:  # its own RNG state: scoring the test split mid-run must not move training's random stream
                    with torch.random.fork_rng(devices=_cuda_devices()):
                        recent_test.append(_evaluate(task, device, plan.precision, dist, "test"))

        out.steps = step + 1
        if due or stop:
            extra = {"initial_loss": initial_loss, "best": out.best, "best_step": out.best_step, "final": out.final,
                     "recent_evals": [[s, m] for s, m in recent], "recent_tests": recent_test}
            if dist.is_main:
                ckpt.save(out_dir, plan.config_hash, step + 1, models, opts, scheds, logger.offset(), extra)
            dist.barrier()
            if stop:
                out.status, out.preempted = "preempted", True
                break
    out.train_time_s = time.perf_counter() - t0
    progress.close()
    out.initial_loss = float(initial_loss) if initial_loss is not None else None
    if k_avg and recent:
        out.final_avg = mean_of_evaluations([m for _, m in recent])
        out.final_avg_steps = [s for s, _ in recent]
    if out.status == "completed":  # test metrics only where the run trained to its end; never used to select anything
        out.test = {test_key(k): v for k, v in _evaluate(task, device, plan.precision, dist, "test").items()}
        if k_avg:  # the final evaluation's test metrics are the last of these
            out.test_avg = {test_key(k): v for k, v in mean_of_evaluations(recent_test).items()}
        if getattr(task, "train_eval", False):
            out.train_set = {train_set_key(k): v for k, v in _evaluate(task, device, plan.precision, dist, "train").items()}
    if plan.save_final and not out.preempted and dist.is_main:
        ckpt.save_final(out_dir, models, opts)
    return out


class _MeasureBatch:
    """A fixed training batch for probes: drawn once per size from epoch 0's order under its own seed."""

    def __init__(self, task, seed: int):
        self.task, self.seed, self.cache = task, seed, {}

    def __call__(self, size: int):
        if size not in self.cache:
            with torch.random.fork_rng(devices=[]):
                gen = torch.Generator().manual_seed(self.seed * 100_003 + 7_919)  # not any epoch's data-order seed
                batch = next(iter(self.task.train_batches(size, 0, 0, gen)), None)
                if batch is None:
                    from bench.errors import ConfigError

                    raise ConfigError(f"a probe's measurement batch of {size} examples is larger than the training set ({self.task.train_size()}): lower diagnostics.<probe>.batch")
                self.cache[size] = batch
        return self.cache[size]


def _measure(probes, step, task, models, opts, lrs, measure_batch) -> dict:
    """Every due probe's scalars; random draws inside do not move the training RNG."""
    ctx = ProbeContext(step=step, task=task, models=models, optimizers=opts, lrs=lrs, measure_batch=measure_batch)
    out: dict = {}
    with torch.random.fork_rng(devices=_cuda_devices()):
        for p in probes:
            for k, v in p.measure(ctx).items():
                out[k] = v.item() if isinstance(v, torch.Tensor) else float(v)
    return out


def _cuda_devices() -> list[int]:
    """The CUDA device whose RNG ``fork_rng`` must save and restore: the current one once CUDA is in use, else none."""
    return [torch.cuda.current_device()] if torch.cuda.is_available() and torch.cuda.is_initialized() else []


def _check(pending, initial_loss, factor, dist: Dist):
    """First (step, reason) in ``pending`` with a non-finite loss or one above factor x the first loss.

    Returns ``(bad_or_None, first_loss)``; the first loss is the mean loss of step 0 over processes.
    """
    if dist.world_size == 1:
        values = [l.item() for _, l in pending]
    else:
        values = dist.all_mean(torch.stack([l.float() for _, l in pending])).tolist()
    first = initial_loss if initial_loss is not None else values[0]
    for (s, _), v in zip(pending, values):
        if not math.isfinite(v):
            return (s, f"non-finite loss {v}"), first
        if factor is not None and v > factor * first:
            return (s, f"loss {v:.4g} > {factor} x first loss {first:.4g}"), first
    return None, first


@torch.no_grad()
def _evaluate(task, device, precision, dist: Dist, split: str = "val") -> dict[str, float]:
    metrics = None
    if dist.is_main:
        with torch.autocast(device_type=device.type, dtype=torch.bfloat16) if precision == "bf16" else contextlib.nullcontext():
            metrics = task.evaluate(split)
    return dist.broadcast(metrics)
