"""A world CLIP (seed 002 Sec. 4.1, Table 1, Fig. 8): a small contrastive image-text model trained from
scratch on a recipe's caption sources, with zero-shot classification and retrieval as its benchmarks.

The model is transformers' `CLIPModel` with a small config and no pretrained weights, trained with its
own contrastive loss (open_clip is not used: it imports torchvision at import, which breaks next to
the CPU torch build). Text goes through the run's tokenizer as `<bos> text <|endoftext|>`, cut to
`clip.max_text_tokens` (77, CLIP's limit: the reason the paper keeps DSC+ away from CLIP). The text
embedding is read at `<|endoftext|>`, a token the CLIP adds after the run's vocabulary, so its id is
the highest (OpenAI CLIP's layout): transformers pools at the highest id when a config's
`eos_token_id` is 2, as a world or Llama tokenizer's `<eos>` is, and at `eos_token_id` otherwise;
both find it. Each
training pair is drawn from the caption sources at the recipe's weights (per-sample mixing, so the
`caption_ratio_*` recipes are Fig. 8's sweep). The saved directory is a Hugging Face CLIP with its
tokenizer and image processor, so `build.caption_scorer=clip:<dir>/model` scores captions with it.

Benchmarks, on held-out world compositions: zero-shot classification of single-object scenes by
"a photo of a {kind}." (ImageNet's role) and image-text retrieval with reference captions (COCO's),
recall@1 and @5 in both directions.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from mmkd.config import ClipConfig, ConfigError
from mmkd.loader import MixtureSampler, image_tensor
from mmkd.schema import Sample
from mmkd.shards import open_dataset, write_json_atomic
from mmkd.tokenizer import Tokenizer
from mmkd.world.language import dense_caption
from mmkd.world.render import render
from mmkd.world.scene import KINDS, WorldConfig, sample_scene, scene_rng

CLIP_VERSION = 2  # 1 ended text with the run's <eos> (id 2), so transformers pooled at the wrong token
END_OF_TEXT = "<|endoftext|>"
MEAN, STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)  # CLIP's


def build_model(cfg: ClipConfig, tokenizer: Tokenizer, image_size: int) -> Any:
    from transformers import CLIPConfig, CLIPModel

    if image_size % cfg.patch_size:
        raise ConfigError(f"clip.patch_size={cfg.patch_size}: must divide the image size {image_size}")
    shape = {
        "hidden_size": cfg.hidden_size,
        "intermediate_size": 4 * cfg.hidden_size,
        "num_hidden_layers": cfg.layers,
        "num_attention_heads": cfg.heads,
    }
    end = end_of_text_id(tokenizer)
    text = {**shape, "vocab_size": end + 1, "max_position_embeddings": cfg.max_text_tokens}
    text |= {"bos_token_id": tokenizer.bos_id, "eos_token_id": end, "pad_token_id": tokenizer.pad_id}
    vision = {**shape, "image_size": image_size, "patch_size": cfg.patch_size}
    return CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=cfg.projection_dim))


def end_of_text_id(tokenizer: Tokenizer) -> int:
    """The CLIP's end-of-text token: one past the run's vocabulary."""
    return tokenizer.vocab_size


def text_batch(tokenizer: Tokenizer, texts: list[str], max_tokens: int, device: torch.device) -> dict:
    """`<bos> text <|endoftext|>` ids (cut to `max_tokens`), right-padded, and their attention mask."""
    end = end_of_text_id(tokenizer)
    rows = [[tokenizer.bos_id, *tokenizer.encode(t)[: max_tokens - 2], end] for t in texts]
    ids = torch.full((len(rows), max(map(len, rows))), tokenizer.pad_id, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), 1
    return {"input_ids": ids.to(device), "attention_mask": mask.to(device)}


def pixel_batch(images: list, size: int, device: torch.device) -> torch.Tensor:
    x = (torch.stack([image_tensor(im, size) for im in images]) + 1) / 2  # [B, 3, H, W] in [0, 1]
    mean, std = torch.tensor(MEAN)[:, None, None], torch.tensor(STD)[:, None, None]
    return ((x - mean) / std).to(device)


def _pairs(sources: dict[str, Path]) -> dict[str, list[Sample]]:
    out = {}
    for name, path in sources.items():
        samples = [
            s for s in open_dataset(path).iter(images=True) if s.kind == "caption" and len(s.images) == 1
        ]
        if not samples:
            raise ConfigError(f"the CLIP trains on image-caption pairs; source {name!r} ({path}) has none")
        out[name] = samples
    return out


def _lr(cfg: ClipConfig, step: int) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(1, cfg.steps - cfg.warmup_steps)
    return cfg.lr * 0.5 * (1 + np.cos(np.pi * min(1.0, progress)))


def train_clip(
    cfg: ClipConfig,
    weights: dict[str, float],
    sources: dict[str, Path],
    tokenizer: Tokenizer,
    world: WorldConfig,
    out: Path,
    seed: int,
    device: torch.device,
) -> dict[str, Any]:
    """Train on the caption sources at `weights`, evaluate, save `<out>/model` and `<out>/metrics.json`."""
    cfg.validate()
    torch.manual_seed(seed)
    pairs = _pairs(sources)
    model = build_model(cfg, tokenizer, world.image_size).to(device)
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    rest = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": rest, "weight_decay": 0.0}],
        lr=cfg.lr,
    )
    sampler, rng = MixtureSampler(weights, seed=f"{seed}/clip"), random.Random(f"{seed}/clip/pairs")
    losses = []
    model.train()
    bar = tqdm(range(cfg.steps), desc="train world CLIP", unit="step")
    for step in bar:
        batch = [rng.choice(pairs[next(sampler)]) for _ in range(cfg.batch_size)]
        for group in opt.param_groups:
            group["lr"] = _lr(cfg, step)
        text = text_batch(tokenizer, [s.text for s in batch], cfg.max_text_tokens, device)
        pixels = pixel_batch([s.images[0] for s in batch], world.image_size, device)
        loss = model(**text, pixel_values=pixels, return_loss=True).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        if step % 10 == 0:
            bar.set_postfix(loss=f"{np.mean(losses[-10:]):.3f}")
    model.eval()
    metrics = {
        "version": CLIP_VERSION,
        "seed": seed,
        "weights": weights,
        "sources": {n: str(p) for n, p in sources.items()},
        "clip": asdict(cfg),
        "loss_first": float(np.mean(losses[:10])),
        "loss_last": float(np.mean(losses[-10:])),
        **evaluate_contrastive(
            _clip_embed(model, cfg, tokenizer, world.image_size, device), world, cfg.eval_items
        ),
    }
    save(model, tokenizer, world.image_size, out / "model")
    write_json_atomic(out / "metrics.json", metrics)
    return metrics


Embed = Callable[[list[str], list], tuple[torch.Tensor, torch.Tensor]]


def _clip_embed(model: Any, cfg: ClipConfig, tokenizer: Tokenizer, size: int, device: torch.device) -> Embed:
    """(texts, images) -> normalised text and image embeddings of a world CLIP (one forward: the
    counts may differ)."""

    @torch.no_grad()
    def embed(texts: list[str], images: list) -> tuple[torch.Tensor, torch.Tensor]:
        text = text_batch(tokenizer, texts, cfg.max_text_tokens, device)
        out = model(**text, pixel_values=pixel_batch(images, size, device))
        return out.text_embeds, out.image_embeds

    return embed


def _held_out(world: WorldConfig, split: str, n: int, single: bool) -> list:
    scenes, i = [], 0
    while len(scenes) < n:
        scene = sample_scene(world, split, i, layout="objects")
        i += 1
        if not single or len(scene.objects) == 1:
            scenes.append(scene)
    return scenes


def _recall(sims: torch.Tensor, k: int) -> float:
    """Share of rows whose own column (the diagonal) is among their top k."""
    top = sims.topk(k, dim=1).indices
    return float((top == torch.arange(len(sims), device=sims.device)[:, None]).any(1).float().mean())


def evaluate_contrastive(embed: Embed, world: WorldConfig, n: int) -> dict[str, float]:
    """Zero-shot classification accuracy and retrieval recall@1/5 of an image-text model (a CLIP, or
    the world's SigLIP: mmkd/foundations), on held-out compositions."""
    size = world.image_size
    single = _held_out(world, "bench-clip-classify", n, single=True)
    prompts = [f"a photo of a {k}." for k in KINDS]
    t, i = embed(prompts, [render(s, size) for s in single])
    predicted = (i @ t.T).argmax(1).tolist()
    accuracy = float(np.mean([KINDS[p] == s.objects[0].kind for p, s in zip(predicted, single, strict=True)]))
    scenes = _held_out(world, "bench-clip-retrieve", n, single=False)
    captions = [dense_caption(s, scene_rng(world, "bench-clip-caption", k)) for k, s in enumerate(scenes)]
    t, i = embed(captions, [render(s, size) for s in scenes])
    sims = i @ t.T
    return {
        "zero_shot_accuracy": accuracy,
        "zero_shot_chance": 1 / len(KINDS),
        "image_to_text_r1": _recall(sims, 1),
        "image_to_text_r5": _recall(sims, 5),
        "text_to_image_r1": _recall(sims.T, 1),
        "text_to_image_r5": _recall(sims.T, 5),
        "retrieval_chance_r1": 1 / n,
    }


def trained(out: Path) -> dict[str, Any] | None:
    """The metrics of the CLIP under `out` if this version of the code trained it; None when there is
    none, or an older version's (which training again replaces)."""
    path = out / "metrics.json"
    if not path.exists():
        return None
    metrics = json.loads(path.read_text())
    return metrics if metrics.get("version") == CLIP_VERSION else None


def check_version(directory: Path) -> None:
    """Refuse a saved world CLIP from an older version of this module (a CLIP of any other origin has
    no `mmkd_clip.json` and passes)."""
    stamp = directory / "mmkd_clip.json"
    if stamp.exists() and json.loads(stamp.read_text()).get("version") != CLIP_VERSION:
        raise ConfigError(
            f"{directory} is a world CLIP of an older version (before {CLIP_VERSION}, its text embedding "
            "was read at the wrong token); train it again with launch/clip.py"
        )


def save(model: Any, tokenizer: Tokenizer, image_size: int, out: Path) -> None:
    """A Hugging Face CLIP directory: weights, a tokenizer that adds <bos> and <|endoftext|> as training
    did, an image processor."""
    from tokenizers import AddedToken, processors
    from tokenizers import Tokenizer as HFTokenizer
    from transformers import CLIPImageProcessor, PreTrainedTokenizerFast

    tmp = out.with_name(out.name + ".tmp")
    model.save_pretrained(tmp)
    tok = HFTokenizer.from_str(tokenizer.to_str())
    tok.add_special_tokens([AddedToken(END_OF_TEXT, special=True)])
    end, s = end_of_text_id(tokenizer), tokenizer.special
    if tok.token_to_id(END_OF_TEXT) != end:
        raise ValueError(
            f"{END_OF_TEXT} got id {tok.token_to_id(END_OF_TEXT)}, not {end}: the vocabulary has gaps"
        )
    tok.post_processor = processors.TemplateProcessing(
        single=f"{s.bos} $A {END_OF_TEXT}", special_tokens=[(s.bos, tokenizer.bos_id), (END_OF_TEXT, end)]
    )
    PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token=s.bos, eos_token=END_OF_TEXT, pad_token=s.pad
    ).save_pretrained(tmp)
    processor = CLIPImageProcessor(
        size={"shortest_edge": image_size},
        crop_size={"height": image_size, "width": image_size},
        image_mean=list(MEAN),
        image_std=list(STD),
    )
    processor.save_pretrained(tmp)
    (tmp / "mmkd_clip.json").write_text(json.dumps({"version": CLIP_VERSION}))
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.replace(out)
