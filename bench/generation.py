"""Greedy generation with the KV cache against full recomputation, on the same prompts in one run.

    python bench/generation.py                       # tiny model, world captioning + OCR prompts
    python bench/generation.py --model dense_3b --layers 2 --device cuda   # on a GPU (bench/gpu_check.sh)
    python bench/generation.py --world smoke --data-root DIR   # train=smoke's small world, as built in DIR

The baseline is what mmkd did before the cache: each new token re-runs the whole left-padded sequence
and the vision tower. Prints tokens/s of both, their ratio, and whether both generated the same
tokens (they must: the cache changes the cost, not the answer).

    python bench/generation.py --batch 32 8 --new-tokens 40 --json bench/results/generation.json
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import torch
from _record import write_record
from omegaconf import OmegaConf

from mmkd.bench_item import load_benchmark
from mmkd.config import DataConfig, load_group
from mmkd.data_builders.sources import prepare_world
from mmkd.eval.inference import greedy, item_pixels
from mmkd.model import VLM
from mmkd.model.config import ModelConfig
from mmkd.templates import Templates
from mmkd.tokenizer import Tokenizer

REPO = Path(__file__).resolve().parents[1]


@torch.no_grad()
def recompute(model: VLM, prompts: list[list[int]], pixels, max_new: int, pad_id: int) -> list[list[int]]:
    """The baseline: the whole sequence (and its images) through the model for every new token."""
    device = next(model.parameters()).device
    length = max(map(len, prompts))
    ids = torch.tensor([[pad_id] * (length - len(p)) + p for p in prompts], device=device)
    mask = torch.tensor([[False] * (length - len(p)) + [True] * len(p) for p in prompts], device=device)
    for _ in range(min(max_new, model.cfg.max_seq_len - length)):
        logits = model(ids, pixels, attention_mask=mask)[:, -1]
        logits[:, model.image_token_id] = float("-inf")
        nxt = logits.argmax(-1)
        ids, mask = torch.cat([ids, nxt[:, None]], 1), torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    return ids[:, length:].tolist()


def timed(fn, device: torch.device) -> tuple[float, list]:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--layers", type=int, default=0, help="override the decoder depth (0: as named)")
    parser.add_argument("--batch", type=int, nargs="+", default=[32], help="batch sizes, measured in turn")
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="float32")
    worlds = "bench: 200 samples per source, 64 items per benchmark; smoke: train=smoke's small world"
    parser.add_argument("--world", default="bench", choices=["bench", "smoke"], help=worlds)
    parser.add_argument("--data-root", default=str(REPO / "data" / "bench"))
    args = parser.parse_args()
    device, dtype = torch.device(args.device), getattr(torch, args.dtype)
    data = load_group(DataConfig, REPO / "recipes" / "data" / "world.yaml")
    if args.world == "smoke":  # the world a train=smoke run builds: found built under the same root
        smoke = OmegaConf.load(REPO / "recipes" / "train" / "smoke.yaml").data
        data = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(data), smoke))
    else:
        data.sizes, data.bench_per_ability = {k: 200 for k in data.sizes}, 64
    data.root = args.data_root
    root = prepare_world(data)
    tok = Tokenizer.load(root / "tokenizer.json")
    cfg = load_group(ModelConfig, REPO / "recipes" / "model" / f"{args.model}.yaml")
    cfg = dataclasses.replace(cfg, vocab_size=tok.vocab_size, layers=args.layers or cfg.layers)
    torch.manual_seed(0)
    with torch.device(device):
        model = VLM(cfg, tok.image_id).to(dtype).eval()
    templates = Templates(tok, cfg.image_tokens, cfg.max_seq_len)
    items = load_benchmark(root / "bench" / "captioning.jsonl") + load_benchmark(root / "bench" / "ocr.jsonl")
    never = lambda new: False  # noqa: E731 (every row generates --new-tokens tokens)
    rows = []
    for batch in args.batch:
        prompts = [templates.item_prompt_ids(it) for it in items[:batch]]
        pixels = item_pixels(items[:batch], cfg.image_size, device)
        if pixels is not None:
            pixels = pixels.to(dtype)
        greedy(model, prompts, pixels, 2, tok.pad_id, never)  # warm-up
        cache = lambda p=prompts, x=pixels: greedy(model, p, x, args.new_tokens, tok.pad_id, never)  # noqa: E731
        again = lambda p=prompts, x=pixels: recompute(model, p, x, args.new_tokens, tok.pad_id)  # noqa: E731
        (t_cache, cached), (t_full, full) = timed(cache, device), timed(again, device)
        n = sum(map(len, cached))
        rows.append({"batch": len(prompts), "prompt_len": max(map(len, prompts)), "cache": n / t_cache,
                     "recompute": n / t_full, "same_tokens": cached == full})  # fmt: skip
    setting = f"new_tokens={args.new_tokens} device={device} dtype={args.dtype}"
    print(f"model={args.model} layers={cfg.layers} {setting}")
    print("| batch | KV cache tokens/s | full recompute tokens/s | ratio | same tokens |")
    print("| ---: | ---: | ---: | ---: | --- |")
    for r in rows:
        ratio = r["cache"] / r["recompute"]
        print(
            f"| {r['batch']} | {r['cache']:.0f} | {r['recompute']:.0f} | {ratio:.2f}x | {r['same_tokens']} |"
        )
    if args.json:
        command = f"python bench/generation.py --batch {' '.join(map(str, args.batch))}"
        write_record(args.json, {"command": command, "model": args.model, "layers": cfg.layers,
                                 "new_tokens": args.new_tokens, "device": str(device), "dtype": args.dtype,
                                 "rows": rows})  # fmt: skip


if __name__ == "__main__":
    main()
