"""Parameter and FLOP counts of the named sizes: dense_3b built on the meta device, checked by hand."""

import pytest
import torch

from mmkd.model import VLM
from mmkd.model.flops import decoder_flops_per_token, param_counts, training_flops
from tests.conftest import model_config

VOCAB = 64000  # the paper gives no vocabulary; a 64k tokenizer is our assumption (recipes/model/dense_3b)


def _components(model: VLM) -> dict[str, int]:
    count = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    return {
        "vision": count(model.vision),
        "projector": count(model.projector),
        "decoder": count(model.decoder),
        "total": count(model),
    }


@pytest.mark.parametrize("name", ["micro", "tiny", "dense_3b"])
def test_param_counts_match_the_module(name):
    cfg = model_config(name)
    cfg.vocab_size = VOCAB if name == "dense_3b" else 512
    with torch.device("meta"):  # dense_3b: 3B parameters, no memory
        model = VLM(cfg, image_token_id=3)
    want = param_counts(cfg, cfg.vocab_size)
    got = _components(model)
    assert (got["vision"], got["projector"], got["decoder"]) == (want.vision, want.projector, want.decoder)
    assert got["total"] == want.total


def test_dense_3b_is_the_papers_model():
    cfg = model_config("dense_3b")
    p = param_counts(cfg, VOCAB)
    assert 0.38e9 < p.vision < 0.45e9  # seed 000 Sec. 3.2: ViT ~0.4B (SigLIP-so400m shape)
    assert 2.4e9 < p.decoder + p.lm_head < 2.6e9  # ~2.5B decoder
    # By hand: 32 layers of q, o (2560 x 2560), k, v (2560 x 4 KV heads x 128) and SwiGLU (3 x 2560 x 6912),
    # plus the LM head; causal attention 6 * L * H * d * T at T = 4096 (half of PaLM's full 12).
    n = 32 * (2 * 2560 * 2560 + 2 * 2560 * 512 + 3 * 2560 * 6912) + 2560 * VOCAB
    attention = 6 * 32 * 20 * 128 * 4096
    flops = decoder_flops_per_token(cfg, VOCAB, 4096)
    assert flops == 6 * n + attention
    assert flops == pytest.approx(16.2e9, rel=0.005)


def test_packed_documents_pay_for_their_own_length():
    cfg = model_config("dense_3b")
    packed = training_flops(cfg, VOCAB, [1000, 3096], num_images=2)
    assert packed["decoder"] == 1000 * decoder_flops_per_token(
        cfg, VOCAB, 1000
    ) + 3096 * decoder_flops_per_token(cfg, VOCAB, 3096)
    assert packed["decoder"] < 4096 * decoder_flops_per_token(cfg, VOCAB, 4096)
    per_image = (packed["vision"] + packed["projector"]) / 2
    assert 729 * 6 * 0.4e9 < per_image < 729 * 6 * 0.5e9  # 27 x 27 patches through a ~0.4B ViT
    assert packed["total"] == packed["decoder"] + packed["vision"] + packed["projector"]
