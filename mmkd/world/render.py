"""Draw a `Scene` into a PIL image.

Shapes are drawn at 4x resolution and downsampled, which gives anti-aliased edges at tiny sizes
(48-64 px) without any font or asset download. Each object kind has its own silhouette:
ball = filled disc, ring = hollow disc, box = square, tent = triangle, kite = diamond, star = 5 points.
"""

from __future__ import annotations

import math

from PIL import Image, ImageDraw, ImageFont

from mmkd.world.scene import COLOURS, THEMES, Scene, SceneObject

SUPERSAMPLE = 4


def _draw_object(draw: ImageDraw.ImageDraw, obj: SceneObject, size: int) -> None:
    draw_shape(draw, obj.kind, COLOURS[obj.colour], [v * SUPERSAMPLE for v in obj.box(size)])


def draw_shape(draw: ImageDraw.ImageDraw, kind: str, fill: tuple[int, int, int], box: list[float]) -> None:
    """One object's silhouette in `box` (x0, y0, x1, y1, in the drawing's own pixels)."""
    x0, y0, x1, y1 = box
    cx, cy, r = (x0 + x1) / 2, (y0 + y1) / 2, (x1 - x0) / 2
    if kind == "ball":
        draw.ellipse((x0, y0, x1, y1), fill=fill)
    elif kind == "ring":
        draw.ellipse((x0, y0, x1, y1), outline=fill, width=max(2, round(r * 0.38)))
    elif kind == "box":
        draw.rectangle((x0, y0, x1, y1), fill=fill)
    elif kind == "tent":
        draw.polygon([(cx, y0), (x1, y1), (x0, y1)], fill=fill)
    elif kind == "kite":
        draw.polygon([(cx, y0), (x1, cy), (cx, y1), (x0, cy)], fill=fill)
    elif kind == "star":
        pts = []
        for k in range(10):
            a = -math.pi / 2 + k * math.pi / 5
            rad = r if k % 2 == 0 else r * 0.45
            pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
        draw.polygon(pts, fill=fill)
    else:
        raise ValueError(f"cannot draw object kind {kind!r}")


def placard_rgb(colour: str | None) -> tuple[int, int, int]:
    """A sign's placard: a pale tint of its colour (white without one), so black text stays legible."""
    if colour is None:
        return (255, 255, 255)
    return tuple(round(255 - 0.3 * (255 - c)) for c in COLOURS[colour])


def render(scene: Scene, size: int) -> Image.Image:
    """The RGB image of `scene` at `size` x `size` pixels."""
    big = size * SUPERSAMPLE
    image = Image.new("RGB", (big, big), THEMES[scene.theme][0])
    draw = ImageDraw.Draw(image)
    if scene.layout == "objects":
        for obj in scene.objects:
            _draw_object(draw, obj, size)
    elif scene.layout == "sign":
        assert scene.word is not None
        m = big * 0.08
        draw.rectangle(
            (m, big * 0.3, big - m, big * 0.7), fill=placard_rgb(scene.placard), outline=(60, 60, 60), width=4
        )
        font = ImageFont.load_default(size=big * 0.22)
        draw.text((big / 2, big / 2), scene.word, fill=(0, 0, 0), font=font, anchor="mm")
    elif scene.layout == "chart":
        n = len(scene.bars)
        left, right, bottom, top = big * 0.1, big * 0.9, big * 0.9, big * 0.1
        slot = (right - left) / n
        for i, (colour, value) in enumerate(scene.bars):
            h = (bottom - top) * value / 5
            x = left + i * slot
            draw.rectangle((x + slot * 0.15, bottom - h, x + slot * 0.85, bottom), fill=COLOURS[colour])
        draw.line((left, bottom, right, bottom), fill=(40, 40, 40), width=SUPERSAMPLE)
    else:
        raise ValueError(f"unknown scene layout {scene.layout!r}")
    return image.resize((size, size), Image.Resampling.LANCZOS)
