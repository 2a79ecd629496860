"""Continuous scores beside accuracy: how much probability the model puts on the right answer.

A 0/1 score throws away how close a model came; at a small budget most of a benchmark's items sit on
the wrong side of the argmax and accuracy stays at its floor while the model improves. Following
DataDecide (Magnusson et al., 2025) and "Signal and Noise" (Heineman et al., 2025), each item also
gets a continuous score under teacher forcing:
- multiple choice: `p_correct`, the probability of the correct option normalised over the options
  (a softmax of the same length-normalised option scores that pick the prediction, so the argmax of
  `p_correct` is the prediction);
- open answers (OCR words, chart values): the correct answer's negative log-likelihood per token
  (`nll_token`, nats) and per byte of its text (`bits_per_byte`, which does not depend on the tokenizer);
- captions: the references' mean `nll_token`.
Lower is better for the NLLs, higher for `p_correct`.
"""

from __future__ import annotations

import math

from mmkd.bench_item import BenchItem
from mmkd.eval.inference import answer_loglik
from mmkd.metrics import mean_ci95
from mmkd.model import VLM
from mmkd.templates import Templates


def option_probability(scores: list[float], correct: int) -> float:
    """Softmax of the option scores at the correct option (stable for very negative scores)."""
    top = max(scores)
    weights = [math.exp(s - top) for s in scores]
    return weights[correct] / sum(weights)


def answer_nll(
    model: VLM, templates: Templates, items: list[BenchItem], batch_size: int
) -> list[dict[str, float]]:
    """Per item, the correct answer's `nll_token` and `bits_per_byte` after the item's prompt."""
    out = []
    for it, (logp, tokens) in zip(
        items, answer_loglik(model, templates, [(it, it.answer) for it in items], batch_size)
    ):
        size = len(it.answer.encode())
        out.append(
            {"nll_token": -logp / max(tokens, 1), "bits_per_byte": -logp / (math.log(2) * max(size, 1))}
        )
    return out


def reference_nll(
    model: VLM, templates: Templates, items: list[BenchItem], batch_size: int
) -> list[dict[str, float]]:
    """Per captioning item, the mean over its references of their `nll_token`."""
    pairs = [(it, ref) for it in items for ref in it.references]
    flat = iter(answer_loglik(model, templates, pairs, batch_size))
    out = []
    for it in items:
        per_ref = [-logp / max(tokens, 1) for logp, tokens in (next(flat) for _ in it.references)]
        out.append({"nll_token": sum(per_ref) / len(per_ref)})
    return out


def continuous_summary(per_item: list[dict[str, float]], chance: float | None) -> dict[str, dict]:
    """Each continuous metric's mean and 95% CI over the items; `p_correct` beside its chance (the
    same as accuracy's: a uniform distribution over the options)."""
    out = {}
    for metric in per_item[0]:
        score, ci = mean_ci95([c[metric] for c in per_item])
        out[metric] = {"score": score, "ci95": ci} | ({"chance": chance} if metric == "p_correct" else {})
    return out
