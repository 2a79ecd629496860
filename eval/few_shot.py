"""Few-shot evaluation (seed 002 reports 0/4/8-shot, after MM1): each item's prompt starts with `k`
solved examples, images and answers, drawn for that item from the rest of its benchmark.

The pool is the benchmark's other items (benchmark items are held out of training, and an item is
never its own example); the draw is seeded by the run seed and the item id, so every model sees the
same examples. Captions and answers of the examples are the reference answers. Examples that do not
fit the model's context are dropped from the front (`fit`); results report the mean number kept.
"""

from __future__ import annotations

import random
from dataclasses import replace

from mmkd.bench_item import BenchItem
from mmkd.config import ConfigError
from mmkd.templates import Templates


def with_shots(
    items: list[BenchItem], k: int, seed: int, name: str, pool: list[BenchItem] | None = None
) -> list[BenchItem]:
    """The items of benchmark `name`, each with `k` solved examples from `pool` (the whole benchmark,
    of which `items` may be the first `eval.max_items`), never the item itself."""
    pool = items if pool is None else pool
    if k == 0:
        return items
    if k >= len(pool):
        raise ConfigError(
            f"eval.shots={k}: benchmark {name!r} has {len(pool)} items; k-shot needs more than k"
        )
    out = []
    for item in items:
        rng = random.Random(f"{seed}/shots/{name}/{item.id}")
        others = [p for p in pool if p.id != item.id]
        out.append(replace(item, shots=[_solved(p) for p in rng.sample(others, k)]))
    return out


def fit(
    items: list[BenchItem], templates: Templates, max_seq_len: int, max_new_tokens: int
) -> list[BenchItem]:
    """Drop each item's earliest examples until its prompt leaves room for the answer (the longest
    option, or `max_new_tokens`) within the model's context: a small model holds fewer examples."""
    out = []
    for item in items:
        room = (
            max((len(templates.answer_ids(o)) for o in item.options), default=0)
            if item.options
            else max_new_tokens
        )
        while item.shots and len(templates.item_prompt_ids(item)) + room > max_seq_len:
            item = replace(item, shots=item.shots[1:])
        out.append(item)
    return out


def _solved(item: BenchItem) -> BenchItem:
    """An example as the prompt shows it: its answer is the reference (a caption's first reference)."""
    answer = item.references[0] if not item.question and item.references else item.answer
    return replace(item, answer=answer, shots=[])
