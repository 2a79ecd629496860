"""Packing efficiency on the world mixture: the fraction of non-pad tokens in packed rows.

    python bench/packing.py                       # builds the default world under data/ on first use
    python bench/packing.py --recipe pair_caption_v2 --samples 20000

Draws samples in the recipe's proportions (its `sources` as built on first use), encodes them with
the tiny model's 9 image tokens and with dense_3b's 729, packs them into rows of each length, and
prints the non-pad fraction next to two baselines measured in the same run: what the trainer does
without packing (`train.packing=false`: the loader's length-bucketed micro-batches of 32, each padded
to its longest sample; the fair baseline) and one sample per row padded to the row length (what a
fixed-length batch wastes). A second table packs as the trainer does (`train.packing=true`: the
loader's pools, with the emptiest rows carried over), and shows the longest a sample waits behind
its turn in the mixture stream. `--json PATH` also writes the figures (bench/RESULTS.md's source).
"""

from __future__ import annotations

import argparse
from itertools import islice
from pathlib import Path

from _record import write_record
from omegaconf import OmegaConf

from mmkd.config import to_run_config
from mmkd.data_builders.sources import prepare_sources, prepare_world
from mmkd.loader import MixtureDataset
from mmkd.packing import efficiency, pack
from mmkd.shards import open_dataset
from mmkd.templates import Templates
from mmkd.tokenizer import Tokenizer

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", default="baseline")
    ap.add_argument("--samples", type=int, default=20000)
    ap.add_argument("--data-root", default="data")
    ap.add_argument("--batches", type=int, default=40, help="loader micro-batches to measure")
    ap.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = ap.parse_args()
    recipe = OmegaConf.load(REPO / "recipes" / "recipe" / f"{args.recipe}.yaml")
    parent = OmegaConf.load(REPO / "recipes" / "recipe" / "baseline.yaml")
    cfg = to_run_config(
        {
            "recipe": OmegaConf.merge(parent, {k: v for k, v in recipe.items() if k != "defaults"}),
            "data": OmegaConf.merge(
                OmegaConf.load(REPO / "recipes/data/world.yaml"), {"root": args.data_root}
            ),
        }
    )
    root = prepare_world(cfg.data)
    weights = cfg.recipe.active()
    dirs = prepare_sources(sorted(weights), cfg, root)
    tok = Tokenizer.load(root / "tokenizer.json")
    samples = [
        s
        for name, w in sorted(weights.items())
        for s in islice(open_dataset(dirs[name]), round(w * args.samples))
    ]
    print(f"recipe={args.recipe}: {len(samples)} samples from {sorted(weights)}")
    head = ["image tokens", "row length", "rows", "packed non-pad", "bucketed, padded to the longest"]
    print(f"| {' | '.join(head)} | packed / bucketed | one sample per row |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    table, trainer = [], []
    for image_tokens, lengths in ((9, (2048, 4096)), (729, (4096,))):
        templates = Templates(tok, image_tokens, max(lengths))
        items = [(s.id, templates.encode(s)) for s in samples]
        bucketed = unpacked(dirs, weights, templates, tok.pad_id, cfg.model.image_size, args.batches)
        for length in lengths:
            fit = [(i, e) for i, e in items if len(e) <= length]
            rows = pack(fit, length)
            packed = efficiency(rows, length)
            alone = sum(len(e) for _, e in fit) / (len(fit) * length)
            shape = {"image_tokens": image_tokens, "row_length": length, "rows": len(rows)}
            table.append({**shape, "packed": packed, "bucketed": bucketed, "one_per_row": alone})
            print(f"| {image_tokens} | {length} | {len(rows)} | {packed:.4f} | {bucketed:.4f} | "
                  f"{packed / bucketed:.2f}x | {alone:.4f} |")  # fmt: skip
    print("\nAs the trainer packs (MixtureDataset, micro-batches of 8 rows, pools of 8 micro-batches):")
    print("| image tokens | row length | rows | non-pad | longest wait (micro-batches) |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for image_tokens, length in ((9, 4096), (729, 4096)):
        templates = Templates(tok, image_tokens, length)
        dataset = MixtureDataset(dirs, weights, templates, 0, 8, cfg.model.image_size, pack_len=length)
        batches = list(islice(iter(dataset), args.batches))
        real = sum(int((b["segments"] > 0).sum()) for b in batches)
        rows = sum(b["segments"].shape[0] for b in batches)
        wait = longest_wait(dataset, batches)
        trainer.append({"image_tokens": image_tokens, "row_length": length, "rows": rows,
                        "nonpad": real / (rows * length), "longest_wait": wait})  # fmt: skip
        print(f"| {image_tokens} | {length} | {rows} | {real / (rows * length):.4f} | {wait:.1f} |")
    if args.json:
        command = f"python bench/packing.py --recipe {args.recipe} --samples {args.samples}"
        write_record(
            args.json, {"command": command, "samples": len(samples), "table": table, "trainer": trainer}
        )


def unpacked(dirs: dict, weights: dict, templates: Templates, pad_id: int, image_size: int, n: int) -> float:
    """Non-pad fraction of the trainer's batches without packing: the loader's length-bucketed
    micro-batches of 32 (pools of 8), each padded to its longest sample."""
    dataset = MixtureDataset(dirs, weights, templates, 0, 32, image_size)
    batches = list(islice(iter(dataset), n))
    return sum(int((b["input_ids"] != pad_id).sum()) for b in batches) / sum(
        b["input_ids"].numel() for b in batches
    )


def longest_wait(dataset: MixtureDataset, batches: list[dict]) -> float:
    """How far behind its turn in the mixture stream a sample trains, at most, in micro-batches: the
    samples trained before it minus those drawn before it, over the samples per micro-batch."""
    trained = [m["id"] for b in batches for m in b["meta"]]
    drawn: dict[str, list[int]] = {}  # an id drawn again (a later epoch) is matched in order
    for i, (_, meta) in enumerate(islice(dataset.samples(0, 1), 2 * len(trained) + 2000)):
        drawn.setdefault(meta["id"], []).append(i)
    late = max(rank - drawn[i].pop(0) for rank, i in enumerate(trained))
    return late / (len(trained) / len(batches))


if __name__ == "__main__":
    main()
