"""Decontamination finds planted leaks (a benchmark image and a long question inside training shards)
and nothing else."""

import json

from PIL import Image

from mmkd.bench_item import BenchItem
from mmkd.eval.decontamination import check, markdown
from mmkd.schema import Sample, Turn
from mmkd.shards import ShardWriter

LONG = "Which of the four objects drawn on the left side of the picture is the largest one in the scene?"


def test_planted_image_and_text_leaks_are_found(tmp_path):
    leaked, clean = Image.new("RGB", (48, 48), (10, 200, 30)), Image.new("RGB", (48, 48), (1, 2, 3))
    items = [
        BenchItem("b-0", "x", "x", LONG, "the ball", options=["the ball", "the box"], image=clean),
        BenchItem("b-1", "x", "x", "Is there a kite?", "yes", image=leaked),
        BenchItem("b-2", "x", "x", "Is there a ring?", "no", image=clean),
    ]
    with ShardWriter(tmp_path / "train", "train", {}, samples_per_shard=2) as w:
        shared = leaked.copy()  # two captions of one image: stored once, as one record
        w.write(Sample("t-0", "caption", "train", [shared], text="a kite", caption_tag="Caption0"))
        w.write(Sample("t-0b", "caption", "train", [shared], text="a green kite", caption_tag="Caption0"))
        w.write(Sample("t-1", "vqa", "train", [Image.new("RGB", (48, 48))], turns=[Turn(LONG, "the ball")]))
        w.write(Sample("t-2", "text", "train", text="Is there a kite? yes"))  # short: not a 13-gram
    report = check({"train": tmp_path / "train"}, {("custom", "mine"): items})
    entry = report["benchmarks"]["custom/mine"]
    assert report["scanned"] == {"train": 4}
    assert json.loads((tmp_path / "train" / "manifest.json").read_text())["stored_images"] == 2
    assert entry["items"] == 3 and entry["text_checked"] == 1
    assert entry["image_overlap"] == 1 and entry["image_examples"] == [{"item": "b-1", "sample": "t-0"}]
    assert entry["text_overlap"] == 1 and entry["text_examples"] == [{"item": "b-0", "sample": "t-1"}]
    assert "| custom/mine | 3 | 1 | 1 | 1 |" in markdown(report)
