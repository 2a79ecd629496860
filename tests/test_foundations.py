"""World foundation models: real Hugging Face directories (transformers loads them as SiglipModel and
LlamaForCausalLM, and our model loaded from them computes what they compute), built once per world
and settings, reused, never rebuilt with other settings, and a run with `model.init=world` starts
from them."""

import dataclasses
import json

import pytest
import torch
from transformers import LlamaForCausalLM, SiglipModel

from mmkd.distributed import DistInfo
from mmkd.foundations import store
from mmkd.foundations.config import FoundationConfig
from mmkd.foundations.store import foundation_paths, prepare_foundations
from mmkd.model import VLM
from mmkd.model.hf import load_decoder, load_vision
from tests.conftest import micro_run_config, model_config
from tests.fake_device import FakeDevice  # registered before any backward pass (autograd's device queues)

SMALL = FoundationConfig(vision_steps=4, vision_batch=8, text_steps=4, text_batch=4, eval_items=8)


@pytest.fixture(scope="module")
def built(world, tokenizer):
    """The micro model's foundations on the tests' small world, built once for this module."""
    data, root = world
    return prepare_foundations(model_config("micro"), SMALL, data.world, root, tokenizer, torch.device("cpu"))


def test_foundations_load_in_transformers_and_our_model_computes_what_they_compute(built, tokenizer):
    cfg = dataclasses.replace(model_config("micro"), vocab_size=tokenizer.vocab_size)
    siglip = SiglipModel.from_pretrained(built["vision"]).eval()
    llama = LlamaForCausalLM.from_pretrained(built["text"]).eval()
    torch.manual_seed(0)
    model = VLM(cfg, tokenizer.image_id).eval()
    load_vision(model, built["vision"])
    load_decoder(model, built["text"])
    ids = torch.randint(4, tokenizer.vocab_size, (2, 30))
    pixels = torch.rand(2, 3, cfg.image_size, cfg.image_size) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(model(ids), llama(ids).logits, atol=1e-5, rtol=1e-5)
        want = siglip.vision_model(pixel_values=pixels).last_hidden_state
        torch.testing.assert_close(model.vision(pixels), want, atol=1e-5, rtol=1e-4)
    for part, keys in (("vision", {"zero_shot_accuracy", "image_to_text_r1"}), ("text", {"fact_recall"})):
        record = json.loads((built[part].parent / "foundation.json").read_text())
        assert keys <= set(record["scores"]) and record["seconds"] > 0
        assert record["inputs"]["model"]["width" if part == "text" else "vision_width"] == 32
        assert 0 <= min(v for k, v in record["scores"].items() if k.endswith(("accuracy", "recall"))) <= 1


def test_a_foundation_is_reused_and_other_settings_build_one_beside_it(built, world, tokenizer, monkeypatch):
    data, root = world
    micro = model_config("micro")

    def refuse(*args):
        raise AssertionError("a finished foundation was trained again")

    monkeypatch.setattr(store, "BUILDERS", {"vision": refuse, "text": refuse})
    assert prepare_foundations(micro, SMALL, data.world, root, tokenizer, torch.device("cpu")) == built
    # Another text setting or another decoder shape names another text foundation; the vision one stays.
    longer = foundation_paths(micro, dataclasses.replace(SMALL, text_steps=5), data.world, root, tokenizer)
    wider = foundation_paths(dataclasses.replace(micro, width=64), SMALL, data.world, root, tokenizer)
    assert longer["vision"] / "model" == built["vision"] == wider["vision"] / "model"
    assert len({longer["text"], wider["text"], built["text"].parent}) == 3
    assert list(foundation_paths(model_config("discrete_micro"), SMALL, data.world, root, tokenizer)) == [
        "text"
    ]


def test_a_build_killed_while_saving_leaves_nothing_that_is_reused(world, tokenizer, tmp_path, monkeypatch):
    data, _ = world
    root, micro, cpu = tmp_path / "world", model_config("micro"), torch.device("cpu")

    def killed(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "write_tokenizer", killed)
    with pytest.raises(KeyboardInterrupt):
        prepare_foundations(micro, SMALL, data.world, root, tokenizer, cpu)
    paths = foundation_paths(micro, SMALL, data.world, root, tokenizer)
    assert not any(d.exists() for d in paths.values())  # only a .tmp directory, never read
    left = [d.name for d in (root / "foundations").iterdir() if not d.name.startswith(".")]  # not the locks
    assert [name.endswith(".tmp") for name in left] == [True]
    monkeypatch.undo()
    found = prepare_foundations(micro, SMALL, data.world, root, tokenizer, cpu)
    assert all(store.built(d.parent) for d in found.values())
    kept = sorted(d.name for d in (root / "foundations").iterdir() if not d.name.startswith("."))
    assert kept == sorted(d.name for d in paths.values())


def test_the_discrete_models_visual_tokenizer_is_a_foundation_too(world, tokenizer, tmp_path, monkeypatch):
    """The world visual tokenizer is built once per world, shape and length like the towers, with its
    scores and build time in foundation.json; a discrete model loads it as model.visual_tokenizer;
    another length names another one; the text tokenizer plays no part in its identity."""
    from mmkd.model.visual_tokenizer import VisualTokenizer
    from mmkd.visual_tokenizer_training import check_fits

    data, _ = world
    root, shape, cpu = tmp_path / "world", model_config("discrete_micro"), torch.device("cpu")
    short = dataclasses.replace(SMALL, visual_tokenizer_steps=3)
    # A build killed after it renamed its tokenizer into place but before its record: built again.
    path = foundation_paths(shape, short, data.world, root, tokenizer, [store.VISUAL_TOKENIZER])
    stale = path[store.VISUAL_TOKENIZER].with_name(path[store.VISUAL_TOKENIZER].name + ".tmp") / "model"
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_text("half")
    found = prepare_foundations(shape, short, data.world, root, tokenizer, cpu, [store.VISUAL_TOKENIZER])
    directory = found[store.VISUAL_TOKENIZER]
    check_fits(shape, directory)  # the ids the model config expects
    assert VisualTokenizer.from_pretrained(directory).cfg.codebook_size == shape.codebook_size
    record = store.built(directory.parent)
    assert {"reconstruction_mse", "codebook_usage", "scene_kept"} <= set(record["scores"])
    assert record["seconds"] > 0 and record["inputs"]["foundations"]["visual_tokenizer_steps"] == 3
    assert not (directory.parent / "checkpoint").exists()  # the resume state goes once it is built

    def refuse(*args):
        raise AssertionError("a finished foundation was trained again")

    monkeypatch.setattr(store, "BUILDERS", {store.VISUAL_TOKENIZER: refuse})
    again = prepare_foundations(shape, short, data.world, root, tokenizer, cpu, [store.VISUAL_TOKENIZER])
    assert again == found
    other_text = tokenizer.with_added(["<extra>"])
    wanted = [store.VISUAL_TOKENIZER]
    assert foundation_paths(shape, short, data.world, root, other_text, wanted) == {
        store.VISUAL_TOKENIZER: directory.parent
    }
    longer = dataclasses.replace(short, visual_tokenizer_steps=4)
    assert foundation_paths(shape, longer, data.world, root, tokenizer, wanted)[wanted[0]] != directory.parent


def test_a_run_with_model_init_world_starts_from_the_foundations(built, world, tokenizer, tmp_path):
    from omegaconf import OmegaConf

    from mmkd.config import to_run_config
    from mmkd.launch._pipeline import run
    from mmkd.trainer import build_model

    cfg = micro_run_config(world[0], tmp_path / "run", budget_samples=32)
    cfg.model.init, cfg.foundations, cfg.eval.after_train = "world", SMALL, False
    run(cfg, DistInfo())
    saved = to_run_config(OmegaConf.load(tmp_path / "run" / "config.yaml"))
    assert saved.model.init == "world"
    assert (saved.model.init_vision, saved.model.init_decoder) == (str(built["vision"]), str(built["text"]))
    start = build_model(saved, tokenizer)
    llama = LlamaForCausalLM.from_pretrained(built["text"])
    siglip = SiglipModel.from_pretrained(built["vision"])
    torch.testing.assert_close(
        start.decoder.layers[0].mlp.up_proj.weight, llama.model.layers[0].mlp.up_proj.weight
    )
    torch.testing.assert_close(
        start.vision.layers[0].fc1.weight, siglip.vision_model.encoder.layers[0].mlp.fc1.weight
    )


def test_init_world_starts_only_the_towers_no_checkpoint_names(built, world, tokenizer, tmp_path):
    """model.init=world with model.init_decoder=DIR: the vision tower from the world foundation, the
    decoder (and the tokenizer, with tokenizer=auto) from the named checkpoint; the decoder's
    foundation is neither built nor read. The world foundation decoder refuses another tokenizer."""
    from omegaconf import OmegaConf

    from mmkd.config import ConfigError, to_run_config
    from mmkd.launch._pipeline import run
    from mmkd.model.hf import write_tokenizer
    from mmkd.trainer import build_model
    from tests.conftest import hf_llama

    assert store.parts(model_config("micro")) == ["vision", "text"]
    llm = tmp_path / "llm"
    hf = hf_llama(model_config("micro"), tokenizer.vocab_size, True, llm)
    write_tokenizer(llm, tokenizer)
    cfg = micro_run_config(world[0], tmp_path / "run", budget_samples=32)
    cfg.model.init, cfg.model.init_decoder, cfg.foundations, cfg.eval.after_train = (
        "world",
        str(llm),
        SMALL,
        False,
    )
    assert store.parts(cfg.model) == ["vision"] and cfg.tokenizer_dir() == llm
    run(cfg, DistInfo())
    saved = to_run_config(OmegaConf.load(tmp_path / "run" / "config.yaml"))
    assert (saved.model.init_vision, saved.model.init_decoder) == (str(built["vision"]), str(llm))
    start = build_model(saved, tokenizer)
    torch.testing.assert_close(
        start.decoder.layers[0].mlp.up_proj.weight, hf.model.layers[0].mlp.up_proj.weight
    )
    assert saved.tokenizer_dir() == llm

    cfg = micro_run_config(world[0], tmp_path / "other")
    cfg.model.init, cfg.tokenizer = "world", str(llm)
    with pytest.raises(
        ConfigError, match=r"model\.init=world with tokenizer='.*': the world foundation decoder"
    ):
        cfg.validate()


def test_the_world_protocol_on_a_run_of_ones_own_data_names_the_keys_to_set(world, tmp_path):
    """protocol=instruct's world towers and world instruction data are for runs that pre-train on
    the world: a run whose mixture is all its own data is told which key to set, before any compute."""
    from mmkd.config import ConfigError
    from mmkd.launch._pipeline import check_protocol

    cfg = micro_run_config(world[0], tmp_path / "run")
    cfg.recipe.sft_fraction, cfg.model.init = 0.2, "world"
    check_protocol(cfg)  # the world's own data: the protocol's case
    own = {name: str(world[1] / name) for name in cfg.recipe.plan()[0].mixture}
    cfg.data = dataclasses.replace(cfg.data, sources=own)  # the tests' shared world stays as it is
    with pytest.raises(
        ConfigError, match=r"vision and text tower .* name model\.init_vision / model\.init_decoder"
    ):
        check_protocol(cfg)
    cfg.model.init_vision, cfg.model.init_decoder = "/ckpt/siglip", "/ckpt/llm"
    with pytest.raises(ConfigError, match=r"recipe\.sft_mixture\.instruct: the world's instruction data"):
        check_protocol(cfg)
    cfg.recipe.sft_fraction = 0.0
    check_protocol(cfg)


def test_foundations_train_on_the_device_and_a_batch_left_on_the_cpu_fails(
    world, tokenizer, tmp_path, monkeypatch
):
    """Every tensor on the configured device (tests/fake_device.py): both foundations train there;
    planted, pixels that stay on the CPU fail the step."""
    from mmkd.foundations import vision

    data, _ = world
    tiny = dataclasses.replace(SMALL, vision_steps=2, text_steps=2, eval_items=8)
    with FakeDevice() as device:
        found = prepare_foundations(model_config("micro"), tiny, data.world, tmp_path, tokenizer, device)
        assert set(found) == {"vision", "text"}
        pixels = vision._pixels
        monkeypatch.setattr(
            vision, "_pixels", lambda images, size, device: pixels(images, size, torch.device("cpu"))
        )
        with pytest.raises(RuntimeError, match="left behind on the wrong device"):
            vision.train_vision(model_config("micro"), tiny, data.world, tokenizer, device)
