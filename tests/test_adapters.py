"""Source adapters on small fixtures written in the real formats (COCO, VQAv2, LLaVA, img2dataset...).

python -m pytest tests/test_adapters.py -q
"""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from PIL import Image

from mmkd.data_builders.adapters import (
    coco_captions,
    convert,
    describe_inputs,
    img2dataset,
    llava,
    text_records,
    vqav2,
)
from mmkd.data_builders.detection import detection
from mmkd.data_builders.rejects import RejectedRecord, RejectLog
from mmkd.data_builders.world_sources import build_detection
from mmkd.schema import Sample, Turn
from mmkd.shards import open_dataset
from mmkd.world.scene import WorldConfig

REPO = Path(__file__).resolve().parents[1]


def _image(path: Path, size: tuple[int, int], colour=(200, 30, 30)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _image_bytes(fmt: str, size=(24, 16)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (10, 120, 240)).save(buf, format=fmt)
    return buf.getvalue()


def _json(path: Path, obj) -> Path:
    path.write_text(json.dumps(obj))
    return path


def _where(rejects: RejectLog) -> dict[str, str]:
    """reason -> where, for reasons that occur once."""
    return {r.reason: r.where for r in rejects.items}


def _coco(tmp_path: Path) -> tuple[Path, Path]:
    """3 good images with 5 captions, plus a corrupt image, a missing one and two bad annotations."""
    images = tmp_path / "train2017"
    _image(images / "a.png", (40, 30))
    _image(images / "b.jpg", (32, 32))
    _image(images / "c.png", (20, 50))
    images.joinpath("d.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    names = ["a.png", "b.jpg", "c.png", "d.png", "e.png"]
    caps = [
        (1, "A red block."),
        (1, "Something red\non grey. "),
        (2, "A square."),
        (2, "Red again."),
        (3, "Tall."),
    ]
    anns = [{"id": 100 + k, "image_id": im, "caption": c} for k, (im, c) in enumerate(caps)]
    anns += [
        {"id": 200, "image_id": 4, "caption": "corrupt image"},
        {"id": 201, "image_id": 5, "caption": "missing image"},
        {"id": 202, "image_id": 1},
        {"id": 203, "image_id": 2, "caption": "  "},
    ]
    data = {
        "info": {"description": "COCO 2017"},
        "images": [
            {"id": i + 1, "file_name": n, "width": 1, "height": 1, "coco_url": f"http://x/{n}"}
            for i, n in enumerate(names)
        ],
        "annotations": anns,
    }
    return _json(tmp_path / "captions_train2017.json", data), images


def test_coco_captions_one_sample_per_annotation_and_rejects(tmp_path):
    ann, images = _coco(tmp_path)
    rejects = RejectLog()
    samples = list(coco_captions(ann, images, rejects))
    assert [s.id for s in samples] == ["coco-100", "coco-101", "coco-102", "coco-103", "coco-104"]
    assert [s.text for s in samples] == [
        "A red block.",
        "Something red on grey.",
        "A square.",
        "Red again.",
        "Tall.",
    ]
    assert {(s.kind, s.source, s.caption_tag) for s in samples} == {("caption", "coco", "COCO")}
    assert [s.images[0].size for s in samples] == [(40, 30), (40, 30), (32, 32), (32, 32), (20, 50)]
    assert samples[2].metadata == {"annotation_id": 102, "image_id": 2, "file_name": "b.jpg"}
    assert rejects.counts() == {"empty_text": 1, "image_decode": 1, "image_missing": 1, "missing_field": 1}
    where = _where(rejects)
    assert where["missing_field"] == f"{ann}: annotations[7] (id=202, image_id=1)"
    assert where["empty_text"] == f"{ann}: annotations[8] (id=203, image_id=2)"
    assert where["image_decode"] == f"{ann}: images[3] (id=4, file_name=d.png)"
    assert where["image_missing"] == f"{ann}: images[4] (id=5, file_name=e.png)"


def test_a_caption_that_is_not_unicode_and_a_decompression_bomb_are_rejects(tmp_path):
    """JSON's "\\ud800" (a lone surrogate no tokenizer takes) and an image over PIL's pixel limit are
    rejected at their records, by name, like any other bad record; the good caption converts."""
    from tests.conftest import BAD_IMAGES

    images = tmp_path / "train2017"
    _image(images / "a.png", (16, 16))
    images.joinpath("b.png").write_bytes(BAD_IMAGES["bomb"])
    anns = [(1, "Fine."), (1, "Broken \ud800 text."), (2, "A bomb.")]
    data = {
        "images": [
            {"id": i + 1, "file_name": n, "width": 1, "height": 1} for i, n in enumerate(["a.png", "b.png"])
        ],
        "annotations": [{"id": k, "image_id": im, "caption": c} for k, (im, c) in enumerate(anns)],
    }
    ann = _json(tmp_path / "captions.json", data)
    rejects = RejectLog()
    assert [s.text for s in coco_captions(ann, images, rejects)] == ["Fine."]
    assert rejects.counts() == {"image_decode": 1, "schema": 1}
    where = _where(rejects)
    assert where["image_decode"] == f"{ann}: images[1] (id=2, file_name=b.png)"
    assert "lone surrogate" in next(r.detail for r in rejects.items if r.reason == "schema")


def test_strict_raises_at_the_first_bad_record_and_writes_no_manifest(tmp_path):
    ann, images = _coco(tmp_path)
    with pytest.raises(RejectedRecord, match=r"captions_train2017\.json: annotations\[7\].*missing_field"):
        list(coco_captions(ann, images, RejectLog(strict=True)))
    rejects = RejectLog(strict=True)
    with pytest.raises(RejectedRecord):
        convert(coco_captions(ann, images, rejects), tmp_path / "out", "coco", {}, rejects=rejects)
    assert not (tmp_path / "out" / "manifest.json").exists()


def test_convert_round_trips_and_records_rejects(tmp_path):
    ann, images = _coco(tmp_path)
    rejects = RejectLog()
    prov = describe_inputs("coco", {"annotations": ann, "images": images})
    out = tmp_path / "coco_caption"
    manifest = convert(
        coco_captions(ann, images, rejects), out, "coco", prov, samples_per_shard=2, rejects=rejects
    )
    assert manifest["rejects"] == {"empty_text": 1, "image_decode": 1, "image_missing": 1, "missing_field": 1}
    assert manifest["provenance"]["adapter"] == "coco"
    # No model's patch grid is implied by converted data: the image-token estimate is unknown, not 0.
    assert manifest["tokens_per_image"] is None and manifest["image_tokens_est"] is None
    assert manifest["provenance"]["inputs"]["annotations"]["size"] == ann.stat().st_size
    assert manifest["provenance"]["inputs"]["images"] == {"path": str(images.resolve()), "dir": True}
    ds = open_dataset(out)
    assert len(ds) == 5 and len(ds.shard_paths) == 3 and ds.manifest["kinds"] == {"caption": 5}
    back = list(ds)
    assert [s.text for s in back][:2] == ["A red block.", "Something red on grey."]
    assert [s.images[0].size for s in back] == [(40, 30), (40, 30), (32, 32), (32, 32), (20, 50)]
    assert back[0].images[0].getpixel((0, 0)) == (200, 30, 30)
    lines = [json.loads(x) for x in (out / "rejects.jsonl").read_text().splitlines()]
    assert sorted(r["reason"] for r in lines) == [
        "empty_text",
        "image_decode",
        "image_missing",
        "missing_field",
    ]
    assert all(str(ann) in r["where"] for r in lines)


def test_convert_rejects_schema_errors_and_duplicate_ids_and_refuses_empty_output(tmp_path):
    im = Image.new("RGB", (8, 8))
    good = Sample(
        "s-1", "caption", "mine", [im], text="ok", caption_tag="X", provenance={"record": "f.json: [0]"}
    )
    duplicate = Sample(
        "s-1", "caption", "mine", [im], text="again", caption_tag="X", provenance={"record": "f: [1]"}
    )
    untagged = Sample("s-2", "caption", "mine", [im], text="no tag", provenance={"record": "f.json: [2]"})
    rejects = RejectLog()
    manifest = convert([good, duplicate, untagged], tmp_path / "a", "mine", {}, rejects=rejects)
    assert manifest["num_samples"] == 1 and manifest["rejects"] == {"duplicate_id": 1, "schema": 1}
    assert _where(rejects) == {"duplicate_id": "f: [1]", "schema": "f.json: [2]"}
    with pytest.raises(ValueError, match="no usable samples"):
        convert([untagged], tmp_path / "b", "mine", {}, rejects=RejectLog())
    assert not (tmp_path / "b" / "manifest.json").exists() and (tmp_path / "b" / "rejects.jsonl").exists()


def test_vqav2_groups_questions_per_image(tmp_path):
    images = tmp_path / "train2014"
    for i in (1, 2):
        _image(images / f"COCO_train2014_{i:012d}.jpg", (30, 20))
    qs = [
        (1, "What colour is it?"),
        (1, "Is it square?"),
        (2, "How many?"),
        (1, "Unanswered?"),
        (3, "Where?"),
    ]
    qs += [(2, " ")]
    questions = {
        "data_subtype": "train2014",
        "questions": [{"image_id": im, "question": q, "question_id": 10 + k} for k, (im, q) in enumerate(qs)],
    }
    answers = {10: "red", 11: "no", 12: "2", 14: "left", 15: "x"}  # 13 has no annotation
    annotations = {
        "annotations": [
            {
                "question_id": qid,
                "image_id": qs[qid - 10][0],
                "multiple_choice_answer": a,
                "answer_type": "other",
                "answers": [{"answer": a, "answer_confidence": "yes", "answer_id": j} for j in range(1, 4)],
            }
            for qid, a in answers.items()
        ]
    }
    qpath = _json(tmp_path / "v2_OpenEnded_mscoco_train2014_questions.json", questions)
    apath = _json(tmp_path / "v2_mscoco_train2014_annotations.json", annotations)
    rejects = RejectLog()
    samples = list(vqav2(qpath, apath, images, rejects, file_pattern="COCO_{split}_{image_id:012d}.jpg"))
    assert [(s.id, s.kind) for s in samples] == [("vqav2-1", "vqa"), ("vqav2-2", "vqa")]
    assert samples[0].turns == [Turn("What colour is it?", "red"), Turn("Is it square?", "no")]
    assert samples[1].turns == [Turn("How many?", "2")]
    assert samples[0].metadata["question_ids"] == [10, 11]
    assert samples[0].provenance == {"record": f"{qpath}: questions[0, 1] (image_id=1)"}
    assert samples[0].metadata["answers"] == [["red"] * 3, ["no"] * 3]
    assert samples[0].images[0].size == (30, 20)
    assert rejects.counts() == {"empty_text": 1, "image_missing": 1, "missing_answer": 1}
    where = _where(rejects)
    assert where["missing_answer"] == f"{qpath}: questions[3] (question_id=13, image_id=1)"
    assert where["empty_text"] == f"{qpath}: questions[5] (question_id=15, image_id=2)"
    assert where["image_missing"] == f"{qpath}: questions[4] (image_id=3)"


def test_llava_conversations(tmp_path):
    images = tmp_path / "images"
    _image(images / "coco" / "a.png", (16, 12))
    _image(images / "b.png", (10, 10))

    def conv(*pairs):
        return [{"from": who, "value": v} for q, a in pairs for who, v in (("human", q), ("gpt", a))]

    records = [
        {
            "id": "a1",
            "image": "coco/a.png",
            "conversations": conv(("<image>\nWhat is it?", "A block."), ("Colour?", "Red.")),
        },
        {"id": "000/b.v2", "image": ["b.png"], "conversations": conv(("Describe it.\n<image>", "Grey."))},
        {"id": "t", "conversations": conv(("Hi", "Hello"))},
        {"id": "m", "image": ["a.png", "b.png"], "conversations": conv(("<image><image>Compare", "Same"))},
        {
            "id": "h",
            "image": "b.png",
            "conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}],
        },
        {"id": "gone", "image": "missing.jpg", "conversations": conv(("<image>\nQ", "A"))},
    ]
    path = _json(tmp_path / "llava_instruct_150k.json", records)
    rejects = RejectLog()
    samples = list(llava(path, images, rejects))
    assert [s.id for s in samples] == ["llava-a1", "llava-000_b_v2", "llava-t"]
    assert samples[0].turns == [Turn("What is it?", "A block."), Turn("Colour?", "Red.")]
    assert samples[1].turns == [Turn("Describe it.", "Grey.")]
    assert [[im.size for im in s.images] for s in samples] == [[(16, 12)], [(10, 10)], []]
    assert {s.kind for s in samples} == {"vqa"} and samples[2].turns == [Turn("Hi", "Hello")]
    assert rejects.counts() == {"image_missing": 1, "malformed_conversation": 1, "multi_image_unsupported": 1}
    where = _where(rejects)
    assert where["malformed_conversation"] == f"{path}: [4] (id=h)"
    assert where["image_missing"] == f"{path}: [5] (id=gone)"


def _tar(path: Path, members: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def _meta(key: str, caption: str | None, status: str = "success") -> bytes:
    return json.dumps(
        {
            "url": f"http://example.com/{key}.jpg",
            "key": key,
            "status": status,
            "caption": caption,
            "exif": "{}",
        }
    ).encode()


def test_img2dataset_shards(tmp_path):
    shards = tmp_path / "shards"
    shards.mkdir()
    jpg, png, webp = _image_bytes("JPEG"), _image_bytes("PNG", (8, 6)), _image_bytes("WEBP", (5, 5))
    _tar(
        shards / "00000.tar",
        [
            ("000000000.jpg", jpg),
            ("000000000.txt", b"a blue  photo"),
            ("000000000.json", _meta("000000000", "a blue  photo")),
            ("000000001.png", png),
            ("000000001.txt", b"small png"),
            ("000000001.json", _meta("000000001", "small png")),
            ("000000002.jpg", b"\xff\xd8\xff\xe0 truncated"),
            ("000000002.txt", b"broken"),
            ("000000002.json", _meta("000000002", "broken")),
        ],
    )
    _tar(
        shards / "00001.tar",
        [
            ("000010000.jpg", jpg),
            ("000010000.json", _meta("000010000", None)),
            ("000010001.json", _meta("000010001", "x", status="failed_to_download")),
            ("000010002.webp", webp),
            ("000010002.json", _meta("000010002", "caption from json")),
        ],
    )
    (shards / "00002.tar").write_bytes(b"not a tar at all" * 100)
    rejects = RejectLog()
    samples = list(img2dataset(shards, rejects))
    assert [s.id for s in samples] == [
        "img2dataset-000000000",
        "img2dataset-000000001",
        "img2dataset-000010002",
    ]
    assert [s.text for s in samples] == ["a blue photo", "small png", "caption from json"]
    assert [s.images[0].size for s in samples] == [(24, 16), (8, 6), (5, 5)]
    assert {(s.kind, s.caption_tag) for s in samples} == {("caption", "AltText")}
    assert samples[0].metadata == {
        "key": "000000000",
        "url": "http://example.com/000000000.jpg",
        "status": "success",
    }
    assert rejects.counts() == {"download_failed": 1, "image_decode": 1, "missing_field": 1, "tar_read": 1}
    where = _where(rejects)
    assert where["image_decode"] == f"{shards / '00000.tar'}: 000000002"
    assert where["missing_field"] == f"{shards / '00001.tar'}: 000010000"
    assert where["tar_read"] == str(shards / "00002.tar")
    one = list(img2dataset(shards / "00000.tar", RejectLog()))  # a single tar works too
    assert len(one) == 2


def test_detection_from_the_world_builder(tmp_path):
    path = build_detection(WorldConfig(image_size=48), 5, tmp_path / "det")
    data = json.loads(path.read_text())
    names = {c["id"]: c["name"] for c in data["categories"]}
    # One bad box (of a category of its own, so grounding of the rest is unchanged) and one bad relation.
    data["categories"].append({"id": 99, "name": "ghost"})
    data["annotations"].append({"id": 1000, "image_id": 0, "category_id": 99, "bbox": [5, 5, -3, 4]})
    data["relations"].append({"image_id": 0, "subject_id": 0, "predicate": "left of", "object_id": 999})
    _json(path, data)
    rejects = RejectLog()
    samples = {s.metadata["image_id"]: s for s in detection(path, path.parent / "images", rejects)}
    expected_rejected = 0
    for im in data["images"]:
        anns = [a for a in data["annotations"] if a["image_id"] == im["id"] and a["category_id"] != 99]
        cats = [names[a["category_id"]] for a in anns]
        want = [
            Turn(f"Give the box of the {c}.", str([x, y, x + w, y + h]))
            for c, (x, y, w, h) in zip(cats, (a["bbox"] for a in anns))
            if cats.count(c) == 1
        ]
        if not want:
            expected_rejected += 1
            continue
        s = samples[im["id"]]
        assert s.kind == "other" and s.turns == want and s.images[0].size == (48, 48)
        assert [o["category"] for o in s.metadata["objects"]] == cats
        assert s.metadata["objects"][0]["attributes"] == anns[0]["attributes"]
        rels = [r for r in data["relations"] if r["image_id"] == im["id"] and r["object_id"] != 999]
        assert s.metadata["relations"] == [
            {k: r[k] for k in ("subject_id", "predicate", "object_id")} for r in rels
        ]
    assert len(samples) == 5 - expected_rejected
    assert rejects.counts() == {"bad_bbox": 1, "bad_relation": 1} | (
        {"no_groundable_object": expected_rejected} if expected_rejected else {}
    )
    assert (
        _where(rejects)["bad_bbox"]
        == f"{path}: annotations[{len(data['annotations']) - 1}] (id=1000, image_id=0)"
    )


def test_detection_grounds_unique_categories_in_resized_pixels(tmp_path):
    images = tmp_path / "images"
    _image(images / "wide.png", (100, 50))
    _image(images / "dogs.png", (20, 20))
    cats = [{"id": i, "name": n} for i, n in enumerate(["dog", "cat", "bird", "cow"], 1)]
    boxes = [(1, [10, 10, 20, 10]), (1, [50, 5, 10, 10]), (2, [60, 20, 40, 30]), (3, [0, 0, "x", 5])]
    boxes += [(4, [90, 40, 20, 20])]
    anns = [{"id": k, "image_id": 1, "category_id": c, "bbox": b} for k, (c, b) in enumerate(boxes)]
    anns += [{"id": 10 + k, "image_id": 2, "category_id": 1, "bbox": [k, k, 5, 5]} for k in range(2)]
    data = {
        "images": [{"id": 1, "file_name": "wide.png"}, {"id": 2, "file_name": "dogs.png"}],
        "annotations": anns,
        "categories": cats,
    }
    path = _json(tmp_path / "instances_train2017.json", data)
    rejects = RejectLog()
    (sample,) = detection(path, images, rejects, image_size=50)
    assert sample.images[0].size == (50, 50) and sample.metadata["box_frame"] == [50, 50]
    assert sample.turns == [Turn("Give the box of the cat.", "[30, 20, 50, 50]")]
    assert [o["bbox"] for o in sample.metadata["objects"]] == [
        [5, 10, 15, 20],
        [25, 5, 30, 15],
        [30, 20, 50, 50],
    ]
    assert rejects.counts() == {"bad_bbox": 2, "no_groundable_object": 1}
    assert [r.where for r in rejects.items] == [
        f"{path}: annotations[3] (id=3, image_id=1)",
        f"{path}: annotations[4] (id=4, image_id=1)",
        f"{path}: images[1] (id=2, file_name=dogs.png)",
    ]


def test_text_jsonl(tmp_path):
    lines = [
        json.dumps({"text": "Hello world.", "url": "u"}),
        '{"text": "unterminated',
        json.dumps({"text": "   "}),
        json.dumps({"body": "wrong field"}),
        "",
        json.dumps({"text": " Second passage. "}),
        "[1, 2]",
    ]
    path = tmp_path / "wiki.jsonl"
    path.write_text("\n".join(lines) + "\n")
    rejects = RejectLog()
    samples = list(text_records(path, rejects))
    assert [(s.id, s.kind, s.text) for s in samples] == [
        ("text-1", "text", "Hello world."),
        ("text-6", "text", "Second passage."),
    ]
    assert rejects.counts() == {"empty_text": 1, "malformed_json": 2, "missing_field": 1}
    assert [r.where for r in rejects.items] == [f"{path}:2", f"{path}:3", f"{path}:4", f"{path}:7"]
    with pytest.raises(RejectedRecord, match=r"wiki\.jsonl:2: malformed_json"):
        list(text_records(path, RejectLog(strict=True)))


def test_text_parquet(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "books.parquet"
    pq.write_table(pa.table({"content": ["First book.", None, "Second book.", ""], "n": [1, 2, 3, 4]}), path)
    rejects = RejectLog()
    samples = list(text_records(path, rejects, field="content", source="books"))
    assert [(s.id, s.text) for s in samples] == [("books-0", "First book."), ("books-2", "Second book.")]
    assert [(r.where, r.reason) for r in rejects.items] == [
        (f"{path}: row 1", "missing_field"),
        (f"{path}: row 3", "empty_text"),
    ]
    with pytest.raises(ValueError, match="no column 'text'"):
        list(text_records(path, RejectLog()))


def test_cli_converts_coco(tmp_path):
    ann, images = _coco(tmp_path)
    out = tmp_path / "coco_caption"
    cmd = [sys.executable, "launch/convert.py", "coco", "--annotations", str(ann), "--images", str(images)]
    cmd += ["--out", str(out), "--image-size", "16"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    assert f"manifest: {out / 'manifest.json'}" in proc.stdout
    assert '"image_missing": 1' in proc.stdout
    ds = open_dataset(out)
    assert ds.manifest["name"] == "coco_caption" and ds.manifest["rejects"]["image_decode"] == 1
    assert len(ds) == 5 and {s.images[0].size for s in ds} == {(16, 16)}


def test_convert_stores_each_image_once_in_the_format_it_came_in(tmp_path):
    """COCO has several captions per image: each image is stored once, its file's bytes as they are
    (the JPEG stays a JPEG), and reading gives every caption sample with the source's pixels."""
    ann, images = _coco(tmp_path)
    out = tmp_path / "coco"
    cmd = [sys.executable, "launch/convert.py", "coco", "--annotations", str(ann), "--images", str(images)]
    proc = subprocess.run([*cmd, "--out", str(out)], cwd=REPO, capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    sources = {n: images / n for n in ("a.png", "b.jpg", "c.png")}
    size = sum(p.stat().st_size for p in sources.values())
    assert "images: 3 stored for 5 uses; dataset " in proc.stdout
    assert f"their source files ({size / 1e6:.1f} MB)" in proc.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["stored_images"] == 3
    assert manifest["image_bytes"] == manifest["source_image_bytes"] == size
    with tarfile.open(out / manifest["shards"][0]["file"]) as tar:
        stored = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if not m.name.endswith(".json")}
    assert sorted(stored) == ["coco-100.0.png", "coco-102.0.jpg", "coco-104.0.png"]
    assert stored["coco-102.0.jpg"] == sources["b.jpg"].read_bytes()
    samples = list(open_dataset(out))
    assert [s.id for s in samples] == ["coco-100", "coco-101", "coco-102", "coco-103", "coco-104"]
    for s in samples:
        want = Image.open(sources[s.metadata["file_name"]]).convert("RGB")
        assert s.images[0].tobytes() == want.tobytes()
