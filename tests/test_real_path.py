"""The path a user with real data takes: a local Hugging Face Llama and its tokenizer, a dataset
converted from COCO captions, a custom suite. The run trains from the pretrained decoder with its
tokenizer (plus the tokens we add), never builds the knowledge world, evaluates the suite, and its
exported decoder gives transformers our logits."""

import json
from dataclasses import asdict

import pytest
import torch
from PIL import Image
from tokenizers import Tokenizer as HFTokenizer
from tokenizers import models, pre_tokenizers, trainers
from transformers import AutoTokenizer, LlamaForCausalLM, PreTrainedTokenizerFast

from mmkd.checkpoint import load_checkpoint, read_meta
from mmkd.config import ConfigError, to_run_config
from mmkd.data_builders.adapters import coco_captions, convert
from mmkd.data_builders.rejects import RejectLog
from mmkd.distributed import DistInfo
from mmkd.launch._pipeline import run
from mmkd.model import VLM
from mmkd.model.hf import export_decoder
from mmkd.tokenizer import Tokenizer
from mmkd.trainer import build_model
from tests.conftest import hf_llama, model_config

CAPTIONS = ["A red block on grey.", "A blue ball.", "Two green boxes.", "A tall red tower.", "A yellow kite."]


def _llama_dir(tmp_path):
    """A pretrained-style directory: a Llama-shaped decoder (micro's shapes) and its BPE tokenizer,
    which has BOS / EOS but neither a pad token nor <image>."""
    bpe = HFTokenizer(models.BPE(unk_token="<unk>"))
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False
    )
    bpe.train_from_iterator([*CAPTIONS, "Question: What colour? Answer: red blue green"] * 20, trainer)
    out = tmp_path / "llama"
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    tok.save_pretrained(out)
    llama = hf_llama(model_config("micro"), bpe.get_vocab_size(), tie=True, out=out, seed=5)
    return out, llama


def _coco(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    colours = [(200, 30, 30), (30, 30, 200), (30, 200, 30), (220, 40, 40), (230, 230, 30)]
    for i, colour in enumerate(colours):
        Image.new("RGB", (40, 32), colour).save(images / f"{i}.png")
    ann = {
        "images": [{"id": i, "file_name": f"{i}.png", "width": 40, "height": 32} for i in range(5)],
        "annotations": [{"id": 10 + i, "image_id": i, "caption": c} for i, c in enumerate(CAPTIONS)],
    }
    (tmp_path / "captions.json").write_text(json.dumps(ann))
    rejects = RejectLog()
    out = tmp_path / "coco"
    convert(coco_captions(tmp_path / "captions.json", images, rejects), out, "coco", {}, rejects=rejects)
    return out


def _suite(tmp_path):
    (tmp_path / "suite").mkdir()
    Image.new("RGB", (40, 32), (30, 30, 200)).save(tmp_path / "suite" / "q.png")
    items = [
        {
            "id": "q1",
            "image": "q.png",
            "question": "What colour?",
            "options": ["red", "blue"],
            "answer": "blue",
        },
        {"id": "q2", "question": "Say a colour.", "answer": ["red"], "metric": "exact_match"},
    ]
    path = tmp_path / "suite" / "mine.jsonl"
    path.write_text("".join(json.dumps(it) + "\n" for it in items))
    return path


def _config(tmp_path, llama, coco, suite, **top):
    return to_run_config(
        {
            "run_dir": str(tmp_path / "run"),
            "model": {**asdict(model_config("micro")), "init_decoder": str(llama)},
            "recipe": {"name": "coco_only", "mixture": {"coco": 1.0}},
            "data": {"root": str(tmp_path / "data"), "sources": {"coco": str(coco)}, "num_workers": 0},
            "train": {"budget_samples": 32, "global_batch": 16, "micro_batch": 8, "checkpoint_every": 0},
            "eval": {"abilities": [], "custom": {"mine": str(suite)}},
            **top,
        }
    )


def test_a_run_from_a_pretrained_llama_on_real_data_never_builds_the_world(tmp_path):
    llama_dir, llama = _llama_dir(tmp_path)
    cfg = _config(tmp_path, llama_dir, _coco(tmp_path), _suite(tmp_path))
    results = run(cfg, DistInfo())
    assert not (tmp_path / "data").exists() or not any((tmp_path / "data").glob("world-*"))
    assert set(results) == {"mine"} and results["mine"]["mine"]["n"] == 2

    meta = read_meta(tmp_path / "run")
    assert meta["special_tokens"] == {"pad": "<pad>", "bos": "<s>", "eos": "</s>", "image": "<image>"}
    tokenizer = Tokenizer.from_str(meta["tokenizer"], meta["special_tokens"])
    base = llama.config.vocab_size
    assert tokenizer.vocab_size == base + 2 and {tokenizer.pad_id, tokenizer.image_id} == {base, base + 1}
    hf_tok = AutoTokenizer.from_pretrained(llama_dir)
    assert tokenizer.encode("A blue ball.") == hf_tok.encode("A blue ball.", add_special_tokens=False)

    # The run's initial model: the Llama's rows, then the mean row for each added token.
    init = build_model(cfg, tokenizer)
    rows = llama.model.embed_tokens.weight.detach()
    torch.testing.assert_close(init.decoder.embed_tokens.weight[:base], rows)
    torch.testing.assert_close(init.decoder.embed_tokens.weight[base:], rows.mean(0).expand(2, -1))

    # The trained model, exported, gives transformers our logits; its tokenizer is the run's.
    trained = VLM(cfg.model, tokenizer.image_id)
    load_checkpoint(tmp_path / "run", trained)
    out = export_decoder(trained.eval(), tmp_path / "export", tokenizer)
    hf = LlamaForCausalLM.from_pretrained(out).eval()
    ids = torch.tensor([[tokenizer.bos_id, *tokenizer.encode("A red block.")]])
    with torch.no_grad():
        torch.testing.assert_close(trained(ids), hf(ids).logits, atol=1e-5, rtol=1e-4)
    exported = AutoTokenizer.from_pretrained(out)
    assert exported.bos_token == "<s>" and exported.pad_token == "<pad>"
    assert exported.convert_tokens_to_ids("<image>") == tokenizer.image_id


def test_the_world_tokenizer_with_a_pretrained_decoder_is_refused(tmp_path):
    llama_dir, _ = _llama_dir(tmp_path)
    with pytest.raises(ConfigError, match=r"tokenizer=world with model\.init_decoder"):
        _config(tmp_path, llama_dir, tmp_path, tmp_path / "x.jsonl", tokenizer="world")
    with pytest.raises(ConfigError, match=r"tokenizer='/nonexistent'"):
        _config(tmp_path, llama_dir, tmp_path, tmp_path / "x.jsonl", tokenizer="/nonexistent")


def test_a_tokenizer_without_bos_is_named(tmp_path):
    llama_dir, _ = _llama_dir(tmp_path)
    config = json.loads((llama_dir / "tokenizer_config.json").read_text())
    config["bos_token"] = None
    (llama_dir / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"tokenizer_config\.json: bos_token=None"):
        Tokenizer.from_pretrained(llama_dir)
