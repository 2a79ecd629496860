"""Held-out benchmarks of the knowledge world, one per ability.

Items are drawn from their own split ("bench-<ability>") whose scenes have held-out compositions
(`WorldConfig.holdout_fraction`), so no benchmark image, nor one that differs from it only by an
object's jitter, is a training image.
Multiple-choice items carry their options (scored by option likelihood); open items (OCR, chart value)
are scored by exact match of a generated answer; captioning items carry reference captions (CIDEr).
The knowledge benchmarks ask only the facts the instruction data does not (`encyclopedia.benchmark_fact`).

Existence follows POPE (Li et al., 2023): half the questions ask about a present kind, the other half
about an absent kind chosen at random, by popularity (the most frequent kinds in training images), or
adversarially (the kinds that co-occur most with the ones present).
"""

from __future__ import annotations

import json
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from mmkd.bench_item import BenchItem
from mmkd.world import encyclopedia
from mmkd.world.language import (
    QA,
    dense_caption,
    q_chart_value,
    q_colour,
    q_count_all,
    q_ocr,
    q_relation,
    q_size,
    q_what_at,
    q_where,
)
from mmkd.world.render import render
from mmkd.world.scene import COLOURS, KINDS, POSITIONS, SIZES, Scene, WorldConfig, sample_scene

ABILITIES = (
    "existence",
    "attribute",
    "counting",
    "spatial",
    "ocr",
    "chart",
    "knowledge",
    "knowledge_in_image",
    "captioning",
)
NEGATIVE_TYPES = ("random", "popular", "adversarial")
BENCH_VERSION = 4  # bump when item generation changes: stale benchmark files are then rebuilt
YES_NO = ["yes", "no"]


def kind_statistics(cfg: WorldConfig, split: str, n: int) -> tuple[Counter, dict[str, Counter]]:
    """Kind frequency and kind co-occurrence over `n` scenes of a training split (for POPE negatives)."""
    freq: Counter = Counter()
    co: dict[str, Counter] = {k: Counter() for k in KINDS}
    for i in range(n):
        kinds = sample_scene(cfg, split, i, layout="objects").kinds()
        freq.update(kinds)
        for a in kinds:
            co[a].update(k for k in kinds if k != a)
    return freq, co


class _Builder:
    def __init__(self, cfg: WorldConfig, freq: Counter, co: dict[str, Counter]):
        self.cfg, self.freq, self.co = cfg, freq, co

    def scenes(self, ability: str, **kw) -> Iterator[Scene]:
        i = 0
        while True:
            yield sample_scene(self.cfg, f"bench-{ability}", i, **kw)
            i += 1

    def item(self, scene: Scene, ability: str, qa: QA, options: list[str] | None, **meta) -> BenchItem:
        image = render(scene, self.cfg.image_size)
        return BenchItem(
            f"{ability}-{len(self._made)}",
            ability,
            qa.qtype,
            qa.question,
            qa.answer,
            options,
            image,
            metadata={"scene": scene.to_json(), **meta},
        )

    def existence(self, n: int) -> list[BenchItem]:
        rng = random.Random(f"{self.cfg.seed}/existence")
        for scene in self.scenes("existence", layout="objects"):
            if len(self._made) == n:
                break
            present = sorted(scene.kinds())
            absent = [k for k in KINDS if k not in present]
            if len(self._made) % 2 == 0:
                kind, answer, neg = rng.choice(present), "yes", "present"
            else:
                neg = NEGATIVE_TYPES[(len(self._made) // 2) % 3]
                if neg == "random":
                    kind = rng.choice(absent)
                elif neg == "popular":
                    kind = max(absent, key=lambda k: (self.freq[k], k))
                else:
                    kind = max(absent, key=lambda k: (sum(self.co[p][k] for p in present), k))
                answer = "no"
            qa = QA("exist", f"Is there a {kind} in the image?", answer)
            self._made.append(self.item(scene, "existence", qa, YES_NO, pope=neg))
        return self._made

    def from_generators(self, ability: str, n: int, gens, layout: str = "objects") -> list[BenchItem]:
        rng = random.Random(f"{self.cfg.seed}/{ability}")
        for scene in self.scenes(ability, layout=layout):
            if len(self._made) == n:
                break
            gen, options = gens[len(self._made) % len(gens)]
            qa = gen(scene, rng)
            if qa is None:
                continue
            self._made.append(self.item(scene, ability, qa, options))
        return self._made

    def knowledge(self, n: int, with_image: bool) -> list[BenchItem]:
        ability = "knowledge_in_image" if with_image else "knowledge"
        rng = random.Random(f"{self.cfg.seed}/{ability}")
        scenes = self.scenes(ability, layout="objects", n_objects=1)
        while len(self._made) < n:
            attribute = encyclopedia.ATTRIBUTES[len(self._made) % len(encyclopedia.ATTRIBUTES)]
            options = encyclopedia.options_for(attribute)
            if with_image:
                scene = next(s for s in scenes if encyclopedia.benchmark_fact(s.objects[0].kind, attribute))
                kind = scene.objects[0].kind
                qa = QA(
                    f"kii_{attribute}",
                    encyclopedia.IMAGE_QUESTIONS[attribute],
                    encyclopedia.FACTS[kind][attribute],
                )
                self._made.append(self.item(scene, ability, qa, options))
            else:
                kind = rng.choice([k for k in KINDS if encyclopedia.benchmark_fact(k, attribute)])
                question = encyclopedia.QUESTIONS[attribute].format(kind=kind)
                answer = encyclopedia.FACTS[kind][attribute]
                self._made.append(
                    BenchItem(
                        f"{ability}-{len(self._made)}",
                        ability,
                        f"knowledge_{attribute}",
                        question,
                        answer,
                        options,
                        metadata={"kind": kind},
                    )
                )
        return self._made

    def counting(self, n: int) -> list[BenchItem]:
        """Answers balanced over 1..max_objects, alternating total and per-kind counts.

        The world favours single objects, so the training prior answers "1" most of the time; balanced
        answers keep the blind baseline at chance and make the score measure counting.
        """
        rng = random.Random(f"{self.cfg.seed}/counting")
        options = [str(i) for i in range(1, self.cfg.max_objects + 1)]
        per_kind = self.scenes("counting", layout="objects")
        while len(self._made) < n:
            i = len(self._made)
            target = 1 + (i // 2) % self.cfg.max_objects
            if i % 2 == 0:
                scene = sample_scene(self.cfg, "bench-counting-all", i, layout="objects", n_objects=target)
                qa = q_count_all(scene, rng)
            else:
                scene = next(s for s in per_kind if any(s.count(k) == target for k in KINDS))
                kind = rng.choice([k for k in sorted(scene.kinds()) if scene.count(k) == target])
                qa = QA("count", f"How many {encyclopedia.plural(kind)} are there?", str(target))
            self._made.append(self.item(scene, "counting", qa, options))
        return self._made

    def captioning(self, n: int, n_refs: int = 5) -> list[BenchItem]:
        rng = random.Random(f"{self.cfg.seed}/captioning")
        for scene in self.scenes("captioning", layout="objects"):
            if len(self._made) == n:
                break
            refs = [dense_caption(scene, rng) for _ in range(n_refs)]
            item = self.item(scene, "captioning", QA("caption", "", refs[0]), None)
            item.references = refs
            self._made.append(item)
        return self._made

    def build(self, ability: str, n: int) -> list[BenchItem]:
        self._made: list[BenchItem] = []
        colours, kinds = sorted(COLOURS), list(KINDS)
        if ability == "existence":
            return self.existence(n)
        if ability == "attribute":
            return self.from_generators(ability, n, [(q_colour, colours), (q_size, list(SIZES))])
        if ability == "counting":
            return self.counting(n)
        if ability == "spatial":
            gens = [(q_where, list(POSITIONS)), (q_what_at, kinds), (q_relation, YES_NO)]
            return self.from_generators(ability, n, gens)
        if ability == "ocr":
            return self.from_generators(ability, n, [(q_ocr, None)], layout="sign")
        if ability == "chart":
            return self.from_generators(ability, n, [(q_chart_value, None)], layout="chart")
        if ability in ("knowledge", "knowledge_in_image"):
            return self.knowledge(n, with_image=ability == "knowledge_in_image")
        if ability == "captioning":
            return self.captioning(n)
        raise ValueError(f"unknown ability {ability!r}; known: {ABILITIES}")


def build_benchmarks(
    cfg: WorldConfig, out_dir: str | Path, n_per_ability: int, stats_split: str = "vqa0", stats_n: int = 2000
) -> dict[str, int]:
    """Write `<out_dir>/<ability>.jsonl` for every ability; returns item counts."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    builder = _Builder(cfg, *kind_statistics(cfg, stats_split, stats_n))
    counts = {}
    for ability in ABILITIES:
        items = builder.build(ability, n_per_ability)
        tmp = out_dir / f"{ability}.jsonl.tmp"
        tmp.write_text("".join(json.dumps(it.to_json()) + "\n" for it in items))
        tmp.replace(out_dir / f"{ability}.jsonl")
        counts[ability] = len(items)
    return counts
