"""SCALE's scoring stages (seed 004 Sec. 3.2), as resumable, shard-parallel record builders.

  unimodal   image quality (classical sharpness and noise, data_builders/image_quality.py) and text
             quality (informativeness, complexity, completeness, 1-5) from a text-only annotator
  tasks      the task and sub-task of each sample in Table 6's taxonomy (few-shot prompt, one example
             per task)
  multimodal a general caption and a caption aimed at the predicted task (an MLLM, Sec. 3.2.3), then
             clarity and relevance of the Q/A judged from the captions by an LLM (Sec. 3.2.4); task
             rarity is the pool's own statistic, computed at selection

Each writes one JSON record per sample (`engine.read_records`), keyed by sample id, with the prompt
versions and annotator in its manifest's provenance; the later stages (visual understanding,
multimodal quality, ranking and selection) read them. Only single-image samples with one Q/A turn
(or a caption) are scored; others are rejects with their reason.
"""

from __future__ import annotations

from pathlib import Path

from mmkd.annotators import Request
from mmkd.data_builders import engine
from mmkd.data_builders.annotated import Job, answered, chunks, input_ids, load_samples, scenes
from mmkd.data_builders.image_quality import noise_sigma, sharpness
from mmkd.data_builders.prompts import PROMPTS, parse_caption, parse_ratings, parse_task
from mmkd.data_builders.rejects import RejectLog
from mmkd.schema import Sample
from mmkd.world.tasks import TAXONOMY

TEXT_CRITERIA = ("informativeness", "complexity", "completeness")
TAXONOMY_TEXT = "\n".join(f"- {task}: {', '.join(subs)}" for task, subs in TAXONOMY.items())


def question_answer(sample: Sample) -> tuple[str, str]:
    """The text a SCALE stage reads: the first Q/A turn, or a caption as its answer."""
    if sample.turns:
        return sample.turns[0].question, sample.turns[0].answer
    return "Describe the image.", sample.text


def _scorable(job: Job, ids: list[str], rejects: RejectLog) -> list[Sample]:
    got = load_samples(job.source, ids, rejects)
    out = []
    for i in ids:
        s = got.get(i)
        if s is None:
            continue
        if len(s.images) != 1:
            rejects.add(f"{job.source.root}: {s.id}", "not_single_image", f"{len(s.images)} images")
            continue
        out.append(s)
    return out


def build_unimodal(job: Job, out: Path) -> dict | None:
    """Image quality (measured) and text quality (rated) of every sample."""
    prov = job.provenance("scale_unimodal", ["scale_text_quality"], image_quality="classical")

    def work(ids: list[str], rejects: RejectLog) -> list[dict]:
        samples = {s.id: s for s in _scorable(job, ids, rejects)}
        prompt, parse = PROMPTS["scale_text_quality"], parse_ratings(TEXT_CRITERIA)
        requests = []
        for s in samples.values():
            question, answer = question_answer(s)
            requests.append(Request(s.id, prompt, parse, {"question": question, "answer": answer}))
        rows = []
        for r in answered(job, requests, "text quality", rejects):
            image = samples[r.key].images[0]
            rows.append(
                {"id": r.key, "sharpness": sharpness(image), "noise_sigma": noise_sigma(image), **r.value}
            )
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
