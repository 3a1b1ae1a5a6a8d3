"""Process-group facts for DDP. One process (world size 1) is the default and costs nothing.

Rank and world size come from torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK)
or, for a multi-task SLURM job, from submitit's helpers. Only rank 0 writes records.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass

import torch
import torch.distributed as tdist
from torch import nn


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


def from_environment(device_type: str) -> Dist:
    """Join the process group described by the environment, if any."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist()
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not tdist.is_initialized():
        tdist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return Dist(rank=rank, world_size=world, local_rank=local)
