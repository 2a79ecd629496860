"""The world vision foundation: a SigLIP trained with its sigmoid contrastive loss on rendered world
scenes and their dense captions, as SigLIP was on web image-text pairs (Zhai et al. 2023).

Its vision tower has the run model's ViT shape, so `model.init_vision` loads it through the code that
loads a real SigLIP; its text tower only serves training. Images are the VLM's own pixels (bicubic to
`model.image_size`, scaled to [-1, 1]: SigLIP's normalisation), captions the world tokenizer's ids,
`<bos> caption <eos>` padded to a fixed length (SigLIP pools its text at the last position). Scenes come
from a split of their own and never from held-out compositions; it is scored as the world CLIP is
(zero-shot classification and retrieval on held-out compositions).
"""

from __future__ import annotations

import math
from typing import Any

import torch

from mmkd.foundations.config import FoundationConfig
from mmkd.foundations.fit import fit
from mmkd.loader import image_tensor
from mmkd.model.config import ModelConfig
from mmkd.tokenizer import Tokenizer
from mmkd.world.language import dense_caption
from mmkd.world.render import render
from mmkd.world.scene import WorldConfig, sample_scene, scene_rng
from mmkd.world_clip import evaluate_contrastive

SPLIT = "foundation-vision"
TEXT_TOKENS = 64  # SigLIP's text length


def build_siglip(model: ModelConfig, f: FoundationConfig, tokenizer: Tokenizer) -> Any:
    from transformers import SiglipConfig, SiglipModel

    vision = {
        "hidden_size": model.vision_width,
        "intermediate_size": model.vision_mlp,
        "num_hidden_layers": model.vision_layers,
        "num_attention_heads": model.vision_heads,
        "image_size": model.image_size,
        "patch_size": model.patch_size,
        "layer_norm_eps": model.vision_norm_eps,
    }
    text = {
        "vocab_size": tokenizer.vocab_size,
        "hidden_size": model.vision_width,
        "intermediate_size": model.vision_mlp,
        "num_hidden_layers": f.vision_text_layers,
        "num_attention_heads": model.vision_heads,
        "max_position_embeddings": TEXT_TOKENS,
        "pad_token_id": tokenizer.pad_id,
        "bos_token_id": tokenizer.bos_id,
        "eos_token_id": tokenizer.eos_id,
    }
    return SiglipModel(SiglipConfig(text_config=text, vision_config=vision))


def _texts(tokenizer: Tokenizer, texts: list[str], device: torch.device) -> torch.Tensor:
    """[B, TEXT_TOKENS] ids: `<bos> text <eos>`, cut to fit, right-padded."""
    ids = torch.full((len(texts), TEXT_TOKENS), tokenizer.pad_id, dtype=torch.long, device=device)
    for i, t in enumerate(texts):
        row = [tokenizer.bos_id, *tokenizer.encode(t)[: TEXT_TOKENS - 2], tokenizer.eos_id]
        ids[i, : len(row)] = torch.tensor(row, device=device)
    return ids


def _pixels(images: list, size: int, device: torch.device) -> torch.Tensor:
    return torch.stack([image_tensor(im, size) for im in images]).to(device)  # [B, 3, H, W] in [-1, 1]


def _batch(world: WorldConfig, first: int, n: int) -> tuple[list[str], list]:
    scenes = [sample_scene(world, SPLIT, i) for i in range(first, first + n)]
    captions = [
        dense_caption(s, scene_rng(world, f"{SPLIT}-caption", first + k)) for k, s in enumerate(scenes)
    ]
    return captions, [render(s, world.image_size) for s in scenes]


def train_vision(
    model: ModelConfig,
    f: FoundationConfig,
    world: WorldConfig,
    tokenizer: Tokenizer,
    device: torch.device,
) -> tuple[Any, dict[str, Any]]:
    """The trained SigLIP (eval mode) and its scores: training loss, zero-shot and retrieval."""
    torch.manual_seed(f.seed)
    siglip = build_siglip(model, f, tokenizer).to(device)
    # SigLIP starts its logit bias at the log prior of a positive pair (Zhai et al. 2023, Sec. 3.3):
    # -10 for their 32k batches; for ours that is -log(batch). At -10, Adam's ~lr-sized steps need
    # thousands of steps to reach the prior, and 600 steps of 64 left the tower at chance.
    with torch.no_grad():
        siglip.logit_bias.fill_(-math.log(f.vision_batch))

    def loss_at(step: int) -> torch.Tensor:
        captions, images = _batch(world, step * f.vision_batch, f.vision_batch)
        texts, pixels = _texts(tokenizer, captions, device), _pixels(images, model.image_size, device)
        return siglip(input_ids=texts, pixel_values=pixels, return_loss=True).loss

    scores = fit(
        siglip, f.vision_steps, f.vision_lr, f.warmup_fraction, loss_at, "world vision foundation (SigLIP)"
    )

    @torch.no_grad()
    def embed(texts: list[str], images: list) -> tuple[torch.Tensor, torch.Tensor]:
        out = siglip(
            input_ids=_texts(tokenizer, texts, device), pixel_values=_pixels(images, model.image_size, device)
        )
        return out.text_embeds, out.image_embeds

    scores |= evaluate_contrastive(embed, world, f.eval_items)
    return siglip, scores
