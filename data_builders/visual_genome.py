"""Visual Genome's own files as detection data (seed 003 F.2), for the MMGIC builder.

    python launch/convert.py visual_genome --image-data image_data.json --objects objects.json \\
        --attributes attributes.json --relationships relationships.json --images VG_100K/ \\
        --coco-captions captions_train2017.json --image-size 224 --min-side 224 --max-aspect 3.0 --out DIR

Objects become COCO annotations whose category is the object's (first) name, lower-cased; an object
mapped to more than one synset is dropped (`multiple_synsets`, F.2 step 2: mostly noise); labels are
then built from (name, synset) pairs as F.2 step 3 says (`label_names`: rare pairs dropped as
`rare_label_synset`, a name with several synsets split into one label per synset); attribute
labels join their object; relationships keep their predicate (lower-cased) and their ends' object ids.
Visual Genome has no image captions: an image with a COCO id takes that image's COCO captions, the
others get one synthesised by the MMGIC builder (F.4). Everything else (illegal boxes, image size and
aspect ratio, images left without objects) is the detection adapter's, with the same reject reasons.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmkd.data_builders.adapter_inputs import load_json, missing_fields
from mmkd.data_builders.detection import detection_records
from mmkd.data_builders.rejects import RejectLog
from mmkd.errors import DataError
from mmkd.schema import Sample


def _per_image(path: Path, key: str) -> dict[Any, list[dict]]:
    """`[{image_id, <key>: [...]}, ...]` (Visual Genome's layout) as image id -> entries."""
    return {entry.get("image_id"): entry.get(key) or [] for entry in load_json(path, list)}


def label_names(
    pairs: list[tuple[str, str]], min_count: int = 2, synset_names: dict[str, str] | None = None
) -> dict[tuple[str, str], tuple[str | None, int]]:
    """F.2 step 3: (name, synset) of each object -> (its final label, or None if too rare; its count).

    An object without a synset ("") joins the most frequent synset of its name (the first by name on a
    tie), or stays without one if its name never has one. Pairs seen fewer than `min_count` times are
    dropped. A name left with several synsets is told apart by a word for each: `synset_names`
    {"batter.n.01": "baseball player"} where given (the paper chose them from WordNet by hand), else the
    synset id: "batter (baseball player)", "batter (batter.n.02)".
    """
    counts = Counter(p for p in pairs if p[1])
    best: dict[str, str] = {}
    for name, synset in sorted(counts, key=lambda p: (-counts[p], p)):
        best.setdefault(name, synset)
    mapped = {p: (p[0], best.get(p[0], "")) if not p[1] else p for p in set(pairs)}
    totals = Counter(mapped[p] for p in pairs)
    senses: dict[str, set[str]] = defaultdict(set)
    for (name, synset), n in totals.items():
        if n >= min_count:
            senses[name].add(synset)
    out = {}
    for pair, (name, synset) in mapped.items():
        n = totals[(name, synset)]
        if n < min_count:
            out[pair] = (None, n)
        elif len(senses[name]) > 1:
            out[pair] = (f"{name} ({(synset_names or {}).get(synset, synset)})", n)
        else:
            out[pair] = (name, n)
    return out


def read_synset_names(path: Path) -> dict[str, str]:
    """A JSON object of synset id -> the words that name that sense; anything else is an error naming
    the file."""
    names = load_json(Path(path))
    if not all(isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in names.items()):
        raise DataError(
            f'{path}: expected {{synset: words}} strings, e.g. {{"batter.n.01": "baseball player"}}'
        )
    return names


def to_coco(
    image_data: Path,
    objects: Path,
    rejects: RejectLog,
    attributes: Path | None = None,
    relationships: Path | None = None,
    min_synset_count: int = 2,
    synset_names: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Visual Genome's files as one COCO-instances dict (+ `attributes` and `relations`)."""
    images = [
        {"id": im["image_id"], "file_name": f"{im['image_id']}.jpg", "coco_id": im.get("coco_id")}
        for im in load_json(image_data, list)
        if "image_id" in im
    ]
    labels: dict[int, list[str]] = defaultdict(list)
    if attributes is not None:
        for entries in _per_image(attributes, "attributes").values():
            for a in entries:
                labels[a.get("object_id")] += [
                    x.strip().lower() for x in a.get("attributes") or [] if x.strip()
                ]
    kept = []  # (where, image id, object, name, synset) of the objects that pass step 2
    for image_id, entries in _per_image(objects, "objects").items():
        for k, o in enumerate(entries):
            where = f"{objects}: image {image_id} objects[{k}] (object_id={o.get('object_id')})"
            if missing := missing_fields(o, ("object_id", "x", "y", "w", "h", "names")):
                rejects.add(where, "missing_field", missing)
            elif len(o.get("synsets") or []) > 1:
                rejects.add(where, "multiple_synsets", f"mapped to {o['synsets']}")
            elif not o["names"] or not str(o["names"][0]).strip():
                rejects.add(where, "missing_field", "names is empty")
            else:
                name = " ".join(str(o["names"][0]).lower().split())
                kept.append((where, image_id, o, name, (o.get("synsets") or [""])[0]))
    final = label_names([(name, synset) for *_, name, synset in kept], min_synset_count, synset_names)
    names: dict[str, int] = {}
    annotations = []
    for where, image_id, o, name, synset in kept:
        label, count = final[(name, synset)]
        if label is None:
            rejects.add(where, "rare_label_synset", f"({name!r}, {synset!r}) occurs {count} time(s)")
            continue
        annotations.append(
            {
                "id": o["object_id"],
                "image_id": image_id,
                "category_id": names.setdefault(label, len(names) + 1),
                "bbox": [o["x"], o["y"], o["w"], o["h"]],
                "attributes": list(dict.fromkeys(labels.get(o["object_id"], []))),
            }
        )
    relations = []
    if relationships is not None:
        for image_id, entries in _per_image(relationships, "relationships").items():
            for r in entries:
                subject, obj = r.get("subject") or {}, r.get("object") or {}
                if r.get("predicate") and "object_id" in subject and "object_id" in obj:
                    relations.append(
                        {
                            "image_id": image_id,
                            "subject_id": subject["object_id"],
                            "predicate": " ".join(str(r["predicate"]).lower().split()),
                            "object_id": obj["object_id"],
                        }
                    )
    categories = [{"id": i, "name": n} for n, i in names.items()]
    return {"images": images, "annotations": annotations, "categories": categories, "relations": relations}


def visual_genome(
    image_data: str | Path,
    objects: str | Path,
    images_dir: str | Path,
    rejects: RejectLog,
    attributes: str | Path | None = None,
    relationships: str | Path | None = None,
    coco_captions: str | Path | None = None,
    image_size: int | None = None,
    source: str = "visual_genome",
    min_side: int = 0,
    max_aspect: float | None = None,
    min_synset_count: int = 2,
    synset_names: dict[str, str] | None = None,
) -> Iterator[Sample]:
    """Detection samples (as `detection.detection` writes them) from Visual Genome's files."""
    data = to_coco(
        Path(image_data),
        Path(objects),
        rejects,
        Path(attributes) if attributes else None,
        Path(relationships) if relationships else None,
        min_synset_count,
        synset_names,
    )
    captions: dict[Any, list[str]] = {}
    if coco_captions:
        by_coco: dict[Any, list[str]] = defaultdict(list)
        for ann in load_json(Path(coco_captions)).get("annotations", []):
            if isinstance(ann.get("caption"), str) and ann["caption"].strip():
                by_coco[ann.get("image_id")].append(" ".join(ann["caption"].split()))
        captions = {im["id"]: by_coco[im["coco_id"]] for im in data["images"] if im["coco_id"] in by_coco}
    yield from detection_records(
        data, Path(objects), Path(images_dir), rejects, captions, image_size, source, min_side, max_aspect
    )
