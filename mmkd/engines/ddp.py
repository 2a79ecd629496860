"""DDP: a full replica of the model on every rank, gradients all-reduced once per step."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

from mmkd.engines.base import Engine


class DDPEngine(Engine):
    @classmethod
    def create(cls, model, make_optimizer, t, info, micro_batch: int, accumulation: int) -> Engine:
        if info.world_size == 1:  # one rank in a process group: nothing to reduce
            return Engine(model, make_optimizer(model))
        return cls(model, make_optimizer(model), info.device)

    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device):
        super().__init__(model, optimizer)
        # Every parameter takes part in every forward (a batch without images still runs the vision
        # tower, times zero: `VLM.embed`), so DDP need not search the graph for unused ones.
        ids = [device] if device.type == "cuda" else None
        self.module = nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def sync(self, last: bool) -> AbstractContextManager:
        return nullcontext() if last else self.module.no_sync()
