"""Read DCP checkpoints without running anything they contain.

`torch.distributed.checkpoint` stores tensors as raw bytes, but its index (`.metadata`) is a pickle,
and torch reads it with `pickle.load`: a crafted `.metadata` runs its author's code on whoever loads
the checkpoint. `SafeReader` reads the index with an unpickler that constructs only the types a DCP
index is made of (its metadata dataclasses, `torch.Size`, dtypes, paths) and refuses anything else,
and it keeps every read inside the checkpoint directory. Every DCP load in mmkd goes through it.
"""

from __future__ import annotations

import pickle
from pathlib import Path, PurePath
from typing import Any

import torch
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.metadata import Metadata, StorageMeta

from mmkd.errors import CheckpointError

_METADATA_TYPES = {
    "Metadata",
    "MetadataIndex",
    "StorageMeta",
    "TensorProperties",
    "TensorStorageMetadata",
    "ChunkStorageMetadata",
    "BytesStorageMetadata",
    "_MEM_FORMAT_ENCODING",
}
_ALLOWED = {("torch.distributed.checkpoint.metadata", n) for n in _METADATA_TYPES} | {
    ("torch.distributed.checkpoint.filesystem", "_StorageInfo"),
    ("torch", "Size"),
    ("torch.serialization", "_get_layout"),  # a layout by its name
    ("pathlib", "PosixPath"),
    ("pathlib", "WindowsPath"),
    ("pathlib", "PurePosixPath"),
    ("pathlib", "PureWindowsPath"),
}


class _IndexUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        dtype = module == "torch" and isinstance(getattr(torch, name, None), torch.dtype)
        if (module, name) in _ALLOWED or dtype:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is not part of a DCP index")


def read_index(path: Path) -> Metadata:
    """The `.metadata` of the DCP checkpoint in `path`, read without executing it."""
    file = path / ".metadata"
    try:
        with open(file, "rb") as f:
            index = _IndexUnpickler(f).load()
    except FileNotFoundError:
        raise CheckpointError(f"{file} is missing: {path} holds no DCP weights") from None
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError) as e:
        raise CheckpointError(f"{file} is not a DCP index this version can read safely ({e})") from None
    if not isinstance(index, Metadata):
        raise CheckpointError(f"{file} holds a {type(index).__name__}, not a DCP index")
    for info in (index.storage_data or {}).values():
        name = str(info.relative_path)
        if PurePath(name).name != name or name in ("", ".", ".."):
            raise CheckpointError(f"{file} points outside its directory ({name!r})")
    return index


def check_files(path: Path, index: Metadata) -> None:
    """Every data file the index names exists and is long enough for every item read from it, so a
    truncated or missing shard is named here rather than failing inside torch."""
    need: dict[str, int] = {}
    for info in (index.storage_data or {}).values():
        need[str(info.relative_path)] = max(need.get(str(info.relative_path), 0), info.offset + info.length)
    for name, size in sorted(need.items()):
        file = path / name
        if not file.exists():
            raise CheckpointError(f"{file} is missing (named by {path / '.metadata'})")
        if file.stat().st_size < size:
            raise CheckpointError(f"{file} is truncated: {file.stat().st_size} bytes, the index needs {size}")


class SafeReader(FileSystemReader):
    """`FileSystemReader` whose index is read by `read_index` (checked against the data files)."""

    def read_metadata(self, *args: Any, **kwargs: Any) -> Metadata:
        if kwargs.get("rank") is not None:
            raise CheckpointError(f"{self.path}: per-rank DCP indexes are not supported")
        index = read_index(Path(self.path))
        check_files(Path(self.path), index)
        if getattr(index, "storage_meta", None) is None:
            index.storage_meta = StorageMeta()
        index.storage_meta.load_id = self.load_id
        return index
