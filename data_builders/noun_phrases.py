"""Noun phrases of captions, for IC's frequency filter (seed 003 G, after LLaVA's CC3M filter).

`build.noun_phrases=world` reads the world's own grammar ("a large red ball" -> "large red ball");
`build.noun_phrases=spacy:<pipeline>` runs a spaCy pipeline with a parser (an installed package name
such as en_core_web_sm, or a local directory) and takes its noun chunks, lower-cased, determiners and
pronouns dropped. spaCy is imported only then; without it the build stops before any work, naming it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from mmkd.config import ConfigError
from mmkd.world.scene import COLOURS, KINDS, SIZES

_WORLD = re.compile(
    rf"\b(?:({'|'.join(SIZES)}) )?(?:({'|'.join(COLOURS)}) )?({'|'.join(KINDS)})(?:es|s)?\b", re.I
)
_DROP = {"a", "an", "the", "this", "that", "these", "those", "some", "its", "their", "his", "her"}

Extractor = Callable[[Iterable[str]], list[list[str]]]


def world_phrases(texts: Iterable[str]) -> list[list[str]]:
    """Each text's noun phrases in the world's grammar: '[size] [colour] kind', singular."""
    return [[" ".join(w for w in m.groups() if w).lower() for m in _WORLD.finditer(t)] for t in texts]


def spacy_phrases(pipeline: str) -> Extractor:
    """Noun chunks of a spaCy pipeline with a dependency parser (loaded once)."""
    try:
        import spacy
    except ImportError:
        raise ConfigError(
            f"build.noun_phrases=spacy:{pipeline} needs spaCy: pip install spacy, and the pipeline as an "
            "installed package or a local directory (python -m spacy download en_core_web_sm where there "
            "is internet)"
        ) from None
    try:
        nlp = spacy.load(pipeline, disable=["ner"])
    except OSError as e:
        raise ConfigError(f"build.noun_phrases=spacy:{pipeline}: cannot load the pipeline ({e})") from None

    def extract(texts: Iterable[str]) -> list[list[str]]:
        out = []
        for doc in nlp.pipe(texts, batch_size=256):
            chunks = []
            for chunk in doc.noun_chunks:
                words = [t.lower_ for t in chunk if t.lower_ not in _DROP and t.pos_ != "PRON"]
                if words:
                    chunks.append(" ".join(words))
            out.append(chunks)
        return out

    return extract


def extractor(spec: str) -> Extractor:
    """The extractor `build.noun_phrases` names: world, or spacy:<pipeline>."""
    if spec == "world":
        return world_phrases
    if spec.startswith("spacy:") and spec[6:]:
        return spacy_phrases(spec[6:])
    raise ConfigError(f"build.noun_phrases={spec!r}: must be world or spacy:<pipeline name or directory>")
