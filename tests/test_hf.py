"""Hugging Face checkpoints: our model starts from a Llama decoder and a SigLIP tower saved locally and
computes what transformers computes; the exported decoder loads in transformers with the same logits."""

import dataclasses
import json

import pytest
import torch
from transformers import LlamaForCausalLM, SiglipVisionConfig, SiglipVisionModel

from mmkd.errors import ConfigError
from mmkd.model import VLM
from mmkd.model.config import ModelConfig
from mmkd.model.hf import CheckpointMismatch, export_decoder, export_vlm, load_decoder, load_vision
from mmkd.model.rope import RopeScaling
from tests.conftest import composed, hf_llama, model_config

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


LLAMA3 = {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0}
# (transformers' rope_parameters, ours as model.rope_scaling): every form our attention honours.
ROPES = {
    "llama3": (
        {**LLAMA3, "rope_theta": 500000.0, "original_max_position_embeddings": 16},
        RopeScaling("llama3", 32.0, original_max_position=16),
    ),
    "linear": ({"rope_type": "linear", "factor": 4.0, "rope_theta": 500000.0}, RopeScaling("linear", 4.0)),
    "yarn": (
        {"rope_type": "yarn", "factor": 4.0, "rope_theta": 500000.0, "original_max_position_embeddings": 16},
        RopeScaling("yarn", 4.0, original_max_position=16),
    ),
    "dynamic": (
        {"rope_type": "dynamic", "factor": 2.0, "rope_theta": 500000.0},
        RopeScaling("dynamic", 2.0, original_max_position=160),
    ),
}


@pytest.mark.parametrize("form", sorted(ROPES))
def test_a_llama3_shaped_checkpoint_loads_with_its_rope_and_gives_transformers_logits(form, tmp_path):
    """Llama-3.2's shape in small (tied embeddings, grouped-query attention, rope_theta 500000, llama3
    RoPE) and the other scaled forms, in transformers 5's layout: our logits are transformers'."""
    hf_rope, ours = ROPES[form]
    model = _ours(rope_theta=500000.0, rope_scaling=ours)
    hf = hf_llama(model.cfg, VOCAB, True, tmp_path / "llama", rope_parameters=hf_rope)
    assert json.loads((tmp_path / "llama/config.json").read_text())["rope_parameters"]["rope_type"] == form
    load_decoder(model, tmp_path / "llama")
    ids = torch.randint(4, VOCAB, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(model(ids), hf(ids).logits, atol=1e-5, rtol=1e-5)
        if form != "dynamic":  # within the checkpoint's context, dynamic is the plain RoPE
            plain = _ours(rope_theta=500000.0)
            plain.load_state_dict(model.state_dict())
            assert (plain(ids) - hf(ids).logits).abs().max() > 1e-4  # the scaling is what makes them equal


def test_transformers_4_rope_layout_loads_and_exports_round_trip(tmp_path):
    """A config.json with top-level rope_theta and rope_scaling (transformers 4.x, older Llama-3 repos;
    "type" for "rope_type") is read the same; our export writes that layout, which both versions read."""
    model = _ours(rope_theta=500000.0, rope_scaling=RopeScaling("llama3", 32.0, original_max_position=16))
    out = export_decoder(model, tmp_path / "export")
    written = json.loads((out / "config.json").read_text())
    assert written["rope_theta"] == 500000.0 and written["rope_scaling"]["rope_type"] == "llama3"
    hf = LlamaForCausalLM.from_pretrained(out).eval()
    ids = torch.randint(4, VOCAB, (2, 40))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, model(ids), atol=1e-5, rtol=1e-5)
    legacy = {**written, "rope_scaling": {**written["rope_scaling"], "type": "llama3"}}
    del legacy["rope_scaling"]["rope_type"]
    (out / "config.json").write_text(json.dumps(legacy))
    again = _ours(rope_theta=500000.0, rope_scaling=model.cfg.rope_scaling)
    load_decoder(again, out)
    with torch.no_grad():
        torch.testing.assert_close(again(ids), model(ids))


@pytest.mark.parametrize(
    ("rope_parameters", "message"),
    [
        ({"rope_type": "default", "rope_theta": 500000.0}, r"rope_theta=500000, our model config has model"),
        (
            {**LLAMA3, "rope_theta": 10000.0, "original_max_position_embeddings": 16},
            r"its RoPE scaling has type='llama3', our model config has model\.rope_scaling\.type='default' "
            r"\(set model\.rope_scaling to \{type: llama3, factor: 32\.0, original_max_position: 16\}\)",
        ),
        ({"rope_type": "longrope", "rope_theta": 10000.0}, r"rope_parameters\.rope_type='longrope': must be"),
        (
            {
                "rope_type": "yarn",
                "factor": 4.0,
                "rope_theta": 10000.0,
                "original_max_position_embeddings": 16,
                "mscale": 0.7,
            },
            r"rope_parameters\.mscale=0\.7 is not a RoPE setting mmkd can honour",
        ),
    ],
)
def test_a_rope_we_do_not_compute_is_refused_naming_the_key(rope_parameters, message, tmp_path):
    """Before this was checked, a rope_theta 500000 checkpoint loaded silently into a 10000 model."""
    model = _ours()
    path = tmp_path / "llama"
    hf_llama(model.cfg, VOCAB, True, path)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(config | {"rope_parameters": rope_parameters}))
    with pytest.raises(CheckpointMismatch, match=message):
        load_decoder(model, path)


def test_a_rope_scaling_the_tables_cannot_honour_is_refused_by_the_config():
    with pytest.raises(ValueError, match=r"model\.rope_scaling\.type='dynamic': dynamic changes the"):
        dataclasses.replace(
            model_config("micro"), rope_scaling=RopeScaling("dynamic", 2.0, original_max_position=64)
        ).validate()
    with pytest.raises(ValueError, match=r"model\.rope_scaling\.original_max_position=0: must be positive"):
        dataclasses.replace(model_config("micro"), rope_scaling=RopeScaling("llama3", 8.0)).validate()


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
    """`model.init_decoder=DIR model.init_vision=DIR` and no other model key: the default size (tiny)
    takes the checkpoints' shapes from their config.json (a Llama-3.2-shaped decoder: tied, grouped
    queries, llama3 RoPE at theta 500000; a SigLIP tower with SigLIP's 1e-6 norm eps), loads them, and
    computes what transformers computes."""
    from mmkd.config import to_run_config
    from mmkd.trainer import build_model

    shape = ModelConfig(width=64, layers=2, heads=4, kv_heads=2, ffn=96, max_seq_len=64)
    hf = hf_llama(shape, tokenizer.vocab_size, True, tmp_path / "llama", rope_parameters=ROPES["llama3"][0])
    torch.manual_seed(4)
    siglip = SiglipVisionModel(
        SiglipVisionConfig(
            hidden_size=48,
            intermediate_size=80,
            num_hidden_layers=2,
            num_attention_heads=3,
            image_size=32,
            patch_size=8,
        )
    ).eval()
    siglip.save_pretrained(tmp_path / "siglip")
    cfg = to_run_config(
        composed(f"model.init_decoder={tmp_path / 'llama'}", f"model.init_vision={tmp_path / 'siglip'}")
    )
    m = cfg.model
    assert (m.name, m.width, m.layers, m.heads, m.kv_heads, m.ffn, m.tie_embeddings) == (
        "tiny",
        64,
        2,
        4,
        2,
        96,
        True,
    )
    assert (m.rope_theta, m.rope_scaling) == (500000.0, ROPES["llama3"][1])
    assert (m.vision_width, m.vision_layers, m.image_size, m.patch_size, m.vision_norm_eps) == (
        48,
        2,
        32,
        8,
        1e-6,
    )
    model = build_model(cfg, tokenizer).eval()
    ids = torch.randint(4, tokenizer.vocab_size, (2, 40))
    pixels = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(ids), hf(ids).logits, atol=1e-5, rtol=1e-5)
        want = siglip(pixel_values=pixels).last_hidden_state
        torch.testing.assert_close(model.vision(pixels), want, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"attention_bias": True}, r"attention_bias=True is not supported"),
        ({"hidden_act": "gelu"}, r"hidden_act='gelu' is not supported \(mmkd computes hidden_act='silu'\)"),
        ({"head_dim": 8}, r"head_dim=8 with 2 heads is not hidden_size=32"),
        ({"rope_scaling": {"rope_type": "longrope", "factor": 2.0}}, r"rope_type='longrope'"),
    ],
)
def test_a_decoder_config_we_cannot_compute_is_a_config_error_naming_the_key(config, message, tmp_path):
    from mmkd.config import to_run_config

    hf_llama(model_config("micro"), VOCAB, True, tmp_path)
    stated = json.loads((tmp_path / "config.json").read_text())
    stated.pop("rope_parameters") if "rope_scaling" in config else None
    (tmp_path / "config.json").write_text(json.dumps(stated | config))
    with pytest.raises(
        ConfigError, match=rf"model\.init_decoder='{tmp_path}': {tmp_path}/config\.json: .*{message}"
    ):
        to_run_config(composed(f"model.init_decoder={tmp_path}"))


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


def test_an_exported_vlm_generates_until_eos_in_transformers(tokenizer, tmp_path):
    """The export states the tokenizer's BOS / EOS / pad ids (config and generation_config.json), so
    transformers' `generate` stops at our EOS, here forced at the third new token, not at the limit."""
    from transformers import LlavaForConditionalGeneration, LogitsProcessor, LogitsProcessorList

    cfg = dataclasses.replace(model_config("micro"), vocab_size=tokenizer.vocab_size, vision_post_norm=False)
    torch.manual_seed(3)
    export_vlm(VLM(cfg, tokenizer.image_id).eval(), tmp_path / "llava", tokenizer)
    hf = LlavaForConditionalGeneration.from_pretrained(tmp_path / "llava").eval()
    assert (hf.generation_config.eos_token_id, hf.generation_config.pad_token_id) == (
        tokenizer.eos_id,
        tokenizer.pad_id,
    )

    class EosAtThird(LogitsProcessor):
        def __call__(self, ids, scores):
            if ids.shape[1] == prompt.shape[1] + 2:
                scores[:, :] = -float("inf")
                scores[:, tokenizer.eos_id] = 0
            return scores

    prompt = torch.tensor([[tokenizer.bos_id, *tokenizer.encode(" a red ball")]])
    out = hf.generate(
        input_ids=prompt,
        max_new_tokens=20,
        do_sample=False,
        logits_processor=LogitsProcessorList([EosAtThird()]),
    )
    assert out.shape[1] == prompt.shape[1] + 3 and out[0, -1] == tokenizer.eos_id


def test_an_instruction_tuned_export_prompts_through_its_chat_template_as_trained(world, tokenizer, tmp_path):
    """chat_template.jinja writes a conversation in the training layout: the processor's
    `apply_chat_template` gives the ids of `Templates` for a question on an image, a whole
    conversation (answers, separators, EOS) and a caption prompt; the decoder export's tokenizer does
    the same for text; a system turn, which the model never saw, is refused."""
    from transformers import AutoProcessor, AutoTokenizer

    from mmkd.schema import Sample, Turn
    from mmkd.shards import open_dataset
    from mmkd.templates import Templates

    cfg = dataclasses.replace(model_config("micro"), vocab_size=tokenizer.vocab_size, vision_post_norm=False)
    model = VLM(cfg, tokenizer.image_id).eval()
    export_vlm(model, tmp_path / "llava", tokenizer, chat=True)
    export_decoder(model, tmp_path / "llama", tokenizer, chat=True)
    templates = Templates(tokenizer, cfg.image_tokens, max_seq_len=10_000)
    processor = AutoProcessor.from_pretrained(tmp_path / "llava")
    image = next(iter(open_dataset(world[1] / "vqa0"))).images[0]

    def chat(messages):
        return processor.apply_chat_template(messages, tokenize=True, return_dict=True)["input_ids"][0]

    picture = {"type": "image", "image": image}
    ask = {"role": "user", "content": [picture, {"type": "text", "text": "what colour is the cube?"}]}
    assert chat([ask]) == templates.prompt_ids("what colour is the cube?", images=1)
    conversation = [
        ask,
        {"role": "assistant", "content": "red"},
        {"role": "user", "content": "how many objects are there?"},
        {"role": "assistant", "content": "3"},
    ]
    turns = [Turn("what colour is the cube?", "red"), Turn("how many objects are there?", "3")]
    sample = Sample(id="x", kind="vqa", source="vqa0", images=[image], turns=turns)
    assert chat(conversation) == templates.encode(sample).input_ids
    describe = [{"role": "user", "content": [picture]}, {"role": "assistant", "content": "a red cube"}]
    caption = Sample(id="c", kind="caption", source="caption0", images=[image], text="a red cube")
    assert chat(describe) == templates.encode(caption).input_ids
    text = AutoTokenizer.from_pretrained(tmp_path / "llama")
    question = [{"role": "user", "content": "what is the capital of the river kingdom?"}]
    assert text.apply_chat_template(question, tokenize=True, return_dict=True)["input_ids"] == (
        templates.prompt_ids("what is the capital of the river kingdom?", images=0)
    )
    with pytest.raises(Exception, match="user and assistant turns only, not system"):
        text.apply_chat_template([{"role": "system", "content": "be brief"}, *question], tokenize=False)


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
    said = run_python([*export, f"out={tmp_path / 'llava'}"])
    assert "as LlavaForConditionalGeneration, no chat template (not instruction-tuned)" in said
    assert not (tmp_path / "llava/chat_template.jinja").exists()  # this run had no instruction stage
    assert "as LlamaForCausalLM" in run_python([*export, f"out={tmp_path / 'llama'}", "format=llama"])
    ids = torch.tensor([[tokenizer.bos_id] + [tokenizer.image_id] * cfg.model.image_tokens + [7, 8, 9]])
    pixels = torch.rand(1, 3, cfg.model.image_size, cfg.model.image_size) * 2 - 1
    llava = LlavaForConditionalGeneration.from_pretrained(tmp_path / "llava").eval()
    llama = LlamaForCausalLM.from_pretrained(tmp_path / "llama").eval()
    with torch.no_grad():
        torch.testing.assert_close(llava(input_ids=ids, pixel_values=pixels).logits, model(ids, pixels))
        text = torch.tensor([[tokenizer.bos_id, 7, 8, 9]])
        torch.testing.assert_close(llama(input_ids=text).logits, model(text))
