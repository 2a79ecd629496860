import pytest
import torch

from mmkd.model import VLM
from tests.conftest import model_config


@pytest.fixture
def model():
    cfg = model_config("micro")
    cfg.vocab_size = 64
    torch.manual_seed(0)
    return VLM(cfg, image_token_id=3).eval()


def _sequence(n_images, text=10, p=9):
    ids = [1]
    for _ in range(n_images):
        ids += [3] * p + [5, 6]
    return torch.tensor([ids + list(range(10, 10 + text))])


def test_shapes_with_several_images_per_sequence(model):
    ids = torch.cat([_sequence(2), _sequence(2)])  # [2, T] with 2 images each
    logits = model(ids, torch.randn(4, 3, 48, 48))
    assert logits.shape == (2, ids.shape[1], 64)


def test_image_features_reach_the_text_positions(model):
    ids = _sequence(1)
    a = model(ids, torch.zeros(1, 3, 48, 48))
    b = model(ids, torch.ones(1, 3, 48, 48))
    assert not torch.allclose(a[0, -1], b[0, -1])  # the text after the image sees the pixels
    assert torch.allclose(a[0, 0], b[0, 0])  # the causal BOS position does not


def test_image_token_count_mismatch_is_an_error(model):
    with pytest.raises(ValueError, match="9 <image> tokens for 2 images"):
        model(_sequence(1), torch.randn(2, 3, 48, 48))
    with pytest.raises(ValueError, match="no pixels"):
        model(_sequence(1))


def test_left_padding_with_attention_mask_matches_unpadded(model):
    ids = _sequence(1, text=5)
    pixels = torch.randn(1, 3, 48, 48)
    ref = model(ids, pixels)[0, -1]
    padded = torch.cat([torch.zeros(1, 7, dtype=torch.long), ids], dim=1)
    mask = torch.cat([torch.zeros(1, 7, dtype=torch.bool), torch.ones_like(ids, dtype=torch.bool)], dim=1)
    out = model(padded, pixels, attention_mask=mask)[0, -1]
    assert torch.allclose(ref, out, atol=1e-5)


def test_loss_is_a_sum_over_supervised_tokens(model):
    ids = _sequence(1, text=6)
    labels = torch.full_like(ids, -100)
    labels[0, -6:] = ids[0, -6:]
    loss_sum, n = model(ids, torch.randn(1, 3, 48, 48), labels=labels)
    assert int(n) == 6  # next-token targets: the 6 supervised text tokens
    logits = model(ids, torch.randn(1, 3, 48, 48))
    assert loss_sum.item() > 0 and logits.shape[1] == ids.shape[1]


def test_gqa_shapes_and_named_sizes():
    cfg = model_config("tiny")
    assert (cfg.heads, cfg.kv_heads, cfg.image_tokens) == (4, 2, 9)  # 16-px patches: one per grid cell
    cfg.vocab_size = 1024
    m = VLM(cfg, 3)
    assert m.decoder.layers[0].self_attn.k_proj.weight.shape == (64, 128)  # 2 KV heads x 32
    assert 0.8e6 < m.num_params() < 1.6e6
    big = model_config("dense_3b")
    assert (big.layers, big.width, big.ffn, big.heads, big.max_seq_len) == (32, 2560, 6912, 20, 4096)
    big.validate()
