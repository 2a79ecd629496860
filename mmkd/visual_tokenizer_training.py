"""Train the visual tokenizer on world renders, resumably, and measure what survives it.

Training images are drawn on the fly from the world's training split (never a held-out composition),
scene `step * batch + j` for the j-th image of a step, so a resumed run sees exactly the images the
uninterrupted one would. Every `save_every` steps the weights, the optimizer and the RNG are saved
(DCP, read back without unpickling, committed last); the finished tokenizer goes to `<out>/tokenizer`
with `metrics.json` (the world's own is a foundation: mmkd/foundations/store.py):

    reconstruction_mse   mean squared error in [-1, 1] pixel units on held-out renders
    codebook_usage       fraction of the codes used on them; perplexity of their use
    scene_kept           of the objects in the scenes (which the scene reader finds exactly in the
                         real renders), the fraction it finds in the reconstructions (same kind,
                         colour, size and cell)
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from PIL import Image
from torch.nn import functional as F
from tqdm import tqdm

from mmkd.config import ConfigError
from mmkd.engines.base import Engine
from mmkd.foundations.config import VISUAL_TOKENIZER_STEPS
from mmkd.loader import image_tensor
from mmkd.model.config import ModelConfig
from mmkd.model.visual_tokenizer import VisualTokenizer, VQConfig
from mmkd.shards import write_json_atomic
from mmkd.world.read import read_scene, truth
from mmkd.world.render import render
from mmkd.world.scene import WorldConfig, sample_scene


@dataclass
class TokenizerTraining:
    model: VQConfig = field(default_factory=VQConfig)
    world: WorldConfig = field(default_factory=WorldConfig)
    steps: int = VISUAL_TOKENIZER_STEPS
    batch: int = 32
    lr: float = 1e-3
    seed: int = 0
    save_every: int = 250
    eval_images: int = 200
    device: str = "auto"  # auto: the GPU when there is one, else the CPU


def to_pixels(images: list[Image.Image], size: int) -> torch.Tensor:
    """[B, 3, size, size] in [-1, 1], as the loader makes image tensors."""
    return torch.stack([image_tensor(im, size) for im in images])


def to_images(pixels: torch.Tensor) -> list[Image.Image]:
    arr = ((pixels.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in arr]


def _renders(world: WorldConfig, split: str, start: int, n: int) -> list:
    scenes = [sample_scene(world, split, i) for i in range(start, start + n)]
    return scenes, [render(s, world.image_size) for s in scenes]


def train_tokenizer(cfg: TokenizerTraining, out: Path) -> dict:
    """Train (resuming from `<out>/checkpoint` if it is there); returns the metrics."""
    if cfg.model.image_size != cfg.world.image_size:
        raise ValueError(
            f"model.image_size={cfg.model.image_size} must equal world.image_size={cfg.world.image_size}"
        )
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if cfg.device == "auto" else cfg.device
    )
    model = VisualTokenizer(cfg.model).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
    engine = Engine(model, optimizer)
    step = _resume(out / "checkpoint", engine)
    bar = tqdm(total=cfg.steps, initial=step, desc="visual tokenizer", unit="step")
    model.train()
    while step < cfg.steps:
        for group in optimizer.param_groups:  # cosine to 10%
            group["lr"] = cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / cfg.steps)))
        _, images = _renders(cfg.world, "tokenizer", step * cfg.batch, cfg.batch)
        pixels = to_pixels(images, cfg.world.image_size).to(device)
        recon, _, commit = model(pixels)
        loss = F.mse_loss(recon, pixels) + commit
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        step += 1
        bar.update(1)
        bar.set_postfix(loss=f"{loss.item():.4f}")
        if step % cfg.save_every == 0 and step < cfg.steps:
            _save(out / "checkpoint", engine, step)
    bar.close()
    metrics = evaluate_tokenizer(model, cfg.world, cfg.eval_images)
    model.save(out / "tokenizer")
    write_json_atomic(
        out / "tokenizer" / "metrics.json", {**metrics, "training": asdict(cfg) | {"step": step}}
    )
    shutil.rmtree(out / "checkpoint", ignore_errors=True)
    return metrics


def _save(path: Path, engine: Engine, step: int) -> None:
    """Weights, optimizer and RNG (the trainer's `Engine.save`), committed by a rename last: a kill
    mid-save leaves the previous checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    engine.save(tmp)
    write_json_atomic(tmp / "meta.json", {"step": step})
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


def _resume(path: Path, engine: Engine) -> int:
    if not (path / "meta.json").exists():
        return 0
    engine.load(path)  # DCP, read without unpickling
    return json.loads((path / "meta.json").read_text())["step"]


@torch.no_grad()
def evaluate_tokenizer(model: VisualTokenizer, world: WorldConfig, n: int) -> dict:
    """Reconstruction error, codebook use and how much of each scene the reconstructions keep, on
    `n` renders of a split the tokenizer never trained on."""
    model.eval()
    scenes, images = _renders(world, "tokenizer-eval", 0, n)
    pixels = to_pixels(images, world.image_size).to(next(model.parameters()).device)
    ids = model.encode(pixels)
    recon = model.decode(ids)
    counts = torch.bincount(ids.flatten(), minlength=model.cfg.codebook_size).float()
    probs = counts / counts.sum()
    entropy = -(probs[probs > 0] * probs[probs > 0].log()).sum()
    found = kept = 0
    for scene, image in zip(scenes, to_images(recon), strict=True):
        want = set(truth(scene).objects)
        found += len(want)
        kept += len(want & set(read_scene(image).objects))
    return {
        "reconstruction_mse": float(F.mse_loss(recon, pixels)),
        "codebook_usage": float((counts > 0).float().mean()),
        "codebook_perplexity": float(entropy.exp()),
        "scene_kept": kept / max(found, 1),
        "objects": found,
        "images": n,
    }


def tokenizer_for(model: ModelConfig) -> VQConfig:
    """The tokenizer shape a discrete model config states (codes, their size, the grid)."""
    if model.image_size % model.visual_grid:
        raise ValueError(
            f"model.image_size={model.image_size} must be a multiple of model.visual_grid={model.visual_grid}"
        )
    return VQConfig(
        image_size=model.image_size,
        downsample=model.image_size // model.visual_grid,
        code_dim=model.code_dim,
        codebook_size=model.codebook_size,
    ).validate()


def check_fits(model: ModelConfig, tokenizer_dir: Path) -> None:
    """The tokenizer at `tokenizer_dir` gives the ids the model config expects, or a ConfigError."""
    got = json.loads((tokenizer_dir / "config.json").read_text())
    want = asdict(tokenizer_for(model))
    keys = ("image_size", "downsample", "code_dim", "codebook_size")
    wrong = [f"{k}={got.get(k)} (the model expects {want[k]})" for k in keys if got.get(k) != want[k]]
    if wrong:
        raise ConfigError(
            f"model.visual_tokenizer={str(tokenizer_dir)!r} does not fit the model: {', '.join(wrong)}; "
            "set model.image_size, model.visual_grid, model.code_dim and model.codebook_size to match"
        )
