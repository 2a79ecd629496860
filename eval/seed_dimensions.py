"""The world benchmarks read as SEED-Bench's image dimensions (seed 003 Sec. 4.4 reports MMGIC's gains
per dimension). Each dimension the world has is a set of (benchmark, question type) items; the world
has no interactions between objects, so "Instance Interaction" is reported as absent, not as zero.
"""

from __future__ import annotations

from typing import Any

from mmkd.metrics import mean_ci95

# SEED-Bench dimension -> (world benchmark, qtypes or None for all of them)
DIMENSIONS: dict[str, tuple[str, frozenset[str] | None] | None] = {
    "Instance Identity": ("existence", None),
    "Instance Attribute": ("attribute", None),
    "Instance Location": ("spatial", frozenset({"where", "what_at"})),
    "Instance Counting": ("counting", None),
    "Spatial Relation": ("spatial", frozenset({"relation"})),
    "Instance Interaction": None,
}


def breakdown(records: list[dict[str, Any]]) -> dict[str, dict[str, float] | None]:
    """{dimension: {"n", "score", "ci95"}} from the world eval's per-item records (scores in [0, 1])."""
    out: dict[str, dict[str, float] | None] = {}
    for dimension, where in DIMENSIONS.items():
        if where is None:
            out[dimension] = None
            continue
        benchmark, qtypes = where
        scores = [
            float(r["score"])
            for r in records
            if r.get("suite") == "world"
            and r.get("benchmark") == benchmark
            and (qtypes is None or r.get("qtype") in qtypes)
        ]
        if not scores:
            continue
        mean, ci = mean_ci95(scores)
        out[dimension] = {"n": len(scores), "score": mean, "ci95": ci}
    return out


def markdown(dims: dict[str, dict[str, float] | None]) -> str:
    if not any(dims.values()):
        return ""
    lines = [
        "### SEED-Bench dimensions on the world",
        "",
        "| dimension | items | score |",
        "| --- | ---: | ---: |",
    ]
    for name, d in dims.items():
        if d is None:
            lines.append(f"| {name} | — | not in the world |")
        else:
            lines.append(f"| {name} | {d['n']} | {100 * d['score']:.1f} ± {100 * d['ci95']:.1f} |")
    return "\n".join(lines) + "\n"
