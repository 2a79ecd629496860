"""Checkpoints: sharded (`torch.distributed.checkpoint`), committed atomically, the last k kept.

    checkpoints/step-00000400/   .metadata, __<rank>_0.distcp   model, optimizer, RNG (DCP, every rank)
                                 meta.json                       step, resolved config, tokenizer (JSON)
                                 COMMITTED                       written last, by rank 0, after a barrier
    checkpoints/final/           the same, at the end of training

A checkpoint exists only once its COMMITTED marker does: one killed mid-write is ignored, and the
previous one loads. Every rank writes its own shards (with FSDP2 these are real shards; with DDP rank
0's replica is stored once). Nothing here unpickles: tensors come from DCP, the rest from JSON.
Eval-only needs nothing else: `meta.json` holds the config and tokenizer to rebuild the model.

With `train.engine=deepspeed` the tensors are in DeepSpeed's own layout instead (its ZeRO partitions,
pickled), in the same directory under the same commit protocol; `load_checkpoint` reads either.
"""

from __future__ import annotations

import json
import shutil
import warnings
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from mmkd import deepspeed_engine
from mmkd.distributed import DistInfo, barrier
from mmkd.shards import write_json_atomic

COMMITTED = "COMMITTED"


@contextmanager
def _quiet_single_process():
    """A single process is an intended case here; DCP warns about it on every call."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message="torch.distributed is disabled, unavailable or uninitialized"
        )
        yield


def _committed(path: Path) -> bool:
    return (path / COMMITTED).exists()


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    meta: dict[str, Any],
    info: DistInfo,
    final: bool = False,
    keep: int = 2,
) -> Path:
    """Every rank calls this (DCP is collective); returns the committed checkpoint directory."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    path = ckpt_dir / ("final" if final else f"step-{step:08d}")
    if info.is_main:
        if path.exists():
            shutil.rmtree(path)  # an uncommitted leftover of a killed save
        path.mkdir(parents=True)
    barrier()
    if deepspeed_engine.is_engine(model):
        deepspeed_engine.save(model, path, torch.get_rng_state())
    else:
        model_state, optim_state = get_state_dict(model, optimizer)
        state = {"model": model_state, "optimizer": optim_state, "rng": torch.get_rng_state()}
        with _quiet_single_process():
            dcp.save(state, checkpoint_id=path, no_dist=not dist.is_initialized())
    barrier()
    if info.is_main:
        write_json_atomic(path / "meta.json", {"step": step, **meta})
        (path / COMMITTED).write_text(f"{step}\n")
        periodic = sorted(p for p in ckpt_dir.glob("step-*") if p.is_dir())
        for old in [p for p in periodic if _committed(p)][:-keep] + [
            p for p in periodic if not _committed(p)
        ]:
            if old != path:
                shutil.rmtree(old)
    barrier()
    return path


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The final checkpoint if committed, else the committed one with the highest step, else None."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    if _committed(ckpt_dir / "final"):
        return ckpt_dir / "final"
    steps = sorted(p for p in ckpt_dir.glob("step-*") if _committed(p))
    return steps[-1] if steps else None


def resolve(path: str | Path) -> Path:
    """A checkpoint directory from a run directory or a checkpoint directory; clear errors otherwise."""
    path = Path(path)
    if (path / "checkpoints").is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"{path} holds no committed checkpoint under {path / 'checkpoints'}")
        return found
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if not _committed(path):
        raise FileNotFoundError(f"{path} is not a committed checkpoint (no {COMMITTED} marker)")
    return path


def read_meta(path: str | Path) -> dict[str, Any]:
    """Step, resolved config and tokenizer of a checkpoint (or of a run directory's latest)."""
    return json.loads((resolve(path) / "meta.json").read_text())


def load_checkpoint(
    path: str | Path, model: nn.Module, optimizer: torch.optim.Optimizer | None = None
) -> dict:
    """Load in place and return the meta: weights into a plain model on this process alone (eval,
    export), or with `optimizer` the whole training state on every rank (resume; collective)."""
    path = resolve(path)
    if deepspeed_engine.is_engine(model):
        deepspeed_engine.load(model, path)
    elif deepspeed_engine.is_checkpoint(path):
        deepspeed_engine.load_weights(path, model)
    elif optimizer is None:  # a plain model on this process alone (eval): no collective
        state = {"model": model.state_dict()}
        with _quiet_single_process():
            dcp.load(state, checkpoint_id=path, no_dist=True)
        model.load_state_dict(state["model"])
    else:
        model_state, optim_state = get_state_dict(model, optimizer)
        state = {"model": model_state, "optimizer": optim_state, "rng": torch.get_rng_state()}
        with _quiet_single_process():
            dcp.load(state, checkpoint_id=path, no_dist=not dist.is_initialized())
        set_state_dict(model, optimizer, model_state_dict=state["model"], optim_state_dict=state["optimizer"])
        torch.set_rng_state(state["rng"])
    return json.loads((path / "meta.json").read_text())
