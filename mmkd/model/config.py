"""Model configuration. The named sizes live in `recipes/model/<name>.yaml` (micro, tiny, dense_3b).

The dataclass defaults are the `tiny` size; `micro` runs tests in seconds and `dense_3b` is seed 000's
3B model (Sec. 3.2).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class ModelConfig:
    name: str = "tiny"
    # Vision encoder (ViT, SigLIP-like: pre-norm, GELU MLP, learned positions, no CLS token).
    image_size: int = 48
    patch_size: int = 16
    vision_width: int = 128
    vision_layers: int = 2
    vision_heads: int = 4
    vision_mlp: int = 512
    # SigLIP's post-layernorm on the ViT output. false feeds the projector the last layer's hidden
    # state, as LLaVA does: needed to export the whole model as LlavaForConditionalGeneration.
    vision_post_norm: bool = True
    # Decoder-only language model (Llama-like: RMSNorm, RoPE, SwiGLU, grouped-query attention).
    width: int = 128
    layers: int = 3
    heads: int = 4
    kv_heads: int = 2
    ffn: int = 384
    max_seq_len: int = 192
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    vocab_size: int = 0  # 0: take it from the tokenizer
    tie_embeddings: bool = True
    # Attention over packed documents: sdpa (a mask), varlen (per document; flash's CPU twin),
    # flash (flash-attn 2 varlen, GPU), auto (flash when installed on a GPU, else sdpa).
    attention: str = "auto"
    # Local Hugging Face checkpoints (safetensors) to start from; "" = random init (mmkd/model/hf.py).
    init_vision: str = ""  # a SigLIP vision tower
    init_decoder: str = ""  # a Llama-family decoder with matching shapes

    @property
    def image_tokens(self) -> int:
        return (self.image_size // self.patch_size) ** 2

    def validate(self) -> ModelConfig:
        def need(cond: bool, key: str, why: str) -> None:
            if not cond:
                raise ValueError(f"model.{key}={getattr(self, key)}: {why}")

        need(
            self.image_size % self.patch_size == 0,
            "image_size",
            f"must be a multiple of patch_size={self.patch_size}",
        )
        need(self.width % self.heads == 0, "heads", f"must divide width={self.width}")
        need(
            self.heads % self.kv_heads == 0,
            "kv_heads",
            f"must divide heads={self.heads} (grouped-query attention)",
        )
        need((self.width // self.heads) % 2 == 0, "heads", "head dim must be even for RoPE")
        need(
            self.vision_width % self.vision_heads == 0,
            "vision_heads",
            f"must divide vision_width={self.vision_width}",
        )
        need(
            self.max_seq_len > self.image_tokens,
            "max_seq_len",
            f"must exceed image tokens ({self.image_tokens})",
        )
        need(
            self.attention in ("auto", "sdpa", "varlen", "flash"),
            "attention",
            "must be auto|sdpa|varlen|flash",
        )
        for key in ("vision_layers", "layers", "ffn", "vision_mlp"):
            need(getattr(self, key) > 0, key, "must be positive")
        return self
