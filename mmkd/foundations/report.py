"""The foundations' scores as a markdown table, from their foundation.json records (what
launch/foundations.py prints, and docs/foundations.md holds for the committed records)."""

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
)


def _value(key: str, value: float) -> str:
    return f"{value:.3f}" if key.endswith("loss") else f"{100 * value:.1f}"


def table(records: dict[str, dict[str, Any]]) -> str:
    """Markdown: one row per score of each part in `records` ({part: foundation.json}), its chance, and
    each part's steps and build time."""
    lines = ["| part | score | value | chance |", "| --- | --- | ---: | ---: |"]
    for part, key, name, chance in ROWS:
        if part in records:
            scores = records[part]["scores"]
            floor = _value(key, scores[chance]) if chance else "—"
            lines.append(f"| {part} | {name} | {_value(key, scores[key])} | {floor} |")
    for part in ("vision", "text"):
        if part not in records:
            continue
        record = records[part]
        steps = record["inputs"]["foundations"][f"{part}_steps"]
        lines.append(f"| {part} | build: {steps} steps, seconds | {record['seconds']:.0f} | — |")
    return "\n".join(lines)


def runs_table(runs: dict[str, dict[str, Any]]) -> str:
    """Markdown: each world benchmark's score ± its 95% CI in each run ({label: eval/results.json}),
    with the first run's chance and blind scores; % for accuracy and exact match, CIDEr-D as is."""
    first = next(iter(runs.values()))["suites"]["world"]
    lines = [
        "| benchmark | " + " | ".join(runs) + " | chance | blind |",
        "| --- |" + " ---: |" * (len(runs) + 2),
    ]

    def cell(r: dict[str, Any], key: str) -> str:
        value = r.get(key)
        if value is None:
            return "—"
        return f"{value:.3f}" if r["metric"] == "cider" else f"{100 * value:.1f}"

    for bench in sorted(first):
        row = []
        for result in runs.values():
            r = result["suites"]["world"][bench]
            ci = f"{r['ci95']:.3f}" if r["metric"] == "cider" else f"{100 * r['ci95']:.1f}"
            row.append(f"{cell(r, 'score')} ± {ci}")
        lines.append(
            f"| {bench} | "
            + " | ".join(row)
            + f" | {cell(first[bench], 'chance')} | {cell(first[bench], 'blind')} |"
        )
    if all(r.get("probes") for r in runs.values()):
        recall = [r["probes"]["fact_recall"] for r in runs.values()]
        cells = " | ".join(f"{100 * r['fact_recall']:.1f}" for r in recall)
        lines.append(
            f"| fact recall (cloze probe) | {cells} | {100 * recall[0]['fact_recall_chance']:.1f} | — |"
        )
    return "\n".join(lines)
