"""`build.*`: the settings of the annotator builders (seed 000 Sec. 4.2) and of the builders each seed
adds (MMGIC, IC, caption formats, SCALE). `launch/build.py` and a source's first use read them; part of
`RunConfig`, so every key is overridable as `build.<key>=...`."""

from __future__ import annotations

from dataclasses import dataclass, field

from mmkd.errors import ConfigError


@dataclass
class BuildConfig:
    """Settings of the annotator builders (seed 000 Sec. 4.2); `launch/build.py` and first use read them."""

    shard: str = "0/1"  # this process builds units i of n: run n processes with build.shard=i/n
    unit_size: int = 1000  # input records per unit (one output shard each)
    # Which dataset each annotated source reads: a world source, another annotated source or a
    # data.sources name. Caption1 describes the VQA images (seed 000 Table 2).
    inputs: dict[str, str] = field(
        default_factory=lambda: {
            "caption1": "vqa0",
            "vqa1": "caption1",
            "pair_caption": "caption0",
            "interleaved": "caption0",
            "mmgic": "detection",
            "ic": "caption0",
            "ic_part": "ic",
            "ssc": "alttext",
            "dsc": "alttext",
            "dsc_plus": "alttext",
            "afc": "alttext",
            "alttext_ssc": "ssc",
            "alttext_dsc": "dsc",
            "alttext_dsc_plus": "dsc_plus",
            **dict.fromkeys(
                ("scale", "scale_random", "scale_iqa", "scale_tqa", "scale_it", "scale_clip"), "scale_pool"
            ),
        }
    )
    limit: int = 0  # read at most this many input records per source; 0 = all
    # A unit whose rejected share is larger (or that produced nothing) is not finished: the build stops,
    # naming the commonest reasons, and the same command redoes that unit once the cause is fixed.
    max_reject_share: float = 0.2
    # Seconds a process waits for the other build.shard processes to finish a stage it needs (semantic
    # analysis before pairing, caption1 before vqa1); 0: stop and say what is pending. One submission
    # of n processes builds a multi-stage recipe end to end with a wait (docs/builders.md).
    wait_s: int = 0
    pairs_per_image: int = 1  # the per-image pair budget
    group_min: int = 3  # images per interleaved group (seed 000 Sec. 4.2.2: three or more)
    group_max: int = 5
    # Sources whose knowledge density `launch/build.py +knowledge=true` measures and compares (Fig. 4).
    knowledge_sources: list[str] = field(default_factory=lambda: ["caption0", "vqa0", "pair_caption"])
    # MMGIC (seed 003 F.2-F.3): labels seen fewer times than these are removed with their annotations
    # (Visual Genome: 2 for objects, 5 for attributes and relationships); object regions are squares
    # whose side, stated at 224 px and scaled to the image, lies in [region_min_side, region_max_side];
    # a box inside a region by this intersection over its area gives the region its label too.
    min_object_count: int = 2
    min_attribute_count: int = 5
    min_relation_count: int = 5
    region_min_side: int = 28
    region_max_side: int = 182
    region_ioa: float = 0.8
    # Label descriptions that come with the data (V3Det ships its categories'; seed 003 F.5 uses them as
    # they are): a JSON file {"object": {label: description}, "attribute": {...}, "relation": {...}}.
    # Those labels are not sent to the annotator; the rare-label rule above still applies to them.
    label_descriptions: str = ""
    # Caption report (seed 002 Appendix B; `launch/build.py +captions=true`): the sources it measures,
    # how many captions of each, and, for CHAIR on real data, COCO instance annotations and CHAIR's
    # synonym list (world captions are checked against their scene graphs).
    caption_sources: list[str] = field(default_factory=lambda: ["alttext", "ssc", "dsc", "dsc_plus", "afc"])
    caption_report_samples: int = 500
    chair_instances: str = ""
    chair_synonyms: str = ""
    # SCALE (seed 004): the share of the pool each selection keeps, the seed of its random baseline and
    # tie-break, and the weights of the image / text / multimodal scores in SCALE's composite.
    scale_fraction: float = 0.1
    scale_seed: int = 0
    scale_clip: str = ""  # clip:<CLIP directory> for the CLIP-similarity baseline (scale_clip)
    # Image quality: classical (sharpness and noise estimates, runs anywhere) or annotator (a served
    # image-quality model rates each image 1-5: annotator.routes.scale_image_quality=MODEL@URL).
    scale_iqa: str = "classical"
    scale_weights: dict[str, float] = field(
        default_factory=lambda: {"image": 1.0, "text": 1.0, "multimodal": 1.0}
    )
    # IC (seed 003 G): noun phrases by the world's grammar or spacy:<pipeline>; LLaVA's filter skips
    # phrases seen fewer than phrase_min_count times and takes at most phrase_cap captions per phrase.
    noun_phrases: str = "world"
    phrase_min_count: int = 3
    phrase_cap: int = 100
    # Caption synthesis (F.4): candidates per attempt, attempts, the scorer (world, or clip:<dir>) and
    # what qualifies: 5-25 words and a score of at least caption_min_score (CLIP: 0.25).
    caption_scorer: str = "world"
    caption_candidates: int = 10
    caption_attempts: int = 10
    caption_min_score: float = 0.25
    caption_min_words: int = 5
    caption_max_words: int = 25
    # IC's "Detailed caption" (seed 003 G.3): the web caption and the synthesized one merged by the
    # annotator (prompt capsfusion), after the synthesized "Caption"; false: the caption alone.
    detailed_captions: bool = True

    def validate(self) -> BuildConfig:
        if not 0 < self.region_min_side <= self.region_max_side:
            raise ConfigError(
                f"build.region_min_side={self.region_min_side}, build.region_max_side="
                f"{self.region_max_side}: need 0 < min <= max (seed 003: 28 and 182 at 224 px)"
            )
        if not 0.0 < self.region_ioa <= 1.0:
            raise ConfigError(f"build.region_ioa={self.region_ioa}: must be in (0, 1] (seed 003: 0.8)")
        if not 0.0 < self.scale_fraction <= 1.0:
            raise ConfigError(
                f"build.scale_fraction={self.scale_fraction}: must be in (0, 1] (seed 004: 0.1)"
            )
        if self.scale_iqa not in ("classical", "annotator"):
            raise ConfigError(f"build.scale_iqa={self.scale_iqa!r}: must be classical or annotator")
        unknown = sorted(set(self.scale_weights) - {"image", "text", "multimodal"})
        if (
            unknown
            or not any(v > 0 for v in self.scale_weights.values())
            or min(self.scale_weights.values()) < 0
        ):
            raise ConfigError(
                f"build.scale_weights={self.scale_weights}: weights >= 0, some positive, of image, text and "
                f"multimodal only{f' (unknown: {unknown})' if unknown else ''}"
            )
        if self.caption_report_samples < 1:
            raise ConfigError(f"build.caption_report_samples={self.caption_report_samples}: must be >= 1")
        if bool(self.chair_instances) != bool(self.chair_synonyms):
            raise ConfigError(
                "build.chair_instances and build.chair_synonyms go together: CHAIR on real data needs COCO "
                "instance annotations and the synonym list that maps caption words to their categories"
            )
        for name in ("phrase_min_count", "phrase_cap", "caption_candidates", "caption_attempts"):
            if getattr(self, name) < 1:
                raise ConfigError(f"build.{name}={getattr(self, name)}: must be >= 1")
        if not 0 < self.caption_min_words <= self.caption_max_words:
            raise ConfigError(
                f"build.caption_min_words={self.caption_min_words}, build.caption_max_words="
                f"{self.caption_max_words}: need 0 < min <= max (seed 003 F.4: 5 and 25)"
            )
        for name in ("min_object_count", "min_attribute_count", "min_relation_count"):
            if getattr(self, name) < 1:
                raise ConfigError(f"build.{name}={getattr(self, name)}: must be >= 1 (1 keeps every label)")
        self.shard_index()
        return self

    def shard_index(self) -> tuple[int, int]:
        """`shard` 'i/n' as (i, n): this process builds units i, i + n, ... of n processes."""
        parts = self.shard.split("/")
        if len(parts) != 2 or not all(x.isdigit() for x in parts) or not 0 <= int(parts[0]) < int(parts[1]):
            raise ConfigError(f"build.shard={self.shard!r}: must be i/n with 0 <= i < n, e.g. 0/1 or 3/8")
        return int(parts[0]), int(parts[1])
