"""Classical image-quality estimates (seed 004 Table 1's blur and noise), for the SCALE pipeline's
unimodal stage where no served image-quality model is configured: they run anywhere, with numpy.

- Sharpness: the variance of the Laplacian of the grey image (Pech-Pacheco et al. 2000); blur removes
  high frequencies, so a blurred image has a low variance.
- Noise: Immerkaer's fast estimate of the standard deviation of additive noise (1996): the image
  convolved with a mask that cancels smooth structure up to second order, mean absolute response.

`scores_1_to_5` turns raw values into the paper's 1-5 scale by their rank in the pool (quintiles),
so the scores mean the same thing whatever the images' resolution or content.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image

_LAPLACIAN = np.array([[0, 1, 0], [1, -4, 1], [0, 1, 0]], dtype=np.float64)
_NOISE = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)


def grey(image: Image.Image) -> np.ndarray:
    """Luma in [0, 255] as float64 [H, W]."""
    return np.asarray(image.convert("L"), dtype=np.float64)


def _convolve3(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """'Valid' 3x3 convolution (the kernels here are symmetric, so correlation is the same)."""
    h, w = x.shape
    out = np.zeros((h - 2, w - 2))
    for dy in range(3):
        for dx in range(3):
            out += k[dy, dx] * x[dy : dy + h - 2, dx : dx + w - 2]
    return out


def sharpness(image: Image.Image) -> float:
    """Variance of the Laplacian: higher is sharper."""
    g = grey(image)
    if min(g.shape) < 3:
        raise ValueError(f"an image of {g.shape[1]}x{g.shape[0]} px is too small to measure (needs 3x3)")
    return float(_convolve3(g, _LAPLACIAN).var())


def noise_sigma(image: Image.Image) -> float:
    """Immerkaer's estimate of the noise standard deviation, in grey levels: higher is noisier."""
    g = grey(image)
    if min(g.shape) < 3:
        raise ValueError(f"an image of {g.shape[1]}x{g.shape[0]} px is too small to measure (needs 3x3)")
    h, w = g.shape
    return float(math.sqrt(math.pi / 2) * np.abs(_convolve3(g, _NOISE)).sum() / (6 * (w - 2) * (h - 2)))


def scores_1_to_5(values: list[float], higher_is_better: bool = True) -> list[int]:
    """Quintile of each value in the pool, as 1 (worst fifth) .. 5 (best fifth); equal values share
    a score (the lowest rank of their run decides)."""
    order = np.asarray(values if higher_is_better else [-v for v in values], dtype=np.float64)
    n = len(order)
    if n == 0:
        return []
    ranks = np.searchsorted(np.sort(order), order, side="left")  # ties: the first of their run
    return [int(1 + min(4, r * 5 // n)) for r in ranks]
