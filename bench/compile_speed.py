"""`train.compile=inductor` against eager on the README main job's model: the first compile, the
per-step time once compiled, and a one-image batch (which must not compile the blocks again).

    python bench/compile_speed.py [--steps 30] [--rounds 3] [--json bench/results/compile_speed.json]

Both models start from the same weights and train on the same pre-built batches (recipe=baseline,
micro-batch 32), taking turns by rounds of `--steps` steps after their warm-up; the per-step figure
is the median over rounds. Then each runs one batch holding a single image. Compilation happens
per block (`mmkd/engines/__init__.py`), as the trainer applies it.
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from itertools import islice
from pathlib import Path

import torch
import torch._dynamo
from _record import write_record
from quickstart import quickstart_config

from mmkd.config import micro_batch_for
from mmkd.data_builders.sources import prepare_world
from mmkd.engines import wrap_blocks
from mmkd.loader import Collator, MixtureDataset
from mmkd.shards import open_dataset
from mmkd.templates import Templates
from mmkd.tokenizer import Tokenizer
from mmkd.trainer import build_model


def step(model: torch.nn.Module, opt: torch.optim.Optimizer, batch: dict) -> float:
    start = time.perf_counter()
    loss, n = model(batch["input_ids"], batch["pixels"], labels=batch["labels"])
    (loss / n).backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    return time.perf_counter() - start


def one_image_batch(root: Path, templates: Templates, collate: Collator) -> dict:
    """A text batch with one captioned picture among its rows."""
    picture = next(iter(open_dataset(root / "caption0")))
    texts = list(islice(open_dataset(root / "text"), 7))
    return collate([(templates.encode(s), {}) for s in [picture, *texts]])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30, help="timed steps per model per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--data-root", default="data")
    ap.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    args = ap.parse_args()
    cfg = quickstart_config()
    cfg.data.root = args.data_root
    root = prepare_world(cfg.data, cfg.model.patch_size)
    tok = Tokenizer.load(root / "tokenizer.json")
    templates = Templates(tok, cfg.model.image_tokens, cfg.model.max_seq_len)
    weights = cfg.recipe.active()
    micro = micro_batch_for(cfg.train, 1)
    data = MixtureDataset({k: root / k for k in weights}, weights, templates, 0, micro, cfg.model.image_size)
    batches = list(islice(iter(data), 2 + args.steps * args.rounds))
    eager = build_model(cfg, tok)
    compiled = copy.deepcopy(eager)
    torch._dynamo.reset()
    wrap_blocks(compiled, compile_backend="inductor")
    models = {"eager": eager, "compiled": compiled}
    opts = {k: torch.optim.Adam(m.parameters(), lr=1e-4) for k, m in models.items()}
    first = {k: step(m, opts[k], batches[0]) + step(m, opts[k], batches[1]) for k, m in models.items()}
    per_step: dict[str, list[float]] = {k: [] for k in models}
    for r in range(args.rounds):
        timed = batches[2 + r * args.steps : 2 + (r + 1) * args.steps]
        for k, m in models.items():
            per_step[k].append(sum(step(m, opts[k], b) for b in timed) / len(timed))
    single = one_image_batch(root, templates, Collator(tok.pad_id, cfg.model.image_size))
    graphs = torch._dynamo.utils.counters["stats"]["unique_graphs"]
    one_image = {k: step(m, opts[k], single) for k, m in models.items()}
    recompiled = torch._dynamo.utils.counters["stats"]["unique_graphs"] - graphs
    median = {k: statistics.median(v) for k, v in per_step.items()}
    print(f"tiny model, recipe=baseline, micro-batch {len(batches[0]['input_ids'])}, "
          f"{args.rounds} rounds of {args.steps} steps, {torch.get_num_threads()} threads")  # fmt: skip
    print("| | eager | compiled (inductor) |\n| --- | ---: | ---: |")
    print(f"| first two steps (s) | {first['eager']:.1f} | {first['compiled']:.1f} |")
    ms = {k: f"{v * 1e3:.0f}" for k, v in median.items()}
    print(f"| per step, median of rounds (ms) | {ms['eager']} | {ms['compiled']} |")
    print(f"| a one-image batch (s) | {one_image['eager']:.2f} | {one_image['compiled']:.2f} |")
    speedup = median["eager"] / median["compiled"]
    print(f"speed-up per step: {speedup:.2f}x; graphs compiled for the one-image batch: {recompiled}")
    if args.json:
        write_record(args.json, {"command": "python bench/compile_speed.py", "steps": args.steps,
                                 "rounds": args.rounds, "first_two_steps_s": first, "per_step_s": per_step,
                                 "speedup": speedup, "one_image_batch_s": one_image,
                                 "graphs_compiled_for_one_image": recompiled})  # fmt: skip


if __name__ == "__main__":
    main()
