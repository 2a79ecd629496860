"""Helper for tests/test_engines.py (not a test): three optimiser steps on one fixed global batch.

    torchrun --nproc_per_node=2 tests/engine_losses.py WORLD_DIR OUT.json ENGINE
Rank r takes micro-batches r, r + world, ...; rank 0 writes [[loss, grad norm], ...].
"""

import json
import sys
from itertools import islice
from pathlib import Path

import torch

from mmkd.config import load_group
from mmkd.distributed import init_distributed, local_float, parallelize, shutdown
from mmkd.loader import Collator
from mmkd.model import VLM
from mmkd.model.config import ModelConfig
from mmkd.shards import open_dataset
from mmkd.templates import Templates
from mmkd.tokenizer import Tokenizer
from mmkd.trainer import accumulate_gradients

REPO = Path(__file__).resolve().parents[1]


def main(world: Path, out: Path, engine: str) -> None:
    info = init_distributed()
    torch.set_num_threads(1)
    tok = Tokenizer.load(world / "tokenizer.json")
    cfg = load_group(ModelConfig, REPO / "recipes/model/micro.yaml")
    cfg.vocab_size = tok.vocab_size
    torch.manual_seed(0)
    model = VLM(cfg, tok.image_id)
    templates = Templates(tok, cfg.image_tokens, cfg.max_seq_len)
    samples = [*islice(open_dataset(world / "vqa0"), 4), *islice(open_dataset(world / "text"), 4)]
    encoded = [(templates.encode(s), {}) for s in samples]
    collate = Collator(tok.pad_id, cfg.image_size)
    micro = [collate(encoded[i : i + 2]) for i in range(0, len(encoded), 2)]
    mine = micro[info.rank :: info.world_size]
    model = parallelize(model, info, engine=engine)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    history = []
    for _ in range(3):
        loss = accumulate_gradients(model, mine, info.world_size)
        grad_norm = local_float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        history.append([loss, grad_norm])
    if info.is_main:
        out.write_text(json.dumps(history))
    shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])
