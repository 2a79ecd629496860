"""Resume cost: the seconds a resumed loader spends skipping the batches it already trained on, with
images decoded when a batch is collated (the loader now) against decoded when read (before).

    python bench/resume_skip.py                      # 1,600 photo-sized samples, skip 80 batches
    python bench/resume_skip.py --samples 3200 --skip 160 --size 512

The dataset holds `--samples` caption samples with `--size`-pixel PNG images of smooth noise (about
the decode cost of a photo), written once to a temporary folder. Each variant builds the loader's
stream with `skip` and times the first batch, once with skip=0 and once with `--skip`; the skip cost
is the difference. Ratio = before / now (higher is better).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageFilter

from mmkd import loader
from mmkd.loader import MixtureDataset
from mmkd.schema import Sample
from mmkd.shards import ShardWriter, iter_shard
from mmkd.templates import Templates
from mmkd.tokenizer import train_tokenizer

MICRO_BATCH = 16


def write_photos(out: Path, n: int, size: int) -> None:
    rng = np.random.default_rng(0)
    with ShardWriter(out, "photos", {}, samples_per_shard=400) as w:
        for i in range(n):
            noise = rng.integers(0, 256, (size // 4, size // 4, 3), dtype=np.uint8)
            image = Image.fromarray(noise).resize((size, size), Image.Resampling.BICUBIC)
            image = image.filter(ImageFilter.GaussianBlur(1))
            w.write(
                Sample(
                    f"p{i}",
                    "caption",
                    "photos",
                    [image],
                    text=f"a photo of thing number {i}",
                    caption_tag="Caption0",
                )
            )


def first_batch_seconds(source: Path, templates: Templates, size: int, skip: int) -> float:
    dataset = MixtureDataset(
        {"photos": source},
        {"photos": 1.0},
        templates,
        seed=0,
        micro_batch=MICRO_BATCH,
        image_size=size,
        skip=skip,
    )
    start = time.perf_counter()
    next(iter(dataset))
    return time.perf_counter() - start


def skip_cost(source: Path, templates: Templates, size: int, skip: int) -> float:
    return first_batch_seconds(source, templates, size, skip) - first_batch_seconds(
        source, templates, size, 0
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=1600)
    ap.add_argument("--skip", type=int, default=80, help="micro-batches to skip")
    ap.add_argument("--size", type=int, default=384)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_photos(root / "photos", args.samples, args.size)
        tokenizer = train_tokenizer(
            (f"a photo of thing number {i}" for i in range(200)), 300, root / "tok.json"
        )
        templates = Templates(tokenizer, image_tokens=16, max_seq_len=64)
        now = skip_cost(root / "photos", templates, args.size, args.skip)
        eager = lambda *a, **k: iter_shard(*a, **{**k, "lazy": False})  # noqa: E731 (decoded when read)
        loader.iter_shard, lazy_reader = eager, loader.iter_shard
        try:
            before = skip_cost(root / "photos", templates, args.size, args.skip)
        finally:
            loader.iter_shard = lazy_reader
    skipped = args.skip * MICRO_BATCH
    print(f"skip {args.skip} micro-batches ({skipped} samples of {args.size} px):")
    print(f"  before (decoded when read):     {before:6.2f} s  ({skipped / before:7.0f} samples/s)")
    print(f"  now (decoded when collated):    {now:6.2f} s  ({skipped / now:7.0f} samples/s)")
    print(f"  ratio before / now: {before / now:.1f}x")


if __name__ == "__main__":
    main()
