"""Training and loader throughput of the tiny config on the knowledge world.

    python bench/throughput.py            # the default world under data/ (built on first use)
    python bench/throughput.py --json bench/results/throughput.json

Prints loader samples/s and training samples/s and tokens/s, each for length-bucketed batches
(what the trainer uses) and for plain padded batches (bucket=1), the two taking turns for `--rounds`
rounds in one run, medians over rounds, and the ratio between them. Tokens are non-padding tokens,
images included. `--json PATH` also writes the figures (bench/RESULTS.md's source).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from _record import write_record
from quickstart import quickstart_config

from mmkd.config import RunConfig, micro_batch_for
from mmkd.data_builders.sources import prepare_world
from mmkd.loader import MixtureDataset
from mmkd.templates import Templates
from mmkd.tokenizer import Tokenizer
from mmkd.trainer import build_model


def measure(cfg: RunConfig, root, tok: Tokenizer, bucket: int, steps: int) -> dict[str, float]:
    weights = cfg.recipe.active()
    templates = Templates(tok, cfg.model.image_tokens, cfg.model.max_seq_len)
    ds = MixtureDataset(
        {k: root / k for k in weights},
        weights,
        templates,
        0,
        micro_batch_for(cfg.train, 1),
        cfg.model.image_size,
        bucket=bucket,
    )
    it = iter(ds)
    next(it)
    t0 = time.perf_counter()
    batches = [next(it) for _ in range(steps)]
    loader = steps * micro_batch_for(cfg.train, 1) / (time.perf_counter() - t0)
    model = build_model(cfg, tok)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-6)

    def step(b):
        loss, n = model(b["input_ids"], b["pixels"], labels=b["labels"])
        (loss / n).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    for b in batches[:3]:  # warm-up
        step(b)
    t0 = time.perf_counter()
    for b in batches:
        step(b)
    dt = time.perf_counter() - t0
    tokens = sum(int((b["input_ids"] != tok.pad_id).sum()) for b in batches)
    return {
        "loader_samples_per_s": loader,
        "train_samples_per_s": steps * micro_batch_for(cfg.train, 1) / dt,
        "train_tokens_per_s": tokens / dt,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = quickstart_config()
    data, model = cfg.data, cfg.model
    root = prepare_world(data, model.patch_size)
    tok = Tokenizer.load(root / "tokenizer.json")
    rounds = [
        {"plain": measure(cfg, root, tok, bucket=1, steps=args.steps),
         "bucketed": measure(cfg, root, tok, bucket=8, steps=args.steps)}
        for _ in range(args.rounds)
    ]  # fmt: skip
    median = {
        way: {key: statistics.median(r[way][key] for r in rounds) for key in rounds[0][way]}
        for way in ("bucketed", "plain")
    }
    bucketed, plain = median["bucketed"], median["plain"]
    micro = micro_batch_for(cfg.train, 1)
    setting = f"micro_batch={micro}, threads={args.threads}, medians of {args.rounds} rounds"
    print(f"tiny model, recipe=baseline, {setting}")
    print(f"{'':24}{'bucketed':>12}{'plain':>12}{'ratio':>8}")
    for key in bucketed:
        print(f"{key:24}{bucketed[key]:12.0f}{plain[key]:12.0f}{bucketed[key] / plain[key]:8.2f}")
    if args.json:
        write_record(args.json, {"command": "python bench/throughput.py", "steps": args.steps,
                                 "threads": args.threads, "rounds": rounds, "median": median})  # fmt: skip


if __name__ == "__main__":
    main()
