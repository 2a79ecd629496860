"""The visual tokenizer: ids in range, a saved directory reloads the same model, training resumes
exactly after a kill, and it reports what survives reconstruction."""

import pytest
import torch

from mmkd.launch import visual_tokenizer as cli
from mmkd.model.visual_tokenizer import VisualTokenizer, VQConfig
from mmkd.visual_tokenizer_training import TokenizerTraining, to_pixels, train_tokenizer
from mmkd.world.render import render
from mmkd.world.scene import WorldConfig, sample_scene

SMALL = VQConfig(width=16, codebook_size=64)


def initialised(seed: int = 0) -> VisualTokenizer:
    """A small tokenizer whose codebook one training forward has k-means initialised."""
    torch.manual_seed(seed)
    model = VisualTokenizer(SMALL)
    with pytest.raises(ValueError, match="codebook is not initialised: train it first"):
        model.encode(to_pixels([render(sample_scene(WorldConfig(), "train", 0), 48)], 48))
    model(to_pixels([render(sample_scene(WorldConfig(), "train", i), 48) for i in range(8)], 48))
    return model.eval()


def test_codes_and_a_saved_directory(tmp_path):
    model = initialised()
    pixels = to_pixels([render(sample_scene(WorldConfig(), "train", i), 48) for i in range(4)], 48)
    ids = model.encode(pixels)
    assert ids.shape == (4, 144) and ids.dtype == torch.long and int(ids.min()) >= 0 and int(ids.max()) < 64
    assert model.decode(ids).shape == (4, 3, 48, 48) and model.codebook.shape == (64, 32)
    again = VisualTokenizer.from_pretrained(model.save(tmp_path / "tok"))
    assert torch.equal(again.decode(ids), model.decode(ids))
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == ["config.json", "model.safetensors"]


def test_training_resumes_exactly_after_a_kill(tmp_path, monkeypatch):
    from mmkd import visual_tokenizer_training as training

    cfg = TokenizerTraining(model=SMALL, steps=6, batch=8, save_every=3, eval_images=12)
    metrics = train_tokenizer(cfg, tmp_path / "whole")
    assert set(metrics) >= {"reconstruction_mse", "codebook_usage", "codebook_perplexity", "scene_kept"}
    assert 0 < metrics["codebook_usage"] <= 1 and 0 <= metrics["scene_kept"] <= 1 and metrics["objects"] > 12
    save = training._save

    def killed(*args):
        save(*args)
        raise RuntimeError("killed after the step-3 checkpoint")

    monkeypatch.setattr(training, "_save", killed)
    with pytest.raises(RuntimeError, match="killed"):
        train_tokenizer(cfg, tmp_path / "killed")
    monkeypatch.setattr(training, "_save", save)
    assert train_tokenizer(cfg, tmp_path / "killed") == metrics
    whole = VisualTokenizer.from_pretrained(tmp_path / "whole" / "tokenizer").state_dict()
    resumed = VisualTokenizer.from_pretrained(tmp_path / "killed" / "tokenizer").state_dict()
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_the_command_trains_and_names_a_bad_key(tmp_path, capsys):
    cli.main(
        [f"out={tmp_path}", "steps=2", "batch=4", "eval_images=4", "model.width=16", "model.codebook_size=32"]
    )
    assert (tmp_path / "tokenizer" / "metrics.json").exists() and '"scene_kept"' in capsys.readouterr().out
    with pytest.raises(SystemExit) as exit:
        cli.main([f"out={tmp_path / 'x'}", "model.downsample=3"])
    assert exit.value.code == "config error: downsample=3: must be a power of 2"


def test_pre_tokenised_images_are_the_tokenizers_ids_and_rebuild_identically(world, tmp_path):
    from mmkd.config import BuildConfig
    from mmkd.data_builders.visual_ids import build_visual_ids
    from mmkd.shards import open_dataset

    model = initialised()
    tok = model.save(tmp_path / "tok")
    source = open_dataset(world[1] / "vqa0")
    build = BuildConfig(unit_size=20, limit=40)
    manifest = build_visual_ids(source, tok, tmp_path / "ids", build)
    assert (
        manifest["num_samples"] == 40 and manifest["provenance"]["tokenizer"]["config"]["codebook_size"] == 64
    )
    samples = list(open_dataset(tmp_path / "ids"))
    originals = {s.id: s for s in source}
    want = model.encode(to_pixels([s.images[0] for s in samples], 48)).tolist()
    assert [s.metadata["visual_ids"] for s in samples] == [[w] for w in want]
    assert all(s.turns == originals[s.id].turns for s in samples)
    (tmp_path / "ids" / "done-000001.json").unlink()  # a killed second unit: the rerun redoes it alike
    (tmp_path / "ids" / "manifest.json").unlink()
    assert build_visual_ids(source, tok, tmp_path / "ids", build)["content_hash"] == manifest["content_hash"]
