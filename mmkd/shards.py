"""Webdataset shards for `Sample`s, plus the per-dataset `manifest.json`.

Layout of one dataset directory:
    manifest.json         written last; a dataset without it is incomplete and never read
    shard-000000.tar      webdataset convention: members `<key>.json`, `<key>.0.jpg`, `<key>.1.png`...

Images are stored once: consecutive samples with the same images (the five captions of a COCO image,
the questions of a VQA image) become one record, `{"group": [sample, ...], "num_images": n}` with the
images beside it, as webdataset users expect of an image with several texts; readers expand it back
into its samples, each with its own position in the shard. An image keeps the encoding it came in
(`image.encoded`, set by the adapters: JPEG stays JPEG) unless it is resized; others are stored as PNG.

Shards are written to `*.tar.tmp` and renamed when closed, and the manifest names the shards it covers,
so a crash mid-build leaves nothing a reader would pick up. Images are stored pre-resized as PNG.
Before training, `verify` checks every shard against the manifest's sha256, so a truncated or altered
shard is named before the first step rather than hours in.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import tarfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image
from tqdm import tqdm

from mmkd.errors import DataError
from mmkd.schema import Sample

MANIFEST = "manifest.json"


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write to a temp file in the same directory, then rename it into place: never half a file."""
    path = Path(path)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json_atomic(path: str | Path, obj: Any) -> None:
    write_text_atomic(path, json.dumps(obj, indent=2, sort_keys=True) + "\n")


KEPT_FORMATS = {"JPEG": "jpg", "PNG": "png", "WEBP": "webp"}  # stored as they came


def _image_member(im: Image.Image, size: int | None) -> tuple[bytes, str]:
    """An image's stored bytes and extension: its source file's own (`im.encoded`) when it has them
    and no resize is asked, else PNG."""
    encoded = getattr(im, "encoded", None)
    if encoded is not None and (size is None or im.size == (size, size)):
        return encoded
    return _png_bytes(im, size), "png"


def _png_bytes(im: Image.Image, size: int | None) -> bytes:
    if size is not None and im.size != (size, size):
        im = im.resize((size, size), Image.Resampling.BICUBIC)
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # reproducible bytes: the same samples give the same shard hash
    tar.addfile(info, io.BytesIO(data))


def _sha256(path: Path, progress: Callable[[int], Any] | None = None) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            if progress is not None:
                progress(len(block))
    return h.hexdigest()


class ShardFile:
    """One shard, written to `<name>.tmp` and renamed into place by `close()`; `stats` describes it.

    A sample whose images are those of the sample before it joins that sample's record, so the
    images are stored once (the record is written when a sample with other images comes, or at close).
    """

    def __init__(self, path: str | Path, image_size: int | None = None):
        self.path, self.image_size = Path(path), image_size
        self._tmp = self.path.with_name(self.path.name + ".tmp")
        # Stays open across add() calls; closed by close() or discard().
        self._tar = tarfile.open(self._tmp, "w", format=tarfile.USTAR_FORMAT)  # noqa: SIM115
        self.kinds: Counter[str] = Counter()
        self.num_samples = self.images = self.text_chars = 0
        self.stored_images = self.image_bytes = self.source_bytes = 0
        self._record: list[dict] = []  # the samples of the record not yet written, sharing _images
        self._images: list[tuple[bytes, str]] = []
        self._source_bytes = 0  # the pending images' source files' size, where known

    def add(self, sample: Sample) -> None:
        sample.validate()
        images = [_image_member(im, self.image_size) for im in sample.images]
        if not (self._record and images and images == self._images):
            self._write_record()
            self._images = images
            self._source_bytes = sum(len(getattr(im, "encoded", (b"",))[0]) for im in sample.images)
        self._record.append(sample.to_json())
        self.num_samples += 1
        self.kinds[sample.kind] += 1
        self.text_chars += len(sample.text) + sum(len(t.question) + len(t.answer) for t in sample.turns)
        self.images += len(sample.images)

    def _write_record(self) -> None:
        if not self._record:
            return
        key, record = self._record[0]["id"], self._record[0]
        if len(self._record) > 1:
            record = {"group": self._record, "num_images": len(self._images)}
        _add_member(self._tar, f"{key}.json", json.dumps(record).encode())
        for i, (data, ext) in enumerate(self._images):
            _add_member(self._tar, f"{key}.{i}.{ext}", data)
            self.stored_images += 1
            self.image_bytes += len(data)
        self.source_bytes += self._source_bytes
        self._record, self._images = [], []

    def close(self) -> dict[str, Any]:
        self._write_record()
        self._tar.close()
        os.replace(self._tmp, self.path)
        return {
            "file": self.path.name,
            "num_samples": self.num_samples,
            "sha256": _sha256(self.path),
            "kinds": dict(sorted(self.kinds.items())),
            "num_images": self.images,  # as trained: an image counts once per sample
            "stored_images": self.stored_images,
            "image_bytes": self.image_bytes,
            "source_image_bytes": self.source_bytes,  # of the images' files, where the adapter read them
            "text_chars": self.text_chars,
        }

    def discard(self) -> None:
        """Leave no half-written shard behind."""
        self._tar.close()
        self._tmp.unlink(missing_ok=True)


def write_manifest(
    out_dir: str | Path,
    name: str,
    provenance: dict[str, Any],
    shards: list[dict[str, Any]],
    image_size: int | None,
    tokens_per_image: int | None,
    extra: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """The manifest over finished shards (their `ShardFile.close()` stats); written last, atomically.
    `tokens_per_image` None: unknown (data converted from elsewhere), and so is the image-token estimate."""
    kinds: Counter[str] = Counter()
    for s in shards:
        kinds.update(s["kinds"])
    images = sum(s["num_images"] for s in shards)
    content = hashlib.sha256("".join(s["sha256"] for s in shards).encode()).hexdigest()
    manifest = {
        "name": name,
        "num_samples": sum(s["num_samples"] for s in shards),
        "kinds": dict(sorted(kinds.items())),
        "num_images": images,
        "stored_images": sum(s.get("stored_images", s["num_images"]) for s in shards),
        "image_bytes": sum(s.get("image_bytes", 0) for s in shards),
        "source_image_bytes": sum(s.get("source_image_bytes", 0) for s in shards),
        "image_size": image_size,
        # ~4 characters per BPE token is the usual rule of thumb for English text.
        "text_tokens_est": sum(s["text_chars"] for s in shards) // 4,
        "image_tokens_est": None if tokens_per_image is None else images * tokens_per_image,
        "tokens_per_image": tokens_per_image,  # the patch grid the estimate assumed
        "shards": [{k: s[k] for k in ("file", "num_samples", "sha256")} for s in shards],
        "content_hash": content,
        "provenance": provenance,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
        **(extra or {}),
    }
    write_json_atomic(Path(out_dir) / MANIFEST, manifest)
    return manifest


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


class ShardWriter:
    """Write validated samples into size-bounded shards and a manifest; use as a context manager.

    `tokens_per_image` feeds the manifest's image-token estimate (e.g. (image_size / patch) ** 2);
    None (converted data: no model's patch grid is implied) leaves both unknown in the manifest.
    """

    def __init__(
        self,
        out_dir: str | Path,
        name: str,
        provenance: dict[str, Any],
        samples_per_shard: int = 2000,
        image_size: int | None = None,
        tokens_per_image: int | None = None,
    ):
        self.out_dir = Path(out_dir)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        self.name, self.provenance = name, provenance
        self.samples_per_shard, self.image_size = samples_per_shard, image_size
        self.tokens_per_image = tokens_per_image
        self._shard: ShardFile | None = None
        self._shards: list[dict[str, Any]] = []
        self._ids: set[str] = set()
        # Builder-specific manifest fields (e.g. answer priors), merged in at close().
        self.extra: dict[str, Any] = {}

    def write(self, sample: Sample) -> None:
        if sample.id in self._ids:
            raise ValueError(f"dataset {self.name!r}: duplicate sample id {sample.id!r}")
        if self._shard is None:
            self._shard = ShardFile(self.out_dir / shard_name(len(self._shards)), self.image_size)
        self._shard.add(sample)
        self._ids.add(sample.id)
        if self._shard.num_samples >= self.samples_per_shard:
            self._shards.append(self._shard.close())
            self._shard = None

    def close(self) -> dict[str, Any]:
        """Finish the last shard and write the manifest; returns the manifest."""
        if self._shard is not None:
            self._shards.append(self._shard.close())
            self._shard = None
        return write_manifest(
            self.out_dir,
            self.name,
            self.provenance,
            self._shards,
            self.image_size,
            self.tokens_per_image,
            self.extra,
        )

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        elif self._shard is not None:
            self._shard.discard()


@dataclass
class Dataset:
    """A finished dataset directory: its manifest and the paths of its shards."""

    root: Path
    manifest: dict[str, Any]

    @property
    def shard_paths(self) -> list[Path]:
        return [self.root / s["file"] for s in self.manifest["shards"]]

    def __len__(self) -> int:
        return self.manifest["num_samples"]

    def __iter__(self) -> Iterator[Sample]:
        return self.iter()

    def iter(self, images: bool = True) -> Iterator[Sample]:
        """All samples in order; `images=False` skips PNG decoding (text-only passes are ~10x faster)."""
        for path in self.shard_paths:
            yield from iter_shard(path, images=images)


def open_dataset(root: str | Path) -> Dataset:
    """The dataset at `root`. Its manifest may come from anyone: it must be JSON whose shards are
    files inside `root` (a path that climbs out or is absolute is a `DataError`, never read)."""
    root = Path(root)
    path = root / MANIFEST
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist: {root} is not a finished dataset (build it first)")
    try:
        manifest = json.loads(path.read_text())
        files = [s["file"] for s in manifest["shards"]]
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError) as e:
        raise DataError(f"{path} is not a dataset manifest ({type(e).__name__}: {e})") from None
    inside = root.resolve()
    for file in files:
        if (
            not isinstance(file, str)
            or Path(file).is_absolute()
            or not (root / file).resolve().is_relative_to(inside)
        ):
            raise DataError(
                f"{path} lists shard {file!r}, which is not a file inside {root}: refusing to read it"
            )
        if not (root / file).exists():
            raise FileNotFoundError(f"{root / file} is listed in {path} but missing")
    return Dataset(root, manifest)


def is_complete(root: str | Path) -> bool:
    return (Path(root) / MANIFEST).exists()


def iter_shard(
    path: str | Path,
    images: bool = True,
    select: Callable[[int], bool] | None = None,
    on_bad: Callable[[str, str], None] | None = None,
    lazy: bool = False,
) -> Iterator[Sample]:
    """Stream the samples of one shard in write order.

    `images=False` yields samples without pixels; `select(i)` keeps only the i-th samples it accepts
    (the others are skipped without decoding). An image that fails to decode raises, naming the shard
    and sample, unless `on_bad(sample_key, error)` is given: then that sample is skipped.
    `lazy=True` opens images without decoding them (in their stored mode, not converted to RGB): the
    pixels decode on first use, so samples that are read but never used (a resumed loader's skipped
    batches) cost no decoding, and buffers hold compressed images. Decode errors then surface on use
    (`Image.load()` raises `OSError`), also for an image whose header is already unreadable.
    An unreadable tar raises `DataError` naming the shard.
    """
    for _, sample in iter_indexed(path, images, select, on_bad, lazy):
        yield sample


def iter_indexed(
    path: str | Path,
    images: bool = True,
    select: Callable[[int], bool] | None = None,
    on_bad: Callable[[str, str], None] | None = None,
    lazy: bool = False,
) -> Iterator[tuple[int, Sample]]:
    """`iter_shard`'s samples with their position in the shard (what a loader's saved state names)."""
    try:
        yield from _iter_tar(Path(path), images, select, on_bad, lazy)
    except tarfile.TarError as e:
        raise DataError(f"{path} is not a readable tar ({e}): verify or rebuild the dataset") from None


def _member_key(path: Path, member: tarfile.TarInfo) -> tuple[str, str]:
    """(sample key, extension) of a webdataset member: a plain file `<key>.json` or `<key>.<i>.<ext>`
    at the top of the tar (members are read into memory, never extracted; a name that climbs out or
    has no extension is named here rather than failing later)."""
    name = member.name
    stem, dot, ext = name.partition(".")
    plain = member.isfile() and "/" not in name and "\\" not in name and stem and dot
    if not plain or (ext != "json" and not ext.split(".")[0].isdigit()):
        raise DataError(
            f"{path}: member {name!r} is not a webdataset sample file (<key>.json, <key>.<i>.<ext>)"
        )
    return stem, ext


def _iter_tar(
    path: Path,
    images: bool,
    select: Callable[[int], bool] | None,
    on_bad: Callable[[str, str], None] | None,
    lazy: bool,
) -> Iterator[tuple[int, Sample]]:
    with tarfile.open(path, "r") as tar:
        # The record being read: its key, JSON, images, index of its first sample, sample count, and
        # whether any of its samples is selected (else its images are skipped unread).
        key, record, pixels, first, count, need, bad = None, None, {}, 0, 0, True, False
        for member in tar:
            stem, ext = _member_key(path, member)
            if stem != key:
                if key is not None and not bad:
                    yield from _expand(path, record, pixels, images, first, select)
                key, record, pixels, first, count, need, bad = stem, None, {}, first + count, 0, True, False
            if ext == "json":
                try:
                    record = json.loads(tar.extractfile(member).read())  # type: ignore[union-attr]
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    raise DataError(f"{path}: record {member.name} is not JSON ({e})") from None
                count = len(record.get("group", [record]))
                need = select is None or any(select(j) for j in range(first, first + count))
            elif not need:
                continue
            elif images and lazy:
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                try:
                    pixels[int(ext.split(".")[0])] = Image.open(io.BytesIO(data))
                except UNDECODABLE as e:
                    pixels[int(ext.split(".")[0])] = Undecodable(f"{path}: image {member.name}: {e}")
            elif images:
                data = tar.extractfile(member).read()  # type: ignore[union-attr]
                try:
                    pixels[int(ext.split(".")[0])] = Image.open(io.BytesIO(data)).convert("RGB")
                except UNDECODABLE as e:
                    if on_bad is None:
                        raise ValueError(f"{path}: image {member.name} does not decode ({e})") from None
                    on_bad(stem, f"{member.name}: {e}")
                    bad = True
            else:
                pixels[int(ext.split(".")[0])] = None
        if key is not None and not bad:
            yield from _expand(path, record, pixels, images, first, select)


def _expand(
    path: Path,
    record: dict | None,
    pixels: dict,
    images: bool,
    first: int,
    select: Callable[[int], bool] | None,
) -> Iterator[tuple[int, Sample]]:
    """The selected samples of one record (a group yields each of its samples, on the same images)."""
    if record is None:
        raise ValueError(f"{path}: a sample has images but no .json member")
    for j, entry in enumerate(record.get("group", [record])):
        if select is None or select(first + j):
            yield first + j, _assemble(path, entry, pixels, images)


# What opening or decoding a stored image may raise: PIL's unreadable and truncated images (OSError,
# UnidentifiedImageError among them) and images larger than PIL's pixel limit (a decompression bomb).
UNDECODABLE = (OSError, Image.DecompressionBombError)


class Undecodable:
    """Stands in, in a lazy stream, for an image whose header does not even open: like a truncated
    image, it fails when used (`load`, `convert`), where the loader counts and names it."""

    def __init__(self, error: str):
        self.error = error

    def load(self) -> None:
        raise OSError(self.error)

    def convert(self, mode: str) -> Image.Image:
        raise OSError(self.error)


def verify(ds: Dataset, cache_dir: Path | None = None) -> None:
    """Check every shard of `ds` against the sha256 in its manifest; `DataError` names the first that
    differs. With `cache_dir`, a shard verified before and unchanged since (same size and mtime) is
    not read again, so the check costs seconds on every run, not a re-read of terabytes."""
    cache_file = None
    done: dict[str, Any] = {}
    if cache_dir is not None:
        key = hashlib.sha256(str(ds.root.resolve()).encode()).hexdigest()[:16]
        cache_file = Path(cache_dir) / f"{key}.json"
        if cache_file.exists():
            done = json.loads(cache_file.read_text()).get("shards", {})
    todo = []
    for entry in ds.manifest["shards"]:
        stat = (ds.root / entry["file"]).stat()
        stamp = {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": entry["sha256"]}
        if done.get(entry["file"]) != stamp:
            todo.append((entry, stamp))
    total = sum(stamp["size"] for _, stamp in todo)
    with tqdm(total=total, desc=f"verify {ds.root.name}", unit="B", unit_scale=True, disable=None) as bar:
        for entry, stamp in todo:
            path = ds.root / entry["file"]
            if _sha256(path, bar.update) != entry["sha256"]:
                raise DataError(
                    f"{path}: its sha256 differs from {ds.root / MANIFEST} (the shard was truncated or "
                    "changed after the build): restore it, or delete the dataset to rebuild it"
                )
            done[entry["file"]] = stamp
    if cache_file is not None and todo:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        write_json_atomic(cache_file, {"root": str(ds.root.resolve()), "shards": done})


def _assemble(path: str | Path, record: dict, pixels: dict, images: bool) -> Sample:
    if len(pixels) != record["num_images"]:
        raise ValueError(
            f"{path}: sample {record['id']!r} has {len(pixels)} images, json says {record['num_images']}"
        )
    return Sample.from_json(record, [pixels[i] for i in range(len(pixels))] if images else [])
