"""Image pairing and grouping from semantic descriptors (seed 000 Sec. 4.2.1-4.2.2, Figure 3).

Descriptors are the hierarchical semantic JSON of A.1.3. Two images are candidates when they are
coarsely aligned (same type theme, domain direction and semantic subcategory) and finely contrasted
(different core objects or different distinguishing key information). Pairing is greedy over a
seeded shuffle, so it is deterministic, and each image joins at most `pairs_per_image` pairs; the
images left over go to the single-caption branch. Groups for interleaved descriptions are images of
one coarse class, `group_min`..`group_max` at a time.
"""

from __future__ import annotations

import random
from collections import defaultdict

COARSE = ("type theme", "domain direction", "semantic subcategory")


def coarse_key(d: dict) -> tuple[str, ...]:
    return tuple(d[k] for k in COARSE)


def contrasted(a: dict, b: dict) -> bool:
    return sorted(a["core objects"]) != sorted(b["core objects"]) or sorted(
        a["distinguishing key information"]
    ) != sorted(b["distinguishing key information"])


def _classes(descriptors: dict[str, dict], seed: int, salt: str) -> list[list[str]]:
    """Image ids by coarse class, each class in a seeded shuffled order, classes in sorted order."""
    by_key: dict[tuple, list[str]] = defaultdict(list)
    for image_id in sorted(descriptors):
        by_key[coarse_key(descriptors[image_id])].append(image_id)
    out = []
    for key in sorted(by_key):
        ids = by_key[key]
        random.Random(f"{salt}/{seed}/{key}").shuffle(ids)
        out.append(ids)
    return out


def pair_images(
    descriptors: dict[str, dict], pairs_per_image: int, seed: int
) -> tuple[list[tuple[str, str]], list[str]]:
    """(pairs, unpaired image ids)."""
    if pairs_per_image < 1:
        raise ValueError(f"build.pairs_per_image={pairs_per_image}: must be >= 1")
    pairs: list[tuple[str, str]] = []
    used: dict[str, int] = defaultdict(int)
    for ids in _classes(descriptors, seed, "pairs"):
        for i, a in enumerate(ids):
            for b in ids[i + 1 :]:
                if used[a] >= pairs_per_image:
                    break
                if used[b] < pairs_per_image and contrasted(descriptors[a], descriptors[b]):
                    pairs.append((a, b))
                    used[a] += 1
                    used[b] += 1
    unpaired = sorted(i for i in descriptors if used[i] == 0)
    return pairs, unpaired


def group_images(
    descriptors: dict[str, dict], group_min: int, group_max: int, seed: int
) -> tuple[list[list[str]], list[str]]:
    """(groups of group_min..group_max related images, ids left over)."""
    if not 3 <= group_min <= group_max:
        raise ValueError(f"build.group_min={group_min}, group_max={group_max}: need 3 <= min <= max")
    rng = random.Random(f"groups/{seed}")
    groups, left = [], []
    for ids in _classes(descriptors, seed, "groups"):
        i = 0
        while len(ids) - i >= group_min:
            size = min(rng.randint(group_min, group_max), len(ids) - i)
            groups.append(ids[i : i + size])
            i += size
        left += ids[i:]
    return groups, sorted(left)
