"""Pre-tokenised images for the discrete model: each image becomes its visual tokenizer's code ids
once, stored with the samples, so training never runs the visual modules (seed 003 Sec. 3.2).

`build_visual_ids` writes a dataset with the source's samples, each carrying `metadata["visual_ids"]`:
one list of code ids per image, row-major over the tokenizer's grid. The tokenizer is named in the
provenance by its weights' hash, so a retrained tokenizer never reuses stale ids. Like every build it
is shard-parallel (`build.shard`), resumable and byte-identical on rerun (`engine.run`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import Any

import torch

from mmkd.build_config import BuildConfig
from mmkd.data_builders import engine
from mmkd.data_builders.annotated import chunks, input_ids, load_samples
from mmkd.data_builders.rejects import RejectLog
from mmkd.model.visual_tokenizer import VisualTokenizer
from mmkd.schema import Sample
from mmkd.shards import Dataset, is_complete, open_dataset
from mmkd.visual_tokenizer_training import to_pixels

BUILDER_VERSION = 1


def tokenizer_identity(path: Path) -> dict[str, Any]:
    """What makes the ids: the tokenizer's config and its weights' hash."""
    weights = hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()
    return {
        "path": str(path),
        "weights_sha256": weights,
        "config": json.loads((path / "config.json").read_text()),
    }


def build_visual_ids(
    source: Dataset,
    tokenizer_dir: Path,
    out: Path,
    build: BuildConfig,
    batch: int = 64,
    device: torch.device | None = None,
) -> dict | None:
    """The source's samples with their images' code ids (encoded on `device`, default the CPU); the
    manifest once every unit is done."""
    device = device or torch.device("cpu")
    tokenizer = VisualTokenizer.from_pretrained(tokenizer_dir).to(device)
    size = tokenizer.cfg.image_size
    identity = tokenizer_identity(tokenizer_dir)
    provenance = {
        "builder": "visual_ids",
        "version": BUILDER_VERSION,
        "tokenizer": identity,
        "input": {"path": str(source.root), "content_hash": source.manifest["content_hash"]},
    }

    def work(ids: list[str], rejects: RejectLog) -> list[Sample]:
        got = load_samples(source, ids, rejects)
        samples = [got[i] for i in ids if i in got]
        images = [im for s in samples for im in s.images]
        codes: list[list[int]] = []
        for part in chunks(images, batch):  # resized to the tokenizer's size as the loader resizes
            codes += tokenizer.encode(to_pixels(part, size).to(device)).tolist()
        out_samples, k = [], 0
        for s in samples:
            mine, k = codes[k : k + len(s.images)], k + len(s.images)
            out_samples.append(
                dataclasses.replace(
                    s,
                    metadata={**s.metadata, "visual_ids": mine},
                    provenance={**s.provenance, "visual_ids": identity["weights_sha256"]},
                )
            )
        return out_samples

    engine.run(
        out,
        chunks(input_ids(source, build.limit), build.unit_size),
        work,
        shard=build.shard_index(),
        image_size=source.manifest.get("image_size"),
        max_reject_share=build.max_reject_share,
    )
    return engine.finish_samples(
        out, source.manifest["name"], provenance, source.manifest.get("image_size"), tokenizer.cfg.tokens
    )


def visual_ids_dir(root: Path, source: Path, tokenizer_sha256: str) -> Path:
    """Where `source`'s visual ids from the tokenizer of these weights live
    (`<data.root>/visual_ids/<name>-<key>`): a new source content, tokenizer or builder version is a
    new directory."""
    manifest = json.loads((source / "manifest.json").read_text())
    key = {"input": manifest["content_hash"], "tokenizer": tokenizer_sha256, "version": BUILDER_VERSION}
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:12]
    return root / "visual_ids" / f"{manifest['name']}-{digest}"


def has_images(source: Path) -> bool:
    return set(json.loads((source / "manifest.json").read_text())["kinds"]) != {"text"}


def discrete_sources(
    dirs: dict[str, Path],
    tokenizer_dir: Path,
    root: Path,
    build: BuildConfig | None = None,
    device: torch.device | None = None,
) -> dict[str, Path]:
    """The datasets the discrete model trains on: each source with images as its visual-id dataset
    (built here when `build` is given: rank 0, before training), text-only sources as they are."""
    out = {}
    weights = tokenizer_identity(tokenizer_dir)["weights_sha256"]  # hashed once, not per source
    for name, source in dirs.items():
        if not has_images(source):
            out[name] = source
            continue
        out[name] = visual_ids_dir(root, source, weights)
        if build is not None and not is_complete(out[name]):
            # One process builds every unit: the pipeline's rank 0 (launch/build.py shards big sources).
            whole = dataclasses.replace(build, shard="0/1", limit=0)
            if build_visual_ids(open_dataset(source), tokenizer_dir, out[name], whole, device=device) is None:
                raise RuntimeError(f"{out[name]}: visual ids unfinished after building every unit")
    return out
