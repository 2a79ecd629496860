import json

import pytest
import webdataset as wds
from PIL import Image

from mmkd.schema import Sample, Turn
from mmkd.shards import ShardWriter, is_complete, iter_shard, open_dataset


def _samples(n):
    out = []
    for i in range(n):
        im = Image.new("RGB", (64, 64), (i, 2 * i, 3 * i))
        if i % 3 == 0:
            out.append(Sample(f"s{i}", "caption", "mix", [im], text=f"caption {i}", caption_tag="Caption0"))
        elif i % 3 == 1:
            out.append(Sample(f"s{i}", "vqa", "mix", [im], turns=[Turn(f"q{i}", f"a{i}"), Turn("q", "a")]))
        else:
            out.append(Sample(f"s{i}", "text", "mix", text=f"text {i}"))
    return out


def test_round_trip_manifest_and_resize(tmp_path):
    samples = _samples(25)
    with ShardWriter(
        tmp_path, "mix", {"builder": "test"}, samples_per_shard=10, image_size=32, tokens_per_image=16
    ) as w:
        for s in samples:
            w.write(s)
    ds = open_dataset(tmp_path)
    m = ds.manifest
    assert m["num_samples"] == 25 and [s["num_samples"] for s in m["shards"]] == [10, 10, 5]
    assert m["kinds"] == {"caption": 9, "text": 8, "vqa": 8}
    assert m["num_images"] == 17 and m["image_tokens_est"] == 17 * 16
    assert m["provenance"] == {"builder": "test"} and len(m["content_hash"]) == 64
    back = list(ds)
    assert [s.id for s in back] == [s.id for s in samples]
    for a, b in zip(samples, back):
        assert (a.text, a.turns, a.kind) == (b.text, b.turns, b.kind)
        assert [im.size for im in b.images] == [(32, 32)] * len(a.images)  # stored pre-resized
    assert not list(tmp_path.glob("*.tmp"))


def test_same_samples_give_same_content_hash(tmp_path):
    hashes = []
    for d in ("a", "b"):
        with ShardWriter(tmp_path / d, "mix", {}, samples_per_shard=7) as w:
            for s in _samples(10):
                w.write(s)
        hashes.append(json.loads((tmp_path / d / "manifest.json").read_text())["content_hash"])
    assert hashes[0] == hashes[1]


def test_crash_mid_build_leaves_nothing_readable(tmp_path):
    with pytest.raises(RuntimeError), ShardWriter(tmp_path, "mix", {}, samples_per_shard=10) as w:
        for s in _samples(15):
            w.write(s)
        raise RuntimeError("builder crashed")
    assert not is_complete(tmp_path)
    assert not list(tmp_path.glob("*.tmp"))  # the half-written shard was removed
    with pytest.raises(FileNotFoundError, match="not a finished dataset"):
        open_dataset(tmp_path)


def test_duplicate_ids_are_rejected(tmp_path):
    with pytest.raises(ValueError, match="duplicate sample id 's0'"), ShardWriter(tmp_path, "mix", {}) as w:
        w.write(_samples(1)[0])
        w.write(_samples(1)[0])


def test_shards_read_by_the_webdataset_library(tmp_path):
    with ShardWriter(tmp_path, "mix", {}, samples_per_shard=100) as w:
        for s in _samples(6):
            w.write(s)
    rows = list(wds.WebDataset(str(tmp_path / "shard-000000.tar"), shardshuffle=False, empty_check=False))
    assert [r["__key__"] for r in rows] == [f"s{i}" for i in range(6)]
    assert json.loads(rows[0]["json"])["text"] == "caption 0" and "0.png" in rows[0]


def test_select_skips_samples(tmp_path):
    with ShardWriter(tmp_path, "mix", {}, samples_per_shard=100) as w:
        for s in _samples(9):
            w.write(s)
    got = [s.id for s in iter_shard(tmp_path / "shard-000000.tar", select=lambda i: i % 2 == 1)]
    assert got == ["s1", "s3", "s5", "s7"]


def test_lazy_images_decode_on_first_use_to_the_same_pixels(tmp_path):
    with ShardWriter(tmp_path, "mix", {}, samples_per_shard=100) as w:
        for s in _samples(3):
            w.write(s)
    shard = tmp_path / "shard-000000.tar"
    eager, lazy = list(iter_shard(shard)), list(iter_shard(shard, lazy=True))
    assert [s.id for s in lazy] == [s.id for s in eager]
    assert all(im._im is None for s in lazy for im in s.images)  # opened, not decoded
    for a, b in zip(eager, lazy):
        assert [im.convert("RGB").tobytes() for im in b.images] == [im.tobytes() for im in a.images]
