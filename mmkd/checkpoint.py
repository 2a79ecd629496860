"""Checkpoints: written atomically by rank 0, the newest named by `checkpoints/latest`.

A checkpoint holds model, optimizer and scheduler state, the step, the resolved config and the
tokenizer path, so both resuming and eval-only (`launch/eval.py checkpoint=...`) need nothing else.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

KEEP = 2  # periodic checkpoints kept besides the final one


def save_checkpoint(run_dir: str | Path, step: int, state: dict[str, Any], final: bool = False) -> Path:
    ckpt_dir = Path(run_dir) / "checkpoints"
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    path = ckpt_dir / ("final.pt" if final else f"step-{step:08d}.pt")
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"step": step, **state}, tmp)
    os.replace(tmp, path)
    latest_tmp = ckpt_dir / "latest.tmp"
    latest_tmp.write_text(path.name + "\n")
    os.replace(latest_tmp, ckpt_dir / "latest")
    for old in sorted(ckpt_dir.glob("step-*.pt"))[:-KEEP]:
        old.unlink()
    return path


def latest_checkpoint(run_dir: str | Path) -> Path | None:
    pointer = Path(run_dir) / "checkpoints" / "latest"
    if not pointer.exists():
        return None
    path = pointer.parent / pointer.read_text().strip()
    if not path.exists():
        raise FileNotFoundError(f"{pointer} names {path.name}, which is missing")
    return path


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if path.is_dir():  # a run directory
        found = latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"{path} holds no checkpoint (expected {path}/checkpoints/latest)")
        path = found
    if not path.exists():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    return torch.load(path, map_location="cpu", weights_only=False)
