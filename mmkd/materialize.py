"""Models are built on the meta device and allocated on their own device after sharding (torchtitan's
order), so no rank ever holds the whole model in fp32 on its CPU.

`materialize` allocates the (possibly FSDP2-sharded) parameters on the device and replays the model's
random draws (`VLM.initializers`) in construction order. Each draw runs on full-size tensors of one
module's own parameters at a time, and a sharded parameter keeps its rank's slice: every engine and
every world size starts from the same weights, which are, bit for bit, those of a model constructed
directly on that device with the same seed.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch
from torch import nn
from torch.distributed.tensor import DTensor, distribute_tensor


@torch.no_grad()
def copy_full_(param: torch.Tensor, full: torch.Tensor) -> None:
    """Write a full-size value into a parameter (any device, cast to its dtype): all of it, or this
    rank's shard of a DTensor."""
    full = full.to(param.device, param.dtype)
    if isinstance(param, DTensor):
        # src_data_rank=None: every rank holds `full` already and keeps its slice, no communication.
        shard = distribute_tensor(
            full.to(param.dtype), param.device_mesh, param.placements, src_data_rank=None
        )
        param.to_local().copy_(shard.to_local())
    else:
        param.copy_(full)


@contextmanager
def _full_size(module: nn.Module, keep: bool):
    """Swap the module's own parameters for full-size plain tensors on their device for the block,
    then write them back (unless `keep` is False: the values are drawn and discarded)."""
    own = dict(module.named_parameters(recurse=False))
    full = {k: torch.empty(p.shape, dtype=p.dtype, device=p.device) for k, p in own.items()}
    module._parameters.update(full)  # plain tensors for the draw only; restored below
    try:
        yield
    finally:
        module._parameters.update(own)
    if keep:
        for k, p in own.items():
            copy_full_(p, full[k])


@torch.no_grad()
def materialize(model: nn.Module, device: torch.device, seed: int | None) -> None:
    """Allocate a meta-built model on `device`; draw its weights from `seed`, or leave them to a
    checkpoint (`seed=None`: only the buffers that checkpoints do not hold are computed)."""
    model.to_empty(device=device)
    model.tie_weights()  # to_empty gives each module its own tensor (FSDP2 keeps the tie itself)
    model.reset_buffers()
    if seed is None:
        return
    torch.manual_seed(seed)
    for module, draw, keep in model.initializers():
        with _full_size(module, keep):
            draw(module)
