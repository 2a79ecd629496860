"""The dense VLM: ViT encoder -> MLP projector -> decoder-only LM. One component per file."""

from mmkd.model.config import ModelConfig
from mmkd.model.vlm import VLM

__all__ = ["VLM", "ModelConfig"]
