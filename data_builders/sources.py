"""Where each source of a recipe comes from, and building the ones that are missing.

A recipe names sources; each must be one of:
  - a dataset directory given in `data.sources` (real data or annotator output, with a manifest);
  - a world source (`caption0`, `vqa0`, `text`, `other`), built on first use;
  - otherwise it is an error, raised before any compute, that names the source and what makes it.
The world's tokenizer and benchmarks are built with its sources, in one directory per build setting.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path

from mmkd.data_builders import world_sources

from mmkd.config import ConfigError, DataConfig
from mmkd.shards import is_complete, write_json_atomic
from mmkd.tokenizer import train_tokenizer
from mmkd.world.benchmarks import BENCH_VERSION, build_benchmarks

WORLD_SOURCES = tuple(world_sources.SOURCES)
# Sources made by LLM/MLLM annotators (seed 000 Sec. 3.2, 4.2): the builders issue adds them.
ANNOTATED_SOURCES = {
    "caption1": "captions of the VQA images by a captioning annotator (seed 000 A.1.1)",
    "vqa1": "Q/A synthesised from Caption1 by the caption-to-VQA annotator (seed 000 A.1.2)",
    "pair_caption": "pair captions: image pairing, LLM filter, pair captioning (seed 000 Sec. 4.2.1)",
    "interleaved": "interleaved descriptions of groups of related images (seed 000 Sec. 4.2.2)",
}


class SourceError(ConfigError):
    """A recipe names a source that does not exist and cannot be built here."""


def world_dir(data: DataConfig) -> Path:
    """One directory per set of build settings, so runs with different data never share a directory."""
    settings = {k: v for k, v in asdict(data).items() if k not in ("root", "sources", "num_workers")}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    return Path(data.root) / f"world-{digest}"


def check_sources(recipe_name: str, names: list[str], data: DataConfig) -> None:
    """Fail before any compute if a source can be neither found nor built."""
    for name in names:
        if name in data.sources:
            if not is_complete(data.sources[name]):
                raise SourceError(
                    f"recipe {recipe_name!r}: data.sources.{name}={data.sources[name]!r} "
                    "is not a finished dataset (no manifest.json)"
                )
        elif name in WORLD_SOURCES:
            continue
        elif name in ANNOTATED_SOURCES:
            raise SourceError(
                f"recipe {recipe_name!r} needs source {name!r} ({ANNOTATED_SOURCES[name]}), which needs an "
                f"annotator builder that is not available yet; build it elsewhere and pass "
                f"+data.sources.{name}=<dataset dir>, or choose another recipe"
            )
        else:
            known = sorted([*WORLD_SOURCES, *ANNOTATED_SOURCES])
            raise SourceError(
                f"recipe {recipe_name!r}: unknown source {name!r}; known sources: {known}, "
                "or give a dataset directory as +data.sources.<name>=DIR"
            )


def _stamp_ok(path: Path, stamp: dict) -> bool:
    return path.exists() and json.loads(path.read_text()) == stamp


def prepare_world(data: DataConfig, patch_size: int = 8) -> Path:
    """Build (idempotently) the world sources, tokenizer and benchmarks; returns the world directory.

    A part is rebuilt only when its recorded provenance differs from what the config asks for.
    """
    root = world_dir(data)
    root.mkdir(parents=True, exist_ok=True)
    rebuilt = False
    for source in WORLD_SOURCES:
        out = root / source
        n = data.sizes.get(source)
        if n is None:
            raise ConfigError(f"data.sizes has no entry for world source {source!r}")
        want = world_sources.provenance(data.world, source, n, data.vqa_turns)
        manifest = out / "manifest.json"
        if manifest.exists() and json.loads(manifest.read_text())["provenance"] == want:
            continue
        world_sources.build_source(
            data.world, source, n, out, data.samples_per_shard, data.vqa_turns, patch_size
        )
        rebuilt = True
    tok_stamp = {
        "vocab_size": data.vocab_size,
        "sources": {s: _content_hash(root / s) for s in WORLD_SOURCES},
    }
    if (
        rebuilt
        or not _stamp_ok(root / "tokenizer.stamp.json", tok_stamp)
        or not (root / "tokenizer.json").exists()
    ):
        train_tokenizer(
            world_sources.corpus(root, list(WORLD_SOURCES)), data.vocab_size, root / "tokenizer.json"
        )
        write_json_atomic(root / "tokenizer.stamp.json", tok_stamp)
    bench_stamp = {"world": asdict(data.world), "n": data.bench_per_ability, "version": BENCH_VERSION}
    if not _stamp_ok(root / "bench" / "stamp.json", bench_stamp):
        build_benchmarks(data.world, root / "bench", data.bench_per_ability)
        write_json_atomic(root / "bench" / "stamp.json", bench_stamp)
    return root


def build_detection(data: DataConfig) -> Path:
    """The detection annotations (for the MMGIC builder); built on request by launch/build.py."""
    return world_sources.build_detection(
        data.world, data.sizes.get("detection", 500), world_dir(data) / "detection"
    )


def source_dirs(names: list[str], data: DataConfig, world_root: Path) -> dict[str, Path]:
    return {n: Path(data.sources[n]) if n in data.sources else world_root / n for n in names}


def _content_hash(path: Path) -> str:
    return json.loads((path / "manifest.json").read_text())["content_hash"]
