"""Training engines, applied in one place (`parallelize`) to a model built on the meta device.

    local      one process: the plain model (also any engine without a process group)
    ddp        replicas, gradients all-reduced once per step            (mmkd/engines/ddp.py)
    fsdp2      parameters, gradients, optimiser state sharded            (mmkd/engines/fsdp2.py)
    deepspeed  ZeRO-1/2/3 over our optimiser                              (mmkd/engines/deepspeed.py)

torchtitan's order: activation checkpointing and compilation per block, then the engine. FSDP2 shards
the meta model first and each rank then materialises only its shards; DDP and DeepSpeed need the
weights before they wrap. The optimiser is built over the parameters as the engine leaves them.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from mmkd.engines.base import Engine
from mmkd.engines.registry import engine_class

if TYPE_CHECKING:
    from mmkd.config import TrainConfig
    from mmkd.distributed import DistInfo


def blocks(model: nn.Module) -> list[nn.Module]:
    """The transformer blocks (vision and decoder): the unit of recomputation, compilation, sharding."""
    from mmkd.model.decoder import DecoderLayer
    from mmkd.model.vision import VisionBlock

    return [m for m in model.modules() if isinstance(m, DecoderLayer | VisionBlock)]


def wrap_blocks(model: nn.Module, activation_checkpointing: bool = False, compile_backend: str = "") -> None:
    """Activation checkpointing, then compilation, of each block's `forward`, patched in place so
    parameter names and checkpoints do not change."""
    for block in blocks(model):
        forward = block.forward
        if activation_checkpointing:
            # Keep only each block's input; recompute its activations in the backward pass.
            forward = functools.partial(checkpoint, forward, use_reentrant=False)
        if compile_backend:
            forward = _batch_unbacked(torch.compile(forward, backend=compile_backend, dynamic=True))
        block.forward = forward


def _batch_unbacked(compiled: Callable) -> Callable:
    """`compiled` with its input's first dimension (images or rows) marked unbacked, so a batch of
    one is the same graph: dynamic shapes otherwise specialise sizes 0 and 1, and a one-image batch
    would compile the block again (seconds to minutes, once per block kind)."""

    @functools.wraps(compiled)
    def forward(x: torch.Tensor, *args, **kwargs):
        torch._dynamo.decorators.mark_unbacked(x, 0)
        return compiled(x, *args, **kwargs)

    return forward


def parallelize(
    model: nn.Module,
    info: DistInfo,
    t: TrainConfig,
    materialize: Callable[[nn.Module], None],
    make_optimizer: Callable[[nn.Module], torch.optim.Optimizer],
    micro_batch: int,
    accumulation: int,
) -> Engine:
    """The engine `t.engine` over the meta-built `model`, with its weights materialised by
    `materialize` on this rank's device and its optimiser from `make_optimizer`."""
    wrap_blocks(model, t.activation_checkpointing, t.compile)
    cls = engine_class(t.engine) if info.grouped else Engine  # no process group: one process, no engine
    if cls.shards_meta_model:
        cls.shard(model, blocks(model), t.bf16)
    materialize(model)
    return cls.create(model, make_optimizer, t, info, micro_batch, accumulation)
