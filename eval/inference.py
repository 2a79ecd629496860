"""Inference on a VLM for every eval suite: option likelihood and batched greedy generation with the
KV cache, on the device the model's weights are on.

Multiple choice is scored by option likelihood (seed 003 E.2 takes the most probable option token;
options here are free-form words, so an option's score is the *mean* log-probability of its tokens:
a sum would favour one-token options such as "center" over "top left"). Generation left-pads a batch
of prompts, runs them once (images encoded once) and then one token per step from the cache.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from mmkd.bench_item import BenchItem
from mmkd.loader import image_tensor
from mmkd.model import VLM
from mmkd.model.kv_cache import KVCache
from mmkd.templates import IGNORE, Templates


def model_device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def item_pixels(items: list[BenchItem], size: int, device: torch.device) -> torch.Tensor | None:
    """The items' images in sequence order, [N, 3, size, size] on `device`, or None without images."""
    ims = [image_tensor(im, size) for it in items for im in it.images()]
    return torch.stack(ims).to(device) if ims else None


@torch.no_grad()
def answer_loglik(
    model: VLM, templates: Templates, pairs: list[tuple[BenchItem, str]], batch_size: int
) -> list[tuple[float, int]]:
    """Teacher-forced (sum of log-probabilities, token count) of each answer after its item's prompt,
    the answer tokenised as in training: what option scores and the continuous scores are made of."""
    device = model_device(model)
    rows = [(templates.item_prompt_ids(it), templates.answer_ids(answer), it) for it, answer in pairs]
    out: list[tuple[float, int]] = []
    pad = templates.tok.pad_id
    for start in range(0, len(rows), batch_size):
        chunk = rows[start : start + batch_size]
        length = max(len(p) + len(a) for p, a, _ in chunk)
        # Rows are filled on the host, then sent to the device in one copy each (not one per row).
        ids = torch.full((len(chunk), length), pad, dtype=torch.long)
        labels = torch.full((len(chunk), length), IGNORE, dtype=torch.long)
        for b, (p, a, _) in enumerate(chunk):
            ids[b, : len(p) + len(a)] = torch.tensor(p + a)
            labels[b, len(p) : len(p) + len(a)] = torch.tensor(a)
        pixels = item_pixels([it for *_, it in chunk], model.cfg.image_size, device)
        logp = model(ids.to(device), pixels).float().log_softmax(-1)[:, :-1]  # [B, T-1, V]
        target = labels[:, 1:].to(device)
        tok = logp.gather(-1, target.clamp(min=0)[..., None])[..., 0] * (target != IGNORE)
        out += zip(tok.sum(-1).tolist(), (target != IGNORE).sum(-1).tolist())
    return out


def option_loglik(
    model: VLM, templates: Templates, items: list[BenchItem], batch_size: int
) -> list[list[float]]:
    """Mean per-token log-probability of every option of every item."""
    pairs = [(it, opt) for it in items for opt in it.options or []]
    flat = iter(answer_loglik(model, templates, pairs, batch_size))
    return [[s / n for s, n in (next(flat) for _ in it.options or [])] for it in items]


def left_padded(
    prompts: list[list[int]], pad_id: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts as one left-padded batch [B, T] of ids and its validity mask, filled on the host and
    sent to `device` in one copy each (generation then appends at the right edge of every row)."""
    length = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(prompts), length), dtype=torch.bool)
    for b, p in enumerate(prompts):
        ids[b, length - len(p) :] = torch.tensor(p)
        mask[b, length - len(p) :] = True
    return ids.to(device), mask.to(device)


@torch.no_grad()
def greedy(
    model: VLM,
    prompts: list[list[int]],
    pixels: torch.Tensor | None,
    max_new_tokens: int,
    pad_id: int,
    stop: Callable[[list[int]], bool],
) -> list[list[int]]:
    """Greedy continuations of a batch of prompts (left-padded here), with the KV cache.

    Only text is generated: never the `<image>` placeholder, nor the discrete model's visual ids. A row
    ends once `stop(its new tokens)` holds (the token that stopped it is kept: callers trim), after
    `max_new_tokens`, or when the sequence reaches `model.max_seq_len`.
    """
    device = model_device(model)
    length = max(len(p) for p in prompts)
    new: list[list[int]] = [[] for _ in prompts]
    budget = min(max_new_tokens, model.cfg.max_seq_len - length)  # the sequence stays within max_seq_len
    if budget <= 0:
        return new
    ids, mask = left_padded(prompts, pad_id, device)
    cache = KVCache(model.cfg, len(prompts), next(model.parameters()).dtype, device)
    done = [False] * len(prompts)
    step_mask = torch.ones((len(prompts), 1), dtype=torch.bool, device=device)
    for _ in range(budget):
        logits = model.next_token_logits(ids, pixels, mask, cache)[:, : model.text_vocab_size]  # [B, V]
        logits[:, model.image_token_id] = float("-inf")  # an image slot is never text to generate
        nxt = logits.argmax(-1)  # [B]
        for b, t in enumerate(nxt.tolist()):
            if not done[b]:
                new[b].append(t)
                done[b] = stop(new[b])
        if all(done):
            break
        ids, mask, pixels = nxt[:, None], step_mask, None  # the images are in the cache now
    return new


def generate(
    model: VLM,
    templates: Templates,
    items: list[BenchItem],
    batch_size: int,
    max_new_tokens: int,
    stop_at_newline: bool,
) -> list[str]:
    """Greedy answers to the items' prompts, batched, each ending at EOS (or a newline if asked)."""
    tok = templates.tok
    stops = {tok.eos_id} | (set(tok.encode("\n")) if stop_at_newline else set())
    device = model_device(model)
    outputs = []
    for start in range(0, len(items), batch_size):
        chunk = items[start : start + batch_size]
        prompts = [templates.item_prompt_ids(it) for it in chunk]
        pixels = item_pixels(chunk, model.cfg.image_size, device)
        new = greedy(model, prompts, pixels, max_new_tokens, tok.pad_id, lambda n: n[-1] in stops)
        outputs += [tok.decode(n[:-1] if n and n[-1] in stops else n).strip() for n in new]
    return outputs
