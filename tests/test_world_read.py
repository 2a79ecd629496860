"""The scene reader is exact on renders (it scores generated images and tokenizer reconstructions)."""

import numpy as np
import pytest
from PIL import Image, ImageFilter

from mmkd.world.read import SeenScene, read_scene, truth
from mmkd.world.render import render
from mmkd.world.scene import WorldConfig, sample_scene


@pytest.mark.parametrize("size", [48, pytest.param(64, marks=pytest.mark.slow)])  # 48: the default
def test_every_render_reads_back_exactly(size):
    cfg = WorldConfig(image_size=size)
    scenes = [sample_scene(cfg, split, i) for split in ("train", "bench-read") for i in range(100)]
    assert {s.layout for s in scenes} == {"objects", "sign", "chart"}
    wrong = [
        (truth(s), read_scene(render(s, size))) for s in scenes if read_scene(render(s, size)) != truth(s)
    ]
    assert not wrong, wrong[:3]


def test_blurred_and_noise_images_still_read():
    """A reconstruction's blur keeps most of the reading; noise reads as something, without failing."""
    cfg = WorldConfig()
    scenes = [sample_scene(cfg, "train", i, layout="objects") for i in range(60)]
    blurred = [read_scene(render(s, 48).filter(ImageFilter.GaussianBlur(0.6))) for s in scenes]
    objects = sum(len(s.objects) for s in scenes)
    kept = sum(len(set(b.objects) & set(truth(s).objects)) for b, s in zip(blurred, scenes, strict=True))
    assert kept / objects > 0.8
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 48, 3), dtype=np.uint8))
    assert isinstance(read_scene(noise), SeenScene)
