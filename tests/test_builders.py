"""The annotator builders on the small world: truth of what they write, knowledge density, resumability,
shard parallelism, and a build against a real (local) OpenAI-compatible server with bad replies."""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import pytest

from mmkd.annotators import AnnotatorConfig, make_annotator
from mmkd.config import BuildConfig, RunConfig
from mmkd.data_builders import engine
from mmkd.data_builders.annotated import Job, build_caption, build_pair_caption, build_semantic
from mmkd.data_builders.knowledge import build_knowledge, report
from mmkd.data_builders.pairing import COARSE
from mmkd.data_builders.sources import Sources
from mmkd.schema import IMAGE_MARKER
from mmkd.shards import ShardFile, open_dataset
from mmkd.world import claims
from mmkd.world.scene import Scene
from tests.fake_openai import FakeOpenAI, prompt_text

ANNOTATED = ["caption1", "vqa1", "pair_caption", "interleaved"]


@pytest.fixture(scope="module")
def built(world):
    data, root = world
    cfg = RunConfig(data=data, build=BuildConfig(unit_size=60))
    sources = Sources(cfg, root)
    return sources, {n: sources.dir(n) for n in [*ANNOTATED, "caption0", "vqa0"]}


def _manifest(path: Path) -> dict:
    return json.loads((path / "manifest.json").read_text())


def _scenes(sample) -> list[Scene]:
    m = sample.metadata
    return [Scene.from_json(s) for s in (m["scenes"] if "scenes" in m else [m["scene"]])]


def test_every_vqa1_answer_is_true_of_its_scene_graph(built):
    _, dirs = built
    n_captions = len(open_dataset(dirs["caption1"]))
    assert n_captions == len(open_dataset(dirs["vqa0"]))  # Caption1 describes the VQA images
    m = _manifest(dirs["vqa1"])
    assert m["num_samples"] + sum(m["rejects"].values()) == n_captions
    assert set(m["rejects"]) <= {"qa_count"}  # bare signs give fewer than 5 facts: rejected, counted
    checked = 0
    for s in open_dataset(dirs["vqa1"]).iter(images=False):
        assert 5 <= len(s.turns) <= 15 and s.provenance["prompts"] == {
            "vqa_from_caption": "vqa_from_caption@v1"
        }
        for t in s.turns:
            got = claims.read_qa(t.question, t.answer)
            assert got, t
            for c in got:
                assert claims.holds(c, _scenes(s)) is not False, (t, c)
                checked += 1
    assert checked > 1000


def test_pairs_are_aligned_filtered_and_true(built):
    sources, dirs = built
    m = _manifest(dirs["pair_caption"])
    assert m["kinds"]["pair"] > 0 and m["kinds"]["caption"] > 0  # pair branch + single-caption branch
    assert m["rejects"]["pair_filtered"] > 0  # e.g. two signs: nothing a child could relate
    n_images = len(open_dataset(dirs["caption0"]))
    assert 2 * m["kinds"]["pair"] + m["kinds"]["caption"] == n_images  # every image used exactly once
    semantic = {
        r["id"]: r["semantic"]
        for r in engine.read_records(next(Path(sources.cfg.data.root, "annotated").glob("semantic-*")))
    }
    for s in open_dataset(dirs["pair_caption"]).iter(images=False):
        if s.kind != "pair":
            continue
        a, b = s.provenance["from"]
        assert [semantic[a][k] for k in COARSE] == [semantic[b][k] for k in COARSE]  # coarse alignment
        scenes = _scenes(s)
        read = claims.read(s.text)
        facts = "object" if scenes[0].layout == "objects" else "bar"
        assert {c.image for c in read if c.kind == facts} == {0, 1}
        assert any(c.kind == "compare" for c in read)
        assert all(claims.holds(c, scenes) is not False for c in read), s.text
    assert m["provenance"]["prompts"]["pair_caption"] == "pair_caption@v1"
    assert m["provenance"]["prompt_sources"]["pair_caption"] == "seed 000 A.1.4"


def test_interleaved_places_three_or_more_images(built):
    _, dirs = built
    samples = list(open_dataset(dirs["interleaved"]).iter(images=False))
    assert samples
    for s in samples:
        n = len(s.provenance["from"])
        assert 3 <= n <= 5 and s.text.count(IMAGE_MARKER) == n
        text = s.text
        for k in range(1, n + 1):
            text = text.replace(IMAGE_MARKER, f"<Image {k}>", 1)
        assert all(claims.holds(c, _scenes(s)) is not False for c in claims.read(text))


def test_pair_captions_carry_more_knowledge_than_captions_and_vqa(built, tmp_path):
    sources, dirs = built
    results = {}
    for name in ("caption0", "vqa0", "caption1", "vqa1", "pair_caption"):
        job = Job(sources.annotator, sources.cfg.build, open_dataset(dirs[name]))
        assert build_knowledge(job, tmp_path / name, name) is not None
        results[name] = tmp_path / name
    table = report(results, tmp_path / "kd", reference="vqa0")
    pair = table["pair_caption (pair)"]["mean"]
    for name in ("caption0", "vqa0", "caption1", "vqa1"):
        assert pair > 1.3 * table[name]["mean"], (name, table)
    assert "ratio to vqa0" in (tmp_path / "kd.md").read_text()
    row = json.loads((tmp_path / "caption1" / "part-000000.jsonl").read_text().splitlines()[0])
    assert row["kd"] == len(row["facts"]) + len(row["abstract"]) and row["facts"]


def _shard_digests(path: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.glob("shard-*.tar"))}


def test_killed_build_resumes_to_the_shards_of_an_uninterrupted_build(built, tmp_path, monkeypatch):
    sources, dirs = built
    job = Job(sources.annotator, replace(sources.cfg.build, unit_size=40), open_dataset(dirs["caption0"]))
    semantic = tmp_path / "semantic"
    assert build_semantic(job, semantic) is not None
    clean = build_pair_caption(job, semantic, tmp_path / "clean")

    # Die in the middle of writing the third shard, leaving its temp file as a SIGKILL would.
    added = {"n": 0}
    real_add = ShardFile.add

    def dying_add(self, sample):
        if self.path.name == "shard-000002.tar" and added["n"] == 5:
            raise KeyboardInterrupt
        added["n"] += self.path.name == "shard-000002.tar"
        real_add(self, sample)

    monkeypatch.setattr(ShardFile, "add", dying_add)
    monkeypatch.setattr(ShardFile, "discard", lambda self: None)
    with pytest.raises(KeyboardInterrupt):
        build_pair_caption(job, semantic, tmp_path / "killed")
    killed = tmp_path / "killed"
    assert (killed / "shard-000002.tar.tmp").exists() and not (killed / "manifest.json").exists()
    assert sorted(p.name for p in killed.glob("done-*")) == ["done-000000.json", "done-000001.json"]
    monkeypatch.undo()

    resumed = build_pair_caption(job, semantic, killed)
    assert resumed["content_hash"] == clean["content_hash"]
    assert _shard_digests(killed) == _shard_digests(tmp_path / "clean")
    assert not list(killed.glob("*.tmp"))


def test_parallel_shards_build_what_one_process_builds(built, tmp_path):
    sources, dirs = built
    job = Job(sources.annotator, replace(sources.cfg.build, unit_size=50), open_dataset(dirs["vqa0"]))
    one = build_caption(job, tmp_path / "one")
    first = build_caption(replace(job, build=replace(job.build, shard="0/2")), tmp_path / "two")
    assert first is None  # half the units are someone else's
    second = build_caption(replace(job, build=replace(job.build, shard="1/2")), tmp_path / "two")
    assert second["content_hash"] == one["content_hash"] and second["num_samples"] == one["num_samples"]
    with pytest.raises(ValueError, match=r"build\.shard='2/2'"):
        replace(job.build, shard="2/2").shard_index()


def _captioner(body: dict, _: int) -> tuple:
    """A served MLLM: captions by image bytes; some images draw a refusal, a 500 or an empty answer."""
    text = prompt_text(body)
    assert text.startswith("Please generate an objective and complete English caption")
    url = body["messages"][0]["content"][0]["image_url"]["url"]
    h = int(hashlib.sha256(url.encode()).hexdigest(), 16)
    if h % 7 == 0:
        return 200, "I'm sorry, I cannot describe this image."
    if h % 7 == 1:
        return 500, "internal error"
    if h % 7 == 2:
        return 200, "   "
    return 200, f"A picture with the code {h % 1000}."


def test_openai_build_rejects_bad_replies_counts_them_and_reruns_from_cache(built, tmp_path):
    _, dirs = built
    server = FakeOpenAI(_captioner)
    try:
        cfg = AnnotatorConfig(
            backend="openai",
            model="served-mllm",
            base_url=server.url,
            cache_dir=str(tmp_path / "cache"),
            max_retries=1,
            backoff_s=0.0,
            json_repairs=1,
            concurrency=4,
        )
        # A unit may reject everything here: this test counts rejects (the threshold has its own test).
        build = BuildConfig(unit_size=10, limit=40, max_reject_share=1.0)
        job = Job(make_annotator(cfg), build, open_dataset(dirs["vqa0"]))
        m = build_caption(job, tmp_path / "a")
        reasons = m["rejects"]
        assert set(reasons) <= {"refusal", "http_500", "empty_answer"} and len(reasons) >= 2
        assert m["num_samples"] + sum(reasons.values()) == 40
        listed = [
            json.loads(line) for f in sorted((tmp_path / "a").glob("rejects-*.jsonl")) for line in f.open()
        ]
        assert sorted(r["reason"] for r in listed) == sorted(k for k, v in reasons.items() for _ in range(v))
        assert all("vqa0-" in r["where"] for r in listed)
        assert m["annotator"]["requests"] == 40
        assert m["annotator"].get("retries.http_500", 0) == reasons.get("http_500", 0)
        s = next(iter(open_dataset(tmp_path / "a")))
        assert s.caption_tag == "Caption1" and s.text.startswith("A picture with the code")
        assert s.provenance["annotator"]["model"] == "served-mllm"

        calls = server.calls
        again = Job(make_annotator(cfg), build, open_dataset(dirs["vqa0"]))
        m2 = build_caption(again, tmp_path / "b")
        assert m2["content_hash"] == m["content_hash"]
        # Only the requests that never got a usable reply go to the server again.
        assert server.calls - calls == 2 * reasons.get("http_500", 0)
        assert m2["annotator"]["cache_hits"] >= m["num_samples"]
    finally:
        server.close()


def test_an_image_that_does_not_decode_is_rejected_and_the_build_goes_on(built, tmp_path):
    import io
    import tarfile
    from itertools import islice

    from mmkd.shards import ShardWriter

    sources, dirs = built
    with ShardWriter(tmp_path / "in", "in", {"builder": "test"}, samples_per_shard=100) as w:
        for s in islice(open_dataset(dirs["caption0"]), 40):
            w.write(s)
    shard = tmp_path / "in" / "shard-000000.tar"
    with tarfile.open(shard) as tar:
        members = [(m, tar.extractfile(m).read()) for m in tar]
    broken = next(m.name for m, _ in members if m.name.endswith(".0.png"))
    with tarfile.open(shard, "w", format=tarfile.USTAR_FORMAT) as tar:
        for m, data in members:
            data = b"not a png" if m.name == broken else data
            m.size = len(data)
            tar.addfile(m, io.BytesIO(data))
    with pytest.raises(ValueError, match=r"shard-000000\.tar: image .* does not decode"):
        list(open_dataset(tmp_path / "in"))

    job = Job(sources.annotator, BuildConfig(unit_size=20), open_dataset(tmp_path / "in"))
    assert build_semantic(job, tmp_path / "semantic") is not None
    m = build_pair_caption(job, tmp_path / "semantic", tmp_path / "out")
    semantic = _manifest(tmp_path / "semantic")
    assert semantic["rejects"] == {"image_decode": 1} and semantic["num_records"] == 39
    assert 2 * m["kinds"].get("pair", 0) + m["kinds"].get("caption", 0) == 39
    (reject,) = [json.loads(line) for f in (tmp_path / "semantic").glob("rejects-*") for line in f.open()]
    assert reject["reason"] == "image_decode" and broken.split(".")[0] in reject["where"]


def _openai(server: FakeOpenAI, cache: Path) -> AnnotatorConfig:
    return AnnotatorConfig(
        backend="openai", model="served-mllm", base_url=server.url, cache_dir=str(cache), max_retries=0
    )


def test_a_unit_over_the_reject_threshold_is_not_finished_and_a_fixed_rerun_resumes(built, tmp_path):
    """A server that fails mid-build: the failing unit stops the build naming the commonest reasons,
    no manifest is written, the finished unit stays, and the same command completes once it is fixed."""
    _, dirs = built
    state = {"calls": 0, "broken": True}

    def flaky(body: dict, _: int) -> tuple:
        state["calls"] += 1
        if state["broken"] and state["calls"] > 10:  # unit 0 (10 requests) is answered, then 500s
            return 500, "internal error"
        return 200, f"A caption number {state['calls']}."

    server = FakeOpenAI(flaky)
    try:
        cfg = _openai(server, tmp_path / "cache")
        build = BuildConfig(unit_size=10, limit=30)
        job = Job(make_annotator(cfg), build, open_dataset(dirs["vqa0"]))
        out = tmp_path / "out"
        with pytest.raises(engine.BuildFailed, match=r"unit 1: 10 of 10 records rejected.*http_500 x10"):
            build_caption(job, out)
        assert not (out / "manifest.json").exists() and (out / "done-000000.json").exists()
        assert not (out / "done-000001.json").exists() and (out / "rejects-000001.jsonl").exists()
        finished = (out / "done-000000.json").stat().st_mtime_ns
        state["broken"] = False
        m = build_caption(Job(make_annotator(cfg), build, open_dataset(dirs["vqa0"])), out)
        assert m["num_samples"] == 30 and (out / "done-000000.json").stat().st_mtime_ns == finished
    finally:
        server.close()


def test_a_build_whose_every_parse_fails_is_not_finished(built, tmp_path):
    """Semantic analysis against a model that never answers in JSON: the build stops at the first unit."""
    _, dirs = built
    server = FakeOpenAI(lambda body, _: (200, "The image shows a scene."))
    try:
        job = Job(
            make_annotator(_openai(server, tmp_path / "cache")),
            BuildConfig(unit_size=10, limit=20),
            open_dataset(dirs["caption0"]),
        )
        with pytest.raises(engine.BuildFailed, match=r"unit 0: 10 of 10 records rejected.*malformed_json"):
            build_semantic(job, tmp_path / "semantic")
        # Ten records, each asked once and repaired twice (annotator.json_repairs), then no more.
        assert server.calls == 30 and not (tmp_path / "semantic" / "manifest.json").exists()
    finally:
        server.close()


def test_every_annotated_source_has_its_builder_and_every_builder_its_description():
    """The registry of builders (data_builders/sources.py, BUILDERS) and the sources a recipe may name
    (ANNOTATED_SOURCES, whose descriptions the unknown-source error lists) are the same set."""
    from mmkd.data_builders.sources import ANNOTATED_SOURCES, BUILDERS

    assert set(BUILDERS) == set(ANNOTATED_SOURCES)
