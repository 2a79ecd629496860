"""What the training loss is made of: its parts, their weights and which targets each part counts.

The dense model has one part (every supervised token). The discrete model has two (seed 003 E.1):
`L = visual_loss_scale * L_visual + L_text`, where L_visual is the mean loss over visual-code targets
and L_text over every other target. Each mean is over the *global* batch (all micro-batches and
ranks), as the dense loss is, so the split of a batch changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from mmkd.model.config import ModelConfig
from mmkd.templates import IGNORE


@dataclass(frozen=True)
class Objective:
    parts: tuple[str, ...] = ("text",)
    weights: tuple[float, ...] = (1.0,)
    first_code: int | None = None  # targets with ids >= this are visual codes (the discrete model)

    def counts(self, labels: torch.Tensor) -> torch.Tensor:
        """Supervised next-token targets of each part in a batch's labels: [parts]."""
        target = labels[:, 1:]
        keep = target != IGNORE
        if self.first_code is None:
            return keep.sum()[None]
        visual = keep & (target >= self.first_code)
        return torch.stack([(keep & ~visual).sum(), visual.sum()])


DENSE = Objective()


def objective_for(cfg: ModelConfig) -> Objective:
    """The objective of a model config whose `vocab_size` is set (from the tokenizer)."""
    if cfg.family != "discrete":
        return DENSE
    from mmkd.model.discrete import LOSS_PARTS, VisualVocab

    first_code = VisualVocab(cfg.vocab_size, cfg.codebook_size).first_code
    return Objective(LOSS_PARTS, (1.0, cfg.visual_loss_scale), first_code)
