"""Caption formats of seed 002 (Sec. 3): SSC, DSC, DSC+ and AFC re-captions of AltText images, and
the `AltText + X (*)` concatenations of Table 5.

Each format is one versioned prompt (prompts/caption_<format>.txt) sent with the image; AFC's also
carries the image's AltText (the input sample's text) for the captioner to fuse in. A concatenation
joins, per image, the AltText and the format's caption in that order, into one sample: this is not
per-sample mixing, where a recipe's weights draw one caption or the other for each training sample.
"""

from __future__ import annotations

from pathlib import Path

from mmkd.annotators import Request
from mmkd.data_builders.annotated import (
    Job,
    answered,
    chunks,
    input_ids,
    load_samples,
    scenes,
    single_image_samples,
)
from mmkd.data_builders.prompts import PROMPTS, parse_caption
from mmkd.data_builders.rejects import RejectLog
from mmkd.schema import Sample
from mmkd.shards import Dataset
from mmkd.world.caption_formats import FORMATS

TAGS = {"ssc": "SSC", "dsc": "DSC", "dsc_plus": "DSC+", "afc": "AFC"}
# Source name -> the format whose captions follow the AltText (Table 5's `AltText + X (*)`).
CONCATS = {"alttext_ssc": "ssc", "alttext_dsc": "dsc", "alttext_dsc_plus": "dsc_plus"}
assert set(TAGS) == set(FORMATS)


def prompt_name(fmt: str) -> str:
    return f"caption_{fmt}"


def build_format(job: Job, out: Path, fmt: str) -> dict | None:
    """One `fmt` caption per single-image sample of the input; the input's text is the AltText."""
    prompt = prompt_name(fmt)
    prov = job.provenance(prompt, [prompt], format=TAGS[fmt])

    def work(ids: list[str], rejects: RejectLog) -> list[Sample]:
        got = single_image_samples(job.source, ids, rejects)
        requests = [
            Request(s.id, PROMPTS[prompt], parse_caption, {"alttext": s.text}, s.images, scenes([s]))
            for s in got.values()
        ]
        out_samples = []
        for r in answered(job, requests, f"{fmt} captions", rejects):
            src = got[r.key]
            out_samples.append(
                Sample(
                    id=f"{fmt}-{src.id}",
                    kind="caption",
                    source=fmt,
                    caption_tag=TAGS[fmt],
                    images=src.images,
                    text=r.value,
                    provenance={**prov, "from": [src.id]},
                    metadata={**src.metadata, "alttext": src.text},
                )
            )
        return out_samples

    job.run(out, chunks(input_ids(job.source, job.build.limit), job.build.unit_size), work)
    return job.finish(out, fmt, prov)


def build_concat(job: Job, alttext: Dataset, out: Path, name: str) -> dict | None:
    """`AltText + X (*)`: each caption of the format dataset (`job.source`) after its image's AltText
    (read from the `alttext` dataset the format was captioned from)."""
    fmt = CONCATS[name]
    prov = {
        "builder": "concat",
        "order": ["alttext", fmt],
        "alttext": {"path": str(alttext.root), "content_hash": alttext.manifest["content_hash"]},
        "format": {"path": str(job.source.root), "content_hash": job.source.manifest["content_hash"]},
    }

    def work(ids: list[str], rejects: RejectLog) -> list[Sample]:
        captions = load_samples(job.source, ids, rejects)
        origin = {i: s.provenance["from"][0] for i, s in captions.items()}
        alts = load_samples(alttext, sorted(set(origin.values())), rejects, images=False)
        out_samples = []
        for i in ids:
            s = captions.get(i)
            if s is None:
                continue
            alt = alts.get(origin[i])
            if alt is None:
                rejects.add(f"{job.source.root}: {i}", "no_alttext", f"{origin[i]} is not in {alttext.root}")
                continue
            out_samples.append(
                Sample(
                    id=f"{name}-{alt.id}",
                    kind="caption",
                    source=name,
                    caption_tag=f"AltText+{TAGS[fmt]}",
                    images=s.images,
                    text=f"{alt.text.rstrip()} {s.text}",
                    provenance={**prov, "from": [alt.id, s.id]},
                    metadata=s.metadata,
                )
            )
        return out_samples

    job.run(out, chunks(input_ids(job.source, job.build.limit), job.build.unit_size), work)
    return job.finish(out, name, prov)
