"""Hostile files: crafted and broken checkpoints, corrupt shards, undecodable images. Each case ends in
one clean message naming the file (and, through the launchers, `<kind> error:` without a traceback);
nothing in a file is ever executed. The other faults (servers, locks, configs) are tested beside their
code; docs/design.md "What survives what" lists every case and its test."""

from __future__ import annotations

import io
import json
import pickle
import re
import shutil
import tarfile
from dataclasses import replace
from pathlib import Path

import pytest

from mmkd.checkpoint import load_checkpoint
from mmkd.config import DataConfig
from mmkd.distributed import DistInfo
from mmkd.errors import CheckpointError, DataError
from mmkd.launch import convert, export
from mmkd.launch import eval as eval_cli
from mmkd.launch._pipeline import run
from mmkd.shards import MANIFEST, _sha256, open_dataset, verify, write_json_atomic
from mmkd.trainer import build_model, train
from tests.conftest import BAD_IMAGES, micro_run_config


@pytest.fixture(scope="module")
def trained(world, tokenizer, tmp_path_factory) -> Path:
    """A finished micro run (4 steps): its final checkpoint is what the cases below break."""
    run_dir = tmp_path_factory.mktemp("run")
    cfg = micro_run_config(world[0], run_dir, budget_samples=64, checkpoint_every=0)
    sources = {n: world[1] / n for n in cfg.recipe.active()}
    return train(cfg, sources, tokenizer, run_dir, DistInfo())


def _copy(checkpoint: Path, tmp_path: Path) -> Path:
    out = tmp_path / "ckpt"
    shutil.copytree(checkpoint, out)
    return out


class Payload:
    """What a crafted pickle would run: here it only writes a file, so the test can see whether it ran."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "ran"))


def test_a_crafted_dcp_index_is_refused_and_never_runs(trained, world, tokenizer, tmp_path):
    ckpt = _copy(trained, tmp_path)
    marker = tmp_path / "pwned"
    (ckpt / ".metadata").write_bytes(pickle.dumps(Payload(marker)))
    # torch's own reader unpickles the index: the hazard is real.
    from torch.distributed.checkpoint import FileSystemReader

    with pytest.raises(AttributeError):  # after the payload ran: it returned no index
        FileSystemReader(ckpt).read_metadata()
    assert marker.read_text() == "ran"
    marker.unlink()
    model = build_model(micro_run_config(world[0], tmp_path / "r"), tokenizer)
    with pytest.raises(CheckpointError, match=r"\.metadata is not a DCP index.*pathlib\.Path\.write_text"):
        load_checkpoint(ckpt, model)
    assert not marker.exists()


def test_an_index_pointing_outside_its_checkpoint_is_refused(trained, world, tokenizer, tmp_path):
    from mmkd.dcp_reader import read_index

    ckpt = _copy(trained, tmp_path)
    index = read_index(ckpt)
    item = next(iter(index.storage_data.values()))
    item.relative_path = "../../elsewhere.distcp"
    (ckpt / ".metadata").write_bytes(pickle.dumps(index))
    model = build_model(micro_run_config(world[0], tmp_path / "r"), tokenizer)
    with pytest.raises(CheckpointError, match=r"points outside its directory \('\.\./\.\./elsewhere"):
        load_checkpoint(ckpt, model)


@pytest.mark.parametrize(
    "damage, message",
    [
        ("truncate", r"__0_0\.distcp is truncated: \d+ bytes, the index needs \d+"),
        ("meta", r"meta\.json is not valid JSON"),
        ("uncommitted", r"not a committed checkpoint \(no COMMITTED marker: its save did not finish\)"),
        ("index", r"\.metadata is not a DCP index this version can read safely"),
    ],
)
def test_broken_checkpoints_are_named_by_eval_and_export(trained, tmp_path, damage, message):
    ckpt = _copy(trained, tmp_path)
    if damage == "truncate":
        data = (ckpt / "__0_0.distcp").read_bytes()
        (ckpt / "__0_0.distcp").write_bytes(data[: len(data) // 2])
    elif damage == "meta":
        (ckpt / "meta.json").write_text('{"step": 4, "config": ')
    elif damage == "uncommitted":
        (ckpt / "COMMITTED").unlink()
    else:
        (ckpt / ".metadata").write_bytes((ckpt / ".metadata").read_bytes()[:100])
    for main, args in ((eval_cli.main, []), (export.main, [f"out={tmp_path / 'hf'}"])):
        with pytest.raises(SystemExit) as exit:
            main([f"checkpoint={ckpt}", *args])
        assert str(exit.value.code).startswith("checkpoint error: ") and exit.value.code.count("\n") == 0
        assert re.search(message, exit.value.code), exit.value.code
    assert not (tmp_path / "hf").exists()


def test_convert_names_a_missing_or_malformed_input(tmp_path, capsys):
    def convert_coco(annotations: Path) -> str | int:
        with pytest.raises(SystemExit) as exit:
            convert.main(
                ["coco", "--annotations", str(annotations), "--images", ".", "--out", str(tmp_path / "o")]
            )
        return exit.value.code

    bad = tmp_path / "captions.json"
    bad.write_text('{"images": [')
    assert (
        convert_coco(bad)
        == f"data error: {bad}: not valid JSON (Expecting value: line 1 column 13 (char 12))"
    )
    bad.write_text("[1, 2]")
    assert convert_coco(bad) == f"data error: {bad}: the top level is a JSON list, expected a dict"
    assert convert_coco(tmp_path / "no.json") == 2  # argparse's usage error
    assert f"--annotations {tmp_path / 'no.json'} does not exist" in capsys.readouterr().err


def _world_copy(world, tmp_path: Path) -> tuple[DataConfig, Path]:
    """The test world in a data root of the test's own, to damage."""
    data, root = world
    mine = DataConfig(**{**data.__dict__, "root": str(tmp_path / "data")})
    shutil.copytree(root, tmp_path / "data" / root.name)
    return mine, tmp_path / "data" / root.name


def test_a_truncated_shard_stops_the_run_before_training(world, tmp_path):
    data, root = _world_copy(world, tmp_path)
    shard = root / "vqa0" / "shard-000001.tar"
    shard.write_bytes(shard.read_bytes()[:5000])
    cfg = micro_run_config(data, tmp_path / "run")
    with pytest.raises(DataError, match=r"vqa0/shard-000001\.tar: its sha256 differs from .*manifest\.json"):
        run(cfg, DistInfo())
    assert not (tmp_path / "run" / "metrics.jsonl").exists()


def test_verification_is_cached_by_size_and_mtime(world, tmp_path, monkeypatch):
    _, root = _world_copy(world, tmp_path)
    ds, cache = open_dataset(root / "caption0"), tmp_path / "verified"
    verify(ds, cache)
    read = []
    monkeypatch.setattr(
        "mmkd.shards._sha256", lambda path, progress=None: read.append(path.name) or _sha256(path)
    )
    verify(ds, cache)
    assert read == []  # unchanged shards are not read again
    shard = root / "caption0" / "shard-000002.tar"
    data = bytearray(shard.read_bytes())
    data[700] ^= 1  # one flipped bit, same size
    shard.write_bytes(bytes(data))
    with pytest.raises(DataError, match=r"caption0/shard-000002\.tar: its sha256 differs"):
        verify(ds, cache)
    assert read == ["shard-000002.tar"]


def _plant_bad_image(src: Path, out: Path, index: int, payload: bytes = BAD_IMAGES["garbage"]) -> str:
    """A copy of dataset `src` whose sample `index` has PNG bytes that do not decode, with a manifest
    that agrees (the hashes match: the bytes were bad when it was built). Returns that sample's id."""
    shutil.copytree(src, out)
    manifest = json.loads((out / MANIFEST).read_text())
    first = out / manifest["shards"][0]["file"]
    with tarfile.open(first) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar.getmembers()]
    pngs = [m.name for m, _ in members if m.name.endswith(".0.png")]
    with tarfile.open(first, "w", format=tarfile.USTAR_FORMAT) as tar:
        for m, data in members:
            data = payload if m.name == pngs[index] else data
            m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
    manifest["shards"][0]["sha256"] = _sha256(first)
    write_json_atomic(out / MANIFEST, manifest)
    return pngs[index].split(".")[0]


@pytest.mark.parametrize("bad", BAD_IMAGES)
def test_undecodable_images_are_skipped_and_named_up_to_the_limit(world, tokenizer, tmp_path, bad):
    data, root = world
    bad_id = _plant_bad_image(root / "caption0", tmp_path / "bad", index=3, payload=BAD_IMAGES[bad])
    verify(open_dataset(tmp_path / "bad"))  # the manifest agrees: only decoding finds it

    def train_on_it(run_dir: Path, limit: int) -> None:
        # A copy: the session's world data is shared by every test.
        cfg = micro_run_config(replace(data, max_bad_samples=limit), run_dir, budget_samples=800)
        cfg.recipe.mixture = {"bad": 1.0}
        run_dir.mkdir()
        train(cfg, {"bad": tmp_path / "bad"}, tokenizer, run_dir, DistInfo())

    train_on_it(tmp_path / "lenient", limit=10)
    skipped = [json.loads(line) for line in (tmp_path / "lenient" / "bad_samples.rank0.jsonl").open()]
    assert 1 <= len(skipped) <= 10
    assert {(b["source"], b["shard"], b["id"]) for b in skipped} == {("bad", "shard-000000.tar", bad_id)}
    with pytest.raises(DataError, match=rf"more than data\.max_bad_samples=0.*\"id\": \"{bad_id}\""):
        train_on_it(tmp_path / "strict", limit=0)


@pytest.mark.parametrize("workers", [0, 1])
def test_a_shard_that_breaks_mid_run_is_named_in_one_line(world, tokenizer, tmp_path, workers):
    """Verified, then truncated under the running loader: the error names the shard, in one line,
    whether it surfaced in this process or in a loader worker."""
    from mmkd.loader import MixtureDataset, make_loader
    from mmkd.templates import Templates

    shutil.copytree(world[1] / "text", tmp_path / "text")
    for shard in (tmp_path / "text").glob("shard-*.tar"):
        shard.write_bytes(shard.read_bytes()[:1500])
    dataset = MixtureDataset(
        {"text": tmp_path / "text"}, {"text": 1.0}, Templates(tokenizer, 9, 160), 0, 4, 48
    )
    with pytest.raises(DataError) as error:
        next(make_loader(dataset, workers))
    message = str(error.value)
    assert "\n" not in message, message
    assert re.search(r"text/shard-00000\d\.tar (is not a readable tar|ended after sample)", message), message


def test_a_manifest_naming_shards_outside_its_dataset_is_refused(world, tmp_path):
    """A dataset from elsewhere whose manifest points at `../outside/x.tar` or an absolute path: named,
    never read; a manifest that is not one is named too."""
    _, root = world
    outside = tmp_path / "outside"
    shutil.copytree(root / "vqa0", outside)  # real shards a hostile manifest could point at
    for file in ("../outside/shard-000000.tar", str(outside / "shard-000000.tar")):
        dataset = tmp_path / "dataset"
        shutil.rmtree(dataset, ignore_errors=True)
        shutil.copytree(root / "vqa0", dataset)
        manifest = json.loads((dataset / MANIFEST).read_text())
        manifest["shards"][0]["file"] = file
        (dataset / MANIFEST).write_text(json.dumps(manifest))
        with pytest.raises(DataError, match=rf"lists shard '{re.escape(file)}', which is not a file inside"):
            open_dataset(dataset)
    (dataset / MANIFEST).write_bytes(b"\xff\xfe not json")
    with pytest.raises(DataError, match=r"manifest\.json is not a dataset manifest \(UnicodeDecodeError"):
        open_dataset(dataset)


@pytest.mark.parametrize(
    ("name", "data", "message"),
    [
        ("../evil.json", b"{}", r"member '\.\./evil\.json' is not a webdataset sample file"),
        ("README", b"hello", r"member 'README' is not a webdataset sample file"),
        ("k.x.png", b"", r"member 'k\.x\.png' is not a webdataset sample file"),
        ("k.json", b"\xff\xfe{", r"record k\.json is not JSON"),
    ],
)
def test_a_hostile_tar_member_is_named_in_one_line(tmp_path, name, data, message):
    from mmkd.shards import iter_shard

    shard = tmp_path / "shard-000000.tar"
    with tarfile.open(shard, "w") as tar:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(DataError, match=message):
        list(iter_shard(shard))


def test_a_run_dir_that_is_a_file_is_named_before_any_build(tmp_path):
    from mmkd.config import ConfigError
    from tests.conftest import small_data

    cfg = micro_run_config(small_data(tmp_path / "data"), tmp_path / "run")
    (tmp_path / "run").write_text("not a directory")
    with pytest.raises(ConfigError, match=r"run_dir='.*run' is a file; a run needs a directory there"):
        run(cfg, DistInfo())
    assert not (tmp_path / "data").exists()


def test_a_source_with_no_samples_is_named_before_training(world, tmp_path):
    """A dataset whose manifest lists no sample (an interrupted export, a filter that kept nothing)
    is named, with what to do, before any step; not a ValueError from the sampler."""
    from mmkd.shards import ShardWriter

    with ShardWriter(tmp_path / "empty", "empty", {"builder": "test"}, samples_per_shard=10):
        pass
    cfg = micro_run_config(world[0], tmp_path / "run")
    cfg.data = replace(cfg.data, sources={"empty": str(tmp_path / "empty")})
    cfg.recipe.mixture = {"caption0": 0.5, "empty": 0.5}
    with pytest.raises(DataError, match=r"source 'empty': .*empty holds no samples .*rebuild it or drop it"):
        run(cfg, DistInfo())
    assert not (tmp_path / "run" / "checkpoints").exists()


def test_a_disk_too_full_for_the_next_checkpoint_stops_before_writing_it(
    world, tokenizer, tmp_path, monkeypatch
):
    """The first checkpoint needs the weights and Adam's moments, the next the largest committed one
    (plus 10%); a disk without that room stops the run in one line naming both sizes, before any byte
    of the new checkpoint is written, and the committed ones stay loadable."""
    import mmkd.checkpoint as checkpoint

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    cfg = micro_run_config(world[0], run_dir, budget_samples=64, checkpoint_every=2)
    sources = {n: world[1] / n for n in cfg.recipe.active()}
    real = shutil.disk_usage
    free = {"bytes": None}  # None: the real disk

    def usage(path):
        u = real(path)
        return u if free["bytes"] is None else u._replace(free=free["bytes"])

    monkeypatch.setattr(checkpoint.shutil, "disk_usage", usage)
    saves = []
    monkeypatch.setattr(checkpoint, "barrier", lambda: saves.append(1))  # counts the saves begun
    free["bytes"] = 1000  # far below any checkpoint
    with pytest.raises(
        CheckpointError, match=r"checkpoints: 0 MiB free, a checkpoint needs about [\d.,]+ MiB"
    ):
        train(cfg, sources, tokenizer, run_dir, DistInfo())
    assert saves == [] and not [p for p in (run_dir / "checkpoints").iterdir()]
    free["bytes"] = None
    final = train(cfg, sources, tokenizer, run_dir, DistInfo())
    size = sum(f.stat().st_size for f in final.rglob("*") if f.is_file())
    free["bytes"] = int(size * 1.05)  # the room of one checkpoint, without the margin
    with pytest.raises(CheckpointError, match=r"free space \(or lower train\.keep_checkpoints\)"):
        checkpoint.check_free_space(run_dir / "checkpoints", None)
    free["bytes"] = int(size * 1.2)
    checkpoint.check_free_space(run_dir / "checkpoints", None)  # enough: no engine needed once one exists
    load_checkpoint(final, build_model(cfg, tokenizer))
