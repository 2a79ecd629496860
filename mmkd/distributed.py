"""Process-group setup and the one place where parallelism is applied to a single-device model."""

from __future__ import annotations

import functools
import os
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.checkpoint import checkpoint

from mmkd.deepspeed_engine import is_engine as is_deepspeed


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


ENGINES = ("ddp", "fsdp2", "deepspeed")


def parallelize(
    model: nn.Module,
    info: DistInfo,
    activation_checkpointing: bool = False,
    compile_backend: str = "",
    engine: str = "ddp",
    bf16: bool = False,
) -> nn.Module:
    """Everything that turns the single-device model into the trained one, in torchtitan's order:
    activation checkpointing, then compilation, per block, then the engine over ranks: DDP (replicas)
    or FSDP2 (`fully_shard` per block, then the root; bf16 parameters with fp32 reductions if `bf16`).
    DeepSpeed needs the optimiser too, so the trainer applies it next (`deepspeed_engine.wrap`).

    Blocks are patched in place (their `forward`), so parameter names and checkpoints do not change.
    """
    for block in blocks(model):
        forward = block.forward
        if activation_checkpointing:
            # Keep only each block's input; recompute its activations in the backward pass.
            forward = functools.partial(checkpoint, forward, use_reentrant=False)
        if compile_backend:
            forward = torch.compile(forward, backend=compile_backend, dynamic=True)
        block.forward = forward
    if info.world_size == 1 or engine == "deepspeed":  # DeepSpeed wraps model and optimiser together
        return model
    if engine == "fsdp2":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        policy = MixedPrecisionPolicy(torch.bfloat16, torch.float32) if bf16 else MixedPrecisionPolicy()
        for block in blocks(model):
            fully_shard(block, mp_policy=policy)
        fully_shard(model, mp_policy=policy)
        return model
    # A micro-batch without images leaves the vision tower unused; DDP must then still reduce the
    # gradients it accumulated over the step's other micro-batches.
    return nn.parallel.DistributedDataParallel(model, find_unused_parameters=True)


def gradient_sync(model: nn.Module, enabled: bool):
    """Context for one micro-batch: reduce gradients across ranks only on the step's last one."""
    if isinstance(model, nn.parallel.DistributedDataParallel):
        return nullcontext() if enabled else model.no_sync()
    if hasattr(model, "set_requires_gradient_sync"):  # FSDP2
        model.set_requires_gradient_sync(enabled)
    if is_deepspeed(model):
        model.set_gradient_accumulation_boundary(enabled)
    return nullcontext()


def backward(model: nn.Module, loss: torch.Tensor) -> None:
    """Backward through the engine: DeepSpeed must see the loss (ZeRO hooks, its own scaling off)."""
    if is_deepspeed(model):
        model.backward(loss, scale_wrt_gas=False)  # the loss is already normalised per global token
    else:
        loss.backward()


def local_float(x: torch.Tensor) -> float:
    """A scalar that may be a DTensor (FSDP2's grad norm) as a Python float."""
    return float(x.full_tensor() if hasattr(x, "full_tensor") else x)
