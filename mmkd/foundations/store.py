"""Where the world foundations live, and building them once.

Each foundation is a directory `<world>/foundations/<part>-<hash>/`: `model/` (a Hugging Face
directory with its tokenizer: what `model.init_vision` / `model.init_decoder` load; for the discrete
models' visual tokenizer, what `model.visual_tokenizer` names) and `foundation.json` (what it was
built from, its scores, how long it took). The hash covers everything that decides the weights: this
module's version, the world config, the world tokenizer (for the parts that read text), the model
shape the part takes and the `foundations.*` keys, so a change builds a new directory beside the old
one and a run never starts from a foundation built with other settings. A build writes into a
temporary directory and renames it when done: a crash leaves no half foundation to be reused (the
visual tokenizer resumes from its checkpoint there). Processes building one foundation take turns.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import shutil
import time
from dataclasses import asdict, fields
from pathlib import Path
from typing import Any

import torch

from mmkd.foundations.config import RECORD, FoundationConfig
from mmkd.foundations.text import train_text
from mmkd.foundations.vision import train_vision
from mmkd.model.config import ModelConfig
from mmkd.model.hf import write_tokenizer
from mmkd.shards import write_json_atomic
from mmkd.tokenizer import Tokenizer
from mmkd.visual_tokenizer_training import TokenizerTraining, tokenizer_for, train_tokenizer
from mmkd.world.scene import WorldConfig

# Each part's trainer version: a change to how a part trains names new directories for that part only.
# vision 2: the logit bias starts at -log(batch); text 2: its corpus holds quiz sheets.
VISUAL_TOKENIZER = "visual_tokenizer"  # the discrete models' image tokenizer: images only, no text
VERSIONS = {"vision": 2, "text": 2, VISUAL_TOKENIZER: 1}
# The model config keys each part's weights depend on.
SHAPES = {
    "vision": (
        "image_size",
        "patch_size",
        "vision_width",
        "vision_layers",
        "vision_heads",
        "vision_mlp",
        "vision_norm_eps",
    ),
    "text": (
        "width",
        "layers",
        "heads",
        "kv_heads",
        "ffn",
        "max_seq_len",
        "rope_theta",
        "rope_scaling",
        "norm_eps",
        "tie_embeddings",
    ),
}
PREFIX = {"vision": "vision_", "text": "text_", VISUAL_TOKENIZER: "visual_tokenizer_"}


def _hf_part(trainer):
    """A tower's trainer as a build step: the trained transformers model saved with the world
    tokenizer into `<out>/model`; returns its scores."""

    def build(model, f, world, tokenizer, device, out: Path) -> dict[str, Any]:
        shutil.rmtree(out, ignore_errors=True)  # a crashed build's leftovers
        trained, scores = trainer(model, f, world, tokenizer, device)
        trained.cpu().save_pretrained(out / "model")  # safetensors from host memory, whatever the device
        write_tokenizer(out / "model", tokenizer)
        return scores

    return build


def _visual_tokenizer(model, f, world, tokenizer, device, out: Path) -> dict[str, Any]:
    """The visual tokenizer into `<out>/model`, resuming from `<out>/checkpoint` after a crash."""
    training = TokenizerTraining(
        model=tokenizer_for(model),
        world=world,
        steps=f.visual_tokenizer_steps,
        seed=f.seed,
        device=str(device),
    )
    scores = train_tokenizer(training, out)
    shutil.rmtree(out / "model", ignore_errors=True)  # a crash after a rename left one without its record
    (out / "tokenizer").replace(out / "model")
    return scores


BUILDERS = {
    "vision": _hf_part(train_vision),
    "text": _hf_part(train_text),
    VISUAL_TOKENIZER: _visual_tokenizer,
}


def parts(model: ModelConfig) -> list[str]:
    """The foundations a model starts from: each tower no checkpoint is named for
    (`model.init_vision`, `model.init_decoder`); the discrete model has no vision tower (its images
    are visual-token ids from its own tokenizer), so at most the language model."""
    towers = (
        {"text": model.init_decoder}
        if model.family == "discrete"
        else {
            "vision": model.init_vision,
            "text": model.init_decoder,
        }
    )
    return [part for part, named in towers.items() if not named]


def inputs(
    part: str, model: ModelConfig, f: FoundationConfig, world: WorldConfig, tokenizer: Tokenizer
) -> dict:
    """Everything that decides a part's weights (its hash's input, recorded in foundation.json)."""
    if part == VISUAL_TOKENIZER:  # images only: the text tokenizer and the towers' keys play no part
        return {
            "version": VERSIONS[part],
            "part": part,
            "world": world.identity(),
            "model": asdict(tokenizer_for(model)),
            "foundations": {"seed": f.seed, "visual_tokenizer_steps": f.visual_tokenizer_steps},
        }
    model_keys = asdict(model)
    own = {
        k.name: getattr(f, k.name)
        for k in fields(f)
        if k.name.startswith(PREFIX[part]) or k.name in ("seed", "warmup_fraction", "eval_items")
    }
    return {
        "version": VERSIONS[part],
        "part": part,
        "world": world.identity(),
        "tokenizer_sha256": hashlib.sha256(tokenizer.to_str().encode()).hexdigest(),
        "model": {k: model_keys[k] for k in SHAPES[part]},
        "foundations": own,
    }


def foundation_dir(world_root: Path, part: str, stated: dict) -> Path:
    digest = hashlib.sha256(json.dumps(stated, sort_keys=True).encode()).hexdigest()[:12]
    return world_root / "foundations" / f"{part}-{digest}"


def built(directory: Path) -> dict[str, Any] | None:
    """foundation.json of a finished foundation, or None."""
    path = directory / RECORD
    return json.loads(path.read_text()) if path.is_file() and (directory / "model").is_dir() else None


def foundation_paths(
    model: ModelConfig,
    f: FoundationConfig,
    world: WorldConfig,
    world_root: Path,
    tokenizer: Tokenizer,
    wanted: list[str] | None = None,
) -> dict[str, Path]:
    """{part: the directory of its foundation for these settings} (built or not), for the parts
    `wanted` (default: the towers the model starts from, `parts(model)`)."""
    return {
        p: foundation_dir(world_root, p, inputs(p, model, f, world, tokenizer))
        for p in (parts(model) if wanted is None else wanted)
    }


def prepare_foundations(
    model: ModelConfig,
    f: FoundationConfig,
    world: WorldConfig,
    world_root: Path,
    tokenizer: Tokenizer,
    device: torch.device,
    wanted: list[str] | None = None,
) -> dict[str, Path]:
    """{part: the directory a run loads it from}, building each that is missing (with a progress bar)
    and printing each one's scores; `wanted` as in `foundation_paths`."""
    out = {}
    for part, directory in foundation_paths(model, f, world, world_root, tokenizer, wanted).items():
        directory.parent.mkdir(parents=True, exist_ok=True)
        with open(directory.with_name(f".{directory.name}.lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # the first process builds; the others then find it built
            record = built(directory) or _build(part, model, f, world, tokenizer, device, directory)
        scores = ", ".join(f"{k} {v:.3f}" for k, v in record["scores"].items() if isinstance(v, float))
        print(f"world {part} foundation {directory.name} ({record['seconds']:.0f} s to build): {scores}")
        out[part] = directory / "model"
    return out


def _build(part, model, f, world, tokenizer, device, directory: Path) -> dict[str, Any]:
    start = time.perf_counter()
    tmp = directory.with_name(directory.name + ".tmp")
    scores = BUILDERS[part](model, f, world, tokenizer, device, tmp)
    record = {
        "inputs": inputs(part, model, f, world, tokenizer),
        "scores": scores,
        "seconds": time.perf_counter() - start,
        "device": str(device),
    }
    write_json_atomic(tmp / RECORD, record)
    shutil.rmtree(directory, ignore_errors=True)  # an unfinished one (no foundation.json)
    tmp.replace(directory)
    return record
