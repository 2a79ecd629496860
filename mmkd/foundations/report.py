"""The foundations' scores as a markdown table, from their foundation.json records: what
launch/foundations.py prints, and docs/foundations.md holds for the committed records (generated there
by mmkd.eval.doc_tables).
"""

from __future__ import annotations

from typing import Any

# (part, score key, what it is, its chance key or None)
ROWS = (
    ("vision", "zero_shot_accuracy", "zero-shot classification, 6 kinds (%)", "zero_shot_chance"),
    ("vision", "image_to_text_r1", "image -> text R@1 (%)", "retrieval_chance_r1"),
    ("vision", "image_to_text_r5", "image -> text R@5 (%)", None),
    ("vision", "text_to_image_r1", "text -> image R@1 (%)", "retrieval_chance_r1"),
    ("vision", "text_to_image_r5", "text -> image R@5 (%)", None),
    ("text", "fact_recall", "fact recall, 24 facts (%)", "fact_recall_chance"),
    ("text", "held_out_loss", "held-out loss per token (nats)", None),
    ("visual_tokenizer", "reconstruction_mse", "reconstruction MSE ([-1, 1] pixels)", None),
    ("visual_tokenizer", "codebook_usage", "codebook usage (%)", None),
    ("visual_tokenizer", "scene_kept", "objects the reader finds in reconstructions (%)", None),
)


def _value(key: str, value: float) -> str:
    return f"{value:.3f}" if key.endswith(("loss", "mse")) else f"{100 * value:.1f}"


def table(records: dict[str, dict[str, Any]]) -> str:
    """Markdown: one row per score of each part in `records` ({part: foundation.json}), its chance, and
    each part's steps and build time."""
    lines = ["| part | score | value | chance |", "| --- | --- | ---: | ---: |"]
    for part, key, name, chance in ROWS:
        if part in records:
            scores = records[part]["scores"]
            floor = _value(key, scores[chance]) if chance else "—"
            lines.append(f"| {part} | {name} | {_value(key, scores[key])} | {floor} |")
    for part in ("vision", "text", "visual_tokenizer"):
        if part not in records:
            continue
        record = records[part]
        steps = record["inputs"]["foundations"][f"{part}_steps"]
        lines.append(f"| {part} | build: {steps} steps, seconds | {record['seconds']:.0f} | — |")
    return "\n".join(lines)
