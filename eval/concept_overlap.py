"""Concept overlap (seed 003 C.1, after K-LITE): the share of a captioning benchmark's concepts that
the training data mentions. Concepts are the noun phrases of the benchmark's reference captions and
of every training text (captions, turns, document text), read by the extractor `build.noun_phrases`
names (the world's grammar, or a spaCy pipeline: data_builders/noun_phrases.py). Reported per source
and for the recipe's sources together, beside the eval results (`concepts.json`, report.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tqdm import tqdm

from mmkd.bench_item import BenchItem
from mmkd.data_builders.noun_phrases import Extractor
from mmkd.shards import open_dataset

BATCH = 512


def _concepts(texts: list[str], extract: Extractor) -> set[str]:
    return {p for phrases in extract(texts) for p in phrases}


def source_concepts(root: Path, extract: Extractor, name: str) -> set[str]:
    """Every noun phrase a training dataset's texts mention (images are not decoded)."""
    found: set[str] = set()
    batch: list[str] = []
    for sample in tqdm(open_dataset(root).iter(images=False), desc=f"concepts: {name}", leave=False):
        batch += [sample.text, *(f"{t.question} {t.answer}" for t in sample.turns)]
        if len(batch) >= BATCH:
            found |= _concepts(batch, extract)
            batch = []
    return found | _concepts(batch, extract)


def overlap(
    sources: dict[str, Path], benchmarks: dict[str, list[BenchItem]], extract: Extractor
) -> dict[str, Any]:
    """{benchmark: {concepts, by_source: {name: share}, all: share}} for benchmarks with references."""
    wanted = {
        name: _concepts([r for it in items for r in (it.references or [it.answer])], extract)
        for name, items in benchmarks.items()
    }
    wanted = {name: c for name, c in wanted.items() if c}
    if not wanted:
        return {}
    seen = {name: source_concepts(root, extract, name) for name, root in sorted(sources.items())}
    union = set().union(*seen.values())
    return {
        name: {
            "concepts": len(concepts),
            "by_source": {s: round(len(concepts & c) / len(concepts), 4) for s, c in seen.items()},
            "all": round(len(concepts & union) / len(concepts), 4),
        }
        for name, concepts in sorted(wanted.items())
    }


def markdown(report: dict[str, Any]) -> str:
    if not report:
        return ""
    sources = sorted({s for e in report.values() for s in e["by_source"]})
    lines = [
        "### Concept overlap: the benchmark's concepts the training data mentions (seed 003 C.1)",
        "",
        f"| benchmark | concepts | {' | '.join(sources)} | all |",
        "| --- | ---: |" + " ---: |" * (len(sources) + 1),
    ]
    for name, e in report.items():
        shares = " | ".join(f"{100 * e['by_source'][s]:.1f}" for s in sources)
        lines.append(f"| {name} | {e['concepts']} | {shares} | {100 * e['all']:.1f} |")
    return "\n".join(lines) + "\n"
