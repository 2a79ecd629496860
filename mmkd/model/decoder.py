"""Decoder-only LM: RMSNorm, RoPE, SwiGLU and grouped-query attention (seed 000 Sec. 3.2).

Module and parameter names follow Hugging Face's Llama (`layers.N.self_attn.q_proj`, ...) and RoPE
uses its rotate-half convention, so export is a rename, not a weight permutation (docs/design.md).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mmkd.model.config import ModelConfig
from mmkd.model.kv_cache import KVCache
from mmkd.model.rope import rope_tables
from mmkd.model.varlen import Varlen, flash_available, varlen_attention


def resolve_attention(choice: str, device: torch.device) -> str:
    """`model.attention` for tensors on `device`: sdpa (masks), varlen (the CPU twin of flash), flash,
    or auto (flash for CUDA tensors when flash-attn is installed, else sdpa)."""
    if choice == "auto":
        return "flash" if device.type == "cuda" and flash_available() else "sdpa"
    if choice == "flash" and not (device.type == "cuda" and flash_available()):
        raise ValueError(
            f"model.attention=flash needs flash-attn and CUDA tensors (these are on {device}; "
            "pip install -e '.[gpu]'); use model.attention=auto to fall back to SDPA"
        )
    return choice


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x) * self.weight


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return (x * cos + rotated * sin).to(x.dtype)  # the tables stay fp32 under bf16 compute


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.heads, self.kv_heads = cfg.heads, cfg.kv_heads
        self.head_dim = cfg.width // cfg.heads
        self.q_proj = nn.Linear(cfg.width, cfg.heads * self.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.width, cfg.kv_heads * self.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.width, cfg.kv_heads * self.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.heads * self.head_dim, cfg.width, bias=False)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | Varlen | None,
        kv: Callable | None = None,
    ) -> torch.Tensor:
        """`kv`: the layer's cache update (`KVCache.layer`): keys and values then span the cached past."""
        b, t, _ = x.shape  # [B, T, D]
        q = self.q_proj(x).view(b, t, self.heads, self.head_dim).transpose(1, 2)  # [B, H, T, Dh]
        k = self.k_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)  # [B, Hkv, T, Dh]
        v = self.v_proj(x).view(b, t, self.kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if kv is not None:
            k, v = kv(k, v)  # [B, Hkv, past + T, Dh]
        if isinstance(mask, Varlen):  # packed documents, no T x T mask: [B*T, H, Dh]
            flat = [z.transpose(1, 2).reshape(b * t, z.shape[1], self.head_dim) for z in (q, k, v)]
            return self.o_proj(varlen_attention(*flat, mask).reshape(b, t, -1))
        if mask is None:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        else:
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, enable_gqa=True)
        return self.o_proj(y.transpose(1, 2).reshape(b, t, -1))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.width, cfg.ffn, bias=False)
        self.up_proj = nn.Linear(cfg.width, cfg.ffn, bias=False)
        self.down_proj = nn.Linear(cfg.ffn, cfg.width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))  # SwiGLU


class DecoderLayer(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.input_layernorm = RMSNorm(cfg.width, cfg.norm_eps)
        self.self_attn = Attention(cfg)
        self.post_attention_layernorm = RMSNorm(cfg.width, cfg.norm_eps)
        self.mlp = MLP(cfg)

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        mask: torch.Tensor | None,
        kv: Callable | None = None,
    ) -> torch.Tensor:
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, kv)
        return x + self.mlp(self.post_attention_layernorm(x))


class Decoder(nn.Module):
    """Runs on embeddings (so the VLM can place image features) and returns final hidden states."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.attention = cfg.attention  # resolved per call: the tensors' device decides (flash on CUDA)
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.width)
        self.layers = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.layers))
        self.norm = RMSNorm(cfg.width, cfg.norm_eps)
        self.rope = (cfg.width // cfg.heads, cfg.max_seq_len, cfg.rope_theta, cfg.rope_scaling)
        self.register_buffer("rope_cos", torch.empty(cfg.max_seq_len, self.rope[0]), persistent=False)
        self.register_buffer("rope_sin", torch.empty(cfg.max_seq_len, self.rope[0]), persistent=False)
        self.reset_buffers()

    def reset_buffers(self) -> None:
        """The RoPE tables (not saved in checkpoints: a model materialised from meta recomputes them)."""
        cos, sin = rope_tables(*self.rope)
        with torch.no_grad():
            self.rope_cos.copy_(cos)
            self.rope_sin.copy_(sin)

    def forward(
        self,
        x: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        segments: torch.Tensor | None = None,
        cache: KVCache | None = None,
    ) -> torch.Tensor:
        """x: [B, T, D]. attention_mask: [B, T] bool, False on (left) padding; None = all valid.

        segments: [B, T] int for packed sequences: 1, 2, ... numbers the documents of a row, 0 marks
        padding. Each document attends only within itself and its RoPE positions restart at 0.
        cache: generation's KV cache; x then holds the positions after the cached ones (the prompt at
        prefill, one token per step after), and `attention_mask` their validity.
        """
        t = x.shape[1]
        if segments is not None:
            idx = torch.arange(t, device=x.device).expand_as(segments)
            starts = torch.ones_like(segments, dtype=torch.bool)
            starts[:, 1:] = segments[:, 1:] != segments[:, :-1]
            pos = idx - torch.where(starts, idx, 0).cummax(-1).values  # position inside the document
            cos, sin = self.rope_cos[pos][:, None], self.rope_sin[pos][:, None]  # [B, 1, T, Dh]
        attention = resolve_attention(self.attention, x.device)
        if segments is not None and attention != "sdpa":
            mask = Varlen.from_segments(segments, "flash" if attention == "flash" else "torch")
        elif segments is not None:
            same = segments[:, :, None] == segments[:, None, :]  # [B, T, T]
            causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
            mask = (same & causal & (segments[:, None, :] > 0))[:, None]  # [B, 1, T, T]
            mask = mask | torch.eye(t, dtype=torch.bool, device=x.device)  # pad rows attend to themselves
        elif attention_mask is None and cache is None:
            cos, sin, mask = self.rope_cos[:t], self.rope_sin[:t], None  # [T, Dh]
        else:
            past = cache.length if cache is not None else 0
            valid = (
                attention_mask if attention_mask is not None else x.new_ones(x.shape[:2], dtype=torch.bool)
            )
            valid = cache.extend(valid) if cache is not None else valid  # [B, past + T]
            # Positions count valid tokens only, so a left-padded prompt sees the positions it trained with.
            pos = (valid.long().cumsum(-1) - 1).clamp(min=0)[:, past:]  # [B, T]
            cos, sin = self.rope_cos[pos][:, None], self.rope_sin[pos][:, None]  # [B, 1, T, Dh]
            query = torch.arange(past, past + t, device=x.device)[:, None]  # [T, 1]
            key = torch.arange(past + t, device=x.device)[None, :]  # [1, past + T]
            mask = (key <= query) & valid[:, None, None, :]  # [B, 1, T, past + T]
            mask = mask | (key == query)  # pad rows attend to themselves
        for i, layer in enumerate(self.layers):
            x = layer(x, cos, sin, mask, cache.layer(i) if cache is not None else None)
        if cache is not None:
            cache.advance(t)
        return self.norm(x)
