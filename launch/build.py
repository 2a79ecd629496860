"""Build the knowledge world's datasets, tokenizer and benchmarks without training.

    python launch/build.py                       # everything the world provides, under data/
    python launch/build.py +detection=true       # also the COCO-style detection annotations

Training builds what it needs on first use; this is for building ahead (e.g. once, before a sweep).
"""

from __future__ import annotations

import sys

import hydra
from mmkd.data_builders.sources import build_detection, prepare_world
from omegaconf import DictConfig, OmegaConf

from mmkd.config import ConfigError, to_run_config


@hydra.main(config_path="../recipes", config_name="config", version_base=None)
def main(dcfg: DictConfig) -> None:
    detection = bool(OmegaConf.select(dcfg, "detection", default=False))
    dcfg = OmegaConf.masked_copy(dcfg, [k for k in dcfg if k != "detection"])
    try:
        cfg = to_run_config(dcfg)
    except ConfigError as e:
        sys.exit(f"config error: {e}")
    root = prepare_world(cfg.data, cfg.model.patch_size)
    print(f"world data: {root}")
    if detection:
        print(f"detection annotations: {build_detection(cfg.data)}")


if __name__ == "__main__":
    main()
