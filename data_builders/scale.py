"""SCALE (seed 004 Sec. 3.2): scoring stages as resumable, shard-parallel record builders, then the
selection.

  unimodal    image quality (classical sharpness and noise, data_builders/image_quality.py, or a
              served IQA model's 1-5 with build.scale_iqa=annotator) and text quality
              (informativeness, complexity, completeness, 1-5) from a text-only annotator
  tasks       the task and sub-task of each sample in Table 6's taxonomy (few-shot, one example each)
  multimodal  a general caption and one aimed at the predicted task (an MLLM, Sec. 3.2.3), then the
              clarity and relevance of the Q/A judged from them by an LLM (Sec. 3.2.4)
  clip        image-text similarity under a CLIP (the CLIP baseline only)
  selection   image, text and multimodal scores on 1-5 (task rarity is the pool's own statistic),
              SCALE's composite or a baseline's ranking, the top share (Sec. 3.2.5, Sec. 4.1)

Each stage writes one JSON record per sample (`engine.read_records`), with its prompts and annotator
in the manifest's provenance. Single-image samples are scored on their first Q/A turn (a caption as
the answer to "Describe the image."); others are rejects with their reason.
"""

from __future__ import annotations

import random
from collections import Counter
from dataclasses import replace
from pathlib import Path

from mmkd.annotators import Request
from mmkd.config import ConfigError
from mmkd.data_builders import engine
from mmkd.data_builders.annotated import (
    Job,
    answered,
    chunks,
    input_ids,
    load_samples,
    scenes,
    single_image_samples,
)
from mmkd.data_builders.caption_scorers import make_scorer
from mmkd.data_builders.image_quality import noise_sigma, scores_1_to_5, sharpness
from mmkd.data_builders.prompts import PROMPTS, parse_caption, parse_ratings, parse_task
from mmkd.data_builders.rejects import RejectLog
from mmkd.data_builders.selection import composite, select_top
from mmkd.schema import Sample
from mmkd.world.tasks import TAXONOMY

SCALE_VERSION = 1  # bump when what a stage computes changes: it is part of every selection's hash
TEXT_CRITERIA = ("informativeness", "complexity", "completeness")
TAXONOMY_TEXT = "\n".join(f"- {task}: {', '.join(subs)}" for task, subs in TAXONOMY.items())


def question_answer(sample: Sample) -> tuple[str, str]:
    """The text a SCALE stage reads: the first Q/A turn, or a caption as its answer."""
    if sample.turns:
        return sample.turns[0].question, sample.turns[0].answer
    return "Describe the image.", sample.text


def _scorable(job: Job, ids: list[str], rejects: RejectLog) -> list[Sample]:
    return list(single_image_samples(job.source, ids, rejects).values())


def iqa_setting(iqa: str) -> dict[str, str]:
    """What build.scale_iqa adds to a stage's folder key: nothing for the default, so folders built
    before the setting existed are found again."""
    return {} if iqa == "classical" else {"iqa": iqa}


def unimodal_prompts(iqa: str) -> list[str]:
    return ["scale_text_quality", *(["scale_image_quality"] if iqa == "annotator" else [])]


def build_unimodal(job: Job, out: Path) -> dict | None:
    """Text quality (rated) and image quality (measured, or rated by a served IQA model) of every
    sample."""
    iqa = job.build.scale_iqa
    prov = job.provenance("scale_unimodal", unimodal_prompts(iqa), image_quality=iqa)

    def work(ids: list[str], rejects: RejectLog) -> list[dict]:
        samples = {s.id: s for s in _scorable(job, ids, rejects)}
        prompt, parse = PROMPTS["scale_text_quality"], parse_ratings(TEXT_CRITERIA)
        requests = []
        for s in samples.values():
            question, answer = question_answer(s)
            requests.append(Request(s.id, prompt, parse, {"question": question, "answer": answer}))
        text = {r.key: r.value for r in answered(job, requests, "text quality", rejects)}
        if iqa == "annotator":
            prompt, parse = PROMPTS["scale_image_quality"], parse_ratings(("quality",))
            requests = [
                Request(i, prompt, parse, images=samples[i].images, context=scenes([samples[i]]))
                for i in text
            ]
            rated = {r.key: r.value for r in answered(job, requests, "image quality", rejects)}
            return [{"id": i, "image_quality": rated[i]["quality"], **text[i]} for i in text if i in rated]
        rows = []
        for i in text:
            image = samples[i].images[0]
            measured = {"sharpness": sharpness(image), "noise_sigma": noise_sigma(image)}
            rows.append({"id": i, **measured, **text[i]})
        return rows

    job.run(out, chunks(input_ids(job.source, job.build.limit), job.build.unit_size), work, records=True)
    return engine.finish_records(out, "scale_unimodal", prov)


def build_tasks(job: Job, out: Path) -> dict | None:
    """The task of every sample (Sec. 3.2.2), from its question."""
    prov = job.provenance("scale_tasks", ["scale_task"])

    def work(ids: list[str], rejects: RejectLog) -> list[dict]:
        samples = _scorable(job, ids, rejects)
        prompt, parse = PROMPTS["scale_task"], parse_task(TAXONOMY)
        requests = [
            Request(s.id, prompt, parse, {"question": question_answer(s)[0], "taxonomy": TAXONOMY_TEXT},
                    context=scenes([s]))
            for s in samples
        ]  # fmt: skip
        return [
            {"id": r.key, "task": r.value[0], "subtask": r.value[1]}
            for r in answered(job, requests, "task prediction", rejects)
        ]

    job.run(out, chunks(input_ids(job.source, job.build.limit), job.build.unit_size), work, records=True)
    return engine.finish_records(out, "scale_tasks", prov)


def build_multimodal(job: Job, tasks_dir: Path, out: Path) -> dict | None:
    """Captions of every image (general, and aimed at its predicted task), then the judge's clarity and
    relevance of its Q/A against them."""
    prompts = ["scale_caption_general", "scale_caption_task", "scale_multimodal"]
    tasks = {row["id"]: row for row in engine.read_records(tasks_dir)}
    prov = job.provenance("scale_multimodal", prompts, tasks=str(tasks_dir))

    def work(ids: list[str], rejects: RejectLog) -> list[dict]:
        samples = {s.id: s for s in _scorable(job, ids, rejects) if s.id in tasks}
        general, aimed = PROMPTS["scale_caption_general"], PROMPTS["scale_caption_task"]
        requests = []
        for s in samples.values():
            t = tasks[s.id]
            requests.append(
                Request(f"{s.id}/general", general, parse_caption, images=s.images, context=scenes([s]))
            )
            fields = {"task": t["task"], "subtask": t["subtask"]}
            requests.append(Request(f"{s.id}/task", aimed, parse_caption, fields, s.images, scenes([s])))
        captions: dict[str, dict[str, str]] = {}
        for r in answered(job, requests, "captions", rejects):
            sid, which = r.key.rsplit("/", 1)
            captions.setdefault(sid, {})[which] = r.value
        judged = []
        for sid, c in captions.items():
            if len(c) < 2:
                continue  # one caption failed: listed among the rejects
            question, answer = question_answer(samples[sid])
            fields = {
                "general_caption": c["general"],
                "task_caption": c["task"],
                "question": question,
                "answer": answer,
            }
            parse = parse_ratings(("clarity", "relevance"))
            judged.append(
                Request(sid, PROMPTS["scale_multimodal"], parse, fields, context=scenes([samples[sid]]))
            )
        return [
            {
                "id": r.key,
                "general_caption": captions[r.key]["general"],
                "task_caption": captions[r.key]["task"],
                **r.value,
            }
            for r in answered(job, judged, "multimodal judge", rejects)
        ]

    job.run(out, chunks(input_ids(job.source, job.build.limit), job.build.unit_size), work, records=True)
    return engine.finish_records(out, "scale_multimodal", prov)


def build_clip_scores(job: Job, out: Path, spec: str) -> dict | None:
    """The CLIP baseline's score: cosine similarity of each image with its text (question and answer)."""
    scorer = make_scorer(spec)
    prov = {**job.provenance("scale_clip_scores", []), "scorer": spec}

    def work(ids: list[str], rejects: RejectLog) -> list[dict]:
        rows = []
        for s in _scorable(job, ids, rejects):
            question, answer = question_answer(s)
            rows.append({"id": s.id, "clip": scorer(s, [f"{question} {answer}"])[0]})
        return rows

    job.run(out, chunks(input_ids(job.source, job.build.limit), job.build.unit_size), work, records=True)
    return engine.finish_records(out, "scale_clip_scores", prov)


# What each selection ranks by (seed 004 Sec. 4.1's baselines and SCALE itself).
MODES = ("scale", "random", "iqa", "tqa", "i+t", "clip")


def pool_scores(
    unimodal: list[dict], tasks: list[dict], multimodal: list[dict]
) -> dict[str, dict[str, float]]:
    """Per sample: image, text and multimodal scores on 1-5 (Sec. 3.2.5's three components).

    Image: the served IQA model's rating, or the mean of the in-pool quintiles of sharpness and
    (inverted) noise. Text: the mean of the
    three ratings. Multimodal: the mean of clarity, relevance and task rarity, the in-pool quintile of
    how rare the sample's predicted sub-task is (the paper asks its judge; a pool statistic says it
    exactly). Samples missing from any stage (rejected there) are not scored.
    """
    ids = sorted({r["id"] for r in unimodal} & {r["id"] for r in tasks} & {r["id"] for r in multimodal})
    uni = {r["id"]: r for r in unimodal}
    sub = {r["id"]: r["subtask"] for r in tasks}
    mm = {r["id"]: r for r in multimodal}
    if all("image_quality" in uni[i] for i in ids):
        image = [float(uni[i]["image_quality"]) for i in ids]
    else:
        sharp = scores_1_to_5([uni[i]["sharpness"] for i in ids])
        clean = scores_1_to_5([uni[i]["noise_sigma"] for i in ids], higher_is_better=False)
        image = [(a + b) / 2 for a, b in zip(sharp, clean)]
    frequency = Counter(sub[i] for i in ids)
    rarity = scores_1_to_5([float(frequency[sub[i]]) for i in ids], higher_is_better=False)
    out = {}
    for n, i in enumerate(ids):
        u, m = uni[i], mm[i]
        out[i] = {
            "image": image[n],
            "text": sum(u[k] for k in TEXT_CRITERIA) / len(TEXT_CRITERIA),
            "multimodal": (m["clarity"] + m["relevance"] + rarity[n]) / 3,
        }
    return out


def choose(
    scores: dict[str, dict[str, float]], mode: str, fraction: float, seed: int, weights: dict[str, float]
) -> list[str]:
    """The ids a selection keeps, best first (random: in draw order)."""
    if mode == "random":
        k = len(select_top({i: 0.0 for i in scores}, fraction, seed))
        return random.Random(f"{seed}/random-selection").sample(sorted(scores), k)
    parts = {
        "scale": weights,
        "iqa": {"image": 1.0},
        "tqa": {"text": 1.0},
        "i+t": {"image": 1.0, "text": 1.0},
        "clip": {"clip": 1.0},
    }
    if mode not in parts:
        raise ConfigError(f"selection mode {mode!r}: must be one of {list(MODES)}")
    return select_top(composite(scores, parts[mode]), fraction, seed)


def build_selection(
    job: Job,
    stages: dict[str, Path],
    out: Path,
    mode: str,
    fraction: float,
    seed: int,
    weights: dict[str, float],
) -> dict | None:
    """The selected samples of the input as a new dataset; its manifest says what was kept and why (the
    mode, k, the scores of the kept) and, for the world pool, which planted defects were discarded."""
    if mode == "clip":
        scores = {r["id"]: {"clip": r["clip"]} for r in engine.read_records(stages["clip"])}
    else:
        scores = pool_scores(*(engine.read_records(stages[s]) for s in ("unimodal", "tasks", "multimodal")))
    keep = choose(scores, mode, fraction, seed, weights)
    rank = {sid: n for n, sid in enumerate(keep)}
    prov = {
        "builder": "scale_selection",
        "mode": mode,
        "fraction": fraction,
        "seed": seed,
        "weights": weights,
        "stages": {k: str(v) for k, v in stages.items()},
        "input": {"path": str(job.source.root), "content_hash": job.source.manifest["content_hash"]},
    }
    defects: dict[str, Counter] = {"kept": Counter(), "discarded": Counter()}
    for s in job.source.iter(images=False):
        if "defect" in s.metadata and s.id in scores:
            defects["kept" if s.id in rank else "discarded"][s.metadata["defect"]["kind"]] += 1

    def work(unit: list[str], rejects: RejectLog) -> list[Sample]:
        got = load_samples(job.source, unit, rejects)
        return [
            replace(s, metadata={**s.metadata, "scale": {**scores[s.id], "rank": rank[s.id], "mode": mode}})
            for i in unit
            if (s := got.get(i)) is not None
        ]

    ordered = [i for i in input_ids(job.source) if i in rank]
    job.run(out, chunks(ordered, job.build.unit_size), work)
    extra = {"selection": {"k": len(keep), "pool": len(scores), **{k: dict(v) for k, v in defects.items()}}}
    return job.finish(out, f"selection-{mode}", prov, extra)
