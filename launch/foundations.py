"""Build the world foundation models ahead of training (runs with `model.init=world` build them on
first need): a SigLIP vision tower and a Llama decoder of the model's shape, trained once per world;
for a discrete model, its Llama and the world visual tokenizer of its shape.

    python launch/foundations.py                     # the default model's (tiny): about 6 minutes on 2 cores
    python launch/foundations.py model=micro         # another shape gets foundations of its own
    python launch/foundations.py model=discrete_tiny # the visual tokenizer too (~4 minutes more)
    python launch/foundations.py foundations.text_steps=2000   # other settings: a new foundation beside

A finished foundation is not trained again; its scores are printed as a table (docs/foundations.md
holds the default model's, from the records in docs/results/foundations/). Each lies
in `<world>/foundations/<part>-<hash>/model/`, a Hugging Face directory that transformers loads as
SiglipModel / LlamaForCausalLM.
"""

from __future__ import annotations

import json
import sys

import hydra
from omegaconf import DictConfig

from mmkd.config import to_run_config
from mmkd.data_builders.sources import prepare_world
from mmkd.distributed import local_device
from mmkd.errors import reported
from mmkd.foundations.report import table
from mmkd.foundations.store import VISUAL_TOKENIZER, parts, prepare_foundations
from mmkd.launch._overrides import check_overrides
from mmkd.tokenizer import Tokenizer


@hydra.main(config_path="pkg://mmkd.recipes", config_name="tool", version_base=None)
def _main(dcfg: DictConfig) -> None:
    with reported():
        cfg = to_run_config(dcfg)
        root = prepare_world(cfg.data, cfg.model.patch_size)
        tokenizer = Tokenizer.load(root / "tokenizer.json")
        wanted = parts(cfg.model)
        if cfg.model.family == "discrete" and not cfg.model.visual_tokenizer:
            wanted.insert(0, VISUAL_TOKENIZER)
        found = prepare_foundations(
            cfg.model, cfg.foundations, cfg.data.world, root, tokenizer, local_device(), wanted
        )
    records = {
        part: json.loads((path.parent / "foundation.json").read_text()) for part, path in found.items()
    }
    print(table(records))
    for part, path in found.items():
        print(f"{part}: {path}")


def main() -> None:
    """The command line's overrides checked in one line each, then Hydra composes and runs them (the
    console script `mmkd-foundations` calls this)."""
    with reported():
        check_overrides(sys.argv[1:])
    _main()


if __name__ == "__main__":
    main()
