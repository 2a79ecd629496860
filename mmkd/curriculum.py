"""A run's steps and where its curriculum stages begin and end, from its config alone: the trainer
follows them, and a branching run compares them with its donor's (mmkd/resume.py)."""

from __future__ import annotations

from mmkd.config import RecipeConfig, RunConfig

# (name, first step, end step, weights) of each curriculum stage.
Stage = tuple[str, int, int, dict[str, float]]


def total_steps(cfg: RunConfig) -> int:
    """Optimiser steps of the run: its token budget in full packed rows, or its samples in batches."""
    t = cfg.train
    if t.packing:
        return t.budget_tokens // (t.global_batch * cfg.model.max_seq_len)
    return t.budget_samples // t.global_batch


def stage_bounds(recipe: RecipeConfig, total: int) -> list[Stage]:
    """(name, first step, end step, weights) of each curriculum stage; boundaries round to steps."""
    plan = recipe.plan()
    out, done, start = [], 0.0, 0
    for i, s in enumerate(plan):
        done += s.fraction
        end = total if i == len(plan) - 1 else round(done * total)
        out.append((s.name, start, end, s.mixture))
        start = end
    return [b for b in out if b[2] > b[1]]
