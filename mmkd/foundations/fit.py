"""The training loop both world foundations share: AdamW (weight decay 0.1 on matrices only), linear
warmup then cosine to zero, gradients clipped at norm 1, a progress bar with the running loss."""

from __future__ import annotations

from collections.abc import Callable

import torch
from tqdm import tqdm

from mmkd.schedules import learning_rate


def fit(
    model: torch.nn.Module,
    steps: int,
    peak_lr: float,
    warmup_fraction: float,
    loss_at: Callable[[int], torch.Tensor],
    desc: str,
) -> dict[str, float]:
    """Train `model` for `steps` on `loss_at(step)`; leave it in eval mode. Returns the mean loss of
    the first and the last tenth of the steps."""
    model.train()
    decay = [p for p in model.parameters() if p.ndim >= 2]
    rest = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}])
    losses: list[float] = []
    bar = tqdm(range(steps), desc=desc, unit="step")
    for step in bar:
        for group in opt.param_groups:
            group["lr"] = learning_rate(step, steps, peak_lr, warmup_fraction, 0.0)
        loss = loss_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{sum(losses[-10:]) / len(losses[-10:]):.3f}")
    model.eval()
    window = max(1, steps // 10)
    return {"loss_first": sum(losses[:window]) / window, "loss_last": sum(losses[-window:]) / window}
