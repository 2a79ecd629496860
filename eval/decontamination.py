"""Decontamination: which eval items also occur in the recipe's training shards.

Two checks per item, run over every sample of every source the recipe trains on:
- image: the exact pixels (a hash of the decoded RGB image and its size), so a benchmark image that
  was also a training image is found whatever file format carried it;
- text: word 13-grams of the item's question and answer (normalised: lower case, no punctuation), the
  GPT-3 convention. Items shorter than 13 words are not text-checked: short templated questions
  ("Is there a kite in the image?") are shared by design between training and benchmarks, and only
  their images tell items apart.
The report (`contamination.json` beside `results.json`) gives, per suite and benchmark, the items
checked and the overlapping ones with examples; `launch/eval.py` and training (`eval.decontamination`)
write it before evaluating.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from mmkd.bench_item import BenchItem
from mmkd.metrics import normalize
from mmkd.schema import Sample
from mmkd.shards import open_dataset

NGRAM = 13
EXAMPLES = 5


def image_key(image: Image.Image) -> str:
    rgb = image.convert("RGB")
    return hashlib.sha1(f"{rgb.size}".encode() + rgb.tobytes()).hexdigest()


def ngrams(text: str, n: int = NGRAM) -> set[tuple[str, ...]]:
    words = normalize(text).split()
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def _sample_text(sample: Sample) -> str:
    return " ".join([sample.text, *(f"{t.question} {t.answer}" for t in sample.turns)])


def check(sources: dict[str, Path], benchmarks: dict[tuple[str, str], list[BenchItem]]) -> dict[str, Any]:
    """Overlaps between the training `sources` and the eval items of each (suite, benchmark)."""
    by_image: dict[str, list[tuple[tuple[str, str], str]]] = defaultdict(list)
    by_gram: dict[tuple[str, ...], list[tuple[tuple[str, str], str]]] = defaultdict(list)
    text_checked: dict[tuple[str, str], int] = defaultdict(int)
    for key, items in benchmarks.items():
        for it in items:
            for im in it.images():
                by_image[image_key(im)].append((key, it.id))
            grams = ngrams(f"{it.question} {it.answer}")
            text_checked[key] += bool(grams)
            for g in grams:
                by_gram[g].append((key, it.id))
    hits: dict[str, dict[tuple[str, str], dict[str, str]]] = {
        "image": defaultdict(dict),
        "text": defaultdict(dict),
    }
    scanned = {}
    for name, root in sorted(sources.items()):
        scanned[name] = 0
        for sample in tqdm(open_dataset(root), desc=f"decontamination: {name}", unit="sample", leave=False):
            scanned[name] += 1
            for im in sample.images:
                for key, item in by_image.get(image_key(im), []):
                    hits["image"][key].setdefault(item, sample.id)
            if by_gram:
                for g in ngrams(_sample_text(sample)) & by_gram.keys():
                    for key, item in by_gram[g]:
                        hits["text"][key].setdefault(item, sample.id)
    report: dict[str, Any] = {"ngram": NGRAM, "scanned": scanned, "benchmarks": {}}
    for key, items in sorted(benchmarks.items()):
        entry: dict[str, Any] = {"items": len(items), "text_checked": text_checked[key]}
        for kind in ("image", "text"):
            found = hits[kind].get(key, {})
            entry[f"{kind}_overlap"] = len(found)
            entry[f"{kind}_examples"] = [
                {"item": i, "sample": s} for i, s in sorted(found.items())[:EXAMPLES]
            ]
        report["benchmarks"][f"{key[0]}/{key[1]}"] = entry
    return report


def markdown(report: dict[str, Any]) -> str:
    lines = [
        "### Decontamination: eval items also in the training shards",
        "",
        f"Scanned: {', '.join(f'{k} ({v} samples)' for k, v in report['scanned'].items())}.",
        "",
        "| suite/benchmark | items | same image | text-checked | shared 13-gram |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, e in report["benchmarks"].items():
        lines.append(
            f"| {name} | {e['items']} | {e['image_overlap']} | {e['text_checked']} | {e['text_overlap']} |"
        )
    return "\n".join(lines) + "\n"
