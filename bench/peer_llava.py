"""mmkd's training step against what users would otherwise train: transformers'
`LlavaForConditionalGeneration` with the same tiny shapes and the same weights, in a plain
forward / backward / Adam loop over the same batches, measured in one run.

    python bench/peer_llava.py [--steps 40] [--rounds 3] [--threads 2] [--json bench/results/peer_llava.json]

The LLaVA model is our tiny model exported (`launch/export.py format=llava`), so both start from the
same weights; the first loss of each is printed as a check that they compute the same thing (LLaVA
averages the token losses of a batch, as our step does with the global supervised-token count).
The two take turns for `--rounds` rounds of `--steps` steps on the same batches; prints each round's
samples/s of both and their ratio, and the median ratio. The issue measured the gain as coming from
our LM head running on supervised positions only, so the record also holds the share of supervised
positions in these batches.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _record import write_record
from quickstart import quickstart_config
from transformers import LlavaForConditionalGeneration

from mmkd.data_builders.sources import prepare_world
from mmkd.loader import MixtureDataset
from mmkd.model.hf import export_vlm
from mmkd.templates import IGNORE, Templates
from mmkd.tokenizer import Tokenizer
from mmkd.trainer import build_model


def run(step, batches: list[dict]) -> float:
    """Samples/s of `step` over `batches`."""
    start = time.perf_counter()
    for b in batches:
        step(b)
    return sum(b["input_ids"].shape[0] for b in batches) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path, help="also write the figures to this JSON file")
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
    warmup = [next(stream) for _ in range(3)]
    batches = [next(stream) for _ in range(args.steps)]

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

    loss_ours, loss_llava = step_ours(warmup[0]), step_llava(warmup[0])  # the same function: the same loss
    for b in warmup[1:]:
        step_ours(b), step_llava(b)
    rounds = []
    for _ in range(args.rounds):
        llava_sps, ours_sps = run(step_llava, batches), run(step_ours, batches)
        rounds.append({"mmkd": ours_sps, "llava": llava_sps, "ratio": ours_sps / llava_sps})
    ratio = statistics.median(r["ratio"] for r in rounds)
    supervised = sum(int((b["labels"] != IGNORE).sum()) for b in batches) / sum(
        b["labels"].numel() for b in batches
    )
    print(f"tiny shapes, recipe=baseline, micro_batch=32, {args.rounds} rounds of {args.steps} steps, "
          f"threads={args.threads}")  # fmt: skip
    print(f"first loss: mmkd {loss_ours:.4f}, LLaVA {loss_llava:.4f}; supervised positions {supervised:.1%}")
    print("| round | mmkd VLM samples/s | transformers LlavaForConditionalGeneration samples/s | ratio |")
    for i, r in enumerate(rounds, 1):
        print(f"| {i} | {r['mmkd']:.0f} | {r['llava']:.0f} | {r['ratio']:.2f} |")
    print(f"ratio mmkd / LLaVA (median of rounds): {ratio:.2f}")
    if args.json:
        first = {"mmkd": loss_ours, "llava": loss_llava}
        record = {"command": "python bench/peer_llava.py", "steps": args.steps, "threads": args.threads}
        record |= {"first_loss": first, "supervised_share": supervised, "rounds": rounds, "ratio": ratio}
        write_record(args.json, record)


if __name__ == "__main__":
    main()
