"""Trainer throughput as a ratio to a bare forward/backward/step loop over the same pre-built batches.

    python bench/trainer_overhead.py                  # tiny model, recipe=baseline, 300 steps
    python bench/trainer_overhead.py --steps 600 --data-root data

The bare loop trains a fresh model on batches built before timing starts (no data loading, no
logging, no checkpoints). The trainer runs the same config end to end (data streamed by a loader
worker, metrics, a checkpoint every 100 steps). Both are timed after the same warm-up steps; the
trainer's figure comes from its own metrics.jsonl. Target: ratio >= 0.97.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from itertools import islice
from pathlib import Path

import torch
from omegaconf import OmegaConf

from mmkd.config import micro_batch_for, to_run_config
from mmkd.data_builders.sources import prepare_world, source_dirs
from mmkd.distributed import DistInfo
from mmkd.engines import Engine
from mmkd.loader import MixtureDataset
from mmkd.templates import Templates
from mmkd.tokenizer import Tokenizer
from mmkd.trainer import accumulate_gradients, build_model, train

REPO = Path(__file__).resolve().parents[1]
WARMUP = 20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--data-root", default="data")
    args = ap.parse_args()
    load = lambda group, name: OmegaConf.load(REPO / "recipes" / group / f"{name}.yaml")  # noqa: E731
    with tempfile.TemporaryDirectory() as run_dir:
        train_cfg = OmegaConf.merge(load("train", "quickstart"), {"log_every": 10, "checkpoint_every": 100})
        train_cfg.budget_samples = args.steps * train_cfg.global_batch
        cfg = to_run_config(
            {
                "run_dir": run_dir,
                "recipe": load("recipe", "baseline"),
                "model": load("model", "tiny"),
                "data": OmegaConf.merge(load("data", "world"), {"root": args.data_root}),
                "train": train_cfg,
                "eval": {"after_train": False},
            }
        )
        root = prepare_world(cfg.data, cfg.model.patch_size)
        tok = Tokenizer.load(root / "tokenizer.json")
        dirs = source_dirs(sorted(cfg.recipe.active()), cfg, root)

        # Bare loop over pre-built batches.
        templates = Templates(tok, cfg.model.image_tokens, cfg.model.max_seq_len)
        t = cfg.train
        data = MixtureDataset(
            dirs, cfg.recipe.active(), templates, cfg.seed, micro_batch_for(t, 1), cfg.model.image_size
        )
        batches = list(islice(iter(data), args.steps))
        model = build_model(cfg, tok)
        opt = torch.optim.Adam(model.parameters(), lr=t.lr, betas=(t.beta1, t.beta2), eps=t.eps)
        engine = Engine(model, opt)
        for i, b in enumerate(batches):
            if i == WARMUP:
                t0 = time.perf_counter()
            accumulate_gradients(engine, [b])
            engine.step(t.grad_clip)
        bare = (args.steps - WARMUP) * t.global_batch / (time.perf_counter() - t0)

        # The trainer, same config, end to end.
        train(cfg, dirs, tok, Path(run_dir), DistInfo())
        records = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
        timed = [r for r in records if r["step"] > WARMUP]
        trainer = sum(r["samples_per_s"] for r in timed) / len(timed)
    threads = torch.get_num_threads()
    print(f"tiny model, recipe=baseline, {args.steps} steps of {t.global_batch} samples, {threads} threads")
    print("| loop | samples/s |\n| --- | ---: |")
    print(f"| bare forward/backward/step on pre-built batches | {bare:.0f} |")
    print(f"| trainer (loader worker, metrics, checkpoints) | {trainer:.0f} |")
    print(f"ratio trainer / bare: {trainer / bare:.3f}")


if __name__ == "__main__":
    main()
