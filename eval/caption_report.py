"""The caption report (seed 002 Table A8, Fig. 6-7): per caption source, tokens, ANA, CapScore, CHAIR
and unique entities, the annotator's numbers beside the exact world ones.

    python launch/build.py recipe=caption_formats +captions=true

Each source is measured on its first `build.caption_report_samples` captions. ANA and CapScore come
from the configured annotator (the world oracle, or a served model) and, for world images, exactly
from the scene graph. CHAIR needs ground-truth objects: world scene graphs, or on real data COCO
instance annotations (`build.chair_instances`) with CHAIR's synonym list (`build.chair_synonyms`),
matched on the samples' `image_id`; without them the CHAIR columns are left empty.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mmkd.annotators import Annotator
from mmkd.build_config import BuildConfig
from mmkd.data_builders.noun_phrases import extractor
from mmkd.eval import caption_metrics as cm
from mmkd.schema import Sample
from mmkd.shards import open_dataset, write_json_atomic
from mmkd.tokenizer import Tokenizer
from mmkd.world.scene import Scene


def _head(path: Path, n: int) -> list[Sample]:
    out = []
    for s in open_dataset(path).iter(images=True):
        out.append(s)
        if len(out) == n:
            break
    return out


def _truths(
    samples: list[Sample], build: BuildConfig
) -> tuple[list[set[str]] | None, cm.ObjectVocabulary | None]:
    if all("scene" in s.metadata for s in samples):
        return [cm.world_truth(s.metadata["scene"]) for s in samples], cm.ObjectVocabulary.world()
    if not build.chair_instances:
        return None, None
    vocab = cm.ObjectVocabulary.from_synonyms(build.chair_synonyms)
    by_image = cm.coco_truth(build.chair_instances, vocab)
    if not all(s.metadata.get("image_id") in by_image for s in samples):
        return None, None
    return [by_image[s.metadata["image_id"]] for s in samples], vocab


def measure(
    name: str, path: Path, annotator: Annotator, tokenizer: Tokenizer, build: BuildConfig
) -> dict[str, Any]:
    """Every metric of one caption source."""
    samples = _head(path, build.caption_report_samples)
    texts = [s.text for s in samples]
    row: dict[str, Any] = {"source": name, "path": str(path), "captions": len(samples)}
    row.update(cm.token_lengths(texts, tokenizer.encode))
    row["entities"] = cm.unique_entities(texts, extractor(build.noun_phrases), len(texts))
    verdicts, failed = cm.annotated_assertions(annotator, samples)
    row["annotator"] = {**cm.summarize_assertions(verdicts), "failed": failed}
    if all("scene" in s.metadata for s in samples):
        scenes = [Scene.from_json(s.metadata["scene"]) for s in samples]
        row["exact"] = cm.summarize_assertions(cm.exact_assertions(texts, scenes))
    truths, vocab = _truths(samples, build)
    if truths is not None and vocab is not None:
        row["chair"] = cm.chair(texts, truths, vocab)
    return row


def _fmt(v: list[float] | None) -> str:
    return "" if not v else f"{v[0]:.2f} [{v[1]:.2f}, {v[2]:.2f}]"


def markdown(rows: list[dict[str, Any]]) -> str:
    head = (
        "| source | captions | mean tokens | ANA (annotator) | ANA (exact) | CapScore (annotator) | "
        "CapScore (exact) | CHAIR_i | CHAIR_s | CHAIR_s per sentence | object recall | unique entities |"
    )
    lines = [head, "|" + "---|" * 12]
    for r in rows:
        exact, chair = r.get("exact", {}), r.get("chair", {})
        cells = [
            r["source"],
            str(r["captions"]),
            _fmt(r["mean_tokens"]),
            _fmt(r["annotator"]["ana"]),
            _fmt(exact.get("ana")),
            _fmt(r["annotator"]["capscore"]),
            _fmt(exact.get("capscore")),
            _fmt(chair.get("chair_i")),
            _fmt(chair.get("chair_s")),
            _fmt(chair.get("chair_s_sentence")),
            _fmt(chair.get("recall")),
            f"{r['entities']['unique_entities']} / {r['entities']['captions']}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    bins = list(rows[0]["histogram"]) if rows else []
    lines += ["", "Token lengths (Fig. 6), captions per bin:", "", "| source | " + " | ".join(bins) + " |"]
    lines.append("|" + "---|" * (len(bins) + 1))
    lines += [
        "| " + r["source"] + " | " + " | ".join(str(r["histogram"][b]) for b in bins) + " |" for r in rows
    ]
    lines += [
        "",
        "Values in percent for CapScore and CHAIR, with 95% bootstrap intervals over captions. CHAIR_s "
        "counts captions with a hallucinated object (the original code); the per-sentence column follows the "
        "paper's formula. ANA / CapScore (exact) read the captions against the world's scene graphs.",
    ]
    return "\n".join(lines) + "\n"


def report(
    sources: dict[str, Path], annotator: Annotator, tokenizer: Tokenizer, build: BuildConfig, out: Path
) -> list[dict[str, Any]]:
    """Measure every source; write `<out>.json` and `<out>.md`."""
    rows = [measure(name, path, annotator, tokenizer, build) for name, path in sources.items()]
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out.with_suffix(".json"), {"rows": rows})
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text(markdown(rows))
    tmp.replace(out.with_suffix(".md"))
    return rows
