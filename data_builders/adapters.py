"""Source adapters: read real datasets into `Sample`s, and `convert` them into a dataset directory.

    python launch/convert.py coco --annotations captions_train2017.json --images train2017/ --out DIR
    # then train on it:  +data.sources.<name>=DIR

Each adapter is a generator of validated samples in one source format (COCO captions, VQAv2, LLaVA
conversations, img2dataset shards, text JSONL/parquet; COCO-instances detection is in detection.py,
Visual Genome in visual_genome.py). A record it cannot use goes to the `RejectLog` with its file and
record named, and the adapter goes on; a strict log raises `RejectedRecord` at the first one instead.
A file that cannot be read as a whole (not JSON, no such column) is an error, not a reject: there
would be nothing left to convert.
"""

from __future__ import annotations

import json
import re
import tarfile
from collections import defaultdict
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from tqdm import tqdm

from mmkd.data_builders.adapter_inputs import (
    caption_annotations,
    checked,
    decode_image,
    jsonl_records,
    load_image,
    load_json,
    missing_fields,
    nonempty,
    sample_key,
)
from mmkd.data_builders.rejects import RejectLog
from mmkd.errors import DataError
from mmkd.schema import IMAGE_MARKER, Sample, Turn
from mmkd.shards import MANIFEST, ShardWriter

ADAPTER_VERSION = 1
IMAGE_EXTENSIONS = ("jpg", "jpeg", "png", "webp")


def coco_captions(
    annotations_json: str | Path, images_dir: str | Path, rejects: RejectLog, source: str = "coco"
) -> Iterator[Sample]:
    """One `caption` sample per caption annotation (COCO has ~5 per image; each is a training unit)."""
    path, images_dir = Path(annotations_json), Path(images_dir)
    data = load_json(path)
    by_image: dict[Any, list[tuple[int, dict]]] = defaultdict(list)
    image_ids = {im.get("id") for im in data.get("images", [])}
    for i, ann in caption_annotations(path, data, image_ids, rejects, ("id", "image_id", "caption")):
        by_image[ann["image_id"]].append((i, ann))
    for j, im in enumerate(data.get("images", [])):
        where = f"{path}: images[{j}] (id={im.get('id')}, file_name={im.get('file_name')})"
        if missing := missing_fields(im, ("id", "file_name")):
            rejects.add(where, "missing_field", missing)
            continue
        anns = by_image.get(im["id"], [])
        if not anns:
            continue  # an image without captions is not an error (COCO has a few)
        image = load_image(images_dir / im["file_name"], where, rejects)
        if image is None:
            continue
        for i, ann in anns:
            sample = Sample(
                id=sample_key(source, ann["id"]),
                kind="caption",
                source=source,
                images=[image],
                text=" ".join(ann["caption"].split()),
                caption_tag="COCO",
                provenance={"record": f"{path}: annotations[{i}]"},
                metadata={"annotation_id": ann["id"], "image_id": im["id"], "file_name": im["file_name"]},
            )
            if checked(sample, rejects):
                yield sample


def vqav2(
    questions_json: str | Path,
    annotations_json: str | Path,
    images_dir: str | Path,
    rejects: RejectLog,
    file_pattern: str = "COCO_train2014_{image_id:012d}.jpg",
    source: str = "vqav2",
) -> Iterator[Sample]:
    """One `vqa` sample per image, one turn per question (answer: the `multiple_choice_answer`).

    `file_pattern` may use `{image_id}` and `{split}` (the questions file's `data_subtype`, e.g.
    "val2014"), so "COCO_{split}_{image_id:012d}.jpg" reads any COCO 2014 split.
    """
    qpath, apath, images_dir = Path(questions_json), Path(annotations_json), Path(images_dir)
    questions, annotations = load_json(qpath), load_json(apath)
    split = questions.get("data_subtype", "")
    answers = {a.get("question_id"): a for a in annotations.get("annotations", [])}
    by_image: dict[Any, list[tuple[int, dict, dict]]] = defaultdict(list)
    for i, q in enumerate(questions.get("questions", [])):
        where = f"{qpath}: questions[{i}] (question_id={q.get('question_id')}, image_id={q.get('image_id')})"
        if missing := missing_fields(q, ("question_id", "image_id", "question")):
            rejects.add(where, "missing_field", missing)
        elif (a := answers.get(q["question_id"])) is None:
            rejects.add(
                where, "missing_answer", f"no annotation with question_id={q['question_id']} in {apath}"
            )
        elif not nonempty(q["question"]) or not nonempty(a.get("multiple_choice_answer")):
            rejects.add(
                where, "empty_text", f"question {q['question']!r}, answer {a.get('multiple_choice_answer')!r}"
            )
        else:
            by_image[q["image_id"]].append((i, q, a))
    for image_id, qas in by_image.items():
        where = f"{qpath}: questions[{', '.join(str(i) for i, _, _ in qas)}] (image_id={image_id})"
        image = load_image(images_dir / file_pattern.format(image_id=image_id, split=split), where, rejects)
        if image is None:
            continue
        sample = Sample(
            id=sample_key(source, image_id),
            kind="vqa",
            source=source,
            images=[image],
            turns=[Turn(q["question"].strip(), a["multiple_choice_answer"].strip()) for _, q, a in qas],
            provenance={"record": where},
            metadata={
                "image_id": image_id,
                "question_ids": [q["question_id"] for _, q, _ in qas],
                # All ten human answers, for VQA accuracy (min(#matches / 3, 1)) at eval time.
                "answers": [[x.get("answer") for x in a.get("answers", [])] for _, _, a in qas],
                "answer_types": [a.get("answer_type") for _, _, a in qas],
            },
        )
        if checked(sample, rejects):
            yield sample


def llava(
    json_path: str | Path, images_dir: str | Path, rejects: RejectLog, source: str = "llava"
) -> Iterator[Sample]:
    """One `vqa` sample per LLaVA conversation of one image or none (LLaVA-665k's text-only
    conversations); human/gpt messages pair into turns.

    The `<image>` placeholder is dropped from human messages: the schema places the one image itself.
    """
    path, images_dir = Path(json_path), Path(images_dir)
    records = load_json(path, list)  # a LLaVA file is a list of records
    for i, rec in enumerate(records):
        if not isinstance(rec, dict):
            rejects.add(f"{path}: [{i}]", "malformed_json", f"a {type(rec).__name__}, not a JSON object")
            continue
        where = f"{path}: [{i}] (id={rec.get('id')})"
        if missing := missing_fields(rec, ("id", "conversations")):
            rejects.add(where, "missing_field", missing)
            continue
        images = rec.get("image") or []
        images = [images] if isinstance(images, str) else images
        if len(images) > 1:
            rejects.add(where, "multi_image_unsupported", f"{len(images)} images")
            continue
        turns = _llava_turns(rec["conversations"])
        if isinstance(turns, str):
            rejects.add(where, "malformed_conversation", turns)
            continue
        if not all(t.question and t.answer for t in turns):
            rejects.add(where, "empty_text", "a message is empty (after removing <image>)")
            continue
        image = load_image(images_dir / images[0], where, rejects) if images else None
        if images and image is None:
            continue
        sample = Sample(
            id=sample_key(source, rec["id"]),
            kind="vqa",
            source=source,
            images=[image] if image else [],
            turns=turns,
            provenance={"record": where},
            metadata={"llava_id": rec["id"], "image": images[0] if images else None},
        )
        if checked(sample, rejects):
            yield sample


def _llava_turns(conversations: Any) -> list[Turn] | str:
    """Turns of a human/gpt alternation, or why the conversation is not one."""
    if not isinstance(conversations, list) or not conversations or len(conversations) % 2:
        return "needs a non-empty, even-length list of messages"
    turns = []
    for k in range(0, len(conversations), 2):
        human, gpt = conversations[k], conversations[k + 1]
        if not (isinstance(human, dict) and isinstance(gpt, dict)):
            return f"messages[{k}:{k + 2}] are not objects"
        if (human.get("from"), gpt.get("from")) != ("human", "gpt"):
            who = f"{human.get('from')!r}, {gpt.get('from')!r}"
            return f"messages[{k}:{k + 2}] are from {who}; want 'human', 'gpt'"
        if not (isinstance(human.get("value"), str) and isinstance(gpt.get("value"), str)):
            return f"messages[{k}:{k + 2}] have a non-string value"
        question = re.sub(rf"\s*{re.escape(IMAGE_MARKER)}\s*", " ", human["value"]).strip()
        turns.append(Turn(question, gpt["value"].strip()))
    return turns


def img2dataset(path: str | Path, rejects: RejectLog, source: str = "img2dataset") -> Iterator[Sample]:
    """One `caption` sample (tag "AltText") per key of img2dataset's webdataset shards.

    `path` is one `.tar` or a directory of them. The caption is the `.txt` member, else the `.json`'s
    "caption"; the metadata keeps the `.json` (url, key, sizes...) except caption and exif.
    """
    for tar_path in tar_paths(path):
        try:
            with tarfile.open(tar_path, "r") as tar:
                for key, members in _tar_groups(tar):
                    sample = _img2dataset_sample(tar_path, key, members, rejects, source)
                    if sample is not None and checked(sample, rejects):
                        yield sample
        except tarfile.TarError as e:  # a truncated download: keep what came before, go on with the next
            rejects.add(str(tar_path), "tar_read", str(e))


def tar_paths(path: str | Path) -> list[Path]:
    """The shards of an img2dataset output: `path` itself if it is a file, else its `*.tar` in order."""
    path = Path(path)
    if path.is_file():
        return [path]
    tars = sorted(path.glob("*.tar"))
    if not tars:
        raise DataError(f"{path}: no *.tar shards (is it an img2dataset output directory?)")
    return tars


def _tar_groups(tar: tarfile.TarFile) -> Iterator[tuple[str, dict[str, bytes]]]:
    """(key, {extension: bytes}) for each run of members sharing a key (the webdataset convention)."""
    key, members = None, {}
    for member in tar:
        if not member.isfile():
            continue
        stem, _, ext = Path(member.name).name.partition(".")
        if stem != key:
            if key is not None:
                yield key, members
            key, members = stem, {}
        members[ext.lower()] = tar.extractfile(member).read()  # type: ignore[union-attr]
    if key is not None:
        yield key, members


def _img2dataset_sample(
    tar_path: Path, key: str, members: dict[str, bytes], rejects: RejectLog, source: str
) -> Sample | None:
    where = f"{tar_path}: {key}"
    meta: dict[str, Any] = {}
    if "json" in members:
        try:
            meta = json.loads(members["json"])
        except ValueError as e:
            rejects.add(where, "malformed_json", f"{key}.json: {e}")
            return None
        if not isinstance(meta, dict):
            rejects.add(where, "malformed_json", f"{key}.json is a {type(meta).__name__}, not an object")
            return None
    if meta.get("status", "success") != "success":
        rejects.add(where, "download_failed", f"status {meta['status']!r}: {meta.get('error_message')}")
        return None
    caption = members["txt"].decode("utf-8", errors="replace") if "txt" in members else meta.get("caption")
    if caption is None:
        rejects.add(where, "missing_field", f"no {key}.txt and no caption in {key}.json")
        return None
    if not nonempty(caption):
        rejects.add(where, "empty_text", f"caption {caption!r}")
        return None
    ext = next((e for e in IMAGE_EXTENSIONS if e in members), None)
    if ext is None:
        rejects.add(where, "image_missing", f"no {key}.{{{','.join(IMAGE_EXTENSIONS)}}} member")
        return None
    image = decode_image(members[ext], where, rejects, f"{key}.{ext}")
    if image is None:
        return None
    return Sample(
        id=sample_key(source, key),
        kind="caption",
        source=source,
        images=[image],
        text=" ".join(caption.split()),
        caption_tag="AltText",
        provenance={"record": where},
        metadata={"key": key, **{k: v for k, v in meta.items() if k not in ("caption", "exif")}},
    )


def text_records(
    path: str | Path, rejects: RejectLog, field: str = "text", source: str = "text"
) -> Iterator[Sample]:
    """One `text` sample per JSONL line or parquet row (by extension), taking the text from `field`."""
    path = Path(path)
    rows = _parquet_rows(path, field) if path.suffix == ".parquet" else _jsonl_rows(path, field, rejects)
    for where, n, value in rows:
        if value is None:
            rejects.add(where, "missing_field", f"no {field!r}")
        elif not isinstance(value, str):
            rejects.add(where, "not_text", f"{field!r} is a {type(value).__name__}")
        elif not value.strip():
            rejects.add(where, "empty_text", f"{field!r} is blank")
        else:
            sample = Sample(
                id=sample_key(source, n),
                kind="text",
                source=source,
                text=value.strip(),
                provenance={"record": where},
            )
            if checked(sample, rejects):
                yield sample


def _jsonl_rows(path: Path, field: str, rejects: RejectLog) -> Iterator[tuple[str, int, Any]]:
    for where, lineno, record in jsonl_records(path, rejects):
        yield where, lineno, record.get(field)


def _parquet_rows(path: Path, field: str) -> Iterator[tuple[str, int, Any]]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise ImportError(f"reading {path} needs pyarrow: pip install pyarrow") from e
    parquet = pq.ParquetFile(path)
    if field not in parquet.schema_arrow.names:
        raise DataError(f"{path}: no column {field!r}; columns are {parquet.schema_arrow.names}")
    row = 0
    for batch in parquet.iter_batches(columns=[field], batch_size=4096):
        for value in batch.column(0).to_pylist():
            yield f"{path}: row {row}", row, value
            row += 1


def convert(
    samples: Iterable[Sample],
    out_dir: str | Path,
    name: str,
    provenance: dict[str, Any],
    samples_per_shard: int = 2000,
    image_size: int | None = None,
    *,
    rejects: RejectLog,
) -> dict[str, Any]:
    """Write `samples` as a dataset in `out_dir`, with `rejects.jsonl` and reject counts in the manifest.

    `rejects` must be the log the adapter writes to, so its rejects land in this dataset's files.
    Samples that break the schema or repeat an id are rejected here. Returns the manifest.
    """
    out_dir = Path(out_dir)
    # A rerun into the same directory must not leave the old manifest naming shards it overwrites.
    (out_dir / MANIFEST).unlink(missing_ok=True)
    seen: set[str] = set()
    with ShardWriter(out_dir, name, provenance, samples_per_shard, image_size) as writer:
        for sample in tqdm(samples, desc=f"convert {name}", unit="sample", mininterval=1.0, disable=None):
            where = sample.provenance.get("record", f"sample {sample.id!r}")
            if not checked(sample, rejects):
                continue
            if sample.id in seen:
                rejects.add(where, "duplicate_id", f"id {sample.id!r} was written already")
                continue
            seen.add(sample.id)
            writer.write(sample)
        rejects.write(out_dir / "rejects.jsonl")
        if not seen:
            # Leaves no manifest: an empty dataset in a recipe would be a silent failure.
            raise DataError(
                f"{name}: no usable samples ({rejects.counts()}); see {out_dir / 'rejects.jsonl'}"
            )
        writer.extra["rejects"] = rejects.counts()
    return json.loads((out_dir / MANIFEST).read_text())  # written by the writer's close on exit


def describe_inputs(
    adapter: str, inputs: dict[str, str | Path | list[Path]], **params: Any
) -> dict[str, Any]:
    """The provenance of a conversion: adapter, its parameters, and each input file's size and mtime.

    Directories of images are recorded by path only: hashing a few hundred thousand images would take
    longer than the conversion.
    """

    def describe(p: Path) -> dict[str, Any]:
        if p.is_dir():
            return {"path": str(p.resolve()), "dir": True}
        st = p.stat()
        return {"path": str(p.resolve()), "size": st.st_size, "mtime": st.st_mtime}

    return {
        "adapter": adapter,
        "version": ADAPTER_VERSION,
        "params": params,
        "inputs": {
            role: [describe(Path(p)) for p in value] if isinstance(value, list) else describe(Path(value))
            for role, value in inputs.items()
        },
    }
