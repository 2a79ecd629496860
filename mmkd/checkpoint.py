"""Checkpoints: sharded (`torch.distributed.checkpoint`), committed atomically, the last k kept.

    checkpoints/step-00000400/   .metadata, __<rank>_0.distcp   model, optimizer, RNG (DCP, every rank)
                                 loader.rank<r>.json             where each rank's data stream stands
                                 meta.json                       step, resolved config, tokenizer (JSON)
                                 COMMITTED                       written last, by rank 0, after a barrier
    checkpoints/final/           the same, at the end of training

A checkpoint where a curriculum stage ends also holds STAGE_END and is never rotated away: another
run that shares the stages before it starts there (`train.branch_from`, mmkd/resume.py).

A checkpoint exists only once its COMMITTED marker does: one killed mid-write is ignored, and the
previous one loads. Every rank writes its own shards (with FSDP2 these are real shards; with DDP rank
0's replica is stored once). Nothing in a checkpoint is executed on load: tensors come from DCP, whose
pickled index `mmkd.dcp_reader` reads with a restricted unpickler, and the rest from JSON.
Eval-only needs nothing else: `meta.json` holds the config and tokenizer to rebuild the model.

The tensors are written by the run's engine (`Engine.save`): DCP for the local, DDP and FSDP2
engines; with `train.engine=deepspeed`, DeepSpeed's own layout (its ZeRO partitions, pickled) for
resuming that run, and the weights as DCP beside it. Evaluation and export read only DCP
(`load_checkpoint`): they never unpickle, so a checkpoint from elsewhere cannot run code here.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch.distributed.checkpoint as dcp
from torch import nn

from mmkd.dcp_reader import SafeReader, check_files, read_index
from mmkd.distributed import DistInfo, barrier
from mmkd.engines.base import Engine, quiet_single_process
from mmkd.engines.registry import ENGINES, engine_class
from mmkd.errors import CheckpointError
from mmkd.shards import write_json_atomic

COMMITTED = "COMMITTED"
STAGE_END = "STAGE_END"


def _committed(path: Path) -> bool:
    return (path / COMMITTED).exists()


def save_checkpoint(
    run_dir: str | Path,
    step: int,
    engine: Engine,
    meta: dict[str, Any],
    info: DistInfo,
    final: bool = False,
    keep: int = 2,
    loader: dict | None = None,
    pin: bool = False,
) -> Path:
    """Every rank calls this (DCP is collective); returns the committed checkpoint directory.
    `loader`: this rank's data-stream state (`mmkd.loader.Resumable.state()`), for an instant resume.
    `pin`: a stage's end, kept outside the last `keep`."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    path = ckpt_dir / ("final" if final else f"step-{step:08d}")
    check_free_space(ckpt_dir, engine)
    if info.is_main:
        if path.exists():
            shutil.rmtree(path)  # an uncommitted leftover of a killed save
        path.mkdir(parents=True)
    barrier()
    engine.save(path)
    if loader is not None:
        write_json_atomic(path / f"loader.rank{info.rank}.json", loader)
    barrier()
    if info.is_main:
        write_json_atomic(path / "meta.json", {"step": step, **meta})
        if pin:
            (path / STAGE_END).write_text(f"{meta.get('stage', '')}\n")
        (path / COMMITTED).write_text(f"{step}\n")
        periodic = sorted(p for p in ckpt_dir.glob("step-*") if p.is_dir() and not (p / STAGE_END).exists())
        for old in [p for p in periodic if _committed(p)][:-keep] + [
            p for p in periodic if not _committed(p)
        ]:
            if old != path:
                shutil.rmtree(old)
    barrier()
    return path


def _size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def check_free_space(ckpt_dir: Path, engine: Engine) -> None:
    """Refuse to start a checkpoint the disk cannot hold, naming both sizes: a full disk mid-write
    fails deep inside DCP without saying why, and the run's committed checkpoints stay as they are.
    The need is the largest committed checkpoint so far, or before the first, the weights and
    Adam's two moments (three times the parameters' bytes, this rank's share), plus 10%."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    done = [p for p in ckpt_dir.iterdir() if _committed(p)]
    if done:
        need = max(_size(p) for p in done)
    else:
        local = [getattr(p, "to_local", lambda p=p: p)() for p in engine.model.parameters()]  # FSDP2 shards
        need = 3 * sum(p.numel() * p.element_size() for p in local)
    need = int(need * 1.1)
    free = shutil.disk_usage(ckpt_dir).free
    if free < need:
        raise CheckpointError(
            f"{ckpt_dir}: {free / 2**20:,.0f} MiB free, a checkpoint needs about {need / 2**20:,.0f} MiB; "
            "free space (or lower train.keep_checkpoints) and rerun: the run resumes from its last checkpoint"
        )


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    """The final checkpoint if committed, else the committed one with the highest step, else None."""
    ckpt_dir = Path(run_dir) / "checkpoints"
    if _committed(ckpt_dir / "final"):
        return ckpt_dir / "final"
    steps = sorted(p for p in ckpt_dir.glob("step-*") if _committed(p))
    return steps[-1] if steps else None


def resolve(path: str | Path) -> Path:
    """A checkpoint directory from a run directory or a checkpoint directory; `CheckpointError`
    naming what is missing otherwise."""
    path = Path(path)
    if (path / "checkpoints").is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise CheckpointError(f"{path} holds no committed checkpoint under {path / 'checkpoints'}")
        return found
    if not path.exists():
        raise CheckpointError(f"checkpoint {path} does not exist")
    if not _committed(path):
        raise CheckpointError(
            f"{path} is not a committed checkpoint (no {COMMITTED} marker: its save did not finish)"
        )
    return path


META_KEYS = ("step", "config", "tokenizer")


def read_meta(path: str | Path) -> dict[str, Any]:
    """Step, resolved config and tokenizer of a checkpoint (or of a run directory's latest)."""
    file = resolve(path) / "meta.json"
    try:
        meta = json.loads(file.read_text())
    except FileNotFoundError:
        raise CheckpointError(f"{file} is missing: the checkpoint has no config or tokenizer") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{file} is not valid JSON ({e})") from None
    missing = [k for k in META_KEYS if not isinstance(meta, dict) or k not in meta]
    if missing:
        raise CheckpointError(f"{file} lacks {missing}: not a checkpoint written by mmkd")
    return meta


def check_checkpoint(path: str | Path) -> Path:
    """The checkpoint directory, checked before anything loads it: committed, a readable meta.json,
    and a DCP index whose data files are all there and complete (each problem names its file)."""
    path = resolve(path)
    for name in ENGINES:  # an engine's own layout without the DCP weights beside it
        if why := engine_class(name).foreign_checkpoint(path):
            raise CheckpointError(why)
    read_meta(path)
    check_files(path, read_index(path))
    return path


def load_checkpoint(path: str | Path, model: nn.Module) -> dict:
    """Weights into a plain model on this process alone (eval, export; no collective); returns the
    meta. Only DCP is read, and its index without executing it (`mmkd.dcp_reader`)."""
    path = check_checkpoint(path)
    state = {"model": model.state_dict()}
    with quiet_single_process():
        dcp.load(state, storage_reader=SafeReader(path), no_dist=True)
    model.load_state_dict(state["model"])
    return read_meta(path)


def read_loader_state(path: str | Path, rank: int) -> dict | None:
    """This rank's saved data-stream state, or None (a checkpoint written before it was saved, or
    where it could not be known: the loader then fast-forwards)."""
    file = Path(path) / f"loader.rank{rank}.json"
    if not file.exists():
        return None
    try:
        return json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{file} is not valid JSON ({e})") from None


def resume_checkpoint(path: str | Path, engine: Engine) -> dict:
    """The whole training state into the run's engine, on every rank (collective); returns the meta."""
    path = check_checkpoint(path)
    engine.load(path)
    return read_meta(path)


def last_checkpoints(checkpoint: Path, k: int) -> list[Path]:
    """`checkpoint` and the committed checkpoints of its run before it in the same curriculum stage, the
    last `k` by step (oldest first; one per step, `final` where it shares one); fewer when the run kept
    fewer (train.keep_checkpoints) or the stage holds fewer. A stage's end is pinned by the stage that
    ended, so an instruction stage's scores are never mixed with pre-training's."""
    stage = read_meta(checkpoint).get("stage")
    by_step: dict[int, Path] = {}
    for p in sorted(checkpoint.parent.iterdir(), key=lambda p: p.name == "final"):
        if _committed(p) and (meta := read_meta(p)).get("stage") == stage:
            by_step[int(meta["step"])] = p
    last = int(read_meta(checkpoint)["step"])
    by_step[last] = checkpoint
    return [by_step[s] for s in sorted(by_step) if s <= last][-k:]
