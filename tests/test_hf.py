"""Hugging Face checkpoints: our model starts from a Llama decoder and a SigLIP tower saved locally and
computes what transformers computes; the exported decoder loads in transformers with the same logits."""

import dataclasses

import pytest
import torch
from transformers import LlamaForCausalLM, SiglipVisionConfig, SiglipVisionModel

from mmkd.model import VLM
from mmkd.model.hf import CheckpointMismatch, export_decoder, export_vlm, load_decoder, load_vision
from tests.conftest import hf_llama, model_config

VOCAB = 300


def _ours(**changes):
    cfg = dataclasses.replace(model_config("micro"), vocab_size=VOCAB, **changes)
    torch.manual_seed(1)
    return VLM(cfg, image_token_id=3).eval()


def _hf_llama(cfg, tmp_path, tie):
    return hf_llama(cfg, VOCAB, tie, tmp_path / "llama")


@pytest.mark.parametrize("tie", [True, False])
def test_decoder_loads_from_llama_and_matches_its_logits(tie, tmp_path):
    model = _ours(tie_embeddings=tie)
    hf = _hf_llama(model.cfg, tmp_path, tie)
    load_decoder(model, tmp_path / "llama")
    ids = torch.randint(4, VOCAB, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), hf(ids).logits, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("tie", [True, False])
def test_exported_decoder_loads_in_transformers_with_the_same_logits(tie, tmp_path):
    model = _ours(tie_embeddings=tie)
    out = export_decoder(model, tmp_path / "export")
    assert sorted(p.name for p in out.iterdir()) == ["config.json", "model.safetensors"]
    hf = LlamaForCausalLM.from_pretrained(out).eval()
    ids = torch.randint(4, VOCAB, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids), atol=1e-5, rtol=1e-4)


def test_vision_tower_loads_from_siglip_and_matches_it(tmp_path):
    model = _ours()
    cfg = model.cfg
    torch.manual_seed(3)
    hf = SiglipVisionModel(
        SiglipVisionConfig(
            hidden_size=cfg.vision_width,
            intermediate_size=cfg.vision_mlp,
            num_hidden_layers=cfg.vision_layers,
            num_attention_heads=cfg.vision_heads,
            image_size=cfg.image_size,
            patch_size=cfg.patch_size,
            layer_norm_eps=1e-5,
        )
    ).eval()
    hf.save_pretrained(tmp_path / "siglip")
    load_vision(model, tmp_path / "siglip")
    pixels = torch.randn(2, 3, cfg.image_size, cfg.image_size)
    with torch.no_grad():
        torch.testing.assert_close(
            model.vision(pixels), hf(pixel_values=pixels).last_hidden_state, atol=1e-5, rtol=1e-4
        )


def test_mismatches_are_named(tmp_path):
    model = _ours()
    _hf_llama(dataclasses.replace(model.cfg, ffn=96), tmp_path, tie=True)
    with pytest.raises(
        CheckpointMismatch, match=r"model\.layers\.0\.mlp\.gate_proj\.weight has shape \(96, 32\)"
    ):
        load_decoder(model, tmp_path / "llama")
    _hf_llama(dataclasses.replace(model.cfg, norm_eps=1e-6), tmp_path, tie=True)
    with pytest.raises(CheckpointMismatch, match="rms_norm_eps=1e-06, our model config has 1e-05"):
        load_decoder(model, tmp_path / "llama")
    with pytest.raises(FileNotFoundError, match=r"has no config\.json: not a Hugging Face checkpoint"):
        load_decoder(model, tmp_path)


def test_a_run_starts_from_the_configured_checkpoints(world, tokenizer, tmp_path):
    from mmkd.trainer import build_model
    from tests.conftest import micro_run_config

    cfg = micro_run_config(world[0], tmp_path / "run")
    hf = _hf_llama(dataclasses.replace(cfg.model, vocab_size=tokenizer.vocab_size), tmp_path, tie=True)
    assert hf.config.vocab_size == VOCAB  # _hf_llama's vocabulary; make it the tokenizer's instead
    hf.resize_token_embeddings(tokenizer.vocab_size)
    hf.save_pretrained(tmp_path / "llama")
    cfg.model.init_decoder = str(tmp_path / "llama")
    model = build_model(cfg, tokenizer)
    torch.testing.assert_close(model.decoder.embed_tokens.weight, hf.model.embed_tokens.weight)
    torch.testing.assert_close(
        model.decoder.layers[1].mlp.down_proj.weight, hf.model.layers[1].mlp.down_proj.weight
    )


@pytest.mark.parametrize("tie", [True, False])
def test_exported_vlm_loads_as_llava_and_its_processor_makes_our_inputs(tie, world, tokenizer, tmp_path):
    """The whole model as LlavaForConditionalGeneration: AutoProcessor turns "<image> text" and a picture
    into our token ids (BOS first, as ours) and pixels, and transformers gives our logits."""
    from transformers import AutoProcessor, LlavaForConditionalGeneration

    from mmkd.loader import image_tensor
    from mmkd.schema import IMAGE_MARKER
    from mmkd.shards import open_dataset

    cfg = dataclasses.replace(
        model_config("micro"), vocab_size=tokenizer.vocab_size, vision_post_norm=False, tie_embeddings=tie
    )
    torch.manual_seed(3)
    model = VLM(cfg, tokenizer.image_id).eval()
    export_vlm(model, tmp_path / "llava", tokenizer)
    hf = LlavaForConditionalGeneration.from_pretrained(tmp_path / "llava").eval()
    processor = AutoProcessor.from_pretrained(tmp_path / "llava")
    sample = next(iter(open_dataset(world[1] / "vqa0")))
    inputs = processor(
        images=sample.images[0], text=f"{IMAGE_MARKER} what is in the image?", return_tensors="pt"
    )
    ids, pixels = inputs["input_ids"], inputs["pixel_values"]
    torch.testing.assert_close(pixels[0], image_tensor(sample.images[0], cfg.image_size), atol=1e-5, rtol=0)
    want = (
        [tokenizer.bos_id]
        + [tokenizer.image_id] * cfg.image_tokens
        + tokenizer.encode(" what is in the image?")
    )
    assert ids[0].tolist() == want
    with torch.no_grad():
        torch.testing.assert_close(hf(**inputs).logits, model(ids, pixels), atol=1e-5, rtol=1e-5)


def test_a_vlm_with_the_vit_post_norm_is_not_exported_as_llava(tmp_path):
    with pytest.raises(CheckpointMismatch, match=r"needs model\.vision_post_norm=false"):
        export_vlm(_ours(), tmp_path / "llava")
    assert not (tmp_path / "llava").exists()


def test_export_cli_turns_a_trained_checkpoint_into_llava_and_llama(world, tokenizer, tmp_path):
    from transformers import LlamaForCausalLM, LlavaForConditionalGeneration

    from mmkd.checkpoint import load_checkpoint
    from mmkd.data_builders.sources import source_dirs
    from mmkd.distributed import DistInfo
    from mmkd.trainer import build_model, train
    from tests.conftest import REPO, micro_run_config, run_python

    cfg = micro_run_config(world[0], tmp_path / "run", budget_samples=32)
    cfg.model.vision_post_norm = False
    dirs = source_dirs(sorted(cfg.recipe.active()), cfg, world[1])
    (tmp_path / "run").mkdir()
    final = train(cfg, dirs, tokenizer, tmp_path / "run", DistInfo())
    model = build_model(cfg, tokenizer).eval()
    load_checkpoint(final, model)
    export = [str(REPO / "launch/export.py"), f"checkpoint={tmp_path / 'run'}"]
    assert "as LlavaForConditionalGeneration" in run_python([*export, f"out={tmp_path / 'llava'}"])
    assert "as LlamaForCausalLM" in run_python([*export, f"out={tmp_path / 'llama'}", "format=llama"])
    ids = torch.tensor([[tokenizer.bos_id] + [tokenizer.image_id] * cfg.model.image_tokens + [7, 8, 9]])
    pixels = torch.rand(1, 3, cfg.model.image_size, cfg.model.image_size) * 2 - 1
    llava = LlavaForConditionalGeneration.from_pretrained(tmp_path / "llava").eval()
    llama = LlamaForCausalLM.from_pretrained(tmp_path / "llama").eval()
    with torch.no_grad():
        torch.testing.assert_close(llava(input_ids=ids, pixel_values=pixels).logits, model(ids, pixels))
        text = torch.tensor([[tokenizer.bos_id, 7, 8, 9]])
        torch.testing.assert_close(llama(input_ids=text).logits, model(text))
