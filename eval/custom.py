"""Custom suites: the user's own benchmarks (the paper's private business suites are of this kind).

A suite is one file, named in the eval config (`eval.custom: {NAME: PATH}`):

JSONL, one item per line (image paths are relative to the file):
    {"id": "inv-1", "images": ["img/inv-1.png"], "question": "Total amount?", "answer": ["$12.50"],
     "metric": "anls"}
    {"id": "q-2", "image": "img/q-2.png", "question": "Which shape?", "options": ["ball", "box"],
     "answer": "box"}                                  # metric: multiple_choice (options given)
    {"id": "g-3", "image": "img/g-3.png", "question": "Where is the kite?", "answer": [4, 4, 20, 20],
     "metric": "box_iou"}

TSV in VLMEvalKit's layout: `index`, `image` (base64), `question`, option columns `A`, `B`, ... and
`answer` (the option's letter); without option columns the answer is open. An optional `category`
column gives a per-category breakdown, an optional `metric` column overrides the metric per row.

Metrics: `multiple_choice` (option likelihood, as for the world benchmarks), `exact_match`, `anls`
(DocVQA), `box_iou` (the first four numbers generated, IoU with the answer box; an item scores 1 at
IoU >= 0.5, and the mean IoU is reported beside). Default: multiple_choice with options, else
exact_match.
"""

from __future__ import annotations

import base64
import csv
import io
import json
import string
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from PIL import Image

from mmkd.bench_item import BenchItem
from mmkd.errors import UserError
from mmkd.eval.continuous import continuous_summary, option_probability
from mmkd.eval.inference import generate, option_loglik
from mmkd.metrics import anls, box_iou, exact_match, mean_ci95, parse_box
from mmkd.model import VLM
from mmkd.templates import Templates

METRICS = ("multiple_choice", "exact_match", "anls", "box_iou")


class SuiteError(UserError, ValueError):
    """A custom suite file is malformed; the message names the file, the line and the field."""

    label = "eval error"


def _image(value: str, base: Path, where: str) -> Image.Image:
    """An image from a path relative to the suite file, or base64 (VLMEvalKit's TSVs)."""
    path = base / value
    try:
        if len(value) < 4096 and path.exists():
            return Image.open(path).convert("RGB")
        return Image.open(io.BytesIO(base64.b64decode(value, validate=True))).convert("RGB")
    except (OSError, ValueError) as e:
        raise SuiteError(
            f"{where}: image is neither a file under {base} nor base64 image data ({e})"
        ) from None


def _item(record: dict[str, Any], base: Path, where: str) -> BenchItem:
    for key in ("id", "question", "answer"):
        if key not in record:
            raise SuiteError(f"{where}: missing {key!r}")
    options = record.get("options")
    metric = record.get("metric") or ("multiple_choice" if options else "exact_match")
    if metric not in METRICS:
        raise SuiteError(f"{where}: metric {metric!r}; one of {list(METRICS)}")
    answer = record["answer"]
    if metric == "multiple_choice" and (not options or answer not in options):
        raise SuiteError(f"{where}: multiple_choice needs options that include the answer {answer!r}")
    if metric == "box_iou" and not (isinstance(answer, list) and len(answer) == 4):
        raise SuiteError(f"{where}: box_iou needs the answer box as [x1, y1, x2, y2], got {answer!r}")
    paths = record.get("images") or ([record["image"]] if record.get("image") else [])
    images = [_image(str(p), base, where) for p in paths]
    answers = answer if isinstance(answer, list) and metric != "box_iou" else [answer]
    return BenchItem(
        id=str(record["id"]),
        ability=metric,
        qtype=str(record.get("category", "")),
        question=str(record["question"]),
        answer=json.dumps(answer) if metric == "box_iou" else str(answers[0]),
        options=[str(o) for o in options] if metric == "multiple_choice" else None,
        image=images[0] if images else None,
        more_images=images[1:],
        references=[str(a) for a in answers],
        metadata={"metric": metric},
    )


def _tsv_records(path: Path) -> list[dict[str, Any]]:
    csv.field_size_limit(sys.maxsize)  # base64 images make long fields
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    records = []
    for row in rows:
        letters = [c for c in string.ascii_uppercase if row.get(c) not in (None, "")]
        record: dict[str, Any] = {
            "id": row.get("index", ""),
            "question": row.get("question", ""),
            "image": row.get("image") or None,
            "category": row.get("category", ""),
        }
        if letters:
            record["options"] = [row[c] for c in letters]
            record["answer"] = row[row["answer"]] if row.get("answer") in letters else row.get("answer")
        else:
            record["answer"] = row.get("answer", "")
        if row.get("metric"):
            record["metric"] = row["metric"]
        records.append(record)
    return records


def load_suite(path: str | Path) -> list[BenchItem]:
    """Items of a custom suite (.jsonl or .tsv); every problem names its file and line."""
    path = Path(path)
    if not path.exists():
        raise SuiteError(f"custom suite {path} does not exist")
    if path.suffix == ".tsv":
        records = _tsv_records(path)
        first_line = 2  # after the header
    elif path.suffix == ".jsonl":
        records = []
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if line.strip():
                try:
                    records.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise SuiteError(f"{path}:{n}: not JSON ({e})") from None
        first_line = 1
    else:
        raise SuiteError(f"custom suite {path}: expected a .jsonl or .tsv file")
    items = [_item(r, path.parent, f"{path}:{n}") for n, r in enumerate(records, first_line)]
    if not items:
        raise SuiteError(f"custom suite {path} has no items")
    ids = [it.id for it in items]
    if len(set(ids)) != len(ids):
        raise SuiteError(
            f"custom suite {path}: duplicate ids {sorted({i for i in ids if ids.count(i) > 1})[:5]}"
        )
    return items


def evaluate_suite(
    model: VLM, templates: Templates, items: list[BenchItem], batch_size: int, max_new_tokens: int
) -> tuple[dict[str, Any], list[dict]]:
    """The suite's result (one mean over items of any metric mix) and one record per item."""
    model.eval()
    preds: dict[str, str] = {}
    scores: dict[str, float] = {}
    extra: dict[str, dict] = defaultdict(dict)
    continuous: dict[str, dict[str, float]] = {}
    mc = [it for it in items if it.options]
    for it, s in zip(mc, option_loglik(model, templates, mc, batch_size) if mc else []):
        preds[it.id] = it.options[max(range(len(s)), key=s.__getitem__)]
        scores[it.id] = float(preds[it.id] == it.answer)
        continuous[it.id] = {"p_correct": option_probability(s, it.options.index(it.answer))}
    open_items = [it for it in items if not it.options]
    for it, p in zip(open_items, generate(model, templates, open_items, batch_size, max_new_tokens, True)):
        preds[it.id] = p
        metric = it.metadata["metric"]
        if metric == "anls":
            scores[it.id] = anls(p, it.references)
        elif metric == "box_iou":
            iou = box_iou(parse_box(p), tuple(json.loads(it.answer)))
            scores[it.id], extra[it.id]["iou"] = float(iou >= 0.5), iou
        else:
            scores[it.id] = max(exact_match(p, a) for a in it.references)
    values = [scores[it.id] for it in items]
    score, ci = mean_ci95(values)
    metrics = sorted({it.metadata["metric"] for it in items})
    result: dict[str, Any] = {
        "metric": metrics[0] if len(metrics) == 1 else "mixed",
        "n": len(items),
        "shots": sum(len(it.shots) for it in items) / len(items) if items else 0,
        "score": score,
        "ci95": ci,
        "chance": None,
        "blind": None,
    }
    if len(mc) == len(items):  # a probability on the answer, where every item has options to normalise over
        result["continuous"] = continuous_summary(
            [continuous[it.id] for it in items], sum(1 / len(it.options) for it in items) / len(items)
        )
    groups = defaultdict(list)
    for it in items:
        groups[it.qtype].append(scores[it.id])
    if len(groups) > 1:
        result["breakdown"] = {k: sum(v) / len(v) for k, v in sorted(groups.items())}
    ious = [extra[it.id]["iou"] for it in items if "iou" in extra[it.id]]
    if ious:
        result["mean_iou"] = sum(ious) / len(ious)
    records = [
        {
            "id": it.id,
            "category": it.qtype,
            "metric": it.metadata["metric"],
            "question": it.question,
            "answer": it.answer,
            "prediction": preds[it.id],
            "score": scores[it.id],
            **extra[it.id],
        }
        | ({"continuous": continuous[it.id]} if it.id in continuous else {})
        for it in items
    ]
    return result, records
