"""Text-to-image generation by the discrete model, and its measurement on the world (seed 003 E.2).

Generation: `<bos> text [IMG]`, then exactly N visual ids (logits restricted to the codes; greedy, or
temperature and top-k sampling; classifier-free guidance with `scale`: logits = u + scale x (c - u),
u from the caption-dropped prompt `<bos> [IMG]`), then `[/IMG]`; the ids become pixels through the
visual tokenizer's decoder. Prompt and guidance rows share one KV cache, so a step costs one token.

Measurement: prompts are complete descriptions of held-out scenes (every object with its size,
colour and position: `dense_caption`), so what an image should show is exact. The scene reader
(`mmkd.world.read`) reads each image back, and per prompt:

    theme            the background is the prompt's setting (garden, bedroom, ...)
    object P / R     kinds read vs the scene's kinds (as multisets)
    colour P / R     (kind, colour) pairs; position P / R: (kind, cell) pairs
    scene exact      the read scene is the prompt's scene (every kind, colour, size and cell)

P counts what the image shows that the prompt asked for (an image showing nothing scores 0), R what
the prompt asked for that the image shows. Beside the generated images, three reference rows: the
real renders (the reader's own ceiling: exact), the tokenizer's reconstructions of them (the ceiling
a perfect model could reach through this tokenizer) and uniformly random visual ids (the floor). Set
measures: diversity (the share of positions at which two images of different prompts have different
ids) and reader-FD, the Frechet distance between Gaussians fitted to reader features (counts per
kind, colour and occupied cell) of the images and of the real renders: like FID, lower is better,
but it is *not* Inception-FID and is not comparable with published FIDs (docs/discrete.md says how
to compute those on a GPU with local weights). And one measure without sampling, prompt gain: the
visual loss of the real renders' codes given the caption-dropped prompt minus given the prompt, in
nats per code, which says whether the model reads the prompt at all when the images fail.
"""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

from mmkd.discrete_templates import DiscreteTemplates
from mmkd.eval.inference import left_padded
from mmkd.metrics import mean_ci95
from mmkd.model.discrete import DiscreteVLM
from mmkd.model.kv_cache import KVCache
from mmkd.model.visual_tokenizer import VisualTokenizer
from mmkd.visual_tokenizer_training import to_images, to_pixels
from mmkd.world.language import dense_caption
from mmkd.world.read import SeenScene, read_scene, truth
from mmkd.world.render import render
from mmkd.world.scene import COLOURS, KINDS, WorldConfig, sample_scene

SPLIT = "generation"  # scenes no training source draws
PER_IMAGE = (
    "theme",
    "object_p",
    "object_r",
    "colour_p",
    "colour_r",
    "position_p",
    "position_r",
    "scene_exact",
)
ROWS = ("generated", "reconstruction", "random_ids", "real")


@torch.no_grad()
def generate_codes(
    model: DiscreteVLM,
    templates: DiscreteTemplates,
    texts: list[str],
    scale: float = 1.0,
    temperature: float = 0.0,
    top_k: int = 0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Exactly grid^2 code ids [B, N] for each text (see the module docstring); `temperature` 0 is
    greedy. `scale` 1 is plain conditional sampling (no unconditional rows are run)."""
    vocab, n = model.vocab, model.cfg.visual_grid**2
    prompts = [templates.generation_prompt(t) for t in texts]
    guided = scale != 1.0
    if guided:
        prompts += [templates.generation_prompt("")] * len(texts)
    length = max(len(p) for p in prompts)
    if length + n > model.cfg.max_seq_len:
        raise ValueError(f"a prompt of {length} tokens + {n} visual ids exceeds model.max_seq_len")
    device = next(model.parameters()).device
    ids, mask = left_padded(prompts, templates.tok.pad_id, device)
    cache = KVCache(model.cfg, len(prompts), next(model.parameters()).dtype, device)
    step_mask = torch.ones((len(prompts), 1), dtype=torch.bool, device=device)
    codes = []
    for _ in range(n):
        logits = model.next_token_logits(ids, None, mask, cache)[:, vocab.first_code :].float()  # codes only
        if guided:
            cond, uncond = logits.chunk(2)
            logits = uncond + scale * (cond - uncond)
        nxt = _pick(logits, temperature, top_k, generator)  # [B] code ids
        codes.append(nxt)
        token = nxt + vocab.first_code
        ids, mask = (torch.cat([token, token]) if guided else token)[:, None], step_mask
    return torch.stack(codes, dim=1)


@torch.no_grad()
def visual_losses(
    model: DiscreteVLM,
    templates: DiscreteTemplates,
    texts: list[str],
    codes: torch.Tensor,
    batch_size: int = 32,
) -> list[float]:
    """Per text, the teacher-forced loss (nats per code, over the codes only, as generation picks
    them) of `codes[i]` [B, N] after the generation prompt of `texts[i]`. Rows are left-padded as
    generation's prompts are, so every row's codes are its last N positions."""
    first, n = model.vocab.first_code, codes.shape[1]
    losses = []
    for start in range(0, len(texts), batch_size):
        part = codes[start : start + batch_size]
        rows = [
            templates.generation_prompt(t) + (c + first).tolist()
            for t, c in zip(texts[start : start + batch_size], part, strict=True)
        ]
        ids, mask = left_padded(rows, templates.tok.pad_id, codes.device)
        # The logits at position t predict token t + 1: the codes' are the n before the last.
        logits = model(ids, None, mask)[:, -n - 1 : -1, first : first + model.vocab.codes].float()
        per_code = torch.nn.functional.cross_entropy(logits.flatten(0, 1), part.flatten(), reduction="none")
        losses += per_code.view(len(rows), n).mean(1).tolist()
    return losses


def prompt_gain(
    model: DiscreteVLM, templates: DiscreteTemplates, texts: list[str], codes: torch.Tensor
) -> tuple[dict[str, Any], list[float]]:
    """How much the prompt lowers the visual loss of the real renders' codes (teacher-forced, so
    sampling plays no part): the caption-dropped prompt's loss minus the prompt's, paired over
    prompts. Near 0: the model draws as if it had not read the prompt. Returns the summary and each
    prompt's gain (the per-item scores a recipe comparison pairs over)."""
    given = visual_losses(model, templates, texts, codes)
    without = visual_losses(model, templates, [""] * len(texts), codes)
    gains = [w - g for g, w in zip(given, without, strict=True)]
    gain, ci = mean_ci95(gains)
    summary = {
        "metric": "prompt_gain",
        "n": len(texts),
        "score": gain,
        "ci95": ci,
        "codes_per_image": codes.shape[1],
        "loss_with_prompt": mean_ci95(given)[0],
        "loss_without_prompt": mean_ci95(without)[0],
    }
    return summary, gains


def _pick(
    logits: torch.Tensor, temperature: float, top_k: int, generator: torch.Generator | None
) -> torch.Tensor:
    if temperature == 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k:
        kth = logits.topk(min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(-1)
    return torch.multinomial(probs.cpu(), 1, generator=generator)[:, 0].to(logits.device)


def _matched(a: list, b: list) -> int:
    return sum((Counter(a) & Counter(b)).values())


def score_image(seen: SeenScene, want: SeenScene) -> dict[str, float]:
    """The per-image measures of `seen` against the prompt's scene `want`."""
    out = {}
    for name, key in (
        ("object", lambda o: o.kind),
        ("colour", lambda o: (o.kind, o.colour)),
        ("position", lambda o: (o.kind, o.cell)),
    ):
        got, asked = [key(o) for o in seen.objects], [key(o) for o in want.objects]
        hit = _matched(got, asked)
        out[f"{name}_p"] = hit / len(got) if got else 0.0
        out[f"{name}_r"] = hit / len(asked) if asked else 1.0
    out["theme"] = float(seen.theme == want.theme)
    out["scene_exact"] = float(seen.objects == want.objects and seen.layout == want.layout)
    return out


def features(seen: SeenScene) -> np.ndarray:
    """Reader features of one image: counts per kind, per colour, and occupancy per cell."""
    kinds = [sum(o.kind == k for o in seen.objects) for k in KINDS]
    colours = [sum(o.colour == c for o in seen.objects) for c in COLOURS]
    cells = [float(any(o.cell == i for o in seen.objects)) for i in range(9)]
    return np.array(kinds + colours + cells, dtype=np.float64)


def frechet(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussians fitted to the rows of `a` and of `b`."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    distance = (
        ((mu_a - mu_b) ** 2).sum() + np.trace(cov_a + cov_b) - 2 * np.sqrt(np.clip(cross, 0, None)).sum()
    )
    return max(0.0, float(distance))  # not below 0 by rounding


def diversity(codes: torch.Tensor) -> float:
    """Mean share of positions at which two images (of different prompts) have different ids."""
    codes = codes.cpu()
    pairs = [(i, j) for i in range(len(codes)) for j in range(i + 1, len(codes))]
    return float(np.mean([(codes[i] != codes[j]).float().mean() for i, j in pairs])) if pairs else 0.0


def evaluate_generation(
    model: DiscreteVLM,
    templates: DiscreteTemplates,
    tokenizer: VisualTokenizer,
    world: WorldConfig,
    out_dir: Path,
    prompts: int,
    scale: float,
    temperature: float,
    top_k: int,
    seed: int,
    batch_size: int = 32,
    save: int = 16,
) -> tuple[dict[str, dict[str, Any]], list[dict]]:
    """Generate for `prompts` held-out scenes; returns the results (one entry per measure: the
    generated images' score with its CI and the three reference rows) and one record per prompt and
    measure. The first `save` prompts' images are written to `out_dir/generation/` as PNGs."""
    rng = random.Random(f"{seed}/generation")
    scenes = [sample_scene(world, SPLIT, i, layout="objects") for i in range(prompts)]
    texts = [dense_caption(s, rng) for s in scenes]
    size = tokenizer.cfg.image_size
    real = [render(s, size) for s in scenes]
    device = next(model.parameters()).device
    tokenizer = tokenizer.to(device)
    generator = torch.Generator().manual_seed(seed)
    generated, reconstruction = [], []
    for start in range(0, prompts, batch_size):
        part = slice(start, start + batch_size)
        generated.append(generate_codes(model, templates, texts[part], scale, temperature, top_k, generator))
        reconstruction.append(tokenizer.encode(to_pixels(real[part], size).to(device)))
    ids = {"generated": torch.cat(generated), "reconstruction": torch.cat(reconstruction)}
    ids["random_ids"] = torch.randint(
        tokenizer.cfg.codebook_size, ids["generated"].shape, generator=generator
    ).to(device)
    images = {
        k: [im for b in v.split(batch_size) for im in to_images(tokenizer.decode(b))] for k, v in ids.items()
    }
    images["real"] = real
    want = [truth(s) for s in scenes]
    seen = {k: [read_scene(im) for im in ims] for k, ims in images.items()}
    scores = {k: [score_image(s, w) for s, w in zip(v, want, strict=True)] for k, v in seen.items()}
    reference = np.stack([features(s) for s in seen["real"]])
    results: dict[str, dict[str, Any]] = {}
    for measure in PER_IMAGE:
        rows = {k: mean_ci95([s[measure] for s in scores[k]]) for k in ROWS}
        results[measure] = _result(measure, prompts, rows)
        # Paired over prompts: the random ids of prompt i against its generated image.
        gain = [
            g[measure] - r[measure] for g, r in zip(scores["generated"], scores["random_ids"], strict=True)
        ]
        results[measure]["vs_floor"], results[measure]["vs_floor_ci95"] = mean_ci95(gain)
    fd = {k: frechet(np.stack([features(s) for s in seen[k]]), reference) for k in ROWS}
    results["reader_fd"] = _result("reader_fd", prompts, {k: (v, None) for k, v in fd.items()})
    results["prompt_gain"], gains = prompt_gain(model, templates, texts, ids["reconstruction"])
    ids["real"] = ids["reconstruction"]  # the real renders' ids are what reconstructs them
    div = {k: diversity(ids[k]) for k in ROWS}
    results["diversity"] = _result("diversity", prompts, {k: (v, None) for k, v in div.items()})
    _save_images(out_dir / "generation", texts[:save], {k: v[:save] for k, v in images.items()})
    per_prompt = [s | {"prompt_gain": g} for s, g in zip(scores["generated"], gains, strict=True)]
    records = [
        {"suite": "generation", "benchmark": m, "id": f"generation-{i:05d}", "prompt": texts[i], "score": v}
        for i, measures in enumerate(per_prompt)
        for m, v in measures.items()
    ]
    return results, records


def _result(measure: str, n: int, rows: dict[str, tuple[float, float | None]]) -> dict[str, Any]:
    score, ci = rows["generated"]
    refs = {k: v for k, (v, _) in rows.items() if k != "generated"}
    return {
        "metric": measure,
        "n": n,
        "score": score,
        "ci95": ci,
        **refs,
        "floor_ci95": rows["random_ids"][1],
    }


def _save_images(out: Path, texts: list[str], images: dict[str, list]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for i, text in enumerate(texts):
        for kind, ims in images.items():
            ims[i].save(out / f"{i:03d}-{kind}.png")
        lines.append(f"{i:03d}\t{text}\n")
    (out / "prompts.tsv").write_text("".join(lines))


def markdown(results: dict[str, dict[str, Any]], title: str) -> str:
    """The generation table: each measure for the generated images with its CI, beside the floor
    (random ids), the ceiling (reconstructions) and the real renders."""
    lines = [
        f"### {title}: generation",
        "",
        "| measure | n | generated ± 95% CI | random ids (floor) ± 95% CI | reconstruction (ceiling) | real "
        "| Δ vs floor [95% CI] | beats floor |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | :---: |",
    ]
    for measure, r in results.items():
        if measure == "prompt_gain":
            continue
        lower_better = measure == "reader_fd"
        fmt = (lambda v: f"{v:.3f}") if lower_better else (lambda v: f"{100 * v:.1f}")
        if r["ci95"] is None:
            ci = floor_ci = ""
            gain, beats = "—", "—"
        else:
            ci, floor_ci = f" ± {fmt(r['ci95'])}", f" ± {fmt(r['floor_ci95'])}"
            low, high = r["vs_floor"] - r["vs_floor_ci95"], r["vs_floor"] + r["vs_floor_ci95"]
            gain = f"{fmt(r['vs_floor'])} [{fmt(low)}, {fmt(high)}]"
            beats = "yes" if low > 0 else "no"
        row = [
            measure,
            str(r["n"]),
            fmt(r["score"]) + ci,
            fmt(r["random_ids"]) + floor_ci,
            fmt(r["reconstruction"]),
            fmt(r["real"]),
            gain,
            beats,
        ]
        lines.append("| " + " | ".join(row) + " |")
    lines += [
        "",
        "P / R: precision / recall of what the scene reader finds against the prompt's scene, in %. "
        "reader-FD: Frechet distance on reader features to the real renders (lower is better; not "
        "Inception-FID). Δ vs floor: generated minus random ids, paired over prompts; beats floor: its "
        "95% CI lies above 0.",
    ]
    if "prompt_gain" in results:
        g = results["prompt_gain"]
        low, high = g["score"] - g["ci95"], g["score"] + g["ci95"]
        verdict = "the model reads the prompt" if low > 0 else "no measurable use of the prompt"
        lines += [
            "",
            f"Prompt gain (teacher-forced on the real renders' codes): {g['score']:.3f} nats per code "
            f"[{low:.3f}, {high:.3f}] ({g['score'] * g['codes_per_image']:.1f} per image), the visual "
            f"loss {g['loss_with_prompt']:.3f} with the prompt and {g['loss_without_prompt']:.3f} "
            f"without it: {verdict}.",
        ]
    return "\n".join(lines) + "\n"
