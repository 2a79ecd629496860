"""A SCALE selection as a page a researcher can read (seed 004 Fig. 7, Table 2, Figs. 9-10): score
histograms per stage, the share of each task kept, and the best kept and worst discarded samples with
their images (PNG thumbnails beside `report.md`) and scores.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from PIL import Image

from mmkd.data_builders import engine
from mmkd.data_builders.scale import TEXT_CRITERIA, pool_scores, question_answer
from mmkd.shards import open_dataset

THUMB = 96


def _histogram(title: str, values: dict[str, list[float]]) -> list[str]:
    bins = [1, 2, 3, 4, 5]
    lines = [
        f"### {title}",
        "",
        "| score | " + " | ".join(str(b) for b in bins) + " |",
        "|---|" + "---|" * len(bins),
    ]
    for name, vs in values.items():
        counts = Counter(min(5, max(1, round(v))) for v in vs)
        lines.append(f"| {name} | " + " | ".join(str(counts.get(b, 0)) for b in bins) + " |")
    return [*lines, ""]


def _examples(title: str, rows: list[dict[str, Any]], out: Path) -> list[str]:
    lines = [f"### {title}", "", "| image | id | question | answer | image / text / multimodal | defect |"]
    lines.append("|---|---|---|---|---|---|")
    for r in rows:
        name = f"{r['id']}.png"
        r["image"].resize((THUMB, THUMB), Image.Resampling.BICUBIC).save(out / name)
        s = r["scores"]
        cells = [
            f"![{r['id']}]({name})",
            r["id"],
            r["question"].replace("|", "/"),
            r["answer"].replace("|", "/"),
            f"{s['image']:.1f} / {s['text']:.1f} / {s['multimodal']:.1f}",
            r["defect"],
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def write(pool: Path, stages: dict[str, Path], selection: Path, out: Path, examples: int = 6) -> Path:
    """`<out>/report.md` and its thumbnails; returns the report's path."""
    uni, tasks, mm = (engine.read_records(stages[s]) for s in ("unimodal", "tasks", "multimodal"))
    scores = pool_scores(uni, tasks, mm)
    chosen = list(open_dataset(selection).iter(images=False))
    kept = [s.id for s in sorted(chosen, key=lambda s: s.metadata["scale"]["rank"])]  # best first
    ranked = sorted(scores, key=lambda i: sum(scores[i].values()))
    worst = [i for i in ranked if i not in set(kept)][:examples]
    shown = set(kept[:examples]) | set(worst)
    samples = {s.id: s for s in open_dataset(pool).iter(images=True) if s.id in shown}
    out.mkdir(parents=True, exist_ok=True)

    def row(i: str) -> dict[str, Any]:
        s = samples[i]
        question, answer = question_answer(s)
        defect = s.metadata.get("defect", {}).get("kind", "")
        return {
            "id": i,
            "image": s.images[0],
            "question": question,
            "answer": answer,
            "scores": scores[i],
            "defect": defect,
        }

    subtask = {r["id"]: r["subtask"] for r in tasks}
    pool_tasks, kept_tasks = (
        Counter(subtask[i] for i in scores),
        Counter(subtask[i] for i in kept if i in subtask),
    )
    lines = [f"# Selection: {selection.name}", "", f"{len(kept)} of {len(scores)} scored samples kept.", ""]
    lines += _histogram("Text quality (1-5)", {k: [r[k] for r in uni] for k in TEXT_CRITERIA})
    lines += _histogram("Multimodal judge (1-5)", {k: [r[k] for r in mm] for k in ("clarity", "relevance")})
    lines += _histogram(
        "Composite components", {k: [s[k] for s in scores.values()] for k in ("image", "text", "multimodal")}
    )
    lines += ["### Tasks: pool and kept", "", "| sub-task | pool | kept | kept share |", "|---|---|---|---|"]
    for sub, n in pool_tasks.most_common():
        lines.append(f"| {sub} | {n} | {kept_tasks.get(sub, 0)} | {kept_tasks.get(sub, 0) / n:.0%} |")
    lines += [""]
    lines += _examples("Best kept", [row(i) for i in kept[:examples]], out)
    lines += _examples("Worst discarded", [row(i) for i in worst], out)
    report = out / "report.md"
    tmp = report.with_suffix(".md.tmp")
    tmp.write_text("\n".join(lines))
    tmp.replace(report)
    return report
