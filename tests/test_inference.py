"""Generation with the KV cache equals full recomputation: same tokens, same logits at every step."""

import dataclasses

import pytest
import torch

from mmkd.bench_item import load_benchmark
from mmkd.eval.inference import generate, greedy, item_pixels
from mmkd.model import VLM
from mmkd.templates import Templates
from tests.conftest import model_config


def _recompute(model, prompts, pixels, max_new, pad_id):
    """The reference: the whole left-padded sequence (and its images) through the model per token."""
    length = max(map(len, prompts))
    ids = torch.tensor([[pad_id] * (length - len(p)) + p for p in prompts])
    mask = torch.tensor([[False] * (length - len(p)) + [True] * len(p) for p in prompts])
    steps = []
    for _ in range(min(max_new, model.cfg.max_seq_len - length)):
        logits = model(ids, pixels, attention_mask=mask)[:, -1]
        logits[:, model.image_token_id] = float("-inf")
        steps.append(logits)
        nxt = logits.argmax(-1)
        ids, mask = torch.cat([ids, nxt[:, None]], 1), torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
    return ids[:, length:].tolist(), steps


@pytest.fixture
def micro(tokenizer):
    """A random micro model and its templates."""
    cfg = dataclasses.replace(model_config("micro"), vocab_size=tokenizer.vocab_size)
    torch.manual_seed(0)
    return VLM(cfg, tokenizer.image_id).eval(), Templates(tokenizer, cfg.image_tokens, cfg.max_seq_len)


def test_cached_generation_equals_full_recompute(world, tokenizer, micro):
    _, root = world
    model, templates = micro
    cfg = model.cfg
    items = [
        *load_benchmark(root / "bench" / "counting.jsonl")[:2],
        *load_benchmark(root / "bench" / "ocr.jsonl")[:2],
    ]
    prompts = [templates.prompt_ids(it.question, len(it.images())) for it in items]
    assert len({len(p) for p in prompts}) > 1  # left padding is exercised
    pixels = item_pixels(items, cfg.image_size, torch.device("cpu"))
    want, want_logits = _recompute(model, prompts, pixels, 12, tokenizer.pad_id)
    seen = []
    step = model.next_token_logits
    model.next_token_logits = lambda *a: seen.append(step(*a)) or seen[-1]
    got = greedy(model, prompts, pixels, 12, tokenizer.pad_id, lambda new: False)
    assert got == want
    for a, b in zip(seen, want_logits, strict=True):
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    assert seen[1].shape == (4, tokenizer.vocab_size)


def test_generation_stops_within_the_context_and_at_stop_tokens(world, tokenizer, micro):
    _, root = world
    model, templates = micro
    cfg = model.cfg
    items = load_benchmark(root / "bench" / "ocr.jsonl")[:2]
    prompt_len = len(templates.prompt_ids(items[0].question, 1))
    long = greedy(
        model,
        [templates.prompt_ids(items[0].question, 1)],
        item_pixels(items[:1], cfg.image_size, "cpu"),
        10**6,
        tokenizer.pad_id,
        lambda n: False,
    )
    assert len(long[0]) == cfg.max_seq_len - prompt_len  # the sequence ends at model.max_seq_len
    first = greedy(
        model,
        [templates.prompt_ids(items[0].question, 1)],
        item_pixels(items[:1], cfg.image_size, "cpu"),
        5,
        tokenizer.pad_id,
        lambda n: True,
    )
    assert len(first[0]) == 1
    assert len(generate(model, templates, items, 2, 5, stop_at_newline=True)) == 2
