"""What every real-data adapter does with its inputs: read a whole JSON file, read and check an image
(keeping its source bytes), check a record's fields, check a sample against the schema, and make a
sample id. Each problem is a reject naming the file and the record, or a `DataError` naming the file.
"""

from __future__ import annotations

import io
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from PIL import Image

from mmkd.data_builders.rejects import RejectLog
from mmkd.errors import DataError
from mmkd.schema import Sample, SampleError
from mmkd.shards import KEPT_FORMATS, UNDECODABLE


def caption_annotations(
    path: Path, data: dict[str, Any], image_ids: set, rejects: RejectLog, fields: tuple[str, ...]
) -> Iterator[tuple[int, dict[str, Any]]]:
    """(index, annotation) of a COCO captions file's usable captions: `fields` present, a non-empty
    caption, an image the file lists; each other one is a reject naming its record."""
    for i, ann in enumerate(data.get("annotations", [])):
        where = f"{path}: annotations[{i}] (id={ann.get('id')}, image_id={ann.get('image_id')})"
        if missing := missing_fields(ann, fields):
            rejects.add(where, "missing_field", missing)
        elif not isinstance(ann["caption"], str) or not ann["caption"].strip():
            rejects.add(where, "empty_text", f"caption {ann['caption']!r}")
        elif ann["image_id"] not in image_ids:
            rejects.add(where, "unknown_image", f"no images[] entry with id={ann['image_id']}")
        else:
            yield i, ann


def jsonl_records(path: Path, rejects: RejectLog) -> Iterator[tuple[str, int, dict[str, Any]]]:
    """(where, line number, record) of each JSON-object line of a JSONL file; any other line is a
    reject."""
    with open(path, "rb") as f:  # bytes: one line of bad UTF-8 is a reject, not a crash
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(line)
            except ValueError as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
                rejects.add(where, "malformed_json", str(e))
                continue
            if not isinstance(record, dict):
                rejects.add(where, "malformed_json", f"a {type(record).__name__}, not a JSON object")
                continue
            yield where, lineno, record


def checked(sample: Sample, rejects: RejectLog) -> bool:
    """True if the sample passes the schema; else it is rejected ("schema") at its record."""
    try:
        sample.validate()
    except SampleError as e:
        rejects.add(sample.provenance.get("record", f"sample {sample.id!r}"), "schema", str(e))
        return False
    return True


def load_json(path: Path, shape: type = dict) -> Any:
    """A whole JSON file whose top level is a `shape` (dict or list); `DataError` naming it otherwise."""
    try:
        with open(path, "rb") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise DataError(f"{path} does not exist") from None
    except ValueError as e:
        raise DataError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, shape):
        raise DataError(f"{path}: the top level is a JSON {type(data).__name__}, expected a {shape.__name__}")
    return data


def load_image(path: Path, where: str, rejects: RejectLog) -> Image.Image | None:
    if not path.is_file():
        rejects.add(where, "image_missing", f"{path} does not exist")
        return None
    return decode_image(path, where, rejects, str(path))


def decode_image(src: Path | bytes, where: str, rejects: RejectLog, label: str) -> Image.Image | None:
    """The image in RGB, decoded once here so a broken file is a reject; `image.encoded` keeps the
    file's own bytes (JPEG, PNG, WebP), which the shard stores as they are unless resizing is asked."""
    data = src if isinstance(src, bytes) else src.read_bytes()
    try:
        with Image.open(io.BytesIO(data)) as im:
            rgb = im.convert("RGB")
            kept = KEPT_FORMATS.get(im.format or "")
    except UNDECODABLE as e:  # unreadable, truncated, or a decompression bomb
        rejects.add(where, "image_decode", f"{label}: {e}")
        return None
    if kept is not None:
        rgb.encoded = (data, kept)  # type: ignore[attr-defined]
    return rgb


def missing_fields(record: dict, fields: tuple[str, ...]) -> str:
    """'' if all fields are present, else which are missing."""
    absent = [f for f in fields if record.get(f) is None]
    return f"missing {', '.join(absent)}" if absent else ""


def nonempty(value: Any) -> bool:
    return isinstance(value, str) and bool(value.strip())


def sample_key(source: str, record_id: Any) -> str:
    """A sample id from the source and the record's id; '.' and '/' would break webdataset keys."""
    return re.sub(r"[^A-Za-z0-9_-]+", "_", f"{source}-{record_id}")
