"""Process-group facts for DDP. One process (world size 1) is the default and costs nothing.

Where rank and world size come from, first match wins:

1. torchrun (or any launcher that sets them): ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``;
2. a SLURM job with several tasks (``SLURM_NTASKS`` > 1, e.g. the submitit launcher with
   ``tasks_per_node`` > 1): submitit's ``TorchDistributedEnvironment`` exports the same variables
   from ``SLURM_PROCID`` / ``SLURM_LOCALID`` / the node list, so no hand-written launcher is needed;
3. otherwise one process.

Backend: NCCL on CUDA (each process on GPU ``LOCAL_RANK``), gloo on the CPU.
The global batch is ``batch.size`` = micro-batch x world size x accumulation steps; each process
takes slice ``rank`` of every global batch (bench/loop.py), and only rank 0 writes records.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist
from torch import nn

from bench.errors import bad


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def wrap(self, model: nn.Module) -> nn.Module:
        if self.world_size == 1:
            return model
        dev = next(model.parameters()).device
        return nn.parallel.DistributedDataParallel(model, device_ids=[dev.index] if dev.type == "cuda" else None)

    def no_sync(self, model: nn.Module, sync: bool):
        """Skip the gradient all-reduce on all but the last micro-batch."""
        if self.world_size == 1 or sync:
            return contextlib.nullcontext()
        return model.no_sync()

    def all_mean(self, t: torch.Tensor) -> torch.Tensor:
        if self.world_size == 1:
            return t
        t = t.clone()
        tdist.all_reduce(t)
        return t / self.world_size

    def any(self, flag: bool) -> bool:
        """True on every process when ``flag`` is true on at least one (e.g. one rank got SIGUSR2)."""
        if self.world_size == 1:
            return flag
        t = torch.tensor([int(flag)], device=self._device())
        tdist.all_reduce(t, op=tdist.ReduceOp.MAX)
        return bool(t.item())

    def broadcast(self, obj):
        if self.world_size == 1:
            return obj
        box = [obj]
        tdist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.world_size > 1:
            tdist.barrier()

    def close(self) -> None:
        if self.world_size > 1 and tdist.is_initialized():
            tdist.destroy_process_group()

    def _device(self) -> torch.device:
        return torch.device("cuda", self.local_rank) if tdist.get_backend() == "nccl" else torch.device("cpu")


def _export_slurm_env() -> None:
    """Set RANK/WORLD_SIZE/LOCAL_RANK/MASTER_ADDR/MASTER_PORT from a multi-task SLURM job (submitit's helper).

    CUDA_VISIBLE_DEVICES is left alone: each process selects GPU LOCAL_RANK among the node's GPUs.
    """
    from submitit.helpers import TorchDistributedEnvironment

    TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def from_environment(device_type: str) -> Dist:
    """Join the process group described by the environment, if any (see the module docstring)."""
    if "WORLD_SIZE" not in os.environ and int(os.environ.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in os.environ:
        _export_slurm_env()
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not tdist.is_initialized():
        if device_type == "cuda":
            if not torch.cuda.is_available():
                raise bad("hardware.device", device_type, "cpu on this machine: no CUDA device is visible (gloo runs DDP on the CPU)")
            # before init: NCCL and broadcast_object_list use the current device, which defaults to GPU 0 on every rank
            torch.cuda.set_device(local)
        tdist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return Dist(rank=rank, world_size=world, local_rank=local)
