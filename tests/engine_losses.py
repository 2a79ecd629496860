"""Helper for tests/test_engines.py (not a test): three optimiser steps on one fixed global batch.

    torchrun --nproc_per_node=2 tests/engine_losses.py WORLD_DIR OUT.json ENGINE ZERO_STAGE BF16(0|1)
Rank r takes micro-batches r, r + world, ...: on two ranks, rank 1's are text only (no image), the
case where a sharded engine's ranks would reduce different tensors, and its last has no target.
Rank 0 writes [[loss, grad norm], ...].
"""

import gc
import json
import sys
from itertools import islice
from pathlib import Path

import torch

from mmkd.config import TrainConfig, load_group
from mmkd.distributed import init_distributed, shutdown
from mmkd.engines import parallelize
from mmkd.loader import Collator
from mmkd.materialize import materialize
from mmkd.model import VLM
from mmkd.model.config import ModelConfig
from mmkd.shards import open_dataset
from mmkd.templates import IGNORE, Templates
from mmkd.tokenizer import Tokenizer
from mmkd.trainer import accumulate_gradients

REPO = Path(__file__).resolve().parents[1]


def main(world: Path, out: Path, engine: str, zero_stage: int, bf16: bool) -> None:
    info = init_distributed()
    torch.set_num_threads(1)
    tok = Tokenizer.load(world / "tokenizer.json")
    cfg = load_group(ModelConfig, REPO / "recipes/model/micro.yaml")
    cfg.vocab_size = tok.vocab_size
    with torch.device("meta"):  # as the trainer builds it
        model = VLM(cfg, tok.image_id)
    templates = Templates(tok, cfg.image_tokens, cfg.max_seq_len)
    collate = Collator(tok.pad_id, cfg.image_size)
    vqa, text = (
        [(templates.encode(s), {}) for s in islice(open_dataset(world / src), 4)] for src in ("vqa0", "text")
    )
    # Two ranks: rank 0 takes both image micro-batches, rank 1 only text (its vision tower idle), the
    # last of them with no target at all (its LM head sees no position).
    micro = [collate(part[i : i + 2]) for i in (0, 2) for part in (vqa, text)]
    micro[-1]["labels"].fill_(IGNORE)
    mine = micro[info.rank :: info.world_size]
    t = TrainConfig(engine=engine, micro_batch=2, grad_clip=1.0, zero_stage=zero_stage, bf16=bf16)
    engine = parallelize(
        model,
        info,
        t,
        lambda m: materialize(m, info.device, 0),  # every engine draws the same weights from seed 0
        lambda m: torch.optim.Adam(m.parameters(), lr=1e-3),
        micro_batch=2,
        accumulation=len(mine),
    )
    history = []
    for _ in range(3):
        loss = accumulate_gradients(engine, mine, info.world_size)["loss"]
        history.append([loss, engine.step(t.grad_clip)])
    if info.is_main:
        out.write_text(json.dumps(history))
    # DDP's reducer must go before the process group: freed after it, it destroys the gloo group while
    # holding the GIL, and a gloo thread still releasing a tensor deadlocks (pytorch/pytorch#56297).
    del engine, model
    gc.collect()
    shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1")
