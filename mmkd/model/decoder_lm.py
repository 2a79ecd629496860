"""What both model families share: the decoder over input embeddings, the LM head, the loss sums the
trainer normalises, and one step of generation with the KV cache. A family says how ids (and
pictures) become embeddings (`embed`) and how its losses are summed (`loss_sums`)."""

from __future__ import annotations

import torch
from torch import nn

from mmkd.model.kv_cache import KVCache
from mmkd.templates import IGNORE


class DecoderLM(nn.Module):
    decoder: nn.Module
    lm_head: nn.Linear

    def embed(self, input_ids: torch.Tensor, pixels: torch.Tensor | None) -> torch.Tensor:
        """[B, T] ids (and the batch's images) -> [B, T, D] input embeddings."""
        raise NotImplementedError

    def loss_sums(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed losses and target counts from fp32 logits [N, V] of the N supervised targets."""
        raise NotImplementedError

    def forward(
        self,
        input_ids: torch.Tensor,
        pixels: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        segments: torch.Tensor | None = None,
    ):
        """Logits [B, T, V]; with `labels`, `loss_sums` of the next-token targets.

        The losses are sums so the trainer can divide by the *global* supervised-token counts.
        `segments` marks packed documents (`mmkd.packing`); a document's first token is BOS, never a
        target, so no loss crosses a document boundary.
        """
        hidden = self.decoder(self.embed(input_ids, pixels), attention_mask, segments)  # [B, T, D]
        if labels is None:
            return self.lm_head(hidden)
        target = labels[:, 1:]
        keep = target != IGNORE  # the head runs only where a loss is taken (not on images or prompts)
        return self.loss_sums(self.lm_head(hidden[:, :-1][keep]).float(), target[keep])

    def next_token_logits(
        self,
        input_ids: torch.Tensor,
        pixels: torch.Tensor | None,
        attention_mask: torch.Tensor | None,
        cache: KVCache,
    ) -> torch.Tensor:
        """Logits [B, V] after the given positions, which follow those in `cache` (generation: the
        prompt with its images at prefill, then one token per step); the cache takes them in."""
        hidden = self.decoder(self.embed(input_ids, pixels), attention_mask, cache=cache)  # [B, T, D]
        return self.lm_head(hidden[:, -1])

    def reset_buffers(self) -> None:
        """The buffers checkpoints do not hold (RoPE tables), computed on the model's device."""
        self.decoder.reset_buffers()

    def num_params(self) -> int:
        return sum(p.numel() for p in self.parameters())
