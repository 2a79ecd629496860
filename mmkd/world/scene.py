"""Scene graphs of the knowledge world.

A scene is one of three layouts:
  objects  1..max_objects shapes on a 3x3 grid (kind, colour, size, cell), one shape per cell
  sign     a word written on a placard (OCR)
  chart    a bar chart of 2..4 coloured bars with integer values 1..5
Themes are coarse semantic categories (the background and which kinds usually appear); colour, size,
position and count are the fine attributes that differ inside a theme. Image pairing (seed 000,
Sec. 4.2.1) aligns on the first and contrasts on the second.
"""

from __future__ import annotations

import functools
import hashlib
import random
from dataclasses import asdict, dataclass, field

KINDS = ("ball", "box", "tent", "star", "kite", "ring")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (30, 160, 60),
    "blue": (40, 80, 225),
    "yellow": (240, 200, 20),
    "purple": (150, 50, 190),
    "orange": (245, 125, 15),
}
SIZES = ("small", "large")
# Theme -> (background colour, kinds that usually appear there). Every kind belongs to two themes.
THEMES: dict[str, tuple[tuple[int, int, int], tuple[str, ...]]] = {
    "garden": ((226, 242, 220), ("ball", "kite", "tent")),
    "bedroom": ((246, 236, 218), ("ball", "box", "ring")),
    "campsite": ((236, 230, 245), ("tent", "star", "kite")),
    "shop": ((222, 232, 246), ("box", "ring", "star")),
}
ROWS = ("top", "middle", "bottom")
COLS = ("left", "middle", "right")
POSITIONS = tuple(
    "center" if (r, c) == ("middle", "middle") else f"{r} {c}" for r in ROWS for c in COLS
)  # index = 3 * row + col
RELATIONS = ("left of", "right of", "above", "below")
_SYLLABLES = [c + v for c in "bdfgklmnprstvz" for v in "aeiou"]
WORDS = len(_SYLLABLES) ** 2  # pronounceable two-syllable words for signs (e.g. 'bako')


@functools.cache
def sign_vocabulary(seed: int, size: int) -> tuple[str, ...]:
    """The `size` words a world's signs show, drawn once per world seed (sorted)."""
    words = [a + b for a in _SYLLABLES for b in _SYLLABLES]
    return tuple(sorted(random.Random(f"mmkd-world/{seed}/sign-words").sample(words, size)))


def sign_word(cfg: WorldConfig, rng: random.Random) -> str:
    """A sign's word: one of the world's vocabulary, or with `sign_words=0` any two-syllable word."""
    if cfg.sign_words:
        return rng.choice(sign_vocabulary(cfg.seed, cfg.sign_words))
    return rng.choice(_SYLLABLES) + rng.choice(_SYLLABLES)


# World settings added after worlds were first built, at the value that draws a world as it was before
# them. A world's identity (its data directory, sources' provenance, benchmarks' and foundations'
# stamps) leaves them out at that value, so data built before them is found again; a config saved
# before them (a checkpoint's) reads as that value, so its model is evaluated on its own world.
LEGACY_NEUTRAL = {"sign_words": 0}


def world_identity(world: dict) -> dict:
    """The world settings that tell two worlds apart (a WorldConfig as a dict)."""
    return {k: v for k, v in world.items() if k not in LEGACY_NEUTRAL or LEGACY_NEUTRAL[k] != v}


@dataclass
class WorldConfig:
    """Everything that shapes the world; all sources and benchmarks derive from it."""

    seed: int = 0
    image_size: int = 48  # 3 grid cells x 2 patches x 8 px: grid cells align with ViT patches
    max_objects: int = 4
    # P(n objects) is proportional to count_decay ** (n - 1): single-object scenes are the most common.
    # They give a tiny model an unambiguous image -> word signal before it can route attention between
    # objects, which is what finding an object by its kind needs (docs/world.md).
    count_decay: float = 0.6
    # Probability that an object's kind comes from its theme's pool rather than from all kinds.
    theme_affinity: float = 0.85
    # Fraction of sign and chart scenes in a generic scene stream (the rest are object scenes).
    sign_fraction: float = 0.1
    chart_fraction: float = 0.1
    # How many words signs show (drawn once per world seed), each on a placard of one of the six
    # colours over a theme's background. Benchmarks hold out (theme, placard, word) compositions, not
    # words: a benchmark sign's word is one that training signs show elsewhere. 0: any of the 4,900
    # two-syllable words on a white placard, most of which a few thousand training signs never show
    # (the worlds before this setting, and the OCR floor their protocol runs measured: docs/protocol.md).
    sign_words: int = 120
    # Max shift of an object inside its cell, as a fraction of the cell, so no two images are equal.
    jitter: float = 0.08
    # Fraction of scene compositions (everything drawn but the jitter) kept for benchmarks: training
    # splits never draw them and benchmark splits draw only them, so no benchmark image, nor a
    # one-pixel shift of it, is ever trained on (docs/world.md).
    holdout_fraction: float = 0.1

    def identity(self) -> dict:
        return world_identity(asdict(self))

    def validate(self) -> WorldConfig:
        if self.image_size < 24:
            raise ValueError(f"world.image_size={self.image_size}: must be >= 24 to draw a 3x3 grid")
        if not 1 <= self.max_objects <= 9:
            raise ValueError(f"world.max_objects={self.max_objects}: must be in 1..9 (one object per cell)")
        for name in ("theme_affinity", "sign_fraction", "chart_fraction", "jitter", "count_decay"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ValueError(f"world.{name}={v}: must be in [0, 1]")
        if not 0.0 < self.holdout_fraction < 1.0:
            raise ValueError(
                f"world.holdout_fraction={self.holdout_fraction}: must be in (0, 1); benchmarks and "
                "training both need scenes"
            )
        if not 0 <= self.sign_words <= WORDS:
            raise ValueError(f"world.sign_words={self.sign_words}: must be in 0..{WORDS} (0: every word)")
        if self.sign_fraction + self.chart_fraction > 1.0:
            raise ValueError("world.sign_fraction + world.chart_fraction must be <= 1")
        return self


@dataclass
class SceneObject:
    kind: str
    colour: str
    size: str
    cell: int  # 0..8, row-major
    dx: float = 0.0  # jitter inside the cell, fraction of the cell
    dy: float = 0.0

    @property
    def row(self) -> int:
        return self.cell // 3

    @property
    def col(self) -> int:
        return self.cell % 3

    @property
    def position(self) -> str:
        return POSITIONS[self.cell]

    def box(self, image_size: int) -> tuple[int, int, int, int]:
        """Pixel box (x0, y0, x1, y1) of the object in an image of `image_size`."""
        cell = image_size / 3
        extent = cell * (0.84 if self.size == "large" else 0.5)
        cx = (self.col + 0.5 + self.dx) * cell
        cy = (self.row + 0.5 + self.dy) * cell
        h = extent / 2
        return (round(cx - h), round(cy - h), round(cx + h), round(cy + h))


@dataclass
class Scene:
    id: str
    theme: str
    layout: str
    objects: list[SceneObject] = field(default_factory=list)
    word: str | None = None
    placard: str | None = None  # a sign's placard colour (a COLOURS name)
    bars: list[tuple[str, int]] = field(default_factory=list)  # (colour, value) left to right

    def kinds(self) -> set[str]:
        return {o.kind for o in self.objects}

    def count(self, kind: str) -> int:
        return sum(o.kind == kind for o in self.objects)

    def relation_holds(self, a: SceneObject, rel: str, b: SceneObject) -> bool:
        """Grid relations: 'left of' means a strictly smaller column, 'above' a smaller row."""
        return {
            "left of": a.col < b.col,
            "right of": a.col > b.col,
            "above": a.row < b.row,
            "below": a.row > b.row,
        }[rel]

    def relations(self) -> list[tuple[int, str, int]]:
        """Every true pairwise relation as (index a, relation, index b)."""
        return [
            (i, rel, j)
            for i, a in enumerate(self.objects)
            for j, b in enumerate(self.objects)
            if i != j
            for rel in RELATIONS
            if self.relation_holds(a, rel, b)
        ]

    def reference(self, obj: SceneObject) -> str | None:
        """The shortest unambiguous noun phrase for `obj`, or None when none is unique."""
        same_kind = [o for o in self.objects if o.kind == obj.kind]
        if len(same_kind) == 1:
            return obj.kind
        if sum(o.colour == obj.colour for o in same_kind) == 1:
            return f"{obj.colour} {obj.kind}"
        return None

    def composition(self) -> tuple:
        """What the scene shows, without its id or the objects' jitter inside their cells."""
        objects = tuple((o.kind, o.colour, o.size, o.cell) for o in self.objects)
        return (self.theme, self.layout, objects, self.word, self.placard, tuple(self.bars))

    def to_json(self) -> dict:
        return {
            "id": self.id,
            "theme": self.theme,
            "layout": self.layout,
            "objects": [vars(o) for o in self.objects],
            "word": self.word,
            "placard": self.placard,
            "bars": [list(b) for b in self.bars],
        }

    @classmethod
    def from_json(cls, d: dict) -> Scene:
        return cls(
            id=d["id"],
            theme=d["theme"],
            layout=d["layout"],
            objects=[SceneObject(**o) for o in d["objects"]],
            word=d["word"],
            placard=d.get("placard"),  # scenes of worlds before placards had colours
            bars=[(c, v) for c, v in d["bars"]],
        )


def scene_rng(cfg: WorldConfig, split: str, index: int) -> random.Random:
    """One independent stream per (seed, split, index): splits never share images."""
    return random.Random(f"mmkd-world/{cfg.seed}/{split}/{index}")


def is_held_out(cfg: WorldConfig, scene: Scene) -> bool:
    """Whether the scene's composition is reserved for benchmarks (a seeded hash split)."""
    digest = hashlib.sha256(f"{cfg.seed}/{scene.composition()}".encode()).digest()
    return int.from_bytes(digest[:8], "big") < cfg.holdout_fraction * 2**64


def sample_scene(
    cfg: WorldConfig,
    split: str,
    index: int,
    layout: str | None = None,
    n_objects: int | None = None,
) -> Scene:
    """The scene at `index` of `split`; `layout` / `n_objects` force a kind of scene.

    Benchmark splits ("bench-*") draw only held-out compositions and every other split none: a draw
    on the wrong side of the split is redrawn from the same stream.
    """
    rng = scene_rng(cfg, split, index)
    bench = split.startswith("bench-")
    while True:
        scene = _draw_scene(cfg, rng, f"{split}-{index:07d}", layout, n_objects)
        if is_held_out(cfg, scene) == bench:
            return scene


def _draw_scene(
    cfg: WorldConfig, rng: random.Random, scene_id: str, layout: str | None, n_objects: int | None
) -> Scene:
    theme = rng.choice(sorted(THEMES))
    if layout is None:
        u = rng.random()
        layout = (
            "sign"
            if u < cfg.sign_fraction
            else "chart"
            if u < cfg.sign_fraction + cfg.chart_fraction
            else "objects"
        )
    scene = Scene(id=scene_id, theme=theme, layout=layout)
    if layout == "sign":
        scene.word = sign_word(cfg, rng)
        if cfg.sign_words:  # 0 draws signs as worlds before vocabularies did: any word, a white placard
            scene.placard = rng.choice(sorted(COLOURS))
    elif layout == "chart":
        colours = rng.sample(sorted(COLOURS), rng.randint(2, 4))
        scene.bars = [(c, rng.randint(1, 5)) for c in colours]
    else:
        counts = range(1, cfg.max_objects + 1)
        n = n_objects or rng.choices(counts, weights=[cfg.count_decay ** (k - 1) for k in counts])[0]
        pool = THEMES[theme][1]
        for cell in sorted(rng.sample(range(9), n)):
            kind = rng.choice(pool) if rng.random() < cfg.theme_affinity else rng.choice(KINDS)
            scene.objects.append(
                SceneObject(
                    kind=kind,
                    colour=rng.choice(sorted(COLOURS)),
                    size=rng.choice(SIZES),
                    cell=cell,
                    dx=round(rng.uniform(-cfg.jitter, cfg.jitter), 3),
                    dy=round(rng.uniform(-cfg.jitter, cfg.jitter), 3),
                )
            )
    return scene
