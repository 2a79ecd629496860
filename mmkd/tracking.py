"""Training metrics: the local JSONL (always), wandb (optional; offline unless WANDB_MODE says otherwise),
and model FLOPs utilisation from the analytic counter (`mmkd.model.flops`).

MFU = useful training FLOPs per second per device / the device's dense bf16 peak. Useful FLOPs count
each sample at its real length (padding is not work). On CPU there is no peak to divide by: tokens/s
and FLOPs/s are logged, MFU is not.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from mmkd.shards import write_text_atomic

# Dense bf16 peak TFLOP/s per device (vendor datasheets, no sparsity).
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0, "L4": 121.0}


def append_line(path: Path, text: str) -> None:
    """Append and close at once: a crash never loses logged lines to a buffer."""
    with open(path, "a") as f:
        f.write(text)


class RunLog:
    """Rank 0's account of a run, timestamped, in <run_dir>/train.log: what started, resumed, was
    skipped, saved and measured. Appended, so a resumed run continues the same file. `echo` also
    prints the line (above any progress bar)."""

    def __init__(self, run_dir: Path, enabled: bool):
        self.path, self.enabled = Path(run_dir) / "train.log", enabled

    def __call__(self, message: str, echo: bool = True) -> None:
        if not self.enabled:
            return
        append_line(self.path, f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
        if echo:
            tqdm.write(message)


def device_peak_flops(device: torch.device) -> float | None:
    """The peak FLOP/s of the CUDA device the run trains on, from the table; None elsewhere (CPU,
    unknown GPU): MFU is logged only where a peak applies."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((tf * 1e12 for key, tf in PEAK_TFLOPS.items() if key in name), None)


def wandb_run(run_dir: Path, project: str, config: dict[str, Any] | None = None) -> Any:
    """The run's wandb run (offline unless WANDB_MODE says otherwise): one across resumes and the final
    evaluation, its id kept in <run_dir>/wandb_id, so a resumed run continues its curves."""
    try:
        import wandb
    except ImportError as e:
        raise ImportError("train.wandb=true needs wandb: pip install -e '.[tracking]'") from e
    id_file = Path(run_dir) / "wandb_id"
    if not id_file.exists():
        write_text_atomic(id_file, secrets.token_hex(6))
    mode = os.environ.get("WANDB_MODE", "offline")
    return wandb.init(
        project=project,
        dir=str(run_dir),
        id=id_file.read_text().strip(),
        resume="allow",
        config=config,
        mode=mode,
    )


def eval_summary(suites: dict[str, dict[str, Any]]) -> dict[str, float]:
    """results.json's scores as flat wandb summary keys: eval/<suite>/<benchmark>/<metric>, the
    continuous scores beside accuracy."""
    out = {}
    for suite, benchmarks in suites.items():
        for name, r in benchmarks.items():
            if not (isinstance(r, dict) and isinstance(r.get("score"), int | float)):
                continue
            out[f"eval/{suite}/{name}/{r['metric']}"] = float(r["score"])
            for metric, c in (r.get("continuous") or {}).items():
                out[f"eval/{suite}/{name}/{metric}"] = float(c["score"])
    return out


def log_eval(run_dir: Path, project: str, suites: dict[str, dict[str, Any]]) -> None:
    """The final evaluation's scores into the run's wandb summary (the columns of its runs table)."""
    run = wandb_run(run_dir, project)
    run.summary.update(eval_summary(suites))
    run.finish()


class Tracker:
    """Writes one record per logging step to <run_dir>/metrics.jsonl and, if asked, to wandb.

    A run resumed at step `start` first drops the records of later steps (written after the checkpoint
    it resumes from, and about to be redone), so each step appears once."""

    def __init__(
        self,
        run_dir: Path,
        enabled: bool,
        use_wandb: bool,
        project: str,
        config: dict[str, Any],
        start: int = 0,
    ):
        self.path = run_dir / "metrics.jsonl"
        self.enabled = enabled
        self.run = None
        if enabled and self.path.exists():
            kept = [line for line in self.path.read_text().splitlines() if json.loads(line)["step"] <= start]
            tmp = self.path.with_name(self.path.name + ".tmp")
            tmp.write_text("".join(line + "\n" for line in kept))
            tmp.replace(self.path)
        if enabled and use_wandb:
            self.run = wandb_run(run_dir, project, config)

    def log(self, record: dict[str, Any]) -> None:
        if not self.enabled:
            return
        append_line(self.path, json.dumps(record) + "\n")
        if self.run is not None:
            self.run.log(record, step=record["step"])

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
