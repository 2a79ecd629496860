"""The foundations' scores as a markdown table, from their foundation.json records (what
launch/foundations.py prints, and docs/foundations.md holds for the committed records), and the
world runs' tables of docs/foundations.md and docs/protocol.md, from their results.json records.

A doc's generated section reads `<!-- generated from FOLDER by mmkd.foundations.report.FUNCTION: ... -->`
and ends at `<!-- end ... -->`; `python -m mmkd.foundations.report DOC...` rewrites each from its
folder (tests/test_foundations.py checks the committed docs are what it writes).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path
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


def _fmt(metric: str, value: float | None) -> str:
    """A world score as the tables print it: % for accuracy and exact match, CIDEr-D as is."""
    if value is None:
        return "—"
    return f"{value:.3f}" if metric == "cider" else f"{100 * value:.1f}"


def _floors(result: dict[str, Any]) -> str:
    return f"{_fmt(result['metric'], result.get('chance'))} | {_fmt(result['metric'], result.get('blind'))}"


def runs_table(runs: dict[str, dict[str, Any]]) -> str:
    """Markdown: each world benchmark's score ± its 95% CI over items in each run ({label:
    eval/results.json}), the fact-recall probe, and the first run's chance and blind scores."""
    first = next(iter(runs.values()))["suites"]["world"]
    lines = [
        "| benchmark | " + " | ".join(runs) + " | chance | blind |",
        "| --- |" + " ---: |" * (len(runs) + 2),
    ]
    for bench in sorted(first):
        cells = []
        for result in runs.values():
            r = result["suites"]["world"][bench]
            cells.append(f"{_fmt(r['metric'], r['score'])} ± {_fmt(r['metric'], r['ci95'])}")
        lines.append(f"| {bench} | " + " | ".join(cells) + f" | {_floors(first[bench])} |")
    return "\n".join(lines + _recall_row([[r] for r in runs.values()]))


# Two-sided 95% Student t quantiles by degrees of freedom (seeds - 1).
T95 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571}


def seeds_table(arms: dict[str, list[dict[str, Any]]]) -> str:
    """Markdown: each world benchmark's mean over seeds [95% t-interval over seeds] in each arm
    ({label: its seeds' eval/results.json}, two or more each), the probe's mean, chance and blind."""
    if min(len(runs) for runs in arms.values()) < 2:
        raise ValueError("an interval over seeds needs two seeds or more in every arm")
    first = next(iter(arms.values()))[0]["suites"]["world"]
    lines = [
        "| benchmark | "
        + " | ".join(f"{a} ({len(r)} seeds)" for a, r in arms.items())
        + " | chance | blind |",
        "| --- |" + " ---: |" * (len(arms) + 2),
    ]
    for bench in sorted(first):
        metric, cells = first[bench]["metric"], []
        for runs in arms.values():
            values = [r["suites"]["world"][bench]["score"] for r in runs]
            mean = sum(values) / len(values)
            sd = (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5
            half = T95[len(values) - 1] * sd / len(values) ** 0.5
            cells.append(f"{_fmt(metric, mean)} [{_fmt(metric, mean - half)}, {_fmt(metric, mean + half)}]")
        lines.append(f"| {bench} | " + " | ".join(cells) + f" | {_floors(first[bench])} |")
    return "\n".join(lines + _recall_row(list(arms.values())))


def _recall_row(arms: list[list[dict[str, Any]]]) -> list[str]:
    """The fact-recall probe's mean per arm, where every run has it."""
    if not all(r.get("probes") for runs in arms for r in runs):
        return []
    recall = [[r["probes"]["fact_recall"] for r in runs] for runs in arms]
    cells = " | ".join(f"{100 * sum(x['fact_recall'] for x in v) / len(v):.1f}" for v in recall)
    return [f"| fact recall (cloze probe) | {cells} | {100 * recall[0][0]['fact_recall_chance']:.1f} | — |"]


def _records(folder: Path) -> dict[str, dict[str, Any]]:
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def _arms(folder: Path) -> dict[str, list[dict[str, Any]]]:
    """{arm: its seeds' records} from files named <arm>_seed<k>.json."""
    arms: dict[str, list[dict[str, Any]]] = {}
    for name, record in _records(folder).items():
        arms.setdefault(name.rsplit("_seed", 1)[0], []).append(record)
    return arms


GENERATORS = {
    "table": lambda folder: table(_records(folder)),
    "runs_table": lambda folder: runs_table(_records(folder)),
    "seeds_table": lambda folder: seeds_table(_arms(folder)),
}
_SECTION = re.compile(
    r"(<!-- generated from (\S+) by mmkd\.foundations\.report\.(\w+)\b[^\n]*-->\n)(.*?)(<!-- end)", re.S
)


def regenerate(doc: str, repo: Path) -> str:
    """`doc` with every section generated by this module rewritten from its folder under `repo`."""
    return _SECTION.sub(lambda m: m[1] + GENERATORS[m[3]](repo / m[2]) + "\n" + m[5], doc)


if __name__ == "__main__":
    for path in map(Path, sys.argv[1:]):
        path.write_text(regenerate(path.read_text(), Path.cwd()))
