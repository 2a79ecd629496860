"""Few-shot evaluation (seed 002's 0/4/8-shot): k solved examples before each item, never the item."""

from __future__ import annotations

import dataclasses
import re

import pytest
import torch

from mmkd.bench_item import load_benchmark
from mmkd.config import ConfigError
from mmkd.eval import few_shot
from mmkd.eval.few_shot import with_shots
from mmkd.eval.inference import item_pixels
from mmkd.eval.world_bench import evaluate_ability
from mmkd.model import VLM
from mmkd.templates import Templates
from tests.conftest import model_config


def test_k_shot_prompts_hold_exactly_k_solved_examples_and_never_the_item(world, tokenizer):
    _, root = world
    items = load_benchmark(root / "bench" / "counting.jsonl")
    shot = with_shots(items, 4, seed=0, name="counting")
    templates = Templates(tokenizer, 9, 512)
    for item, original in zip(shot, items, strict=True):
        ids = [s.id for s in item.shots]
        assert len(ids) == len(set(ids)) == 4 and item.id not in ids
        assert item.images()[-1] is original.image and len(item.images()) == 5
        prompt = templates.item_prompt_ids(item)
        assert prompt.count(tokenizer.image_id) == 5 * 9
        text = tokenizer.decode([t for t in prompt if t != tokenizer.image_id])
        solved = re.findall(r"Question: (.*?)\nAnswer: (.*?)\n", text)
        assert solved == [(s.question, s.answer) for s in item.shots]
        assert text.endswith(f"Question: {item.question}\nAnswer:")
    assert with_shots(items, 4, seed=0, name="counting")[0].shots == shot[0].shots  # seeded
    assert [s.id for s in with_shots(items, 4, seed=1, name="counting")[0].shots] != [
        s.id for s in shot[0].shots
    ]
    assert with_shots(items, 0, seed=0, name="counting") is items
    first = with_shots(items[:2], 4, seed=0, name="counting", pool=items)  # eval.max_items=2
    assert first[0].shots == shot[0].shots and len(first) == 2
    with pytest.raises(
        ConfigError, match=f"eval.shots={len(items)}: benchmark 'counting' has {len(items)} items"
    ):
        with_shots(items, len(items), seed=0, name="counting")


def test_few_shot_captioning_and_choices_run_through_the_model(world, tokenizer):
    _, root = world
    cfg = dataclasses.replace(model_config("micro"), vocab_size=tokenizer.vocab_size)
    torch.manual_seed(0)
    model = VLM(cfg, tokenizer.image_id).eval()
    templates = Templates(tokenizer, cfg.image_tokens, cfg.max_seq_len)
    captions = with_shots(load_benchmark(root / "bench" / "captioning.jsonl")[:5], 2, 0, "captioning")
    first = captions[0]
    assert all(not s.question and s.answer == s.references[0] for s in first.shots)  # reference captions
    pixels = item_pixels(captions[:1], cfg.image_size, torch.device("cpu"))
    assert pixels.shape[0] == 3  # two examples' images, then the item's
    result, records = evaluate_ability(model, templates, captions, {}, "a ball", 8, 6, 0)
    assert result["shots"] == 2 and len(records) == 5 and result["caption_quality"]["captions"] == 5
    drawn = with_shots(captions, 4, 0, "captioning")
    crowded = few_shot.fit(drawn, templates, 9 * 3 + 30, 6)
    assert all(len(templates.item_prompt_ids(it)) + 6 <= 57 for it in crowded)
    for kept, full in zip(crowded, drawn, strict=True):  # the earliest examples are dropped to fit
        assert len(kept.shots) < 4 and kept.shots == full.shots[len(full.shots) - len(kept.shots) :]
    choices = with_shots(load_benchmark(root / "bench" / "existence.jsonl")[:5], 1, 0, "existence")
    result, _ = evaluate_ability(model, templates, choices, {}, "", 8, 6, 0)
    assert result["shots"] == 1 and result["n"] == 5
