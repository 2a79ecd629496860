"""Process-group setup, each rank's device, and the one place where parallelism is applied to a
single-device model (built on the meta device, materialised on the rank's device after sharding)."""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.checkpoint import checkpoint

from mmkd.deepspeed_engine import is_engine as is_deepspeed

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
        return torch.device("cpu")
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


def blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks (vision and decoder): the unit of recomputation and of compilation."""
    from mmkd.model.decoder import DecoderLayer
    from mmkd.model.vision import VisionBlock

    return [m for m in model.modules() if isinstance(m, DecoderLayer | VisionBlock)]


ENGINES = ("ddp", "fsdp2", "deepspeed")


def parallelize(
    model: nn.Module,
    info: DistInfo,
    materialize: Callable[[nn.Module], None] | None = None,
    activation_checkpointing: bool = False,
    compile_backend: str = "",
    engine: str = "ddp",
    bf16: bool = False,
) -> nn.Module:
    """Everything that turns the meta-device model into the trained one, in torchtitan's order:
    activation checkpointing, then compilation, per block, then the engine over ranks: FSDP2
    (`fully_shard` per block, then the root; bf16 parameters with fp32 reductions if `bf16`), after
    which `materialize` allocates each rank's shards on its device and draws the weights, or DDP
    (replicas), which needs the weights first (`materialize=None`: the model is on its device already).
    DeepSpeed needs the optimiser too, so the trainer applies it next (`deepspeed_engine.wrap`) to
    the materialised model.

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
    if info.grouped and engine == "fsdp2":
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        policy = MixedPrecisionPolicy(torch.bfloat16, torch.float32) if bf16 else MixedPrecisionPolicy()
        for block in blocks(model):
            fully_shard(block, mp_policy=policy)
        fully_shard(model, mp_policy=policy)
        if materialize:
            materialize(model)
        return model
    if materialize:
        materialize(model)
    if info.world_size == 1 or engine != "ddp":  # DeepSpeed wraps model and optimiser together
        return model
    # A micro-batch without images leaves the vision tower unused; DDP must then still reduce the
    # gradients it accumulated over the step's other micro-batches.
    ids = [info.device] if info.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)


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
