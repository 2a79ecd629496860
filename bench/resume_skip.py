"""Resume cost: the seconds a resumed loader needs before its first batch, after N micro-batches
already trained on, restored from the saved stream state (the loader now) against fast-forwarding
through the N batches (the fallback, and the only way before).

    python bench/resume_skip.py                          # N = 100, 1,000, 10,000: 2,000 samples of 128 px
    python bench/resume_skip.py --steps 100 1000 10000 --size 384
    python bench/resume_skip.py --json bench/results/resume_skip.json   # bench/RESULTS.md's source

The dataset holds `--samples` caption samples with `--size`-pixel PNG images of smooth noise (about
the decode cost of a photo), written once to a temporary folder. For each N the state after batch N is
taken from the loader itself; each variant then times its first batch, minus the first batch of a
fresh loader (the cost of one batch), in the same run. Ratio = fast-forward / state.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from _record import write_record
from PIL import Image, ImageFilter

from mmkd.loader import MixtureDataset, make_loader
from mmkd.schema import Sample
from mmkd.shards import ShardWriter
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


def dataset(source: Path, templates: Templates, size: int, **resume) -> MixtureDataset:
    return MixtureDataset({"photos": source}, {"photos": 1.0}, templates, 0, MICRO_BATCH, size, **resume)


def first_batch_seconds(data: MixtureDataset, repeats: int = 1) -> float:
    """The fastest of `repeats` timings (a fresh loader each time)."""
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        next(make_loader(data, 0))
        best = min(best, time.perf_counter() - start)
    return best


def state_after(source: Path, templates: Templates, size: int, n: int) -> dict:
    """The state a checkpoint after n micro-batches holds (read off the loader's batch n)."""
    taken = make_loader(dataset(source, templates, size, skip=n - 1), 0)
    next(taken)
    return taken.state()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--samples", type=int, default=2000)
    ap.add_argument("--steps", type=int, nargs="+", default=[100, 1000, 10000], help="micro-batches trained")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_photos(root / "photos", args.samples, args.size)
        tokenizer = train_tokenizer(
            (f"a photo of thing number {i}" for i in range(200)), 300, root / "tok.json"
        )
        templates = Templates(tokenizer, image_tokens=16, max_seq_len=64)
        source = root / "photos"
        fresh = first_batch_seconds(dataset(source, templates, args.size), repeats=5)
        print(
            f"first batch of a fresh loader: {fresh:.3f} s; resume cost beyond it, {MICRO_BATCH} per batch:"
        )
        print("| trained micro-batches | samples | saved state | fast-forward | ratio |")
        print("| ---: | ---: | ---: | ---: | ---: |")
        rows = []
        for n in args.steps:
            state = state_after(source, templates, args.size, n)
            restored = max(
                first_batch_seconds(dataset(source, templates, args.size, state=state), 5) - fresh, 0
            )
            skipped = first_batch_seconds(dataset(source, templates, args.size, skip=n)) - fresh
            rows.append({"batches": n, "samples": n * MICRO_BATCH, "state_s": restored, "skip_s": skipped})
            print(
                f"| {n:,} | {n * MICRO_BATCH:,} | {restored:.3f} s | {skipped:.2f} s "
                f"| {skipped / max(restored, 1e-3):.0f}x |"
            )
    if args.json:
        setting = {"samples": args.samples, "size": args.size, "micro_batch": MICRO_BATCH, "fresh_s": fresh}
        write_record(args.json, {"command": "python bench/resume_skip.py", **setting, "rows": rows})


if __name__ == "__main__":
    main()
