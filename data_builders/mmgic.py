"""MMGIC documents from detection data (seed 003 Sec. 2, F.2-F.7).

The input is a detection dataset (`launch/convert.py detection`, or the world's `detection` source):
one sample per image with its objects (label, box, attribute labels), the relations between them
and its captions. Two stages, each resumable and shard-parallel through `engine.run`:

  labels     every object, attribute and relationship label seen often enough (F.2: build.min_*_count;
             rarer ones are dropped with their annotations) gets a description from the annotator with
             the paper's prompts (F.5, Tables 20-22); a label the annotator calls "Invalid." is dropped
             with every annotation that uses it. JSON records, one per label.
  documents  per image: the surviving labels with their descriptions, the object regions (F.3: square
             crops, IoA label merge, size filter, 3 x 3 location) cropped and resized to the image size,
             and the caption; one `mmgic` sample whose images are the image and then its regions.

Each dropped image, object, attribute, relation or region is a reject with its reason. Which parts a
model reads (C, CL, CLD, CLDR) and in which template is decided when the sample is encoded
(`mmkd/mmgic_template.py`), so one build serves the four recipes of Table 1.
"""

from __future__ import annotations

import hashlib
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

from PIL import Image

from mmkd import mmgic_template
from mmkd.annotators import Request
from mmkd.data_builders import engine, ic
from mmkd.data_builders.adapter_inputs import load_json
from mmkd.data_builders.annotated import Job, chunks, input_ids, load_samples
from mmkd.data_builders.prompts import PROMPTS, parse_label_description
from mmkd.data_builders.regions import object_regions, side_limits
from mmkd.data_builders.rejects import RejectLog
from mmkd.errors import DataError
from mmkd.schema import IMAGE_MARKER, Sample

LABEL_PROMPTS = {"object": "label_object", "attribute": "label_attribute", "relation": "label_relation"}
RELATED = 8  # related objects / subject-object pairs named in an attribute or relationship prompt


def attribute_labels(obj: dict[str, Any]) -> list[str]:
    """An object's attribute labels: VG-style strings, or the values of a dict (order kept, no repeats)."""
    value = obj.get("attributes") or []
    labels = list(value.values()) if isinstance(value, dict) else value
    return list(dict.fromkeys(" ".join(a.split()) for a in labels if a.strip()))


def _relations(sample: Sample) -> list[tuple[str, str, str]]:
    """(subject label, predicate, object label) of the image's relations."""
    label = {o["id"]: o["category"] for o in sample.metadata["objects"]}
    return [
        (label[r["subject_id"]], " ".join(r["predicate"].split()), label[r["object_id"]])
        for r in sample.metadata.get("relations", [])
        if r["subject_id"] in label and r["object_id"] in label
    ]


def label_statistics(job: Job) -> dict[str, Any]:
    """Counts of every label over the input, with the related objects and pairs the prompts name."""
    counts: dict[str, Counter] = {t: Counter() for t in LABEL_PROMPTS}
    related: dict[str, dict[str, Counter]] = {
        "attribute": defaultdict(Counter),
        "relation": defaultdict(Counter),
    }
    for i, s in enumerate(job.source.iter(images=False)):
        if job.build.limit and i >= job.build.limit:
            break
        for o in s.metadata.get("objects", []):
            counts["object"][o["category"]] += 1
            for a in attribute_labels(o):
                counts["attribute"][a] += 1
                related["attribute"][a][o["category"]] += 1
        for subj, pred, obj in _relations(s):
            counts["relation"][pred] += 1
            related["relation"][pred][f"[{subj}, {obj}]"] += 1
    return {"counts": counts, "related": related}


def _minimum(job: Job, label_type: str) -> int:
    return getattr(job.build, f"min_{label_type}_count")


def _label_request(label_type: str, label: str, related: list[str]) -> Request:
    fields = {
        "object": {"category_label": label},
        "attribute": {
            "attribute_category_label": label,
            "related_object_category_labels": ", ".join(related),
        },
        "relation": {
            "relationship_category_label": label,
            "related_subject_object_pairs": ", ".join(related),
        },
    }[label_type]
    return Request(
        f"{label_type}:{label}", PROMPTS[LABEL_PROMPTS[label_type]], parse_label_description, fields
    )


def given_descriptions(path: str | Path) -> dict[str, dict[str, str]]:
    """`build.label_descriptions`: label type -> label -> description; a file of any other shape is an
    error naming it and the entry at fault."""
    data = load_json(Path(path))
    out: dict[str, dict[str, str]] = {t: {} for t in LABEL_PROMPTS}
    for label_type, labels in data.items():
        if label_type not in LABEL_PROMPTS:
            raise DataError(f"{path}: {label_type!r} is not a label type; use {sorted(LABEL_PROMPTS)}")
        if not isinstance(labels, dict):
            raise DataError(
                f"{path}: {label_type!r} must map labels to descriptions, not a {type(labels).__name__}"
            )
        for label, description in labels.items():
            if not isinstance(description, str) or not description.strip():
                raise DataError(f"{path}: {label_type} {label!r} has no description (a non-empty string)")
            out[label_type][" ".join(label.split())] = " ".join(description.split())
    return out


def descriptions_id(path: str) -> dict[str, str]:
    """What a build's key and provenance record of `build.label_descriptions`: its path and content hash."""
    if not path:
        return {}
    if not Path(path).is_file():
        raise DataError(f"build.label_descriptions={path}: no such file")
    return {"path": str(path), "sha256": hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]}


def build_labels(job: Job, out: Path) -> dict | None:
    """Descriptions of every frequent label (F.5): given ones as they are, the others from the
    annotator; rare and invalid labels are listed as rejects."""
    given_file = job.build.label_descriptions
    given = given_descriptions(given_file) if given_file else {t: {} for t in LABEL_PROMPTS}
    prov = job.provenance(
        "mmgic_labels",
        list(LABEL_PROMPTS.values()),
        min_counts=_min_counts(job),
        label_descriptions=descriptions_id(given_file),
    )
    stats = label_statistics(job)
    items = [
        [label_type, label, count]
        for label_type, counter in stats["counts"].items()
        for label, count in sorted(counter.items())
    ]

    def work(unit: list[list], rejects: RejectLog) -> list[dict]:
        requests, rows = [], []
        for label_type, label, count in unit:
            if count < (least := _minimum(job, label_type)):
                why = f"seen {count} times, fewer than build.min_{label_type}_count={least}"
                rejects.add(f"{label_type} label {label!r}", "rare_label", why)
                continue
            if (description := given[label_type].get(label)) is not None:
                rows.append({"type": label_type, "label": label, "description": description, "invalid": None})
                continue
            related = [
                r for r, _ in stats["related"].get(label_type, {}).get(label, Counter()).most_common(RELATED)
            ]
            requests.append(_label_request(label_type, label, related))
        for r in job.annotator.annotate(requests, "label descriptions"):
            label_type, label = r.key.split(":", 1)
            if r.error:
                rejects.add(f"{label_type} label {label!r}", r.error, r.detail)
                continue
            description, why = r.value
            if description is None:
                rejects.add(f"{label_type} label {label!r}", "invalid_label", why)
            rows.append({"type": label_type, "label": label, "description": description, "invalid": why})
        return rows

    job.run(out, chunks(items, job.build.unit_size), work, records=True)
    return engine.finish_records(out, "mmgic_labels", prov)


def _min_counts(job: Job) -> dict[str, int]:
    return {t: _minimum(job, t) for t in LABEL_PROMPTS}


def read_labels(out: Path) -> dict[str, dict[str, str]]:
    """label type -> label -> description, for the valid labels of a finished labels build."""
    valid: dict[str, dict[str, str]] = {t: {} for t in LABEL_PROMPTS}
    for row in engine.read_records(out):
        if row["description"] is not None:
            valid[row["type"]][row["label"]] = row["description"]
    return valid


def document(
    sample: Sample,
    caption: str,
    labels: dict[str, dict[str, str]],
    build: Any,
    where: str,
    rejects: RejectLog,
) -> tuple[dict[str, Any], list[Image.Image]] | None:
    """The MMGIC document of one detection sample and its region crops; None (rejected) without any
    valid object."""
    objects = []
    for o in sample.metadata["objects"]:
        if o["category"] in labels["object"]:
            objects.append(o)
        else:
            rejects.add(f"{where} object {o['id']}", "label_removed", f"{o['category']!r} is rare or invalid")
    if not objects:
        rejects.add(where, "no_objects", "no object with a valid label is left")
        return None
    names = list(dict.fromkeys(o["category"] for o in objects))
    attributes: dict[str, list[str]] = defaultdict(list)
    for o in objects:
        for a in attribute_labels(o):
            if a not in labels["attribute"]:
                rejects.add(f"{where} object {o['id']}", "attribute_removed", f"{a!r} is rare or invalid")
            elif o["category"] not in attributes[a]:
                attributes[a].append(o["category"])
    kept = {o["category"] for o in objects}
    relations: dict[str, list[list[str]]] = defaultdict(list)
    for subj, pred, obj in _relations(sample):
        if pred not in labels["relation"] or subj not in kept or obj not in kept:
            rejects.add(
                f"{where} relation {subj}-{pred}-{obj}", "relation_removed", "a label is rare or invalid"
            )
        elif [subj, obj] not in relations[pred]:
            relations[pred].append([subj, obj])
    image = sample.images[0]
    width, height = sample.metadata.get("box_frame", image.size)
    limits = side_limits(width, height, build.region_min_side, build.region_max_side)
    regions, dropped = object_regions(
        [(o["category"], tuple(o["bbox"])) for o in objects], width, height, limits, build.region_ioa
    )
    for i, reason in dropped:
        rejects.add(f"{where} object {objects[i]['id']}", "region_dropped", reason)
    crops = [image.crop(r.box).resize(image.size, Image.Resampling.BICUBIC) for r in regions]
    doc = {
        "caption": caption,
        "objects": [{"label": n, "description": labels["object"][n]} for n in names],
        "attributes": [
            {"label": a, "objects": objs, "description": labels["attribute"][a]}
            for a, objs in attributes.items()
        ],
        "relations": [
            {"label": p, "pairs": pairs, "description": labels["relation"][p]}
            for p, pairs in relations.items()
        ],
        "regions": [{"location": r.location, "labels": list(dict.fromkeys(r.labels))} for r in regions],
    }
    if narratives := sample.metadata.get("narratives"):
        doc["narrative"] = narratives[0]  # Table 23's "Localized narrative caption" line
    return doc, [image, *crops]


def build_documents(job: Job, labels_dir: Path, out: Path, name: str = "mmgic") -> dict | None:
    """One `mmgic` sample per usable detection image (F.6-F.7)."""
    labels = read_labels(labels_dir)
    labels_id = {
        "path": str(labels_dir),
        "manifest_sha256": hashlib.sha256((labels_dir / "manifest.json").read_bytes()).hexdigest()[:16],
    }
    b = job.build
    settings = {k: getattr(b, k) for k in ("region_min_side", "region_max_side", "region_ioa")}
    prompts = [*LABEL_PROMPTS.values(), "caption_candidates"]
    prov = job.provenance("mmgic", prompts, labels=labels_id, regions=settings, captions=ic.settings(b))

    def work(ids: list[str], rejects: RejectLog) -> list[Sample]:
        got = load_samples(job.source, ids, rejects)
        uncaptioned = [got[i] for i in ids if i in got and not got[i].metadata.get("captions")]
        synthesized = ic.synthesize(job, uncaptioned, rejects) if uncaptioned else {}  # F.4
        samples = []
        for i in ids:
            if i not in got or not (got[i].metadata.get("captions") or i in synthesized):
                continue
            src = got[i]
            caption = (src.metadata.get("captions") or [synthesized.get(i, ("",))[0]])[0]
            built = document(src, caption, labels, b, f"{job.source.root}: {i}", rejects)
            if built is None:
                continue
            doc, images = built
            meta = {"mmgic": doc, **{k: v for k, v in src.metadata.items() if k in ("image_id", "file_name")}}
            meta["caption_synthesized"] = i in synthesized
            samples.append(
                Sample(
                    id=f"{name}-{src.id}",
                    kind="mmgic",
                    source=name,
                    images=images,
                    text=mmgic_template.full_text(doc, IMAGE_MARKER),
                    provenance={**prov, "from": [src.id]},
                    metadata=meta,
                ).validate()
            )
        return samples

    job.run(out, chunks(input_ids(job.source, b.limit), b.unit_size), work)
    return job.finish(out, name, prov)
