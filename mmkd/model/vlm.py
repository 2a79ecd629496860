"""The dense VLM: image features are projected and written into the decoder's input embeddings at
the `<image>` positions of the sequence, so any number of images can sit anywhere in a sequence."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mmkd.model.config import ModelConfig
from mmkd.model.decoder import Decoder
from mmkd.model.decoder_lm import DecoderLM
from mmkd.model.projector import Projector
from mmkd.model.vision import VisionEncoder


class VLM(DecoderLM):
    def __init__(self, cfg: ModelConfig, image_token_id: int):
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError("model.vocab_size must be set (from the tokenizer) before building the model")
        self.cfg, self.image_token_id = cfg, image_token_id
        self.vision = VisionEncoder(cfg)
        self.projector = Projector(cfg.vision_width, cfg.width)
        self.decoder = Decoder(cfg)
        self.lm_head = nn.Linear(cfg.width, cfg.vocab_size, bias=False)
        self.apply(self._init)
        self.tie_weights()

    @property
    def text_vocab_size(self) -> int:
        """Ids that are text (all of the head's rows; the discrete model's head has more)."""
        return self.cfg.vocab_size

    def tie_weights(self) -> None:
        """The LM head reads the input embeddings (`model.tie_embeddings`); `to_empty` unties them."""
        if self.cfg.tie_embeddings:
            self.lm_head.weight = self.decoder.embed_tokens.weight

    def initializers(self) -> list[tuple[nn.Module, Callable[[nn.Module], None], bool]]:
        """Every random draw of `__init__`, in its order, as (module, draw on its own parameters, keep).

        Materialising a model built on the meta device replays these (`mmkd.materialize`), so it starts
        from exactly the weights that construction on that device gives for the same seed. `keep` is
        False for the tied LM head: construction drew its weights, then replaced them by the embedding's.
        """
        tied = self.cfg.tie_embeddings
        draws = []
        for m in self.modules():
            if m is self.vision:
                continue  # its own parameter (the positions) is drawn right after its patch convolution
            if hasattr(m, "reset_parameters"):
                draws.append((m, type(m).reset_parameters, not (tied and m is self.lm_head)))
            if m is self.vision.patch_embedding:
                draws.append((self.vision, type(self.vision).reset_parameters, True))
        inits = [m for m in self.modules() if isinstance(m, nn.Linear | nn.Embedding)]  # apply()'s order
        return draws + [(m, self._init, not (tied and m is self.lm_head)) for m in inits]

    @staticmethod
    def _init(m: nn.Module) -> None:
        # Linear weights ~ N(0, 1/fan_in): the GPT-2 constant 0.02 is ~4x too small at width 128 and
        # left the tiny model on a ~1000-step plateau before answers learned to attend to the right
        # image token; fan-in scaling cut that to ~300 steps (docs/design.md, "Initialisation").
        if isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, std=m.in_features**-0.5)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Embedding):
            nn.init.normal_(m.weight, std=0.02)

    def embed(self, input_ids: torch.Tensor, pixels: torch.Tensor | None) -> torch.Tensor:
        x = self.decoder.embed_tokens(input_ids)  # [B, T, D]
        slots = input_ids == self.image_token_id  # [B, T]
        n_slots = int(slots.sum())
        if pixels is None:
            if n_slots:
                raise ValueError(f"{n_slots} <image> tokens but no pixels were given")
            return x + self._untouched_vision(x) if torch.is_grad_enabled() else x
        feats = self.projector(self.vision(pixels))  # [N, P, D]
        if n_slots != feats.shape[0] * feats.shape[1]:
            raise ValueError(
                f"{n_slots} <image> tokens for {feats.shape[0]} images of {feats.shape[1]} tokens"
            )
        return x.masked_scatter(slots[..., None], feats.to(x.dtype).reshape(-1, x.shape[-1]))

    def _untouched_vision(self, x: torch.Tensor) -> torch.Tensor:
        """A zero that depends on every vision and projector parameter, for a batch without images.

        Sharded engines reduce (FSDP2, ZeRO-2) or gather (ZeRO-3) the same parameters on every rank in
        the same order; a rank whose micro-batch has no image would skip the tower and desynchronise
        them (a gloo abort, a NCCL hang). One blank image through the tower, times zero, keeps every
        rank's collectives identical and adds exactly nothing to the embeddings or the gradients.
        """
        size = self.cfg.image_size
        blank = x.new_zeros(1, 3, size, size, dtype=torch.float32)  # [1, 3, H, W], pixels' dtype
        return self.projector(self.vision(blank)).sum().to(x.dtype) * 0

    def loss_sums(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(sum of the next-token losses, number of supervised tokens)."""
        return F.cross_entropy(logits, targets, reduction="sum"), targets.new_tensor(targets.numel())
