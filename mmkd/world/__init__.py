"""The knowledge world: procedural scenes with exact scene graphs, their language, and benchmarks.

Everything is a pure function of (WorldConfig, split, index), so the same seed gives the same images,
captions, answers and benchmark items on every machine. See docs/world.md.
"""

from mmkd.world.render import render
from mmkd.world.scene import Scene, SceneObject, WorldConfig, sample_scene

__all__ = ["Scene", "SceneObject", "WorldConfig", "render", "sample_scene"]
