"""DDP: a full replica of the model on every rank, gradients all-reduced once per step."""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext

import torch
from torch import nn

from mmkd.engines.base import Engine


class DDPEngine(Engine):
    def __init__(self, model: nn.Module, optimizer: torch.optim.Optimizer, device: torch.device):
        super().__init__(model, optimizer)
        # A micro-batch without images leaves the vision tower unused; DDP must then still reduce the
        # gradients it accumulated over the step's other micro-batches.
        ids = [device] if device.type == "cuda" else None
        self.module = nn.parallel.DistributedDataParallel(model, device_ids=ids, find_unused_parameters=True)

    def sync(self, last: bool) -> AbstractContextManager:
        return nullcontext() if last else self.module.no_sync()
