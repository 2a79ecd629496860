"""Scorers: exact match and ANLS for open answers, box IoU for grounding, CIDEr-D for captions, and a
confidence interval helper.

CIDEr-D follows Vedantam et al. (2015) as in the COCO caption toolkit: TF-IDF n-gram vectors (n=1..4)
with document frequencies over the evaluated set's references, clipped candidate counts, a Gaussian
length penalty (sigma=6), averaged over references and n, times 10.
"""

from __future__ import annotations

import math
import re
from collections import Counter

_PUNCT = re.compile(r"[^\w\s]")


def normalize(text: str) -> str:
    """Lower-case, drop punctuation and surrounding space, collapse internal whitespace."""
    return " ".join(_PUNCT.sub(" ", text.lower()).split())


def exact_match(prediction: str, answer: str) -> float:
    return float(normalize(prediction) == normalize(answer))


def anls(prediction: str, answers: list[str], threshold: float = 0.5) -> float:
    """Average Normalized Levenshtein Similarity (DocVQA, Biten et al. 2019): 1 - normalised edit
    distance to the closest answer, 0 when that distance is `threshold` or more."""
    pred = " ".join(prediction.lower().split())
    best = 0.0
    for answer in answers:
        ans = " ".join(answer.lower().split())
        distance = _levenshtein(pred, ans) / max(len(pred), len(ans), 1)
        best = max(best, 1 - distance if distance < threshold else 0.0)
    return best


def _levenshtein(a: str, b: str) -> int:
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def parse_box(text: str) -> tuple[float, float, float, float] | None:
    """The first four numbers of a text as (x1, y1, x2, y2), e.g. "[0.1, 0.2, 0.5, 0.6]"."""
    numbers = [float(x) for x in _NUMBER.findall(text)[:4]]
    return tuple(numbers) if len(numbers) == 4 else None  # type: ignore[return-value]


def box_iou(a: tuple[float, ...] | None, b: tuple[float, ...]) -> float:
    """Intersection over union of two (x1, y1, x2, y2) boxes; 0 for a missing prediction."""
    if a is None:
        return 0.0
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - w * h
    return w * h / union if union > 0 else 0.0


def _ngrams(words: list[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def cider_d(
    candidates: list[str], references: list[list[str]], max_n: int = 4, sigma: float = 6.0
) -> list[float]:
    """Per-item CIDEr-D scores (their mean is the corpus score)."""
    if len(candidates) != len(references):
        raise ValueError(f"{len(candidates)} candidates but {len(references)} reference sets")
    cands = [normalize(c).split() for c in candidates]
    refs = [[normalize(r).split() for r in rs] for rs in references]
    doc_freq: Counter = Counter()
    for rs in refs:
        doc_freq.update({g for r in rs for n in range(1, max_n + 1) for g in _ngrams(r, n)})
    log_items = math.log(float(len(refs))) if refs else 0.0

    def vectors(words: list[str]) -> list[tuple[dict, float]]:
        out = []
        for n in range(1, max_n + 1):
            vec = {
                g: tf * (log_items - math.log(max(1.0, doc_freq[g]))) for g, tf in _ngrams(words, n).items()
            }
            out.append((vec, math.sqrt(sum(v * v for v in vec.values()))))
        return out

    scores = []
    for cand, rs in zip(cands, refs):
        cv = vectors(cand)
        total = 0.0
        for ref in rs:
            rv = vectors(ref)
            penalty = math.exp(-((len(cand) - len(ref)) ** 2) / (2 * sigma**2))
            for (c_vec, c_norm), (r_vec, r_norm) in zip(cv, rv):
                if c_norm and r_norm:
                    dot = sum(min(v, r_vec.get(g, 0.0)) * r_vec.get(g, 0.0) for g, v in c_vec.items())
                    total += dot / (c_norm * r_norm) * penalty
        scores.append(10.0 * total / (max_n * max(1, len(rs))))
    return scores


def coco_cider(candidates: list[str], references: list[list[str]]) -> float | None:
    """The corpus CIDEr of the COCO caption toolkit (pycocoevalcap) on our normalised words; None
    without it. Its CIDEr is CIDEr-D, so it equals the mean of `cider_d` (tested): reported beside it
    as the number papers quote."""
    try:
        from pycocoevalcap.cider.cider import Cider
    except ImportError:
        return None
    gts = {i: [normalize(r) for r in rs] for i, rs in enumerate(references)}
    res = {i: [normalize(c)] for i, c in enumerate(candidates)}
    return float(Cider().compute_score(gts, res)[0])


def mean_ci95(values: list[float]) -> tuple[float, float]:
    """Mean and the half-width of its normal-approximation 95% confidence interval."""
    n = len(values)
    if n == 0:
        return float("nan"), float("nan")
    mean = sum(values) / n
    if n == 1:
        return mean, 0.0
    var = sum((v - mean) ** 2 for v in values) / (n - 1)
    return mean, 1.96 * math.sqrt(var / n)
