"""The world CLIP (seed 002 Table 1, Fig. 8): trains on caption sources at their weights, evaluates
zero-shot classification and retrieval, and saves a directory the caption scorer loads."""

from __future__ import annotations

import json

import pytest
import torch

from mmkd.config import ClipConfig, ConfigError, RunConfig
from mmkd.data_builders.caption_scorers import ClipScorer
from mmkd.data_builders.sources import Sources
from mmkd.shards import open_dataset
from mmkd.world_clip import build_model, end_of_text_id, text_batch, train_clip, trained

SMALL = ClipConfig(hidden_size=32, layers=1, heads=2, projection_dim=16, steps=12, batch_size=16)
SMALL.warmup_steps, SMALL.eval_items = 2, 20


def test_a_world_clip_trains_evaluates_and_scores_captions(world, tokenizer, tmp_path):
    data, root = world
    cfg = RunConfig(data=data)
    cfg.annotator.cache_dir = str(tmp_path / "cache")
    sources = Sources(cfg, root)
    dirs = {"alttext": sources.dir("alttext"), "ssc": sources.dir("ssc")}
    weights = {"alttext": 0.5, "ssc": 0.5}
    cpu = torch.device("cpu")
    metrics = train_clip(SMALL, weights, dirs, tokenizer, data.world, tmp_path / "a", 0, cpu)
    assert metrics["loss_last"] < metrics["loss_first"]  # the contrastive loss falls
    for key in ("zero_shot_accuracy", "image_to_text_r1", "image_to_text_r5", "text_to_image_r5"):
        assert 0.0 <= metrics[key] <= 1.0
    assert metrics["image_to_text_r1"] <= metrics["image_to_text_r5"]
    assert json.loads((tmp_path / "a" / "metrics.json").read_text()) == metrics
    again = train_clip(SMALL, weights, dirs, tokenizer, data.world, tmp_path / "b", 0, cpu)
    assert again["loss_last"] == metrics["loss_last"]  # seeded
    # The saved directory is a Hugging Face CLIP: the F.4 caption scorer loads it, <bos> / <eos> added.
    scorer = ClipScorer(str(tmp_path / "a" / "model"))
    sample = next(iter(open_dataset(dirs["ssc"]).iter(images=True)))
    scores = scorer(sample, [sample.text, "a sign"])
    assert len(scores) == 2 and all(-1.0 <= s <= 1.0 for s in scores)
    ids = scorer.tokenizer("a red ball").input_ids  # as training wrote text
    assert ids == text_batch(tokenizer, ["a red ball"], 77, cpu)["input_ids"][0].tolist()
    assert ids[-1] == end_of_text_id(tokenizer)
    # A CLIP of an older version (whose pooling was wrong) is neither reused nor loaded as a scorer.
    assert trained(tmp_path / "a") == metrics
    (tmp_path / "a" / "metrics.json").write_text(json.dumps({**metrics, "version": 1}))
    (tmp_path / "a" / "model" / "mmkd_clip.json").write_text(json.dumps({"version": 1}))
    assert trained(tmp_path / "a") is None
    with pytest.raises(ConfigError, match=r"world CLIP of an older version .* train it again"):
        ClipScorer(str(tmp_path / "a" / "model"))


def test_the_text_embedding_is_read_at_the_end_of_the_text(tokenizer):
    """transformers pools a CLIP's text where the config's eos_token_id says, or at the highest id when
    that is 2: either way it must be the last token, or the embedding misses the words after it."""
    model = build_model(SMALL, tokenizer, 32).eval()
    batch = text_batch(tokenizer, ["a photo of a ball.", "a big red house"], 77, torch.device("cpu"))
    with torch.no_grad():
        out = model.text_model(**batch)
    last = batch["attention_mask"].sum(1) - 1
    assert torch.equal(out.pooler_output, out.last_hidden_state[torch.arange(2), last])


def test_text_is_cut_at_clips_limit_and_bad_shapes_are_named(tokenizer):
    batch = text_batch(tokenizer, ["a red ball " * 60, "a box"], 77, torch.device("cpu"))
    assert batch["input_ids"].shape == (2, 77) and batch["input_ids"][0, -1] == end_of_text_id(tokenizer)
    assert batch["attention_mask"][1].sum() == len(tokenizer.encode("a box")) + 2
    with pytest.raises(ConfigError, match=r"clip\.hidden_size=30: must be a multiple of clip\.heads=4"):
        ClipConfig(hidden_size=30).validate()
