"""Scoring logic of the world benchmarks on hand-made cases."""

import math
import random

import pytest
import torch

from mmkd.bench_item import BenchItem
from mmkd.eval.continuous import answer_nll, option_probability, reference_nll
from mmkd.eval.inference import generate, option_loglik
from mmkd.eval.report import markdown_table
from mmkd.eval.world_bench import blind_answer
from mmkd.templates import Templates


class FavouriteTokenModel(torch.nn.Module):
    """Always predicts `favourite` with probability ~1 (a model whose answers we know)."""

    def __init__(self, vocab: int, favourite: int, cfg, image_token_id: int):
        super().__init__()
        self.vocab, self.favourite, self.cfg, self.image_token_id = vocab, favourite, cfg, image_token_id
        self.anchor = torch.nn.Parameter(torch.zeros(()))  # the device and dtype inference reads
        self.text_vocab_size = vocab  # every id is text

    def forward(self, ids, pixels=None, attention_mask=None):
        logits = torch.full((*ids.shape, self.vocab), -10.0)
        logits[..., self.favourite] = 10.0
        return logits

    def next_token_logits(self, ids, pixels, attention_mask, cache):
        cache.extend(attention_mask)
        cache.advance(ids.shape[1])
        return self(ids)[:, -1]


def _model(tokenizer, token_text, micro_cfg):
    micro_cfg.vocab_size = tokenizer.vocab_size
    favourite = tokenizer.encode(token_text)[0]
    return FavouriteTokenModel(tokenizer.vocab_size, favourite, micro_cfg, tokenizer.image_id)


def test_option_likelihood_picks_the_option_the_model_prefers(tokenizer):
    from tests.conftest import model_config

    cfg = model_config("micro")
    t = Templates(tokenizer, cfg.image_tokens, cfg.max_seq_len)
    items = [
        BenchItem("a", "x", "q", "How many objects are there?", "2", ["1", "2", "3"]),
        BenchItem("b", "x", "q", "Is there a ball?", "no", ["yes", "no"]),
    ]
    scores = option_loglik(_model(tokenizer, " 2", cfg), t, items, batch_size=2)
    assert [len(s) for s in scores] == [3, 2]
    assert max(range(3), key=scores[0].__getitem__) == 1  # "2" is the favourite token
    assert scores[0][1] > -0.01 and scores[0][0] < -10


def test_continuous_scores_put_the_probability_where_the_model_does(tokenizer):
    """p_correct is the softmax of the option scores (its argmax the prediction); an answer's NLL is
    ~0 for the token the model always predicts and ~20 nats for any other, per token and per byte."""
    from tests.conftest import model_config

    cfg = model_config("micro")
    t = Templates(tokenizer, cfg.image_tokens, cfg.max_seq_len)
    model = _model(tokenizer, " 2", cfg)
    item = BenchItem("a", "x", "q", "How many objects are there?", "2", ["1", "2", "3"])
    (scores,) = option_loglik(model, t, [item], batch_size=2)
    assert option_probability(scores, 1) > 0.999 and option_probability(scores, 0) < 1e-6
    assert option_probability([-1.0, -1.0], 0) == 0.5
    assert option_probability([-2000.0, -2001.0], 0) == pytest.approx(1 / (1 + math.exp(-1)))  # no underflow
    right, wrong = (BenchItem(i, "ocr", "ocr", "What number is it?", a) for i, a in (("r", "2"), ("w", "7")))
    nll = answer_nll(model, t, [right, wrong], batch_size=2)
    assert nll[0]["nll_token"] < 0.01 and nll[1]["nll_token"] > 15
    tokens = len(t.answer_ids("7"))
    assert nll[1]["bits_per_byte"] == pytest.approx(nll[1]["nll_token"] * tokens / math.log(2) / len(b"7"))
    caption = BenchItem("c", "captioning", "caption", "", "", references=["2", "7"])
    (ref,) = reference_nll(model, t, [caption], batch_size=4)
    assert ref["nll_token"] == pytest.approx((nll[0]["nll_token"] + nll[1]["nll_token"]) / 2, rel=1e-4)


def test_generation_stops_at_newline(tokenizer):
    from tests.conftest import model_config

    cfg = model_config("micro")
    t = Templates(tokenizer, cfg.image_tokens, cfg.max_seq_len)
    items = [BenchItem("a", "ocr", "ocr", "What word is written on the sign?", "bako")]
    assert generate(_model(tokenizer, "\n", cfg), t, items, 4, 10, stop_at_newline=True) == [""]
    (token,) = tokenizer.encode(" ball")  # one token in the world's vocabulary
    out = generate(_model(tokenizer, " ball", cfg), t, items, 4, 5, stop_at_newline=True)
    assert out == [(tokenizer.decode([token]) * 5).strip()] == ["ball ball ball ball ball"]


def test_blind_answer_uses_the_training_prior_per_question_type():
    prior = {"count": {"1": 80, "2": 15, "3": 5}, "ocr": {"bako": 3, "lira": 9}}
    rng = random.Random(0)
    mc = BenchItem("a", "counting", "count", "How many balls are there?", "2", ["1", "2", "3"])
    assert blind_answer(mc, prior, rng) == "1"
    assert blind_answer(BenchItem("b", "ocr", "ocr", "q", "bako"), prior, rng) == "lira"
    unseen = BenchItem("c", "knowledge", "knowledge_use", "q", "x", ["x", "y"])
    assert {blind_answer(unseen, prior, random.Random(s)) for s in range(20)} == {"x", "y"}


def test_report_marks_abilities_that_beat_chance_and_blind():
    results = {
        "counting": {
            "metric": "accuracy",
            "n": 100,
            "score": 0.8,
            "ci95": 0.05,
            "chance": 0.25,
            "blind": 0.3,
        },
        "spatial": {
            "metric": "accuracy",
            "n": 100,
            "score": 0.33,
            "ci95": 0.09,
            "chance": 0.25,
            "blind": 0.3,
        },
        "captioning": {"metric": "cider", "n": 100, "score": 0.5, "ci95": 0.1, "chance": None, "blind": 0.0},
    }
    table = markdown_table(results, "run")
    assert "| counting | accuracy | 100 | 80.0 ± 5.0 | 25.0 | 30.0 | yes |" in table
    assert "| spatial | accuracy | 100 | 33.0 ± 9.0 | 25.0 | 30.0 | no |" in table
    assert "| captioning | cider | 100 | 0.500 ± 0.100 | — | 0.000 | yes |" in table


def test_pope_scores_each_negative_split_with_the_positives():
    from mmkd.bench_item import BenchItem
    from mmkd.eval.world_bench import pope

    def item(i, split, answer):
        return BenchItem(f"e{i}", "existence", "exist", "Is there a ball?", answer, metadata={"pope": split})

    items = [item(0, "present", "yes"), item(1, "present", "yes"), item(2, "random", "no")]
    items += [item(3, "random", "no"), item(4, "popular", "no"), item(5, "popular", "no")]
    preds = ["yes", "no", "no", "yes", "yes", "yes"]
    scores = pope(items, preds)
    assert set(scores) == {"random", "popular"}
    # random: tp 1, fn 1, fp 1, tn 1 -> precision = recall = F1 = 0.5, two of four said yes
    assert scores["random"] == {"accuracy": 0.5, "precision": 0.5, "recall": 0.5, "f1": 0.5, "yes_ratio": 0.5}
    # popular: tp 1, fn 1, fp 2 -> precision 1/3, recall 1/2, F1 0.4
    assert scores["popular"]["f1"] == pytest.approx(0.4) and scores["popular"]["yes_ratio"] == 0.75


def test_code_version_is_taken_once_at_import(monkeypatch):
    """A long run records the code it started with, whatever the checkout holds when it evaluates."""
    from mmkd.eval import suites

    first = suites.code_version()
    monkeypatch.setattr(suites.subprocess, "run", lambda *a, **k: pytest.fail("git ran again"))
    assert suites.code_version() is first and first["version"]
