"""The knowledge world: procedural scenes with exact scene graphs, their language, and benchmarks.

Everything is a pure function of (WorldConfig, split, index), so the same seed gives the same images,
captions, answers and benchmark items on every machine. See docs/world.md.
"""

from mmkd.world.scene import WorldConfig, Scene, SceneObject, sample_scene
from mmkd.world.render import render

__all__ = ["Scene", "SceneObject", "WorldConfig", "render", "sample_scene"]
