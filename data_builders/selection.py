"""Ranking and selection (seed 004 Sec. 3.2.5): a composite of per-sample quality scores, then the top
k% with a stated, deterministic tie-break.

The composite is a weighted mean of the named components (equal weights by default, as in the paper).
1-5 ratings tie heavily (the paper's Fig. 7: most of the pool scores 4, and 10% of it falls inside
the top bin), so the order among equal composites is fixed by a seeded hash of the sample id: the
same pool, seed and scores select the same samples whatever order they arrive in, and a different
seed draws a different, equally fair subset of the tied bin.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping

from mmkd.config import ConfigError


def composite(scores: Mapping[str, Mapping[str, float]], weights: Mapping[str, float]) -> dict[str, float]:
    """sample id -> the weighted mean of its components; every sample must have every weighted one."""
    if not weights or any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ConfigError(f"selection weights {dict(weights)}: need non-negative weights with a positive sum")
    total = sum(weights.values())
    out = {}
    for sid, parts in scores.items():
        missing = sorted(set(weights) - set(parts))
        if missing:
            raise ValueError(f"sample {sid!r} has no {missing} score (scores: {sorted(parts)})")
        out[sid] = sum(w * parts[name] for name, w in weights.items()) / total
    return out


def tie_break(sample_id: str, seed: int) -> str:
    return hashlib.sha256(f"{seed}/{sample_id}".encode()).hexdigest()


def select_top(scores: Mapping[str, float], fraction: float, seed: int) -> list[str]:
    """The ids of the best `fraction` of the pool (at least one), best first: by score, descending,
    then by `tie_break` among equal scores."""
    if not 0.0 < fraction <= 1.0:
        raise ConfigError(f"selection fraction={fraction}: must be in (0, 1]")
    k = max(1, math.floor(fraction * len(scores) + 0.5))
    ranked = sorted(scores, key=lambda sid: (-scores[sid], tie_break(sid, seed)))
    return ranked[:k]
