"""ViT image encoder (SigLIP-like: patch conv, learned positions, pre-norm blocks, no CLS token)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmkd.model.config import ModelConfig


class VisionAttention(nn.Module):
    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.out_proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, p, d = x.shape  # [N, P, D]
        q, k, v = (
            self.qkv(x).view(n, p, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        )  # [N, H, P, Dh]
        y = F.scaled_dot_product_attention(q, k, v)  # bidirectional over patches
        return self.out_proj(y.transpose(1, 2).reshape(n, p, d))


class VisionBlock(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(cfg.vision_width, cfg.vision_norm_eps)
        self.self_attn = VisionAttention(cfg.vision_width, cfg.vision_heads)
        self.layer_norm2 = nn.LayerNorm(cfg.vision_width, cfg.vision_norm_eps)
        self.fc1 = nn.Linear(cfg.vision_width, cfg.vision_mlp)
        self.fc2 = nn.Linear(cfg.vision_mlp, cfg.vision_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.fc2(F.gelu(self.fc1(self.layer_norm2(x)), approximate="tanh"))


class VisionEncoder(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.patch_embedding = nn.Conv2d(3, cfg.vision_width, cfg.patch_size, stride=cfg.patch_size)
        self.position_embedding = nn.Parameter(torch.empty(1, cfg.image_tokens, cfg.vision_width))
        self.reset_parameters()
        self.layers = nn.ModuleList(VisionBlock(cfg) for _ in range(cfg.vision_layers))
        self.post_layernorm = (
            nn.LayerNorm(cfg.vision_width, cfg.vision_norm_eps) if cfg.vision_post_norm else nn.Identity()
        )

    def reset_parameters(self) -> None:
        """The position embedding, drawn right after the patch convolution (materialisation replays it)."""
        with torch.no_grad():
            p = self.position_embedding
            p.copy_(torch.randn(p.shape, device=p.device) * 0.02)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        # Pixels arrive in fp32; the tower computes in its own dtype (bf16 when an engine casts it).
        pixels = pixels.to(self.patch_embedding.weight.dtype)
        x = self.patch_embedding(pixels).flatten(2).transpose(1, 2)  # [N, 3, H, W] -> [N, P, Dv]
        x = x + self.position_embedding
        for layer in self.layers:
            x = layer(x)
        return self.post_layernorm(x)  # [N, P, Dv]
