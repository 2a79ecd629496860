"""Knowledge density KD(x) = |K(x)| (seed 000 Sec. 4.5) per sample, and the report that compares sources.

The annotator extracts Fact and Abstract elements from each sample's text alone (A.1.5); K(x) is their
union without duplicates. Q/A samples are given as a "Question: ... / Answer: ..." transcript, multi-
image texts with their `<Image k>` placeholders. Results are records next to the dataset's shards
(`part-*.jsonl`, one per unit) with a summary in their manifest; `report()` writes the comparison the
paper draws in Figure 4 (pair captions: 32 elements per sample against 22 for caption/VQA supervision).
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from mmkd.annotators import Request
from mmkd.data_builders import engine
from mmkd.data_builders.annotated import Job, chunks, input_ids, load_samples
from mmkd.data_builders.prompts import PROMPTS, parse_knowledge
from mmkd.data_builders.rejects import RejectLog
from mmkd.schema import IMAGE_MARKER, Sample
from mmkd.shards import write_json_atomic


def sample_text(s: Sample) -> str:
    """What the extractor reads: the text, or the Q/A transcript; images appear as `<Image k>`."""
    if s.turns:
        return "\n".join(f"Question: {t.question}\nAnswer: {t.answer}" for t in s.turns)
    parts = s.text.split(IMAGE_MARKER)
    return "".join(p + (f"<Image {k}>" if k < len(parts) else "") for k, p in enumerate(parts, 1))


def summary(kd: list[int]) -> dict:
    if not kd:
        return {"n": 0}
    q = statistics.quantiles(kd, n=10) if len(kd) > 1 else [kd[0]] * 9
    return {
        "n": len(kd),
        "mean": round(statistics.fmean(kd), 2),
        "median": statistics.median(kd),
        "p10": q[0],
        "p90": q[-1],
        "histogram": {str(k): kd.count(k) for k in sorted(set(kd))},
    }


def build_knowledge(job: Job, out: Path, name: str) -> dict | None:
    """K(x) and KD(x) for every sample of `job.source`."""
    prov = job.provenance("knowledge", ["knowledge"], source=name)

    def work(ids: list[str], rejects: RejectLog) -> list[dict]:
        got = load_samples(job.source, ids, rejects, images=False)
        prompt = PROMPTS["knowledge"]
        requests = [
            Request(i, prompt, parse_knowledge, fields={"text": sample_text(s)}) for i, s in got.items()
        ]
        rows = []
        for r in job.annotator.annotate(requests, f"knowledge of {name}"):
            if r.error:
                rejects.add(f"{job.source.root}: {r.key}", r.error, r.detail)
                continue
            facts, abstract = r.value
            s = got[r.key]
            rows.append(
                {
                    "id": r.key,
                    "kind": s.kind,
                    "facts": facts,
                    "abstract": abstract,
                    "kd": len(facts) + len(abstract),
                }
            )
        return rows

    job.run(out, chunks(input_ids(job.source, job.build.limit), job.build.unit_size), work, records=True)
    if engine.finished(out) is None:
        return None
    rows = engine.unit_records(out)
    by_kind: dict[str, list[int]] = {}
    for r in rows:
        by_kind.setdefault(r["kind"], []).append(r["kd"])
    extra = {
        "knowledge_density": summary([r["kd"] for r in rows]),
        "by_kind": {k: summary(v) for k, v in sorted(by_kind.items())},
    }
    return engine.finish_records(out, f"knowledge/{name}", prov, extra)


def report(results: dict[str, Path], out: Path, reference: str | None = None) -> dict:
    """Compare KD across sources (and kinds within them); writes `<out>.json` and `<out>.md`.

    `reference` (e.g. "vqa0") is the denominator of the ratio column.
    """
    table: dict[str, dict] = {}
    for name, path in results.items():
        m = json.loads((path / "manifest.json").read_text())
        table[name] = m["knowledge_density"]
        for kind, s in m["by_kind"].items():
            if len(m["by_kind"]) > 1:
                table[f"{name} ({kind})"] = s
    ref = table.get(reference or "", {}).get("mean")
    lines = [
        "| source | samples | KD mean | median | p10 | p90 |" + (f" ratio to {reference} |" if ref else ""),
        "| --- | --- | --- | --- | --- | --- |" + (" --- |" if ref else ""),
    ]
    for name, s in table.items():
        ratio = f" {s['mean'] / ref:.2f} |" if ref else ""
        lines.append(f"| {name} | {s['n']} | {s['mean']} | {s['median']} | {s['p10']} | {s['p90']} |{ratio}")
    text = "Knowledge density KD(x) = |K(x)| per sample (seed 000 Sec. 4.5)\n\n" + "\n".join(lines) + "\n"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out.with_suffix(".json"), {"reference": reference, "sources": table})
    out.with_suffix(".md").write_text(text)
    return table
