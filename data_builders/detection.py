"""Detection data (COCO instances, with Visual Genome's attributes and relations, and COCO captions)
as samples for later builders: the MMGIC builder reads their objects, relations and captions.

    python launch/convert.py detection --instances F --images DIR --image-size 224 --out DIR

Split from `adapters.py` (the other formats); `visual_genome.py` reads Visual Genome's own files into
the same records.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from mmkd.data_builders.adapter_inputs import (
    caption_annotations,
    checked,
    jsonl_records,
    load_image,
    load_json,
    missing_fields,
    nonempty,
    sample_key,
)
from mmkd.data_builders.rejects import RejectLog
from mmkd.schema import Sample, Turn

# COCO boxes overrun the image edge by float rounding (up to ~1 px); those are clipped, not rejected.
_BOX_SLACK = 1.0


def detection(
    instances_json: str | Path,
    images_dir: str | Path,
    rejects: RejectLog,
    image_size: int | None = None,
    source: str = "detection",
    captions_json: str | Path | None = None,
    min_side: int = 0,
    max_aspect: float | None = None,
    narratives_jsonl: str | Path | None = None,
) -> Iterator[Sample]:
    """One `other` sample per image: grounding turns plus the full object list for later builders.

    A category present exactly once in an image is grounded: "Give the box of the <category>." ->
    "[x0, y0, x1, y1]" in integer pixels. The metadata holds every kept object (category, xyxy box,
    attributes: VG-style labels, or a dict whose values are) and the relations between them
    (Visual-Genome style, by annotation id); with `captions_json` (COCO captions format) also the
    image's captions, and with `narratives_jsonl` (Localized Narratives, as Open Images ships them)
    its narratives, which MMGIC documents carry as a second caption (seed 003 Table 23). Images whose
    short side is under `min_side` pixels or whose aspect ratio is beyond `max_aspect` (either way)
    are rejected, as seed 003 F.2 cleans them (224 px, 3.0).
    [IMPORTANT] The loader resizes images to a square, so boxes in original pixels would not match what
    the model sees: pass `image_size` to resize here and give the boxes in that square's pixels.
    """
    path = Path(instances_json)
    data = load_json(path)
    images = data.get("images", [])
    image_ids = {im.get("id") for im in images}
    captions = _captions_by_image(Path(captions_json), image_ids, rejects) if captions_json else {}
    narratives = _narratives_by_image(Path(narratives_jsonl), images, rejects) if narratives_jsonl else {}
    yield from detection_records(
        data, path, Path(images_dir), rejects, captions, image_size, source, min_side, max_aspect, narratives
    )


def detection_records(
    data: dict[str, Any],
    path: Path,
    images_dir: Path,
    rejects: RejectLog,
    captions: dict[Any, list[str]],
    image_size: int | None,
    source: str,
    min_side: int,
    max_aspect: float | None,
    narratives: dict[Any, list[str]] | None = None,
) -> Iterator[Sample]:
    """`detection`'s samples from COCO-instances data already in memory (`path` names it in rejects;
    data_builders/visual_genome.py reads Visual Genome's own files into this form)."""
    categories = {c.get("id"): c.get("name") for c in data.get("categories", [])}
    image_ids = {im.get("id") for im in data.get("images", [])}
    anns: dict[Any, list[tuple[int, dict]]] = defaultdict(list)
    for i, ann in enumerate(data.get("annotations", [])):
        where = f"{path}: annotations[{i}] (id={ann.get('id')}, image_id={ann.get('image_id')})"
        if missing := missing_fields(ann, ("id", "image_id", "category_id", "bbox")):
            rejects.add(where, "missing_field", missing)
        elif ann["category_id"] not in categories:
            rejects.add(where, "unknown_category", f"category_id={ann['category_id']}")
        elif ann["image_id"] not in image_ids:
            rejects.add(where, "unknown_image", f"no images[] entry with id={ann['image_id']}")
        elif (bad := _bad_attributes(ann.get("attributes", []))) is not None:
            rejects.add(where, "bad_attributes", bad)
        else:
            anns[ann["image_id"]].append((i, ann))
    relations: dict[Any, list[tuple[int, dict]]] = defaultdict(list)
    for k, rel in enumerate(data.get("relations", [])):
        relations[rel.get("image_id")].append((k, rel))
    for j, im in enumerate(data.get("images", [])):
        where = f"{path}: images[{j}] (id={im.get('id')}, file_name={im.get('file_name')})"
        if missing := missing_fields(im, ("id", "file_name")):
            rejects.add(where, "missing_field", missing)
            continue
        image = load_image(images_dir / im["file_name"], where, rejects)
        if image is None:
            continue
        width, height = image.size
        if min(width, height) < min_side:
            rejects.add(where, "image_too_small", f"{width}x{height}: short side under {min_side} px")
            continue
        if max_aspect is not None and max(width / height, height / width) > max_aspect:
            rejects.add(where, "bad_aspect_ratio", f"{width}x{height}: aspect ratio beyond {max_aspect}")
            continue
        scale = (1.0, 1.0) if image_size is None else (image_size / width, image_size / height)
        if image_size is not None:
            image = image.resize((image_size, image_size), Image.Resampling.BICUBIC)
        objects = []
        for i, ann in anns.get(im["id"], []):
            try:
                x0, y0, x1, y1 = _xyxy(ann["bbox"], width, height)
            except ValueError as e:
                rejects.add(
                    f"{path}: annotations[{i}] (id={ann['id']}, image_id={im['id']})", "bad_bbox", str(e)
                )
                continue
            box = [round(x0 * scale[0]), round(y0 * scale[1]), round(x1 * scale[0]), round(y1 * scale[1])]
            objects.append(
                {
                    "id": ann["id"],
                    "category": categories[ann["category_id"]],
                    "bbox": box,
                    "attributes": ann.get("attributes", []),
                    "iscrowd": bool(ann.get("iscrowd", 0)),
                }
            )
        if not objects:
            rejects.add(where, "no_objects", "no usable object annotation")
            continue
        # Uniqueness counts every annotation of the image, rejected boxes and crowds included: two dogs
        # stay ambiguous even when one of their boxes is bad.
        seen = Counter(categories[a["category_id"]] for _, a in anns.get(im["id"], []))
        turns = [
            Turn(f"Give the box of the {o['category']}.", "[" + ", ".join(str(v) for v in o["bbox"]) + "]")
            for o in objects
            if seen[o["category"]] == 1 and not o["iscrowd"]
        ]
        if not turns:
            rejects.add(where, "no_groundable_object", f"{len(objects)} objects, no category occurs once")
            continue
        sample = Sample(
            id=sample_key(source, im["id"]),
            kind="other",
            source=source,
            images=[image],
            turns=turns,
            provenance={"record": where},
            metadata={
                "image_id": im["id"],
                "file_name": im["file_name"],
                "box_frame": list(image.size),  # the (width, height) the boxes are pixels of
                "objects": objects,
                "relations": _image_relations(path, im["id"], relations, anns, objects, rejects),
                "captions": captions.get(im["id"], []),
                "narratives": (narratives or {}).get(im["id"], []),
            },
        )
        if checked(sample, rejects):
            yield sample


def _bad_attributes(value: Any) -> str | None:
    """Why an annotation's attributes are unusable, or None: labels are a list of strings or a dict
    whose values are strings."""
    labels = list(value.values()) if isinstance(value, dict) else value
    if isinstance(labels, list) and all(isinstance(a, str) for a in labels):
        return None
    return f"attributes {value!r} are not a list of strings (or a dict of them)"


def _captions_by_image(path: Path, image_ids: set, rejects: RejectLog) -> dict[Any, list[str]]:
    """Captions of a COCO captions file by image id; unusable ones are rejected."""
    out: dict[Any, list[str]] = defaultdict(list)
    for _, ann in caption_annotations(path, load_json(path), image_ids, rejects, ("image_id", "caption")):
        out[ann["image_id"]].append(" ".join(ann["caption"].split()))
    return out


def _narratives_by_image(path: Path, images: list[dict], rejects: RejectLog) -> dict[Any, list[str]]:
    """Localized Narratives (JSONL records with `image_id` and `caption`; traces and timings are not
    read) by the id of the images[] entry they describe. A narrative's image_id matches an entry's id
    or its file name without the extension: Open Images ids are file stems, where a COCO-format
    conversion of Open Images may number its images."""
    index = {str(im["id"]): im["id"] for im in images if im.get("id") is not None}
    index |= {
        Path(im["file_name"]).stem: im["id"]
        for im in images
        if im.get("id") is not None and im.get("file_name")
    }
    out: dict[Any, list[str]] = defaultdict(list)
    for where, _, record in jsonl_records(path, rejects):
        if missing := missing_fields(record, ("image_id", "caption")):
            rejects.add(where, "missing_field", missing)
        elif not nonempty(record["caption"]):
            rejects.add(where, "empty_text", f"caption {record['caption']!r}")
        elif (image_id := index.get(str(record["image_id"]))) is None:
            rejects.add(
                where, "unknown_image", f"no images[] entry with id or file stem {record['image_id']!r}"
            )
        else:
            out[image_id].append(" ".join(record["caption"].split()))
    return out


def _xyxy(bbox: Any, width: int, height: int) -> tuple[float, float, float, float]:
    """COCO [x, y, w, h] -> (x0, y0, x1, y1) inside the image; ValueError says what is wrong."""
    if not (
        isinstance(bbox, list | tuple)
        and len(bbox) == 4
        and all(isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in bbox)
    ):
        raise ValueError(f"bbox {bbox!r} is not four numbers [x, y, w, h]")
    x, y, w, h = bbox
    if w <= 0 or h <= 0:
        raise ValueError(f"bbox {bbox!r} has a non-positive width or height")
    if x < -_BOX_SLACK or y < -_BOX_SLACK or x + w > width + _BOX_SLACK or y + h > height + _BOX_SLACK:
        raise ValueError(f"bbox {bbox!r} lies outside the {width}x{height} image")
    return max(x, 0.0), max(y, 0.0), min(x + w, width), min(y + h, height)


def _image_relations(
    path: Path,
    image_id: Any,
    relations: dict[Any, list[tuple[int, dict]]],
    anns: dict[Any, list[tuple[int, dict]]],
    objects: list[dict],
    rejects: RejectLog,
) -> list[dict]:
    """The image's relations between kept objects; ones naming no annotation of the image are rejected."""
    known = {a["id"] for _, a in anns.get(image_id, [])}
    kept = {o["id"] for o in objects}
    out = []
    for k, rel in relations.get(image_id, []):
        where = f"{path}: relations[{k}] (image_id={image_id})"
        if missing := missing_fields(rel, ("subject_id", "predicate", "object_id")):
            rejects.add(where, "missing_field", missing)
        elif rel["subject_id"] not in known or rel["object_id"] not in known:
            rejects.add(
                where, "bad_relation", f"{rel['subject_id']} or {rel['object_id']} is no annotation here"
            )
        elif rel["subject_id"] in kept and rel["object_id"] in kept:  # else an end's box was rejected
            out.append({k: rel[k] for k in ("subject_id", "predicate", "object_id")})
    return out
