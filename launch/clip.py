"""Train and evaluate a world CLIP on a recipe's caption sources (seed 002 Table 1, Fig. 8).

    python launch/clip.py recipe=caption_alttext                # AltText only
    python launch/clip.py recipe=caption_ratio_50_50 seed=1     # a point of the Fig. 8 sweep
    python launch/clip.py recipe=caption_ssc clip.steps=3000 +out=runs/clip/ssc

The CLIP trains on the recipe's caption sources (samples of kind `caption`) at their relative
weights, building any that are missing; the rest of the mixture is ignored. Writes `<out>/model` (a
Hugging Face CLIP: `build.caption_scorer=clip:<out>/model` scores captions with it) and
`<out>/metrics.json`: zero-shot accuracy and retrieval recall on held-out world compositions. The
default `+out` is runs/clip/<recipe>/seed<seed>; a finished one is not trained again, unless an
older version of mmkd/world_clip.py trained it (the scorers refuse such a CLIP).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from mmkd.config import ConfigError, to_run_config
from mmkd.data_builders.sources import Sources, check_sources, prepare_world
from mmkd.distributed import local_device
from mmkd.errors import reported
from mmkd.launch._overrides import check_overrides
from mmkd.shards import open_dataset
from mmkd.tokenizer import Tokenizer
from mmkd.world_clip import train_clip, trained


@hydra.main(config_path="pkg://mmkd.recipes", config_name="tool", version_base=None)
def _main(dcfg: DictConfig) -> None:
    out = OmegaConf.select(dcfg, "out", default=None)
    dcfg = OmegaConf.masked_copy(dcfg, [k for k in dcfg if k != "out"])
    with reported():
        cfg = to_run_config(dcfg)
        out = Path(out or f"runs/clip/{cfg.recipe.name}/seed{cfg.seed}")
        if trained(out) is not None:
            print(f"{out} is trained already:\n{(out / 'metrics.json').read_text()}")
            return
        if (out / "metrics.json").exists():
            print(f"{out} holds a CLIP of an older version of mmkd/world_clip.py: training it again")
        names = cfg.recipe.sources()
        check_sources(cfg.recipe.name, names, cfg)
        root = prepare_world(cfg.data, cfg.model.patch_size)
        sources = Sources(cfg, root)
        dirs = {n: sources.dir(n) for n in names}
        captions = {
            n: d for n, d in dirs.items() if set(open_dataset(d).manifest.get("kinds", {})) == {"caption"}
        }
        if not captions:
            raise ConfigError(f"recipe {cfg.recipe.name!r} has no caption source to train a CLIP on: {names}")
        weights = {n: w for n, w in cfg.recipe.active().items() if n in captions}
        if not weights:
            raise ConfigError(
                f"recipe {cfg.recipe.name!r}: a CLIP trains on one mixture, not a curriculum's stages"
            )
        tokenizer_dir = cfg.tokenizer_dir()
        tokenizer = (
            Tokenizer.from_pretrained(tokenizer_dir)
            if tokenizer_dir
            else Tokenizer.load(root / "tokenizer.json")
        )
        metrics = train_clip(
            cfg.clip, weights, captions, tokenizer, cfg.data.world, out, cfg.seed, local_device()
        )
    print(json.dumps(metrics, indent=2))
    print(f"CLIP: {out / 'model'}")


def main() -> None:
    """The command line's overrides checked in one line each, then Hydra composes and runs them (the
    console script `mmkd-clip` calls this)."""
    with reported():
        check_overrides(sys.argv[1:])
    _main()


if __name__ == "__main__":
    main()
