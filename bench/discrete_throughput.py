"""Training throughput of the discrete model against the dense one, same mixture, same decoder size.

    python bench/discrete_throughput.py      # first use: the world (~1 min) and its tokenizer (~4 min)

Both run the trainer's own step (`accumulate_gradients` with each model's objective, Adam) on the
quickstart recipe (baseline mixture, micro-batch 32) in the same process. Prints samples/s and
tokens/s (non-padding positions, images included as the model sees them: 9 patch tokens for the
dense model, 146 ids for the discrete one) and the discrete/dense ratios. The dense model also runs
its ViT; the discrete one reads pre-tokenised ids but has 16x longer images and a 2x wider head.
"""

from __future__ import annotations

import argparse
import copy
import time
from pathlib import Path

import torch
from quickstart import RECIPES, quickstart_config

from mmkd.config import RunConfig, load_group, micro_batch_for
from mmkd.data_builders.sources import prepare_world
from mmkd.data_builders.visual_ids import discrete_sources
from mmkd.engines.base import Engine
from mmkd.loader import MixtureDataset
from mmkd.model.config import ModelConfig
from mmkd.objective import objective_for
from mmkd.pipeline import world_tokenizer_dir
from mmkd.tokenizer import Tokenizer
from mmkd.trainer import accumulate_gradients, build_model, templates_for
from mmkd.visual_tokenizer_training import prepare_world_tokenizer


def measure(cfg: RunConfig, sources: dict[str, Path], tok: Tokenizer, steps: int) -> dict[str, float]:
    micro = micro_batch_for(cfg.train, 1)
    weights = cfg.recipe.active()
    model = build_model(cfg, tok)  # sets model.vocab_size, which the templates read
    ds = MixtureDataset(sources, weights, templates_for(cfg, tok), 0, micro, cfg.model.image_size)
    it = iter(ds)
    batches = [next(it) for _ in range(steps + 3)]
    engine = Engine(model, torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-6))
    objective = objective_for(cfg.model)
    for b in batches[:3]:  # warm-up
        accumulate_gradients(engine, [b], objective=objective)
        engine.step(1.0)
    t0 = time.perf_counter()
    for b in batches[3:]:
        accumulate_gradients(engine, [b], objective=objective)
        engine.step(1.0)
    dt = time.perf_counter() - t0
    tokens = sum(int((b["input_ids"] != tok.pad_id).sum()) for b in batches[3:])
    return {
        "samples_per_s": steps * micro / dt,
        "tokens_per_s": tokens / dt,
        "tokens_per_sample": tokens / steps / micro,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dense = quickstart_config()
    discrete = copy.deepcopy(dense)
    discrete.model = load_group(ModelConfig, RECIPES / "model/discrete_tiny.yaml")
    root = prepare_world(dense.data, dense.model.patch_size)
    tok = Tokenizer.load(root / "tokenizer.json")
    dirs = {k: root / k for k in dense.recipe.active()}
    tokenizer_dir = prepare_world_tokenizer(
        discrete.model, dense.data.world, world_tokenizer_dir(discrete, root)
    )
    discrete.model.visual_tokenizer = str(tokenizer_dir)
    ids = discrete_sources(dirs, tokenizer_dir, Path(dense.data.root), discrete.build)
    results = {
        "dense": measure(dense, dirs, tok, args.steps),
        "discrete": measure(discrete, ids, tok, args.steps),
    }
    print(
        f"tiny decoder, recipe=baseline, micro_batch={micro_batch_for(dense.train, 1)}, "
        f"threads={args.threads}"
    )
    print(f"{'':20}{'dense':>10}{'discrete':>10}{'ratio':>8}")
    for key in results["dense"]:
        d, v = results["dense"][key], results["discrete"][key]
        print(f"{key:20}{d:10.0f}{v:10.0f}{v / d:8.2f}")


if __name__ == "__main__":
    main()
