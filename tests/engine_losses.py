"""Helper for tests/test_engines.py (not a test): three optimiser steps on one fixed global batch.

    torchrun --nproc_per_node=2 tests/engine_losses.py WORLD_DIR OUT.json ENGINE ZERO_STAGE BF16(0|1)
Rank r takes micro-batches r, r + world, ...; rank 0 writes [[loss, grad norm], ...].
"""

import gc
import json
import sys
from itertools import islice
from pathlib import Path

import torch

from mmkd import deepspeed_engine
from mmkd.config import TrainConfig, load_group
from mmkd.distributed import init_distributed, local_float, parallelize, shutdown
from mmkd.loader import Collator
from mmkd.materialize import materialize
from mmkd.model import VLM
from mmkd.model.config import ModelConfig
from mmkd.shards import open_dataset
from mmkd.templates import Templates
from mmkd.tokenizer import Tokenizer
from mmkd.trainer import accumulate_gradients

REPO = Path(__file__).resolve().parents[1]


def main(world: Path, out: Path, engine: str, zero_stage: int, bf16: bool) -> None:
    info = init_distributed()
    torch.set_num_threads(1)
    tok = Tokenizer.load(world / "tokenizer.json")
    cfg = load_group(ModelConfig, REPO / "recipes/model/micro.yaml")
    cfg.vocab_size = tok.vocab_size
    with torch.device("meta"):  # as the trainer does: every engine draws the same weights from seed 0
        model = VLM(cfg, tok.image_id)
    templates = Templates(tok, cfg.image_tokens, cfg.max_seq_len)
    samples = [*islice(open_dataset(world / "vqa0"), 4), *islice(open_dataset(world / "text"), 4)]
    encoded = [(templates.encode(s), {}) for s in samples]
    collate = Collator(tok.pad_id, cfg.image_size)
    micro = [collate(encoded[i : i + 2]) for i in range(0, len(encoded), 2)]
    mine = micro[info.rank :: info.world_size]
    model = parallelize(model, info, lambda m: materialize(m, info.device, 0), engine=engine, bf16=bf16)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    if engine == "deepspeed":
        t = TrainConfig(micro_batch=2, grad_clip=1.0, zero_stage=zero_stage, bf16=bf16)
        model = deepspeed_engine.wrap(model, optimizer, t, accumulation=len(mine))
    history = []
    for _ in range(3):
        loss = accumulate_gradients(model, mine, info.world_size)
        if engine == "deepspeed":
            model.step()
            grad_norm = float(model.get_global_grad_norm())
        else:
            grad_norm = local_float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0))
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        history.append([loss, grad_norm])
    if info.is_main:
        out.write_text(json.dumps(history))
    # DDP's reducer must go before the process group: freed after it, it destroys the gloo group while
    # holding the GIL, and a gloo thread still releasing a tensor deadlocks (pytorch/pytorch#56297).
    del model
    gc.collect()
    shutdown()


if __name__ == "__main__":
    main(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3], int(sys.argv[4]), sys.argv[5] == "1")
