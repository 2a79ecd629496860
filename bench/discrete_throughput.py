"""Training throughput of the discrete model against the dense one, same mixture, same decoder size.

    python bench/discrete_throughput.py      # first use: the world (~1 min) and its tokenizer (~4 min)
    python bench/discrete_throughput.py --data-root /path/to/data   # a world already built there
    python bench/discrete_throughput.py --json bench/results/discrete_throughput.json   # RESULTS.md's source

Both run the trainer's own step (`accumulate_gradients` with each model's objective, Adam) on the
quickstart recipe (baseline mixture, micro-batch 32) in the same process, taking turns so that the
machine's load falls on both alike. Prints samples/s and
tokens/s (non-padding positions, images included as the model sees them: 9 patch tokens for the
dense model, 146 ids for the discrete one) and the discrete/dense ratios. The dense model also runs
its ViT; the discrete one reads pre-tokenised ids but has 16x longer images and a 2x wider head.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path

import torch
from _record import write_record
from quickstart import RECIPES, quickstart_config

from mmkd.config import RunConfig, load_group, micro_batch_for
from mmkd.data_builders.sources import prepare_world
from mmkd.data_builders.visual_ids import discrete_sources
from mmkd.engines.base import Engine
from mmkd.foundations.store import VISUAL_TOKENIZER, prepare_foundations
from mmkd.loader import MixtureDataset
from mmkd.model.config import ModelConfig
from mmkd.objective import objective_for
from mmkd.tokenizer import Tokenizer
from mmkd.trainer import accumulate_gradients, build_model, templates_for


class Trainee:
    """One model with its optimizer and a fixed list of batches, stepped a block at a time."""

    def __init__(self, cfg: RunConfig, sources: dict[str, Path], tok: Tokenizer, steps: int) -> None:
        micro = micro_batch_for(cfg.train, 1)
        model = build_model(cfg, tok)  # sets model.vocab_size, which the templates read
        ds = MixtureDataset(
            sources, cfg.recipe.active(), templates_for(cfg, tok), 0, micro, cfg.model.image_size
        )
        it = iter(ds)
        self.batches = [next(it) for _ in range(steps)]
        self.engine = Engine(
            model, torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-6)
        )
        self.objective = objective_for(cfg.model)
        self.micro, self.pad_id = micro, tok.pad_id

    def run(self, batches: list[dict]) -> float:
        """Seconds for one optimizer step per batch."""
        t0 = time.perf_counter()
        for b in batches:
            accumulate_gradients(self.engine, [b], objective=self.objective)
            self.engine.step(1.0)
        return time.perf_counter() - t0

    def figures(self, block: list[dict], seconds: float) -> dict[str, float]:
        tokens = sum(int((b["input_ids"] != self.pad_id).sum()) for b in block)
        return {
            "samples_per_s": len(block) * self.micro / seconds,
            "tokens_per_s": tokens / seconds,
            "tokens_per_sample": tokens / len(block) / self.micro,
        }


def measure(models: dict[str, Trainee], rounds: int, block: int) -> dict[str, dict[str, float]]:
    """The models take turns, `block` steps each per round, so a change in the machine's load falls on
    both alike; each figure is the median over rounds."""
    for m in models.values():  # warm-up
        m.run(m.batches[:2])
    per_round: dict[str, list[dict[str, float]]] = {name: [] for name in models}
    for r in range(rounds):
        for name, m in models.items():
            batches = m.batches[2 + r * block : 2 + (r + 1) * block]
            per_round[name].append(m.figures(batches, m.run(batches)))
    return {
        name: {k: statistics.median(f[k] for f in figs) for k in figs[0]} for name, figs in per_round.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--block", type=int, default=4, help="steps per model per round")
    parser.add_argument("--data-root", default=None, help="where the world is (default: recipes' data.root)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    dense = quickstart_config()
    if args.data_root:
        dense.data.root = args.data_root
    discrete = copy.deepcopy(dense)
    discrete.model = load_group(ModelConfig, RECIPES / "model/discrete_tiny.yaml")
    root = prepare_world(dense.data, dense.model.patch_size)
    tok = Tokenizer.load(root / "tokenizer.json")
    dirs = {k: root / k for k in dense.recipe.active()}
    found = prepare_foundations(
        discrete.model,
        discrete.foundations,
        dense.data.world,
        root,
        tok,
        torch.device("cpu"),
        [VISUAL_TOKENIZER],
    )
    tokenizer_dir = found[VISUAL_TOKENIZER]
    discrete.model.visual_tokenizer = str(tokenizer_dir)
    ids = discrete_sources(dirs, tokenizer_dir, Path(dense.data.root), discrete.build)
    steps = 2 + args.rounds * args.block
    trainees = {"dense": Trainee(dense, dirs, tok, steps), "discrete": Trainee(discrete, ids, tok, steps)}
    results = measure(trainees, args.rounds, args.block)
    print(
        f"tiny decoder, recipe=baseline, micro_batch={micro_batch_for(dense.train, 1)}, "
        f"threads={args.threads}, median of {args.rounds} alternating rounds of {args.block} steps"
    )
    print(f"{'':20}{'dense':>10}{'discrete':>10}{'ratio':>8}")
    for key in results["dense"]:
        d, v = results["dense"][key], results["discrete"][key]
        print(f"{key:20}{d:10.0f}{v:10.0f}{v / d:8.2f}")
    if args.json:
        shape = {
            k: getattr(discrete.model, k) for k in ("layers", "codebook_size", "visual_grid", "max_seq_len")
        }
        write_record(args.json, {"command": "python bench/discrete_throughput.py", "rounds": args.rounds,
                                 "block": args.block, "threads": args.threads, "discrete_tiny": shape,
                                 "results": results})  # fmt: skip


if __name__ == "__main__":
    main()
