"""Learning-rate schedules and optimiser parameter groups (seed 000 Sec. 3.2; seed 003 Table 10).

  cosine  linear warmup, then cosine decay to `min_lr_ratio * lr` at the last step (MMGIC)
  wsd     warmup-stable-decay: linear warmup, constant peak, then a fast decay over the last
          `decay_frac` of the steps, shaped linear, cosine, 1-sqrt or exp (the "fast-decay" schedule
          of seed 000: a run can be stopped early and decayed without restarting)
Per-module learning rates multiply the schedule for parameters whose name starts with a prefix
(`train.lr_multipliers: {vision: 0.1}`); `train.freeze` lists prefixes that do not train at all.
"""

from __future__ import annotations

import math

import torch

SCHEDULES = ("cosine", "wsd")
DECAY_SHAPES = ("linear", "cosine", "1-sqrt", "exp")


def _decay(progress: float, shape: str, min_ratio: float) -> float:
    """Fraction of the peak at `progress` in [0, 1] of the decay phase."""
    p = min(max(progress, 0.0), 1.0)
    if shape == "exp":
        return max(min_ratio, 1e-8) ** p  # geometric from 1 to min_ratio
    f = {"linear": 1 - p, "cosine": 0.5 * (1 + math.cos(math.pi * p)), "1-sqrt": 1 - math.sqrt(p)}[shape]
    return min_ratio + (1 - min_ratio) * f


def learning_rate(
    step: int,
    total: int,
    peak: float,
    warmup_frac: float,
    min_ratio: float,
    schedule: str = "cosine",
    decay_frac: float = 0.2,
    decay_shape: str = "1-sqrt",
) -> float:
    """The learning rate of (0-based) `step` of `total`."""
    warmup = max(1, round(total * warmup_frac))
    if step < warmup:
        return peak * (step + 1) / warmup
    if schedule == "cosine":
        return peak * _decay((step - warmup) / max(1, total - warmup), "cosine", min_ratio)
    decay = max(1, round(total * decay_frac))
    start = max(warmup, total - decay)
    if step < start:
        return peak
    return peak * _decay((step - start + 1) / max(1, total - start), decay_shape, min_ratio)


def param_groups(
    model: torch.nn.Module, lr_multipliers: dict[str, float], freeze: list[str], weight_decay: float
) -> list[dict]:
    """Optimiser groups: frozen prefixes and frozen parameters stay out; each multiplier gets its own group.

    Norms, biases and embeddings are not weight-decayed (the usual AdamW practice).
    """
    groups: dict[tuple[float, bool], list[torch.nn.Parameter]] = {}
    for name, p in model.named_parameters():
        if any(name.startswith(f) for f in freeze):
            p.requires_grad_(False)
        if not p.requires_grad:  # frozen here, or by the model (LoRA's base weights)
            continue
        scale = next((m for prefix, m in lr_multipliers.items() if name.startswith(prefix)), 1.0)
        decay = p.ndim >= 2 and "embed" not in name
        groups.setdefault((scale, decay), []).append(p)
    return [
        {"params": ps, "lr_scale": scale, "weight_decay": weight_decay if decay else 0.0}
        for (scale, decay), ps in sorted(groups.items(), key=lambda kv: kv[0])
    ]
