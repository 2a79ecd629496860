"""A model family's structure from its config, on the meta device (no memory, no weights)."""

from __future__ import annotations

import torch

from mmkd.model.config import ModelConfig
from mmkd.model.discrete import DiscreteVLM
from mmkd.model.lora import apply_lora
from mmkd.model.vlm import VLM


def model_on_meta(cfg: ModelConfig, image_token_id: int) -> VLM | DiscreteVLM:
    """The dense or discrete model of `cfg` (whose `vocab_size` is set), with LoRA adapters and
    frozen base weights under `model.tune=lora`; `mmkd.materialize` gives it weights."""
    with torch.device("meta"):
        if cfg.family == "dense":
            return VLM(cfg, image_token_id)
        model = DiscreteVLM(cfg, image_token_id)
        if cfg.tune == "lora":
            apply_lora(model, cfg.lora_rank, cfg.lora_alpha)
        return model
