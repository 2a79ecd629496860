"""FSDP2: parameters, gradients and optimiser state sharded across ranks (`fully_shard` per block,
then the root), bf16 parameters with fp32 gradient reduction under `train.bf16`."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

from mmkd.engines.base import Engine


class FSDP2Engine(Engine):
    shards_meta_model = True
    own_precision = True

    @classmethod
    def shard(cls, model: nn.Module, blocks: list[nn.Module], bf16: bool) -> None:
        """Shard each block, then the root (the embeddings, head, projector and norms), in place."""
        from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

        policy = MixedPrecisionPolicy(torch.bfloat16, torch.float32) if bf16 else MixedPrecisionPolicy()
        for block in blocks:
            fully_shard(block, mp_policy=policy)
        fully_shard(model, mp_policy=policy)

    def sync(self, last: bool) -> AbstractContextManager:
        self.model.set_requires_gradient_sync(last)
        return nullcontext()
