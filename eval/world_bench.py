"""Run the knowledge-world benchmarks on a model.

Multiple choice is scored by option likelihood, open answers (OCR, chart values) are generated
greedily and scored by exact match, captions by CIDEr-D (`mmkd.eval.inference` does the inference);
every item also gets its continuous scores (`mmkd.eval.continuous`).

Each ability is reported next to its chance level and a *blind* baseline: the answer picked from
the question alone, i.e. the training answer most frequent for the question's type (answer priors
recorded by the VQA0 and other builders, and by the instruction data where a run trains on it); a
caption's blind baseline is the most frequent Caption0.
"""

from __future__ import annotations

import json
import random
from collections import defaultdict
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mmkd.bench_item import BenchItem
from mmkd.eval import caption_metrics
from mmkd.eval.continuous import answer_nll, continuous_summary, option_probability, reference_nll
from mmkd.eval.inference import generate, option_loglik
from mmkd.metrics import cider_d, coco_cider, exact_match, mean_ci95
from mmkd.model import VLM
from mmkd.templates import Templates
from mmkd.world.scene import Scene

PRIOR_SOURCES = ("vqa0", "other")  # the world's Q/A sources every world build has


def blind_answer(item: BenchItem, prior: dict[str, dict[str, int]], rng: random.Random) -> str:
    """The answer from the question alone: the most frequent training answer of the item's type."""
    counts = prior.get(item.qtype, {})
    if item.options:
        if not any(counts.get(o, 0) for o in item.options):
            return rng.choice(item.options)  # no prior for this type: a guess, i.e. chance
        return max(item.options, key=lambda o: counts.get(o, 0))
    return max(counts, key=counts.get) if counts else ""


def pope(items: list[BenchItem], preds: list[str]) -> dict[str, dict[str, float]]:
    """POPE (Li et al., 2023) per negative split (random / popular / adversarial): the present-object
    questions with that split's absent-object ones, scored as detection of "yes": accuracy,
    precision, recall, F1 and the share of "yes" answers (a yes-biased model shows there)."""
    pairs = [(it.metadata.get("pope"), it.answer, p) for it, p in zip(items, preds)]
    out = {}
    for split in sorted({s for s, _, _ in pairs if s and s != "present"}):
        mine = [(a, p) for s, a, p in pairs if s in ("present", split)]
        tp = sum(a == "yes" and p == "yes" for a, p in mine)
        fp = sum(a == "no" and p == "yes" for a, p in mine)
        fn = sum(a == "yes" and p != "yes" for a, p in mine)
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        out[split] = {
            "accuracy": sum(a == p for a, p in mine) / len(mine),
            "precision": precision,
            "recall": recall,
            "f1": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "yes_ratio": sum(p == "yes" for _, p in mine) / len(mine),
        }
    return out


def evaluate_ability(
    model: VLM,
    templates: Templates,
    items: list[BenchItem],
    prior: dict,
    blind_caption: str,
    batch_size: int,
    max_new_tokens: int,
    seed: int,
) -> tuple[dict[str, Any], list[dict]]:
    ability = items[0].ability
    rng = random.Random(f"{seed}/blind/{ability}")
    coco = None  # the COCO toolkit's CIDEr, for captions
    quality = None  # CHAIR, ANA and CapScore of the captions
    if items[0].options is not None:
        loglik = option_loglik(model, templates, items, batch_size)
        preds = [it.options[max(range(len(s)), key=s.__getitem__)] for it, s in zip(items, loglik)]
        scores = [float(p == it.answer) for p, it in zip(preds, items)]
        continuous = [
            {"p_correct": option_probability(s, it.options.index(it.answer))} for it, s in zip(items, loglik)
        ]
        blind = [float(blind_answer(it, prior, rng) == it.answer) for it in items]
        chance = sum(1 / len(it.options) for it in items) / len(items)
        metric = "accuracy"
    elif ability == "captioning":
        # A templated caption (eval.caption_prompt) ends its line; a bare one ends at EOS.
        at_newline = bool(templates.caption_prompt or items[0].shots)  # as the examples' captions end
        preds = generate(model, templates, items, batch_size, max_new_tokens, stop_at_newline=at_newline)
        refs = [it.references for it in items]
        scores = cider_d(preds, refs)
        continuous = reference_nll(model, templates, items, batch_size)
        blind = cider_d([blind_caption] * len(items), refs)
        coco = coco_cider(preds, refs)
        chance, metric = None, "cider"
        if all("scene" in it.metadata for it in items):  # what the model's captions claim (seed 002)
            scenes = [Scene.from_json(it.metadata["scene"]) for it in items]
            quality = caption_metrics.caption_quality(preds, scenes)
    else:
        preds = generate(model, templates, items, batch_size, max_new_tokens, stop_at_newline=True)
        scores = [exact_match(p, it.answer) for p, it in zip(preds, items)]
        continuous = answer_nll(model, templates, items, batch_size)
        blind = [exact_match(blind_answer(it, prior, rng), it.answer) for it in items]
        chance, metric = 0.0, "exact_match"
    score, ci = mean_ci95(scores)
    result: dict[str, Any] = {
        "metric": metric,
        "n": len(items),
        "shots": sum(len(it.shots) for it in items) / len(items),  # examples kept (eval/few_shot.py)
        "score": score,
        "ci95": ci,
        "chance": chance,
        "blind": sum(blind) / len(blind),
        "continuous": continuous_summary(continuous, chance),
    }
    if ability == "existence":
        result["pope"] = pope(items, preds)
    if coco is not None:
        result["cider_coco"] = coco
    if quality is not None:
        result["caption_quality"] = quality
    groups = defaultdict(list)
    for it, s in zip(items, scores):
        groups[it.metadata.get("pope") or it.qtype].append(s)
    if len(groups) > 1:
        result["breakdown"] = {k: sum(v) / len(v) for k, v in sorted(groups.items())}
    records = [
        {
            "id": it.id,
            "qtype": it.qtype,
            "question": it.question,
            "answer": it.answer,
            "prediction": p,
            "score": s,
            "continuous": c,
        }
        for it, p, s, c in zip(items, preds, scores, continuous)
    ]
    return result, records


def answer_priors(world_root: Path, sources: tuple[str, ...] = PRIOR_SOURCES) -> tuple[dict, str]:
    """(qtype -> answer -> count over the Q/A `sources`, the most frequent Caption0)."""
    prior: dict[str, dict[str, int]] = {}
    for source in sources:
        built = json.loads((world_root / source / "manifest.json").read_text()).get("answer_prior", {})
        for qtype, counts in built.items():
            for answer, n in counts.items():
                prior.setdefault(qtype, {})[answer] = prior.get(qtype, {}).get(answer, 0) + n
    caption = json.loads((world_root / "caption0" / "manifest.json").read_text())["most_common_caption"]
    return prior, caption


def evaluate_world(
    model: VLM,
    templates: Templates,
    world_root: Path,
    benchmarks: dict[str, list[BenchItem]],
    batch_size: int = 64,
    max_new_tokens: int = 40,
    seed: int = 0,
    prior_sources: tuple[str, ...] = PRIOR_SOURCES,
) -> tuple[dict, list[dict]]:
    """Every ability's result on its items, and one record per item (`predictions.jsonl` lines); the
    blind baseline answers from the answer priors of `prior_sources`."""
    model.eval()
    prior, blind_caption = answer_priors(world_root, prior_sources)
    results, records = {}, []
    for ability, items in tqdm(benchmarks.items(), desc="eval world", unit="ability"):
        results[ability], recs = evaluate_ability(
            model, templates, items, prior, blind_caption, batch_size, max_new_tokens, seed
        )
        records += [{"suite": "world", "benchmark": ability, **r} for r in recs]
    return results, records
