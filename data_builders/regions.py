"""Object regions of an MMGIC document (seed 003 F.3, F.7): square crops around detection boxes, with
the labels of every box they mostly contain.

For each box R_i: S_i is the smallest square (whole pixels) containing R_i, centred on it as closely
as the image allows; the labels of every other box R_j with IoA(S_i, R_j) = |S_i n R_j| / |R_j| >= 0.8
join R_i's. Squares whose side is outside the size limits are dropped (the paper: 28-182 px at
224 px, i.e. 2 to 13 of its 14-px visual tokens; limits scale with the image's short side), then
squares whose label set repeats an earlier square's (the paper drops duplicates before the size
filter; after it, a duplicate that fits is never lost to one that does not). A region's location is
the 3 x 3 grid cell holding its centre, named as F.7 names them.

A box longer than the image's short side gets a square of the short side, which cannot contain it;
such a square is larger than any size limit below the short side, so the filter drops it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in pixels
GRID_NAMES = (
    "Top Left",
    "Top Middle",
    "Top Right",
    "Middle Left",
    "Center",
    "Middle Right",
    "Bottom Left",
    "Bottom Middle",
    "Bottom Right",
)
REFERENCE_SIZE = 224  # the paper's image size, at which the side limits are stated


@dataclass(frozen=True)
class Region:
    box: tuple[int, int, int, int]  # the square S_i
    labels: tuple[str, ...]  # R_i's label first, then the merged ones in annotation order
    location: str  # a GRID_NAMES entry
    source: int  # the index of R_i among the image's boxes


def square_around(box: Box, width: int, height: int) -> tuple[int, int, int, int]:
    """The smallest whole-pixel square containing `box` inside a `width` x `height` image, its centre
    as close to the box's as the image allows."""
    x0, y0, x1, y1 = box
    left_in, top_in = math.floor(x0), math.floor(y0)  # the box's extent in whole pixels
    right_in, bottom_in = math.ceil(x1), math.ceil(y1)
    side = min(max(right_in - left_in, bottom_in - top_in), width, height)

    def place(lo: int, hi: int, centre: float, size: int) -> int:
        start = round(centre - side / 2)
        start = min(max(start, hi - side), lo) if hi - lo <= side else start  # contain the box
        return min(max(start, 0), size - side)  # stay in the image

    left = place(left_in, right_in, (x0 + x1) / 2, width)
    top = place(top_in, bottom_in, (y0 + y1) / 2, height)
    return left, top, left + side, top + side


def ioa(square: tuple[float, ...], box: Box) -> float:
    """The share of `box`'s area inside `square` (intersection over the box's area)."""
    w = min(square[2], box[2]) - max(square[0], box[0])
    h = min(square[3], box[3]) - max(square[1], box[1])
    area = (box[2] - box[0]) * (box[3] - box[1])
    return max(w, 0) * max(h, 0) / area if area > 0 else 0.0


def grid_cell(square: tuple[float, ...], width: int, height: int) -> str:
    """The name of the 3 x 3 grid cell that holds the square's centre."""
    cx, cy = (square[0] + square[2]) / 2, (square[1] + square[3]) / 2
    col = min(int(cx * 3 / width), 2)
    row = min(int(cy * 3 / height), 2)
    return GRID_NAMES[row * 3 + col]


def side_limits(width: int, height: int, min_side: int = 28, max_side: int = 182) -> tuple[float, float]:
    """The limits, stated in pixels at 224 px, for an image of this size (scaled by the short side)."""
    scale = min(width, height) / REFERENCE_SIZE
    return min_side * scale, max_side * scale


def object_regions(
    objects: list[tuple[str, Box]],
    width: int,
    height: int,
    limits: tuple[float, float],
    threshold: float = 0.8,
) -> tuple[list[Region], list[tuple[int, str]]]:
    """The image's regions from its (label, box) objects, and the dropped ones as (box index, reason)."""
    kept: list[Region] = []
    dropped: list[tuple[int, str]] = []
    seen: set[tuple[str, ...]] = set()
    for i, (label, box) in enumerate(objects):
        square = square_around(box, width, height)
        side = square[2] - square[0]
        if not limits[0] <= side <= limits[1]:
            reason = "too small" if side < limits[0] else "too large"
            dropped.append((i, f"region {reason}: side {side} px outside [{limits[0]:.0f}, {limits[1]:.0f}]"))
            continue
        merged = [other for j, (other, b) in enumerate(objects) if j != i and ioa(square, b) >= threshold]
        labels = (label, *merged)
        key = tuple(sorted(labels))
        if key in seen:
            dropped.append((i, f"duplicate region: labels {list(key)} already cover a region"))
            continue
        seen.add(key)
        kept.append(Region(square, labels, grid_cell(square, width, height), i))
    return kept, dropped
