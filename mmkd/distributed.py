"""Process-group setup, each rank's device, and the collectives the loop needs (the engines, applied
in `mmkd.engines.parallelize`, own everything else across ranks)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist

CPU = torch.device("cpu")


@dataclass(frozen=True)
class DistInfo:
    """This process's place in the job: rank, world size and the device its tensors live on."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = CPU
    # Launched by torchrun, with a process group: the sharded engines (FSDP2, DeepSpeed) then run, even
    # on one rank (`torchrun --nproc_per_node=1`: one GPU, the engine's own mixed precision).
    grouped: bool = False
    # A gloo group with a long timeout, where the other ranks wait while rank 0 works alone (data
    # builds, periodic evaluation): the default group's timeout (NCCL's watchdog) is for collectives.
    wait_group: Any = field(default=None, compare=False, repr=False)

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def local_device() -> torch.device:
    """`cuda:$LOCAL_RANK` (made the current CUDA device) where CUDA exists, else the CPU."""
    if not torch.cuda.is_available():
        return CPU
    device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    torch.cuda.set_device(device)
    return device


def init_distributed(timeout_s: float = 1800, wait_timeout_s: float = 86400) -> DistInfo:
    """Join the torchrun process group when launched by torchrun: NCCL for CUDA tensors (gloo beside it
    for CPU ones), gloo alone on CPU. `timeout_s` bounds a collective; `wait_timeout_s` bounds how
    long the other ranks wait for rank 0's lone work (`wait_for_main`)."""
    device = local_device()
    if "RANK" not in os.environ:  # a plain `python launch/train.py`: one process, no group
        return DistInfo(device=device)
    if not dist.is_initialized():
        cuda = device.type == "cuda"
        dist.init_process_group(
            "cpu:gloo,cuda:nccl" if cuda else "gloo",
            timeout=timedelta(seconds=timeout_s),
            device_id=device if cuda else None,
        )
    wait_group = dist.new_group(backend="gloo", timeout=timedelta(seconds=wait_timeout_s))
    return DistInfo(dist.get_rank(), dist.get_world_size(), device, True, wait_group)


def wait_for_main(info: DistInfo) -> None:
    """Every rank meets here; the others may wait up to the wait timeout while rank 0 builds data or
    evaluates alone, since no collective of the default group (and no NCCL watchdog) is pending."""
    if dist.is_initialized():
        dist.barrier(group=info.wait_group)


def shutdown() -> None:
    """Leave the process group (torchrun warns about ranks that exit without doing so)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def all_reduce_sum(x: torch.Tensor) -> torch.Tensor:
    if dist.is_initialized():
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x
