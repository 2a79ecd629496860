"""Variable-length attention over packed documents: flash-attn 2 on GPU, and its CPU twin.

Packed rows are flattened to one token stream cut into documents by `cu_seqlens` (a pad run counts as
one more document: its outputs are never used). `flash_attn_varlen_func` then attends within each
document without building a T x T mask. flash-attn is imported lazily and only on request; the twin
(`backend="torch"`) runs the same cuts with SDPA one document at a time, so tests on CPU check the
plumbing the GPU path uses (`tests/test_packing.py`).
"""

from __future__ import annotations

import importlib.util
import itertools
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def flash_available() -> bool:
    return torch.cuda.is_available() and importlib.util.find_spec("flash_attn") is not None


@dataclass(frozen=True)
class Varlen:
    cu_seqlens: torch.Tensor  # [n_docs + 1] int32 offsets into the flattened B*T tokens
    max_len: int
    backend: str  # "flash" | "torch"

    @classmethod
    def from_segments(cls, segments: torch.Tensor, backend: str) -> Varlen:
        """Cuts of the flattened rows: where a row starts or the segment id changes."""
        b, t = segments.shape
        flat = segments.reshape(-1)
        starts = torch.zeros_like(flat, dtype=torch.bool)
        starts[::t] = True  # every row starts a document
        starts[1:] |= flat[1:] != flat[:-1]
        cuts = torch.cat([starts.nonzero().flatten(), torch.tensor([b * t], device=flat.device)])
        return cls(cuts.to(torch.int32), int((cuts[1:] - cuts[:-1]).max()), backend)


def varlen_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cuts: Varlen) -> torch.Tensor:
    """Causal attention within documents. q: [N, H, Dh], k, v: [N, Hkv, Dh] -> [N, H, Dh]."""
    if cuts.backend == "flash":
        from flash_attn import flash_attn_varlen_func

        c = cuts.cu_seqlens
        return flash_attn_varlen_func(q, k, v, c, c, cuts.max_len, cuts.max_len, causal=True)
    out = torch.empty_like(q)
    bounds = cuts.cu_seqlens.tolist()
    for s, e in itertools.pairwise(bounds):
        qd, kd, vd = (x[s:e].transpose(0, 1)[None] for x in (q, k, v))  # [1, H, len, Dh]
        out[s:e] = F.scaled_dot_product_attention(qd, kd, vd, is_causal=True, enable_gqa=True)[0].transpose(
            0, 1
        )
    return out
