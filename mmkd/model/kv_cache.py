"""The decoder's key/value cache for generation: the prompt is run once (prefill, images encoded once),
then each new token attends to the cached keys and values of everything before it, so a step costs
one token's forward instead of the whole sequence's."""

from __future__ import annotations

from collections.abc import Callable

import torch

from mmkd.model.config import ModelConfig


class KVCache:
    """Keys and values of every decoder layer for one batch, preallocated to `max_len` positions."""

    def __init__(self, cfg: ModelConfig, batch: int, dtype: torch.dtype, device: torch.device):
        shape = (batch, cfg.kv_heads, cfg.max_seq_len, cfg.width // cfg.heads)  # [B, Hkv, L, Dh]
        self.keys = [torch.empty(shape, dtype=dtype, device=device) for _ in range(cfg.layers)]
        self.values = [torch.empty(shape, dtype=dtype, device=device) for _ in range(cfg.layers)]
        self.valid = torch.zeros((batch, cfg.max_seq_len), dtype=torch.bool, device=device)  # not padding
        self.length = 0  # positions filled

    @property
    def capacity(self) -> int:
        return self.valid.shape[1]

    def extend(self, valid: torch.Tensor) -> torch.Tensor:
        """Record the new positions' validity [B, T]; returns that of every position so far."""
        end = self.length + valid.shape[1]
        if end > self.capacity:
            raise ValueError(f"the KV cache holds {self.capacity} positions (model.max_seq_len); asked {end}")
        self.valid[:, self.length : end] = valid
        return self.valid[:, :end]

    def layer(self, i: int) -> Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]:
        """Layer i's update: store the new keys and values [B, Hkv, T, Dh], return all of them so far."""

        def update(k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            end = self.length + k.shape[2]
            self.keys[i][:, :, self.length : end] = k
            self.values[i][:, :, self.length : end] = v
            return self.keys[i][:, :, :end], self.values[i][:, :, :end]

        return update

    def advance(self, t: int) -> None:
        """Every layer has stored the step's `t` positions."""
        self.length += t
