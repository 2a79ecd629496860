"""Convert a real dataset into a dataset directory (shards, manifest, rejects.jsonl) a recipe can use.

    python launch/convert.py coco --annotations captions_train2017.json --images train2017/ --out data/coco
    python launch/convert.py vqav2 --questions Q.json --annotations A.json --images DIR --out DIR
    python launch/convert.py llava --json F --images DIR --out DIR
    python launch/convert.py img2dataset --shards DIR_OR_TAR --out DIR
    python launch/convert.py detection --instances F --images DIR --image-size 224 --out DIR \
        [--captions captions.json --min-side 224 --max-aspect 3.0]     # the MMGIC builder's input
    python launch/convert.py visual_genome --image-data F --objects F --attributes F --relationships F \
        --images VG_100K/ [--coco-captions F] --image-size 224 --out DIR   # Visual Genome's own files
    python launch/convert.py text --path F.jsonl|F.parquet [--field text] --out DIR

Common flags: --strict (stop at the first bad record), --samples-per-shard, --image-size (store images
resized to a square), --name (the manifest's name; default: the --out folder's name).
Train on the result with `+data.sources.<name>=DIR`. Bad records are listed in DIR/rejects.jsonl.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from mmkd.data_builders import adapters, detection
from mmkd.data_builders.rejects import RejectLog
from mmkd.data_builders.visual_genome import read_synset_names, visual_genome
from mmkd.errors import reported
from mmkd.schema import Sample
from mmkd.shards import MANIFEST

INPUTS = (
    "annotations",
    "questions",
    "images",
    "json",
    "shards",
    "instances",
    "captions",
    "narratives",
    "synset_names",
    "path",
)  # files read


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--out", required=True, type=Path, help="output dataset directory")
    common.add_argument("--name", help="dataset name in the manifest (default: the --out folder's name)")
    common.add_argument("--strict", action="store_true", help="fail at the first bad record")
    common.add_argument("--samples-per-shard", type=int, default=2000)
    common.add_argument("--image-size", type=int, help="store images resized to this square size")
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="adapter", required=True)
    p = sub.add_parser("coco", parents=[common], help="COCO captions JSON")
    p.add_argument("--annotations", required=True, type=Path)
    p.add_argument("--images", required=True, type=Path)
    p = sub.add_parser("vqav2", parents=[common], help="VQAv2 questions + annotations JSON")
    p.add_argument("--questions", required=True, type=Path)
    p.add_argument("--annotations", required=True, type=Path)
    p.add_argument("--images", required=True, type=Path)
    p.add_argument("--file-pattern", default="COCO_train2014_{image_id:012d}.jpg")
    p = sub.add_parser("llava", parents=[common], help="LLaVA conversation JSON")
    p.add_argument("--json", required=True, type=Path)
    p.add_argument("--images", required=True, type=Path)
    p = sub.add_parser("img2dataset", parents=[common], help="img2dataset webdataset shards")
    p.add_argument("--shards", required=True, type=Path, help="a directory of *.tar or one .tar")
    p = sub.add_parser("detection", parents=[common], help="COCO-instances JSON (+ VG-style extras)")
    p.add_argument("--instances", required=True, type=Path)
    p.add_argument("--images", required=True, type=Path)
    p.add_argument("--captions", type=Path, help="COCO captions JSON of the same images")
    p.add_argument("--narratives", type=Path, help="Localized Narratives JSONL of the same images")
    p.add_argument("--min-side", type=int, default=0, help="reject images with a shorter side (px)")
    p.add_argument("--max-aspect", type=float, help="reject images with a longer/shorter side ratio above")
    p = sub.add_parser("visual_genome", parents=[common], help="Visual Genome's JSON files")
    for flag in ("--image-data", "--objects"):
        p.add_argument(flag, required=True, type=Path)
    for flag in ("--attributes", "--relationships", "--coco-captions"):
        p.add_argument(flag, type=Path)
    p.add_argument("--images", required=True, type=Path)
    p.add_argument("--min-side", type=int, default=0, help="reject images with a shorter side (px)")
    p.add_argument("--max-aspect", type=float, help="reject images with a longer/shorter side ratio above")
    p.add_argument("--min-synset-count", type=int, default=2, help="drop rarer (name, synset) labels")
    p.add_argument("--synset-names", type=Path, help='JSON {"batter.n.01": "baseball player", ...}')
    p = sub.add_parser("text", parents=[common], help="text as JSONL or parquet")
    p.add_argument("--path", required=True, type=Path)
    p.add_argument("--field", default="text")
    args = parser.parse_args(argv)
    for flag in INPUTS:
        path = getattr(args, flag, None)
        if path is not None and not path.exists():
            parser.error(f"--{flag} {path} does not exist")
    if args.adapter in ("detection", "visual_genome") and args.image_size is None:
        # Grounding answers are pixels; the loader resizes images to a square, so fix the frame here.
        parser.error("detection needs --image-size: the boxes are given in pixels of the stored image")
    return args


def open_source(args: argparse.Namespace, rejects: RejectLog) -> tuple[Iterator[Sample], dict[str, Any]]:
    """The adapter's samples and the provenance of this conversion."""
    match args.adapter:
        case "coco":
            samples = adapters.coco_captions(args.annotations, args.images, rejects)
            inputs = {"annotations": args.annotations, "images": args.images}
            params = {}
        case "vqav2":
            samples = adapters.vqav2(
                args.questions, args.annotations, args.images, rejects, args.file_pattern
            )
            inputs = {"questions": args.questions, "annotations": args.annotations, "images": args.images}
            params = {"file_pattern": args.file_pattern}
        case "llava":
            samples = adapters.llava(args.json, args.images, rejects)
            inputs, params = {"json": args.json, "images": args.images}, {}
        case "img2dataset":
            samples = adapters.img2dataset(args.shards, rejects)
            inputs, params = {"shards": adapters.tar_paths(args.shards)}, {}
        case "detection":
            samples = detection.detection(
                args.instances,
                args.images,
                rejects,
                image_size=args.image_size,
                captions_json=args.captions,
                min_side=args.min_side,
                max_aspect=args.max_aspect,
                narratives_jsonl=args.narratives,
            )
            inputs = {"instances": args.instances, "images": args.images}
            inputs |= {k: v for k in ("captions", "narratives") if (v := getattr(args, k))}
            params = {"image_size": args.image_size, "min_side": args.min_side, "max_aspect": args.max_aspect}
        case "visual_genome":
            files = ("image_data", "objects", "attributes", "relationships", "coco_captions")
            inputs = {f: getattr(args, f) for f in files if getattr(args, f) is not None}
            samples = visual_genome(
                **inputs,
                images_dir=args.images,
                rejects=rejects,
                image_size=args.image_size,
                min_side=args.min_side,
                max_aspect=args.max_aspect,
                min_synset_count=args.min_synset_count,
                synset_names=read_synset_names(args.synset_names) if args.synset_names else None,
            )
            inputs["images"] = args.images
            inputs |= {"synset_names": args.synset_names} if args.synset_names else {}
            params = {"image_size": args.image_size, "min_side": args.min_side, "max_aspect": args.max_aspect}
            params["min_synset_count"] = args.min_synset_count
        case "text":
            samples = adapters.text_records(args.path, rejects, field=args.field)
            inputs, params = {"path": args.path}, {"field": args.field}
    return samples, adapters.describe_inputs(args.adapter, inputs, **params)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    rejects = RejectLog(strict=args.strict)
    with reported():
        samples, provenance = open_source(args, rejects)
        manifest = adapters.convert(
            samples,
            args.out,
            args.name or args.out.resolve().name,
            provenance,
            samples_per_shard=args.samples_per_shard,
            image_size=args.image_size,
            rejects=rejects,
        )
    print(f"manifest: {args.out / MANIFEST}")
    print(f"samples: {manifest['num_samples']} {json.dumps(manifest['kinds'])}")
    stored = sum((args.out / s["file"]).stat().st_size for s in manifest["shards"])
    source = manifest["source_image_bytes"]
    ratio = f", {stored / source:.2f}x their source files ({source / 1e6:.1f} MB)" if source else ""
    print(
        f"images: {manifest['stored_images']} stored for {manifest['num_images']} uses; "
        f"dataset {stored / 1e6:.1f} MB{ratio}"
    )
    print(f"rejects: {json.dumps(manifest['rejects'])} (listed in {args.out / 'rejects.jsonl'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
