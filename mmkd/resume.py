"""What makes a run the same run: a resumed run must match the saved one in everything that shapes its
data stream and its optimisation, or it does not continue that run (docs/design.md, "Resumption").
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mmkd.config import ConfigError, RunConfig, micro_batch_for

# Settings that change neither the data stream nor the optimisation: a resume may change them.
RESUME_FREE = {
    "train.resume",
    "train.log_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.activation_checkpointing",
    "train.compile",
    "train.threads",
    "train.wandb",
    "train.wandb_project",
    "train.trace_samples",
    "train.dist_timeout_s",
    "train.wait_timeout_s",
    "train.break_lock",
    "data.root",
}


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out |= _flatten(v, f"{key}.") if isinstance(v, dict) and v else {key: v}
    return out


def run_identity(cfg: RunConfig, sources: dict[str, Path], world_size: int) -> dict[str, Any]:
    """Everything a resumed run must share with the saved one to continue the same stream and
    optimisation: seed, recipe, model, data and train settings, world size, and each source's
    content hash (a rebuilt source is other data under the same name)."""
    config = asdict(cfg)
    flat = {"seed": cfg.seed, "world_size": world_size}
    flat |= _flatten({sec: config[sec] for sec in ("recipe", "model", "data", "train")})
    flat["train.micro_batch"] = micro_batch_for(cfg.train, world_size)  # as trained (0 means "follow")
    for name, path in sorted(sources.items()):
        flat[f"sources.{name}"] = json.loads((path / "manifest.json").read_text()).get("content_hash")
    return json.loads(json.dumps({k: v for k, v in flat.items() if k not in RESUME_FREE}))


def check_resumable(meta: dict, identity: dict[str, Any], run_dir: Path, force: bool) -> bool:
    """Refuse to resume a run that differs in what makes the stream, naming every differing key;
    True when nothing differs (with `force`, False lets a differing run continue).

    Checkpoints written before identities were saved are compared on their config alone."""
    saved = meta.get("identity")
    if saved is None:
        saved = _flatten({k: v for k, v in meta["config"].items() if isinstance(v, dict)})
        saved["seed"] = meta["config"].get("seed")
    diff = [
        f"{k} (saved {saved[k]!r}, now {v!r})" for k, v in identity.items() if k in saved and saved[k] != v
    ]
    if not diff:
        return True
    if force:
        print(f"resume: train.resume=force continues {run_dir} although {'; '.join(diff)} changed")
        return False
    raise ConfigError(
        f"{run_dir} holds a run that differs in {'; '.join(diff)}: resuming would not continue the same "
        "run. Use another run_dir, train.resume=false to start over, or train.resume=force to continue "
        "anyway (the data stream will then differ from an uninterrupted run's)"
    )
