"""Two-layer MLP from vision features to decoder embeddings (LLaVA-1.5 style)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Projector(nn.Module):
    def __init__(self, vision_width: int, width: int):
        super().__init__()
        self.linear_1 = nn.Linear(vision_width, width)
        self.linear_2 = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.gelu(self.linear_1(x)))  # [N, P, Dv] -> [N, P, D]
