"""Analytic parameter and training-FLOP counts, for MFU and for planning runs of the named sizes.

Convention (PaLM, Chowdhery et al. 2022, app. B, with causal attention at half): one training token
of a decoder costs 6N + 6·L·H·d·T FLOPs (forward + backward), where N counts the matmul parameters
(every Linear, including the LM head; not the input embedding, a lookup), L layers, H query heads of
dimension d, and T the length of the sequence the token attends within. PaLM charges 12·L·H·d·T, the
cost of full attention; a causal token attends to T/2 keys on average and the kernels (flash-attn,
SDPA's causal path) skip the masked half, so charging it would overstate MFU. Packed documents are
counted by their own lengths: a token of a 300-token document pays for 300, not for the 4096 of the
pack. The vision tower is counted per patch with bidirectional (full) attention over the image's P
patches, and the projector per image token; both are reported apart from the decoder.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from mmkd.model.config import ModelConfig


@dataclass(frozen=True)
class ParamCounts:
    vision: int
    projector: int
    decoder: int  # embedding + layers + final norm
    lm_head: int  # 0 when tied to the embedding

    @property
    def total(self) -> int:
        return self.vision + self.projector + self.decoder + self.lm_head


def param_counts(cfg: ModelConfig, vocab_size: int) -> ParamCounts:
    """Every parameter of `VLM(cfg)`, by component (a test checks it against the module on 'meta')."""
    d, f, hd = cfg.width, cfg.ffn, cfg.width // cfg.heads
    attn = d * cfg.heads * hd * 2 + d * cfg.kv_heads * hd * 2  # q, o + k, v (no biases)
    layer = attn + 3 * d * f + 2 * d  # + SwiGLU + two RMSNorms
    decoder = vocab_size * d + cfg.layers * layer + d
    v, m = cfg.vision_width, cfg.vision_mlp
    block = (3 * v * v + 3 * v) + (v * v + v) + (v * m + m) + (m * v + v) + 4 * v  # qkv, out, fc1, fc2, LNs
    post_norm = 2 * v if cfg.vision_post_norm else 0
    vision = 3 * cfg.patch_size**2 * v + v + cfg.image_tokens * v + cfg.vision_layers * block + post_norm
    projector = v * d + d + d * d + d
    return ParamCounts(vision, projector, decoder, 0 if cfg.tie_embeddings else vocab_size * d)


def decoder_matmul_params(cfg: ModelConfig, vocab_size: int) -> int:
    """N of the 6N term: the decoder's Linear weights and the LM head (tied or not, it is a matmul)."""
    d, hd = cfg.width, cfg.width // cfg.heads
    attn = d * cfg.heads * hd * 2 + d * cfg.kv_heads * hd * 2
    return cfg.layers * (attn + 3 * d * cfg.ffn) + vocab_size * d


def decoder_flops_per_token(cfg: ModelConfig, vocab_size: int, context: int) -> float:
    """Training FLOPs of one decoder token in a causal `context` (it attends to half of it on average)."""
    attention = 6 * cfg.layers * cfg.heads * (cfg.width // cfg.heads) * context
    return 6 * decoder_matmul_params(cfg, vocab_size) + attention


def vision_flops_per_image(cfg: ModelConfig) -> float:
    """Training FLOPs of the ViT on one image: 6 N_vision per patch + bidirectional attention."""
    v, m, p = cfg.vision_width, cfg.vision_mlp, cfg.image_tokens
    matmul = cfg.vision_layers * (4 * v * v + 2 * v * m) + 3 * cfg.patch_size**2 * v
    attention = 12 * cfg.vision_layers * cfg.vision_width * p
    return p * (6 * matmul + attention)


def projector_flops_per_image(cfg: ModelConfig) -> float:
    return cfg.image_tokens * 6 * (cfg.vision_width * cfg.width + cfg.width * cfg.width)


def training_flops(
    cfg: ModelConfig, vocab_size: int, document_lengths: Iterable[int], num_images: int
) -> dict[str, float]:
    """FLOPs of one training step over documents of these lengths (packed or not) with these images."""
    decoder = sum(t * decoder_flops_per_token(cfg, vocab_size, t) for t in document_lengths)
    vision = num_images * vision_flops_per_image(cfg)
    projector = num_images * projector_flops_per_image(cfg)
    return {
        "decoder": decoder,
        "vision": vision,
        "projector": projector,
        "total": decoder + vision + projector,
    }
