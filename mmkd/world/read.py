"""Read a rendered scene back from its pixels: the layout, the theme, and for object scenes which
object, in which colour and size, stands in each grid cell.

Generated images are scored against the scene their prompt describes (object, attribute and position
precision and recall, seed 003 E.2), and a visual tokenizer by how much of a scene survives its
reconstruction, so the reader must be exact on real renders (tested) and give its best guess on
blurred ones. Each occupied cell is matched against the renderer's own drawing of every kind at the
object's estimated box (`mmkd.world.render.draw_shape`), and the closest drawing wins; the colour is
the palette colour nearest the object's core pixels.
"""

from __future__ import annotations

from dataclasses import dataclass
from operator import attrgetter

import numpy as np
from PIL import Image, ImageDraw

from mmkd.world.render import SUPERSAMPLE, draw_shape, placard_rgb
from mmkd.world.scene import COLOURS, KINDS, THEMES, Scene

_PALETTE = np.array(list(COLOURS.values()), dtype=np.float32)
_BACKGROUNDS = np.array([bg for bg, _ in THEMES.values()], dtype=np.float32)
_PLACARDS = np.array([placard_rgb(c) for c in (None, *COLOURS)], dtype=np.float32)
_MARGIN = 3  # output pixels around a cell drawn with it: LANCZOS reaches 3 pixels at a 4x downsample
_SHIFTS = (-1, 0, 1)  # pixel offsets tried around the estimated box


@dataclass(frozen=True)
class SeenObject:
    kind: str
    colour: str
    size: str
    cell: int


@dataclass(frozen=True)
class SeenScene:
    layout: str  # objects | sign | chart
    theme: str
    objects: tuple[SeenObject, ...] = ()


def truth(scene: Scene) -> SeenScene:
    """What a perfect reader sees in `scene` (objects in cell order)."""
    objects = tuple(
        sorted((SeenObject(o.kind, o.colour, o.size, o.cell) for o in scene.objects), key=attrgetter("cell"))
    )
    return SeenScene(scene.layout, scene.theme, objects)


def read_scene(image: Image.Image) -> SeenScene:
    """The scene a rendered (or generated) square image shows."""
    pixels = np.asarray(image.convert("RGB"), dtype=np.float32)
    size = pixels.shape[1]
    theme = _theme(pixels)
    background = np.array(THEMES[theme][0], dtype=np.float32)
    layout = _layout(pixels, background)
    if layout != "objects":
        return SeenScene(layout, theme)
    away = np.linalg.norm(pixels - background, axis=-1)  # each pixel's distance from the background
    objects = []
    for cell in range(9):
        seen = _read_cell(pixels, away, background, cell, size)
        if seen is not None:
            objects.append(seen)
    return SeenScene("objects", theme, tuple(objects))


def _theme(pixels: np.ndarray) -> str:
    """The theme whose background is nearest the image's most common colour."""
    colours, counts = np.unique(pixels.reshape(-1, 3).round(), axis=0, return_counts=True)
    common = colours[counts.argmax()]
    return list(THEMES)[int(np.linalg.norm(_BACKGROUNDS - common, axis=1).argmin())]


def _layout(pixels: np.ndarray, background: np.ndarray) -> str:
    """A sign is a placard across the middle, white or a pale tint (no background is within 30 of
    one); a chart has an axis line, darker than the background all the way across, near the bottom
    (objects leave gaps between them)."""
    size = pixels.shape[0]
    band = pixels[int(size * 0.4) : int(size * 0.6), int(size * 0.15) : int(size * 0.85)]
    if np.linalg.norm(_PLACARDS - np.median(band.reshape(-1, 3), axis=0), axis=-1).min() < 10:
        return "sign"  # the band's most common colour is a placard's, around the word's strokes
    darker = pixels.mean(axis=-1) < background.mean() - 40
    rows = darker[int(size * 0.8) : int(size * 0.97), int(size * 0.12) : int(size * 0.88)].mean(axis=1)
    return "chart" if rows.size and rows.max() >= 0.98 else "objects"


def _read_cell(
    pixels: np.ndarray, away: np.ndarray, background: np.ndarray, cell: int, size: int
) -> SeenObject | None:
    step = size / 3
    r0, c0 = round(cell // 3 * step), round(cell % 3 * step)
    r1, c1 = round((cell // 3 + 1) * step), round((cell % 3 + 1) * step)
    inner = away[r0 + 1 : r1 - 1, c0 + 1 : c1 - 1]  # a neighbour's anti-aliased edge stays out
    strong = inner > 60
    if strong.sum() < max(3, 0.02 * step * step):
        return None
    core = pixels[r0 + 1 : r1 - 1, c0 + 1 : c1 - 1][inner >= 0.7 * inner.max()]
    colour_index = int(np.linalg.norm(_PALETTE - core.mean(axis=0), axis=1).argmin())
    colour = list(COLOURS)[colour_index]
    reach = np.linalg.norm(_PALETTE[colour_index] - background)
    drawn = away[r0:r1, c0:c1] > 0.5 * reach
    rows, cols = np.nonzero(drawn)
    if rows.size == 0:
        return None
    width = cols.max() - cols.min() + 1
    size_name = "large" if width > 0.67 * step else "small"
    extent = round(step * (0.84 if size_name == "large" else 0.5))
    x0, y0 = c0 + int(cols.min()), r0 + int(rows.min())
    crop = pixels[r0:r1, c0:c1]
    best, kind = np.inf, KINDS[0]
    for candidate in KINDS:
        for dx in _SHIFTS:
            for dy in _SHIFTS:
                box = (x0 + dx, y0 + dy, x0 + dx + extent, y0 + dy + extent)
                drawing = _draw(candidate, COLOURS[colour], background, box, (r0, c0, r1, c1))
                error = float(((drawing - crop) ** 2).sum())
                if error < best:
                    best, kind = error, candidate
    return SeenObject(kind, colour, size_name, cell)


def _draw(
    kind: str, fill: tuple[int, int, int], background: np.ndarray, box: tuple, cell: tuple[int, int, int, int]
) -> np.ndarray:
    """The cell's pixels with one object drawn in `box` (image pixels), rendered as `render` renders:
    supersampled, then LANCZOS-downsampled, with a margin so the filter sees what it would."""
    r0, c0, r1, c1 = cell
    top, left = r0 - _MARGIN, c0 - _MARGIN
    h, w = r1 - r0 + 2 * _MARGIN, c1 - c0 + 2 * _MARGIN
    canvas = Image.new("RGB", (w * SUPERSAMPLE, h * SUPERSAMPLE), tuple(int(v) for v in background))
    x0, y0, x1, y1 = box
    shifted = [
        (x0 - left) * SUPERSAMPLE,
        (y0 - top) * SUPERSAMPLE,
        (x1 - left) * SUPERSAMPLE,
        (y1 - top) * SUPERSAMPLE,
    ]
    draw_shape(ImageDraw.Draw(canvas), kind, fill, shifted)
    small = np.asarray(canvas.resize((w, h), Image.Resampling.LANCZOS), dtype=np.float32)
    return small[_MARGIN : _MARGIN + r1 - r0, _MARGIN : _MARGIN + c1 - c0]
