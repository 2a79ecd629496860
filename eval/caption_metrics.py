"""Caption metrics of seed 002 (Sec. 3.2, Appendix B): richness (tokens, ANA, unique entities) and
accuracy (CapScore, CHAIR), over any caption source or a model's generated captions.

- CHAIR (Rohrbach et al. 2018): object words are mapped to canonical objects by a vocabulary (the
  world's kinds, or COCO's categories with the standard synonym list); CHAIR_i is the share of object
  mentions not in the image; CHAIR_s is the share of captions with one, as the original code counts
  it, and `chair_s_sentence` the share of sentences with one, as the paper's formula reads; recall is
  the share of the image's objects the caption mentions.
- ANA and CapScore: assertions are extracted from each caption and each is verified against the
  image; ANA is the mean number of assertions per caption and CapScore the share verified, in
  percent. `annotated_assertions` has an annotator do both steps (versioned prompts); on the world
  `exact_assertions` does them from the scene graph, so the two can be set side by side.
- Unique entities per N captions (Fig. 7): noun phrases and proper names.
Every figure carries a 95% interval from a seeded bootstrap over captions.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mmkd.annotators import Annotator, Request
from mmkd.data_builders.adapter_inputs import load_json
from mmkd.data_builders.prompts import PROMPTS, parse_assertions, parse_yes_no
from mmkd.schema import Sample
from mmkd.world import assertions as world_assertions
from mmkd.world.encyclopedia import plural
from mmkd.world.scene import KINDS, Scene

BOOTSTRAP = 1000
_WORD = re.compile(r"[a-z]+")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_CAPITALISED = re.compile(r"\b[A-Z][a-z]+(?:\s+[A-Z][a-z]+)*")
TOKEN_BINS = (0, 10, 16, 40, 61, 78, 101, 150, 10**9)  # the paper's landmarks: 10-15, 40-60, <78, >100


def ci95(num: np.ndarray, den: np.ndarray | None = None, scale: float = 1.0, seed: int = 0) -> list[float]:
    """[value, low, high] of sum(num)/sum(den) (a mean when `den` is None), bootstrapped over items."""
    den = np.ones_like(num, dtype=float) if den is None else den
    if len(num) == 0 or den.sum() == 0:
        return [float("nan")] * 3
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, len(num), size=(BOOTSTRAP, len(num)))
    sums = den[idx].sum(axis=1)
    ratios = num[idx].sum(axis=1) / np.where(sums == 0, np.nan, sums)
    low, high = np.nanpercentile(ratios, [2.5, 97.5])
    return [float(num.sum() / den.sum() * scale), float(low * scale), float(high * scale)]


@dataclass(frozen=True)
class ObjectVocabulary:
    """Surface forms (one or more lower-case words) -> canonical object, matched longest first."""

    forms: dict[tuple[str, ...], str]

    @classmethod
    def world(cls) -> ObjectVocabulary:
        return cls({(w,): k for k in KINDS for w in (k, plural(k))})

    @classmethod
    def from_synonyms(cls, path: str | Path) -> ObjectVocabulary:
        """CHAIR's synonym file: one object per line, its canonical name first, then its synonyms,
        comma-separated (e.g. `person, girl, boy, man`); plurals in -s / -es are added."""
        forms: dict[tuple[str, ...], str] = {}
        for n, line in enumerate(Path(path).read_text().splitlines(), 1):
            names = [" ".join(x.lower().split()) for x in line.split(",") if x.strip()]
            for name in names:
                if forms.setdefault(tuple(name.split()), names[0]) != names[0]:
                    raise ValueError(
                        f"{path}:{n}: {name!r} is already a synonym of {forms[tuple(name.split())]!r}"
                    )
        for words, obj in list(forms.items()):  # regular plurals, where the list has no such word
            for end in ("s", "es"):
                forms.setdefault((*words[:-1], words[-1] + end), obj)
        if not forms:
            raise ValueError(f"{path}: no synonyms (expected lines like 'person, girl, boy, man')")
        return cls(forms)

    def mentions(self, text: str) -> list[str]:
        """The canonical object of every object word in `text`, in order, repeats kept."""
        words = _WORD.findall(text.lower())
        longest = max(len(f) for f in self.forms)
        out, i = [], 0
        while i < len(words):
            for n in range(min(longest, len(words) - i), 0, -1):
                if (obj := self.forms.get(tuple(words[i : i + n]))) is not None:
                    out.append(obj)
                    i += n
                    break
            else:
                i += 1
        return out


def chair(captions: list[str], truths: list[set[str]], vocab: ObjectVocabulary) -> dict[str, Any]:
    """CHAIR_i, CHAIR_s (per caption and per sentence) and recall, in percent, with 95% intervals."""
    mentioned, hallucinated, bad_captions, sentences, bad_sentences, found, present = ([] for _ in range(7))
    for caption, truth in zip(captions, truths, strict=True):
        objs = vocab.mentions(caption)
        wrong = [o for o in objs if o not in truth]
        mentioned.append(len(objs))
        hallucinated.append(len(wrong))
        bad_captions.append(bool(wrong))
        parts = [s for s in _SENTENCE.split(caption.strip()) if s]
        sentences.append(len(parts))
        bad_sentences.append(sum(any(o not in truth for o in vocab.mentions(s)) for s in parts))
        found.append(len(set(objs) & truth))
        present.append(len(truth))
    a = lambda xs: np.asarray(xs, dtype=float)  # noqa: E731
    return {
        "captions": len(captions),
        "chair_i": ci95(a(hallucinated), a(mentioned), 100),
        "chair_s": ci95(a(bad_captions), None, 100),
        "chair_s_sentence": ci95(a(bad_sentences), a(sentences), 100),
        "recall": ci95(a(found), a(present), 100),
        "mentions_per_caption": ci95(a(mentioned)),
    }


def world_truth(scene: dict) -> set[str]:
    return {o["kind"] for o in scene.get("objects", [])}


def coco_truth(instances_json: str | Path, vocab: ObjectVocabulary) -> dict[Any, set[str]]:
    """COCO image id -> the canonical objects its instance annotations show (CHAIR's ground truth)."""
    data = load_json(Path(instances_json))
    names = {c["id"]: c["name"].lower() for c in data.get("categories", [])}
    canonical = set(vocab.forms.values())
    unknown = sorted(set(names.values()) - canonical)
    if unknown:
        raise ValueError(
            f"{instances_json}: categories {unknown[:5]} are no canonical name of the synonym list"
        )
    out: dict[Any, set[str]] = {im["id"]: set() for im in data.get("images", [])}
    for ann in data.get("annotations", []):
        out.setdefault(ann["image_id"], set()).add(names[ann["category_id"]])
    return out


def summarize_assertions(verdicts: list[list[bool]]) -> dict[str, Any]:
    """ANA (assertions per caption) and CapScore (percent verified), each with a 95% interval."""
    counts = np.asarray([len(v) for v in verdicts], dtype=float)
    true = np.asarray([sum(v) for v in verdicts], dtype=float)
    return {"captions": len(verdicts), "ana": ci95(counts), "capscore": ci95(true, counts, 100)}


def exact_assertions(captions: list[str], scenes: list[Scene]) -> list[list[bool]]:
    """Per caption, each world assertion's truth in the scene graph."""
    return [
        [world_assertions.verify(a, scene) for a in world_assertions.extract(caption)]
        for caption, scene in zip(captions, scenes, strict=True)
    ]


def caption_quality(captions: list[str], scenes: list[Scene]) -> dict[str, Any]:
    """CHAIR, ANA and CapScore of captions of world images (a model's own), exactly."""
    truths = [s.kinds() for s in scenes]
    return {
        **chair(captions, truths, ObjectVocabulary.world()),
        **summarize_assertions(exact_assertions(captions, scenes)),
    }


def annotated_assertions(
    annotator: Annotator, samples: list[Sample]
) -> tuple[list[list[bool]], dict[str, int]]:
    """Per caption, the annotator's assertions, each verified by the annotator against the image
    (captions or assertions whose requests fail are left out and counted by reason)."""
    failed: dict[str, int] = {}

    def fail(reason: str | None) -> None:
        failed[reason or "unknown"] = failed.get(reason or "unknown", 0) + 1

    by_id = {s.id: s for s in samples}
    context = lambda s: {"scenes": [s.metadata["scene"]]} if "scene" in s.metadata else {}  # noqa: E731
    extract = [
        Request(s.id, PROMPTS["caption_assertions"], parse_assertions, {"caption": s.text}) for s in samples
    ]
    listed: dict[str, list[str]] = {}
    for r in annotator.annotate(extract, "assertions"):
        if r.error:
            fail(r.error)
        else:
            listed[r.key] = r.value
    checks = [
        Request(
            f"{i}/{k}",
            PROMPTS["verify_assertion"],
            parse_yes_no,
            {"assertion": a},
            images=by_id[i].images,
            context=context(by_id[i]),
        )
        for i, found in listed.items()
        for k, a in enumerate(found)
    ]
    verdicts: dict[str, list[bool]] = {i: [] for i in listed}
    broken: set[str] = set()
    for r in annotator.annotate(checks, "verify assertions"):
        key = r.key.rsplit("/", 1)[0]
        if r.error:
            fail(r.error)
            broken.add(key)
        else:
            verdicts[key].append(r.value)
    return [v for i, v in verdicts.items() if i not in broken], failed


def entities(text: str, phrases: list[str]) -> set[str]:
    """Noun phrases plus proper names: runs of capitalised words, except one word opening a sentence."""
    out = set(phrases)
    for sentence in _SENTENCE.split(text.strip()):
        for m in _CAPITALISED.finditer(sentence):
            if m.start() > 0 or " " in m[0]:
                out.add(m[0])
    return out


def unique_entities(
    texts: list[str], extract: Callable[[Iterable[str]], list[list[str]]], n: int
) -> dict[str, int]:
    """Distinct entities in the first `n` captions (Fig. 7 counts them per source)."""
    head = texts[:n]
    found: set[str] = set()
    for text, phrases in zip(head, extract(head), strict=True):
        found |= entities(text, phrases)
    return {"captions": len(head), "unique_entities": len(found)}


def token_lengths(texts: list[str], encode: Callable[[str], list[int]]) -> dict[str, Any]:
    """Mean tokens with a 95% interval and the histogram over TOKEN_BINS (Fig. 6)."""
    lengths = np.asarray([len(encode(t)) for t in texts], dtype=float)
    hist, _ = np.histogram(lengths, bins=TOKEN_BINS)
    labels = [f"{lo}-{hi - 1}" if hi < 10**9 else f">={lo}" for lo, hi in itertools.pairwise(TOKEN_BINS)]
    return {"mean_tokens": ci95(lengths), "histogram": dict(zip(labels, hist.tolist(), strict=True))}
