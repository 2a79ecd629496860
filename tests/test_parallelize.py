"""What `parallelize` applies to each block before the engine: activation checkpointing and
compilation change neither parameter names nor gradients (CPU twins of the GPU setup)."""

from itertools import islice

import pytest
import torch

from mmkd.config import ConfigError
from mmkd.engines import wrap_blocks
from mmkd.loader import Collator
from mmkd.model import VLM
from mmkd.shards import open_dataset
from mmkd.templates import Templates
from tests.conftest import micro_run_config, model_config


def _batch(root, tokenizer, cfg):
    templates = Templates(tokenizer, cfg.image_tokens, cfg.max_seq_len)
    samples = [*islice(open_dataset(root / "vqa0"), 3), *islice(open_dataset(root / "text"), 3)]
    return Collator(tokenizer.pad_id, cfg.image_size)([(templates.encode(s), {}) for s in samples])


@pytest.mark.parametrize("setting", [{"activation_checkpointing": True}, {"compile_backend": "aot_eager"}])
def test_gradients_and_names_are_unchanged(setting, world, tokenizer):
    _, root = world
    cfg = model_config("micro")
    cfg.vocab_size = tokenizer.vocab_size
    batch = _batch(root, tokenizer, cfg)
    grads = []
    for apply in (False, True):
        torch.manual_seed(0)
        model = VLM(cfg, tokenizer.image_id)
        names = [n for n, _ in model.named_parameters()]
        if apply:
            wrap_blocks(model, **setting)
        calls = []
        model.decoder.layers[0].mlp.register_forward_pre_hook(lambda *_, c=calls: c.append(1))
        loss, n = model(batch["input_ids"], batch["pixels"], labels=batch["labels"])
        (loss / n).backward()
        recomputed = apply and setting.get("activation_checkpointing", False)
        assert len(calls) == (2 if recomputed else 1)  # checkpointing runs the block again in backward
        assert [n for n, _ in model.named_parameters()] == names
        grads.append({k: p.grad.clone() for k, p in model.named_parameters()})
    for k in grads[0]:
        torch.testing.assert_close(grads[1][k], grads[0][k], atol=1e-6, rtol=1e-5)


def test_an_unknown_compile_backend_names_the_key(world, tmp_path):
    data, _ = world
    with pytest.raises(ConfigError, match=r"train\.compile='inductr'"):
        micro_run_config(data, tmp_path, compile="inductr")


def test_a_one_image_batch_does_not_compile_the_blocks_again(world, tokenizer):
    """Compiled blocks take any number of images (and rows), one included, in the graph compiled
    first: dynamic shapes would otherwise specialise a size of 1 and compile each block kind anew."""
    import torch._dynamo

    _, root = world
    cfg = model_config("micro")
    cfg.vocab_size = tokenizer.vocab_size
    templates = Templates(tokenizer, cfg.image_tokens, cfg.max_seq_len)
    collate = Collator(tokenizer.pad_id, cfg.image_size)
    images = [(templates.encode(s), {}) for s in islice(open_dataset(root / "vqa0"), 3)]
    texts = [(templates.encode(s), {}) for s in islice(open_dataset(root / "text"), 2)]
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = VLM(cfg, tokenizer.image_id)
    wrap_blocks(model, compile_backend="aot_eager")
    graphs = []
    for batch in (collate(images + texts), collate(images[:1] + texts), collate(images[:1])):
        loss, n = model(batch["input_ids"], batch["pixels"], labels=batch["labels"])
        (loss / n).backward()
        graphs.append(torch._dynamo.utils.counters["stats"]["unique_graphs"])
    assert graphs[0] > 0 and graphs[1:] == graphs[:1] * 2  # 1 image, then 1 image in 1 row: no new graph
