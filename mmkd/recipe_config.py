"""`recipe.*`: a data mixture or a curriculum of stages, and the instruction stage that may end it
(part of the run config, mmkd/config.py, which re-exports these names)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from mmkd.errors import ConfigError
from mmkd.mmgic_template import PARTS

WEIGHT_UNITS = ("samples", "tokens")  # what a mixture weight is a fraction of (mmkd.loader.MixtureSampler)
SFT_STAGE = "sft"  # the instruction stage recipe.sft_fraction adds at the end of a run
SFT_KINDS = ("vqa", "other", "caption")  # sample kinds whose templates supervise the answers alone


@dataclass
class StageConfig:
    """One stage of a curriculum: its own mixture for a fraction of the training budget."""

    name: str = ""
    fraction: float = 0.0
    mixture: dict[str, float] = field(default_factory=dict)


def _check_mixture(mixture: dict[str, float], key: str, recipe: str) -> dict[str, float]:
    for k, v in mixture.items():
        if v < 0:
            raise ConfigError(f"{key}.{k}={v}: weights must be >= 0")
    active = {k: v for k, v in mixture.items() if v > 0}
    total = sum(active.values())
    if not active:
        raise ConfigError(
            f"recipe {recipe!r}: {key} has no source with a weight; give each dataset one: "
            f"+{key}.NAME=WEIGHT (+data.sources.NAME=DIR for a dataset of your own)"
        )
    if not math.isclose(total, 1.0, abs_tol=1e-6):
        raise ConfigError(f"recipe {recipe!r}: {key} weights sum to {total:.4f}; they must sum to 1")
    return active


@dataclass
class RecipeConfig:
    """A data mixture, or a curriculum of stages (`stages`; `->` in seed 003 Table 2), each a mixture.

    Weights are fractions of training *samples* drawn from each source (`weight_unit: samples`, seed
    000's unit), or of training *tokens*, image tokens counted as the model sees them
    (`weight_unit: tokens`), so a source of long samples takes no more compute than its weight says.
    """

    name: str = "baseline"
    description: str = ""
    weight_unit: str = "samples"
    mixture: dict[str, float] = field(default_factory=dict)
    stages: list[StageConfig] = field(default_factory=list)
    # Which annotations of the MMGIC documents the models read (seed 003 Table 1): c captions, l labels,
    # d label descriptions, r object regions.
    mmgic_parts: str = "cldr"
    # How the discrete model's text-to-image prompt reads when eval.image_prompt is empty: as the
    # recipe's own text-first documents read before their image. "mmgic" (title, caption, "Image:")
    # or "ic" (no title; mmkd/mmgic_template.py renders both), a text like eval.image_prompt's, or
    # "" for <bos> text [IMG] as caption samples read.
    image_prompt: str = ""
    # An instruction-tuning stage that ends the run (seed 002 Table 5 evaluates after SFT): this
    # fraction of the budget on data whose templates supervise the answers alone (Q/A, captions); the
    # stages before it keep their proportions of the rest. 0: no SFT stage. protocol=instruct (the
    # default) sets 0.2; `instruct` is the world's instruction data (docs/protocol.md).
    sft_fraction: float = 0.0
    sft_mixture: dict[str, float] = field(default_factory=lambda: {"instruct": 1.0})

    def active(self) -> dict[str, float]:
        """Sources with a positive weight (a child recipe removes a parent's source with weight 0)."""
        return {k: v for k, v in self.mixture.items() if v > 0}

    def plan(self) -> list[StageConfig]:
        """The stages in order; a plain mixture is one stage over the whole budget; an SFT stage last."""
        if not self.stages:
            stages = [StageConfig("all", 1.0, self.active())]
        else:
            stages = [
                StageConfig(s.name, s.fraction, {k: v for k, v in s.mixture.items() if v > 0})
                for s in self.stages
            ]
        if not self.sft_fraction:
            return stages
        rest = 1.0 - self.sft_fraction
        sft = StageConfig(SFT_STAGE, self.sft_fraction, {k: v for k, v in self.sft_mixture.items() if v > 0})
        return [StageConfig(s.name, s.fraction * rest, s.mixture) for s in stages] + [sft]

    def sources(self) -> list[str]:
        """Every source some stage draws from."""
        return sorted({k for stage in self.plan() for k in stage.mixture})

    def validate(self) -> RecipeConfig:
        if self.mmgic_parts not in PARTS:
            raise ConfigError(f"recipe.mmgic_parts={self.mmgic_parts!r}: must be one of {list(PARTS)}")
        if self.weight_unit not in WEIGHT_UNITS:
            raise ConfigError(f"recipe.weight_unit={self.weight_unit!r}: must be one of {list(WEIGHT_UNITS)}")
        if not 0.0 <= self.sft_fraction < 1.0:
            raise ConfigError(f"recipe.sft_fraction={self.sft_fraction}: must be in [0, 1) (0: no SFT stage)")
        if self.sft_fraction:
            _check_mixture(self.sft_mixture, "recipe.sft_mixture", self.name)
            if SFT_STAGE in [s.name for s in self.stages]:
                raise ConfigError(
                    f"recipe.stages: {SFT_STAGE!r} is the name of the stage recipe.sft_fraction adds"
                )
        if not self.stages:
            _check_mixture(self.mixture, "recipe.mixture", self.name)
            return self
        if self.active():
            raise ConfigError(
                f"recipe {self.name!r} has stages and a recipe.mixture; set the mixture's weights to 0 "
                "(or do not inherit one) so each stage states its own"
            )
        names = [s.name for s in self.stages]
        if not all(names) or len(set(names)) != len(names):
            raise ConfigError(f"recipe.stages names must be unique and non-empty, got {names}")
        for i, s in enumerate(self.stages):
            if s.fraction <= 0:
                raise ConfigError(f"recipe.stages[{i}].fraction={s.fraction}: must be > 0")
            _check_mixture(s.mixture, f"recipe.stages[{i}].mixture", self.name)
        total = sum(s.fraction for s in self.stages)
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise ConfigError(
                f"recipe {self.name!r}: recipe.stages fractions sum to {total:.4f}; they must sum to 1"
            )
        return self
