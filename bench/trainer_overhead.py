"""Trainer throughput as a ratio to a bare forward/backward/step loop over the same model and config.

    python bench/trainer_overhead.py                          # tiny model, recipe=baseline, 3 rounds
    python bench/trainer_overhead.py --rounds 5 --steps 200 --json bench/results/trainer_overhead.json

The bare loop trains a fresh model on batches built before its timing starts (no data loading, no
logging, no checkpoints). The trainer runs the same config end to end (data streamed by its loader
worker, metrics, a checkpoint every 100 steps). They take turns, round after round, so the load
that other work puts on a shared machine falls on both alike; each round's ratio is reported and
their median is the figure. Both skip the same warm-up steps; the trainer's rate is time-weighted
over its metrics' windows (total samples / total seconds, not a mean of per-window rates).
Target (issue 40): >= 0.95.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from itertools import islice
from pathlib import Path

import torch
from _record import write_record
from omegaconf import OmegaConf

from mmkd.config import RunConfig, micro_batch_for, to_run_config
from mmkd.data_builders.sources import prepare_world, source_dirs
from mmkd.distributed import DistInfo
from mmkd.engines import Engine
from mmkd.loader import MixtureDataset
from mmkd.templates import Templates
from mmkd.tokenizer import Tokenizer
from mmkd.trainer import accumulate_gradients, build_model, train

REPO = Path(__file__).resolve().parents[1]
WARMUP = 20  # steps; a multiple of the trainer's log_every, so its windows split there


def config(run_dir: str, steps: int, data_root: str) -> RunConfig:
    load = lambda group, name: OmegaConf.load(REPO / "recipes" / group / f"{name}.yaml")  # noqa: E731
    train_cfg = OmegaConf.merge(load("train", "quickstart"), {"log_every": 10, "checkpoint_every": 100})
    train_cfg.budget_samples = steps * train_cfg.global_batch
    return to_run_config(
        {
            "run_dir": run_dir,
            "recipe": load("recipe", "baseline"),
            "model": load("model", "tiny"),
            "data": OmegaConf.merge(load("data", "world"), {"root": data_root}),
            "train": train_cfg,
            "eval": {"after_train": False},
        }
    )


def bare(cfg: RunConfig, tok: Tokenizer, batches: list[dict]) -> float:
    """Samples/s of forward, backward and the optimizer step alone, after the warm-up."""
    t = cfg.train
    model = build_model(cfg, tok)
    opt = torch.optim.Adam(model.parameters(), lr=t.lr, betas=(t.beta1, t.beta2), eps=t.eps)
    engine = Engine(model, opt)
    for i, b in enumerate(batches):
        if i == WARMUP:
            t0 = time.perf_counter()
        accumulate_gradients(engine, [b])
        engine.step(t.grad_clip)
    return (len(batches) - WARMUP) * t.global_batch / (time.perf_counter() - t0)


def trainer(cfg: RunConfig, tok: Tokenizer, dirs: dict[str, Path], run_dir: Path) -> float:
    """Samples/s of the whole trainer after the warm-up, from its own metrics' windows."""
    run_dir.mkdir()
    train(cfg, dirs, tok, run_dir, DistInfo())
    records = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    timed = [r for r in records if r["step"] > WARMUP]
    return sum(r["samples_per_s"] * r["window_s"] for r in timed) / sum(r["window_s"] for r in timed)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=200, help="steps of each loop in each round (> 20)")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--data-root", default="data")
    ap.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = ap.parse_args()
    if args.steps <= WARMUP:
        ap.error(f"--steps={args.steps}: must exceed the {WARMUP} warm-up steps")
    with tempfile.TemporaryDirectory() as tmp:
        cfg = config(str(Path(tmp) / "run"), args.steps, args.data_root)
        root = prepare_world(cfg.data, cfg.model.patch_size)
        tok = Tokenizer.load(root / "tokenizer.json")
        dirs = source_dirs(sorted(cfg.recipe.active()), cfg, root)
        templates = Templates(tok, cfg.model.image_tokens, cfg.model.max_seq_len)
        micro = micro_batch_for(cfg.train, 1)
        data = MixtureDataset(dirs, cfg.recipe.active(), templates, cfg.seed, micro, cfg.model.image_size)
        batches = list(islice(iter(data), args.steps))
        rounds = []
        for k in range(args.rounds):
            b = bare(cfg, tok, batches)
            run_dir = Path(tmp) / f"run{k}"
            cfg.run_dir = str(run_dir)
            t = trainer(cfg, tok, dirs, run_dir)
            rounds.append({"bare": b, "trainer": t, "ratio": t / b})
            print(f"round {k + 1}: bare {b:.0f} samples/s, trainer {t:.0f}, ratio {t / b:.3f}", flush=True)
    ratio = statistics.median(r["ratio"] for r in rounds)
    threads = torch.get_num_threads()
    print(f"tiny model, recipe=baseline, {args.steps} steps of {cfg.train.global_batch} samples per loop, "
          f"{args.rounds} alternating rounds, {threads} threads")  # fmt: skip
    print(f"ratio trainer / bare (median of rounds): {ratio:.3f}")
    if args.json:
        write_record(args.json, {"command": "python bench/trainer_overhead.py", "steps": args.steps,
                                 "warmup": WARMUP, "rounds": rounds, "ratio": ratio})  # fmt: skip


if __name__ == "__main__":
    main()
