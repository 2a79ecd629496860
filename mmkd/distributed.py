"""Process-group setup and the one place where parallelism is applied to a single-device model."""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.checkpoint import checkpoint


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed() -> DistInfo:
    """Join the torchrun process group when launched by torchrun (gloo on CPU, nccl on GPU)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size())


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


def blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks (vision and decoder): the unit of recomputation and of compilation."""
    from mmkd.model.decoder import DecoderLayer
    from mmkd.model.vision import VisionBlock

    return [m for m in model.modules() if isinstance(m, DecoderLayer | VisionBlock)]


def parallelize(
    model: nn.Module, info: DistInfo, activation_checkpointing: bool = False, compile_backend: str = ""
) -> nn.Module:
    """Everything that turns the single-device model into the trained one, in torchtitan's order:
    activation checkpointing, then compilation, per block, then data parallelism over ranks (DDP).

    Blocks are patched in place (their `forward`), so parameter names and checkpoints do not change.
    FSDP2 / DeepSpeed engines plug in here for large models.
    """
    for block in blocks(model):
        forward = block.forward
        if activation_checkpointing:
            # Keep only each block's input; recompute its activations in the backward pass.
            forward = functools.partial(checkpoint, forward, use_reentrant=False)
        if compile_backend:
            forward = torch.compile(forward, backend=compile_backend, dynamic=True)
        block.forward = forward
    if info.world_size == 1:
        return model
    return nn.parallel.DistributedDataParallel(model)


def unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model
