"""mmkd's training step against what users would otherwise train: transformers'
`LlavaForConditionalGeneration` with the same tiny shapes and the same weights, in a plain
forward / backward / Adam loop over the same batches, measured in one run.

    python bench/peer_llava.py [--steps 40] [--threads 2]

The LLaVA model is our tiny model exported (`launch/export.py format=llava`), so both start from the
same weights; the first loss of each is printed as a check that they compute the same thing (LLaVA
averages the token losses of a batch, as our step does with the global supervised-token count).
Prints samples/s of both and their ratio.
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

import torch
from quickstart import quickstart_config
from transformers import LlavaForConditionalGeneration

from mmkd.data_builders.sources import prepare_world
from mmkd.loader import MixtureDataset
from mmkd.model.hf import export_vlm
from mmkd.templates import Templates
from mmkd.tokenizer import Tokenizer
from mmkd.trainer import build_model


def run(step, batches: list[dict], warmup: int = 3) -> tuple[float, float]:
    """(samples/s after `warmup` steps, the first step's loss)."""
    first = step(batches[0])
    for b in batches[1:warmup]:
        step(b)
    start = time.perf_counter()
    for b in batches[warmup:]:
        step(b)
    samples = sum(b["input_ids"].shape[0] for b in batches[warmup:])
    return samples / (time.perf_counter() - start), first


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = quickstart_config()
    cfg.model = dataclasses.replace(cfg.model, vision_post_norm=False)  # LLaVA's input to the projector
    root = prepare_world(cfg.data, cfg.model.patch_size)
    tok = Tokenizer.load(root / "tokenizer.json")
    templates = Templates(tok, cfg.model.image_tokens, cfg.model.max_seq_len)
    weights = cfg.recipe.active()
    stream = iter(
        MixtureDataset({k: root / k for k in weights}, weights, templates, 0, 32, cfg.model.image_size)
    )
    batches = [next(stream) for _ in range(args.steps + 3)]

    ours = build_model(cfg, tok)
    with tempfile.TemporaryDirectory() as out:
        export_vlm(ours, out)
        llava = LlavaForConditionalGeneration.from_pretrained(out, attn_implementation="sdpa")

    def optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
        return torch.optim.Adam(model.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-6)

    opt_ours, opt_llava = optimizer(ours), optimizer(llava)

    def step_ours(b: dict) -> float:
        loss, n = ours(b["input_ids"], b["pixels"], labels=b["labels"])
        (loss / n).backward()
        opt_ours.step()
        opt_ours.zero_grad(set_to_none=True)
        return float(loss.detach() / n)

    def step_llava(b: dict) -> float:
        mask = b["input_ids"] != tok.pad_id
        out = llava(
            input_ids=b["input_ids"], pixel_values=b["pixels"], attention_mask=mask, labels=b["labels"]
        )
        out.loss.backward()
        opt_llava.step()
        opt_llava.zero_grad(set_to_none=True)
        return float(out.loss.detach())

    sps_llava, loss_llava = run(step_llava, batches)
    sps_ours, loss_ours = run(step_ours, batches)
    print(f"tiny shapes, recipe=baseline, micro_batch=32, {args.steps} timed steps, threads={args.threads}")
    print(f"first loss: mmkd {loss_ours:.4f}, LLaVA {loss_llava:.4f}")
    print("| loop | samples/s |\n| --- | ---: |")
    print(f"| mmkd VLM | {sps_ours:.0f} |\n| transformers LlavaForConditionalGeneration | {sps_llava:.0f} |")
    print(f"ratio mmkd / LLaVA: {sps_ours / sps_llava:.2f}")


if __name__ == "__main__":
    main()
