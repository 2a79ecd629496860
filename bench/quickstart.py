"""The README main job's config (recipe=baseline, model=tiny, data=world, train=quickstart) for the
benchmark scripts, read from recipes/ as Hydra composes it (not a benchmark itself)."""

from __future__ import annotations

from pathlib import Path

from mmkd.config import DataConfig, RecipeConfig, RunConfig, TrainConfig, load_group
from mmkd.model.config import ModelConfig

RECIPES = Path(__file__).resolve().parents[1] / "recipes"


def quickstart_config() -> RunConfig:
    return RunConfig(
        recipe=load_group(RecipeConfig, RECIPES / "recipe/baseline.yaml"),
        model=load_group(ModelConfig, RECIPES / "model/tiny.yaml"),
        data=load_group(DataConfig, RECIPES / "data/world.yaml"),
        train=load_group(TrainConfig, RECIPES / "train/quickstart.yaml"),
    ).validate()
