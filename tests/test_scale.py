"""SCALE (seed 004) foundations: classical image-quality estimates and the ranking-and-selection stage."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageFilter

from mmkd.annotators import ParseError, make_annotator
from mmkd.config import ConfigError, RunConfig
from mmkd.data_builders import scale, scale_pool
from mmkd.data_builders.annotated import Job
from mmkd.data_builders.engine import read_records
from mmkd.data_builders.image_quality import noise_sigma, scores_1_to_5, sharpness
from mmkd.data_builders.prompts import parse_ratings, parse_task
from mmkd.data_builders.selection import composite, select_top, tie_break
from mmkd.data_builders.sources import SourceError, Sources, check_sources, world_on_request
from mmkd.eval import selection_report
from mmkd.eval.selection_truth import agreement, ranks, spearman
from mmkd.shards import open_dataset
from mmkd.world.render import render
from mmkd.world.scene import Scene, WorldConfig, sample_scene
from mmkd.world.tasks import TAXONOMY, qtype_of
from tests.conftest import REPO, convert, data_overrides, run_python
from tests.fake_openai import FakeOpenAI, prompt_text


def _noisy(image: Image.Image, sigma: float, seed: int = 0) -> Image.Image:
    x = np.asarray(image, dtype=np.float64)
    x = x + np.random.default_rng(seed).normal(0, sigma, (*x.shape[:2], 1))  # grey noise, every channel
    return Image.fromarray(np.clip(x, 0, 255).round().astype(np.uint8))


def test_classical_image_quality_ranks_planted_blur_and_noise():
    cfg = WorldConfig()
    for i in range(5):
        image = render(sample_scene(cfg, "quality", i, layout="objects"), 96)
        blurred = [image.filter(ImageFilter.GaussianBlur(r)) if r else image for r in (0, 0.8, 1.6, 3.2)]
        sharp = [sharpness(b) for b in blurred]
        assert sharp == sorted(sharp, reverse=True) and sharp[0] > 4 * sharp[-1]
        noisy = [_noisy(image, s, seed=i) for s in (0, 4, 8, 16, 32)]
        sigma = [noise_sigma(n) for n in noisy]
        assert sigma == sorted(sigma)
    flat = _noisy(Image.new("RGB", (64, 64), (128, 128, 128)), 10)
    assert abs(noise_sigma(flat) - 10) < 1.0  # in grey levels, where nothing clips
    with pytest.raises(ValueError, match="too small"):
        sharpness(Image.new("RGB", (2, 2)))


def test_scores_are_quintiles_of_the_pool_and_ties_share_one():
    assert scores_1_to_5([float(v) for v in range(10)]) == [1, 1, 2, 2, 3, 3, 4, 4, 5, 5]
    assert scores_1_to_5([5.0, 1.0, 3.0, 3.0, 9.0], higher_is_better=False) == [2, 5, 3, 3, 1]
    assert scores_1_to_5([]) == []


def test_composite_is_the_weighted_mean_and_selection_is_exactly_k_and_deterministic():
    scores = {"a": {"image": 5, "text": 3, "multimodal": 4}, "b": {"image": 1, "text": 5, "multimodal": 3}}
    assert composite(scores, {"image": 1, "text": 1, "multimodal": 1}) == {"a": 4.0, "b": 3.0}
    assert composite(scores, {"image": 3, "text": 1, "multimodal": 0}) == {"a": 4.5, "b": 2.0}
    with pytest.raises(ValueError, match=r"sample 'a' has no \['rarity'\] score"):
        composite(scores, {"rarity": 1})
    with pytest.raises(ConfigError, match="non-negative weights with a positive sum"):
        composite(scores, {"image": 0})
    # 1000 samples, most tied at 4 as in the paper's Fig. 7: top 10% is exactly 100 samples.
    rng = np.random.default_rng(0)
    pool = {
        f"s{i:04d}": float(rng.choice([1, 2, 3, 4, 5], p=[0.05, 0.1, 0.1, 0.65, 0.1])) for i in range(1000)
    }
    top = select_top(pool, 0.1, seed=0)
    fives = {s for s, v in pool.items() if v == 5}
    assert len(top) == 100 and set(top[: len(fives)]) == fives  # every 5 first, then tied 4s
    fours = top[len(fives) :]
    assert all(pool[s] == 4 for s in fours) and fours == sorted(fours, key=lambda s: tie_break(s, 0))
    shuffled = dict(sorted(pool.items(), key=lambda kv: tie_break(kv[0], 99)))
    assert select_top(shuffled, 0.1, seed=0) == top  # the input order does not matter
    assert set(select_top(pool, 0.1, seed=1)) != set(top)  # another seed, another draw of the tied 4s
    assert len(select_top({"x": 1.0}, 0.1, seed=0)) == 1
    with pytest.raises(ConfigError, match=r"selection fraction=0: must be in \(0, 1\]"):
        select_top(pool, 0, seed=0)


def test_the_world_pool_plants_defects_with_their_truth(world, tmp_path):
    cfg = WorldConfig()
    seen: dict[str, int] = {}
    for i in range(400):
        s = scale_pool.pool_sample(cfg, i)
        s.validate()
        m, turn = s.metadata, s.turns[0]
        kind = m["defect"]["kind"]
        seen[kind] = seen.get(kind, 0) + 1
        assert m["subtask"] in TAXONOMY[m["task"]]
        clean = render(Scene.from_json(m["text_scene"]), cfg.image_size)
        if kind == "none":
            assert turn.answer == m["true_answer"] and m["scene"] == m["text_scene"]
            assert np.array_equal(np.asarray(s.images[0]), np.asarray(clean))
        elif kind == "blur":
            assert sharpness(s.images[0]) < sharpness(clean)
        elif kind == "noise":
            assert noise_sigma(s.images[0]) > noise_sigma(clean)
        elif kind == "dark":
            assert np.asarray(s.images[0]).mean() < np.asarray(clean).mean() * 0.6
        elif kind == "mismatch":
            assert m["scene"] != m["text_scene"]
        elif kind == "incomplete":
            assert qtype_of(turn.question) == m["qtype"] and "?" in turn.question  # still reads as its type
        elif kind == "wrong_answer":
            assert turn.answer != m["true_answer"]
    assert set(seen) == {"none", *scale_pool.DEFECTS} and seen["none"] > 200
    assert scale_pool.pool_sample(cfg, 7).turns == scale_pool.pool_sample(cfg, 7).turns  # seeded
    data, root = world
    built = world_on_request("scale_pool", replace(data, sizes={**data.sizes, "scale_pool": 60}), root)
    manifest = open_dataset(built).manifest
    assert manifest["num_samples"] == 60 and sum(manifest["defects"].values()) == 60


def test_the_first_stages_score_the_world_pool_against_its_truth(world, tmp_path):
    """Text quality finds the incomplete questions; the oracle's task prediction is exact; blur and
    noise rank with the planted severity."""
    data, root = world
    built = world_on_request("scale_pool", replace(data, sizes={**data.sizes, "scale_pool": 60}), root)
    cfg = RunConfig(data=data)
    cfg.annotator.cache_dir = str(tmp_path / "cache")
    cfg.build.unit_size = 25
    job = Job(make_annotator(cfg.annotator), cfg.build, open_dataset(built))
    assert scale.build_unimodal(job, tmp_path / "unimodal")["num_records"] == 60
    assert scale.build_tasks(job, tmp_path / "tasks")["num_records"] == 60
    truth = {s.id: s.metadata for s in open_dataset(built).iter(images=False)}
    for row in read_records(tmp_path / "unimodal"):
        m = truth[row["id"]]
        assert (row["completeness"] == 2) == (m["defect"]["kind"] == "incomplete")
        assert all(1 <= row[k] <= 5 for k in scale.TEXT_CRITERIA)
    for row in read_records(tmp_path / "tasks"):
        assert (row["task"], row["subtask"]) == (truth[row["id"]]["task"], truth[row["id"]]["subtask"])
    # Resumable: a finished stage is not redone.
    assert scale.build_tasks(job, tmp_path / "tasks")["num_records"] == 60
    assert scale.build_multimodal(job, tmp_path / "tasks", tmp_path / "mm")["num_records"] == 60
    judged = read_records(tmp_path / "mm")
    planted = [r for r in judged if truth[r["id"]]["defect"]["kind"] in ("mismatch", "wrong_answer")]
    assert len(planted) >= 3 and sum(r["relevance"] == 1 for r in planted) >= len(planted) - 1
    for row in judged:
        m = truth[row["id"]]
        if m["defect"]["kind"] in ("mismatch", "wrong_answer") and row["relevance"] != 3:
            assert row["relevance"] == 1  # a planted mismatch or wrong answer is judged irrelevant
        if m["defect"]["kind"] == "none":
            assert row["relevance"] in (3, 5) and row["clarity"] == 5
        assert row["general_caption"] and row["task_caption"]
    stages = {"unimodal": tmp_path / "unimodal", "tasks": tmp_path / "tasks", "multimodal": tmp_path / "mm"}
    weights = {"image": 1.0, "text": 1.0, "multimodal": 1.0}
    picked = scale.build_selection(job, stages, tmp_path / "scale", "scale", 0.2, 0, weights)
    assert picked["num_samples"] == picked["selection"]["k"] == 12
    kept = picked["selection"]["kept"]
    assert not {"mismatch", "wrong_answer", "incomplete"} & set(kept)  # SCALE keeps none of them
    chosen = list(open_dataset(tmp_path / "scale").iter(images=False))
    assert all(s.metadata["scale"]["mode"] == "scale" for s in chosen)
    rand = scale.build_selection(job, stages, tmp_path / "random", "random", 0.2, 0, weights)
    assert rand["num_samples"] == 12 and sum(rand["selection"]["kept"].values()) == 12
    scale.build_selection(job, stages, tmp_path / "random1", "random", 0.2, 1, weights)
    ids = lambda d: {s.id for s in open_dataset(d).iter(images=False)}  # noqa: E731
    assert ids(tmp_path / "random") != ids(tmp_path / "random1")  # another seed, another draw


def test_a_rated_image_quality_replaces_the_classical_one_and_ranks_the_planted_damage(world, tmp_path):
    """build.scale_iqa=annotator: the image score is the IQA model's rating (here the world's, from
    the exact render of each scene): clean images rate 5, damaged ones less on average, and more
    damage of a kind never rates better on average; the composite image score is that rating."""
    data, root = world
    built = world_on_request("scale_pool", replace(data, sizes={**data.sizes, "scale_pool": 60}), root)
    cfg = RunConfig(data=data)
    cfg.annotator.cache_dir = str(tmp_path / "cache")
    cfg.build.scale_iqa = "annotator"
    job = Job(make_annotator(cfg.annotator), cfg.build, open_dataset(built))
    made = scale.build_unimodal(job, tmp_path / "unimodal")
    assert made["num_records"] == 60 and made["provenance"]["image_quality"] == "annotator"
    assert "scale_image_quality@v1" in json.dumps(made["provenance"])
    truth = {s.id: s.metadata["defect"] for s in open_dataset(built).iter(images=False)}
    rows = read_records(tmp_path / "unimodal")
    by_kind: dict[str, list[tuple[float, int]]] = {}
    for row in rows:
        d = truth[row["id"]]
        assert "sharpness" not in row and 1 <= row["image_quality"] <= 5
        by_kind.setdefault(d["kind"], []).append((d.get("severity", 0.0), row["image_quality"]))
    assert all(q == 5 for k in ("none", "incomplete", "wrong_answer") for _, q in by_kind.get(k, []))
    damaged = [k for k in ("blur", "noise", "dark") if k in by_kind]
    assert len(damaged) == 3 and all(np.mean([q for _, q in by_kind[k]]) < 4.5 for k in damaged)
    for kind in damaged:  # dark: a smaller brightness factor is the stronger damage
        levels = sorted({sev for sev, _ in by_kind[kind]}, reverse=kind == "dark")
        means = [np.mean([q for sev, q in by_kind[kind] if sev == level]) for level in levels]
        assert means == sorted(means, reverse=True), (kind, levels, means)
    scores = scale.pool_scores(rows, [{"id": r["id"], "subtask": "x"} for r in rows],
                               [{"id": r["id"], "clarity": 3, "relevance": 3} for r in rows])  # fmt: skip
    assert all(scores[r["id"]]["image"] == r["image_quality"] for r in rows)
    with pytest.raises(ConfigError, match=r"build\.scale_iqa='qsit': must be classical or annotator"):
        replace(cfg.build, scale_iqa="qsit").validate()


def test_ratings_and_tasks_from_a_served_model_are_checked():
    parse = parse_ratings(scale.TEXT_CRITERIA)
    assert parse('{"informativeness": 4, "complexity": "2", "completeness": 5}') == {
        "informativeness": 4,
        "complexity": 2,
        "completeness": 5,
    }
    with pytest.raises(ParseError, match="'completeness' must be an integer from 1 to 5, got 7"):
        parse('{"informativeness": 4, "complexity": 2, "completeness": 7}')
    task = parse_task(TAXONOMY)
    assert task('{"subtask": "OCR"}') == ("Fine-grained Perception (single-instance)", "OCR")
    with pytest.raises(ParseError, match="'OCR' belongs to"):
        task('{"task": "Logic Reasoning", "subtask": "OCR"}')
    with pytest.raises(ParseError, match="is not in the taxonomy"):
        task('{"task": "Logic Reasoning", "subtask": "Counting"}')


def test_every_selection_shares_the_pools_scoring_stages(world, tmp_path):
    """recipe=scale_top10 and its baselines: the stages are built once per pool, each selection keeps
    build.scale_fraction of it, and a second call builds nothing."""
    data, root = world
    cfg = RunConfig(data=replace(data, root=str(tmp_path), sizes={**data.sizes, "scale_pool": 50}))
    cfg.annotator.cache_dir = str(tmp_path / "cache")
    cfg.build.scale_fraction = 0.2
    sources = Sources(cfg, Path(root))
    picked = {name: sources.dir(name) for name in ("scale", "scale_random", "scale_iqa")}
    assert all(open_dataset(d).manifest["num_samples"] == 10 for d in picked.values())
    annotated = sorted(p.name.split("-")[0] for p in (tmp_path / "annotated").iterdir())
    assert annotated.count("scale_unimodal") == annotated.count("scale_multimodal") == 1
    assert Sources(cfg, Path(root)).dir("scale") == picked["scale"]
    with pytest.raises(ConfigError, match=r"build\.scale_fraction=0\.0: must be in \(0, 1\]"):
        replace(cfg.build, scale_fraction=0.0).validate()
    # Each stage against the planted truth.
    pool = sources.dir("scale_pool")
    stages = {
        s: next((tmp_path / "annotated").glob(f"scale_{s}-*")) for s in ("unimodal", "tasks", "multimodal")
    }
    report = agreement(pool, stages, picked)
    assert report["tasks"]["accuracy"] == 1.0 and report["tasks"]["confusion"] == {}
    assert report["text"]["recall"] == report["text"]["precision"] == 1.0
    assert report["image"]["blur"] < 0 < report["image"]["noise"]  # across images, content weighs in too
    assert report["multimodal"]["recall"] >= 0.8 and report["multimodal"]["precision"] == 1.0
    kept = report["selections"]["scale"]
    assert kept["incomplete"] == kept["blur"] == kept["dark"] == 0 and sum(kept.values()) == pytest.approx(1)
    page = selection_report.write(pool, stages, picked["scale"], tmp_path / "page").read_text()
    assert "10 of 50 scored samples kept." in page and "### Tasks: pool and kept" in page
    thumbs = re.findall(r"!\[(.*?)\]\((.*?\.png)\)", page)
    assert len(thumbs) == 12 and all((tmp_path / "page" / f).exists() for _, f in thumbs)


def test_the_clip_baseline_selects_by_similarity_and_needs_a_clip(world, tmp_path, tiny_clip):
    data, root = world
    cfg = RunConfig(data=replace(data, root=str(tmp_path), sizes={**data.sizes, "scale_pool": 50}))
    cfg.annotator.cache_dir = str(tmp_path / "cache")
    cfg.recipe.sft_fraction, cfg.recipe.sft_mixture = 0.2, {"scale_clip": 1.0}
    with pytest.raises(SourceError, match=r"set build\.scale_clip=clip:<CLIP model directory>"):
        check_sources("scale_clip10", ["scale_clip"], cfg)
    cfg.build.scale_clip = f"clip:{tiny_clip}"
    picked = Sources(cfg, Path(root)).dir("scale_clip")
    chosen = [s.metadata["scale"] for s in open_dataset(picked).iter(images=False)]
    assert len(chosen) == 5 and all(c["mode"] == "clip" for c in chosen)
    scores = {
        r["id"]: r["clip"] for r in read_records(next((tmp_path / "annotated").glob("scale_clip_scores-*")))
    }
    kept = {s.id for s in open_dataset(picked).iter(images=False)}
    assert min(scores[i] for i in kept) >= max(scores[i] for i in scores if i not in kept)  # the most similar


def test_spearman_on_known_orders():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert list(ranks([3.0, 1.0, 3.0])) == [2.5, 1.0, 2.5]


def _llava_fixture(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    records = []
    for i in range(10):
        image = Image.new("RGB", (48, 48), (20 * i, 120, 200))
        if i % 3 == 0:
            image = image.filter(ImageFilter.GaussianBlur(3))
        image.save(root / "images" / f"{i}.png")
        question = "<image>\nWhat colour is the sky?" if i != 4 else "<image>\nWhat colour is the?"
        records.append(
            {"id": f"q{i}", "image": f"{i}.png", "conversations": [
                {"from": "human", "value": question}, {"from": "gpt", "value": "blue" if i != 7 else "a cat"},
            ]}
        )  # fmt: skip
    (root / "llava.json").write_text(json.dumps(records))
    return root


def _judge(body: dict, calls: int):
    text = prompt_text(body)
    if "rating the text" in text:
        complete = 1 if "colour is the?" in text else 5
        return 200, json.dumps({"informativeness": 3, "complexity": 2, "completeness": complete})
    if "Classify the task" in text:
        return (
            200,
            '{"task": "Fine-grained Perception (single-instance)", "subtask": "Attribute Recognition"}',
        )
    if "general caption" in text or "aspects of the image" in text:
        return 200, "A blue sky over a field."
    relevance = 1 if "Answer: a cat" in text else 5
    return 200, json.dumps({"clarity": 4, "relevance": relevance})


def test_a_llava_pool_is_scored_and_selected_through_a_served_model(world, tmp_path):
    data, _ = world
    fixture = _llava_fixture(tmp_path / "llava")
    pool = convert(
        "llava", "--json", str(fixture / "llava.json"), "--images", str(fixture / "images"),
        "--image-size", "48", out=tmp_path / "pool",
    )  # fmt: skip
    asked: dict[str, set[tuple[str, str]]] = {"llm": set(), "vlm": set()}  # (model, prompt) per server

    def on(name):
        def respond(body, calls):
            asked[name].add((body["model"], prompt_text(body).split("\n")[0][:40]))
            return _judge(body, calls)

        return respond

    server, captioner = FakeOpenAI(on("llm")), FakeOpenAI(on("vlm"))
    try:
        build = [
            str(REPO / "launch/build.py"), "recipe=scale_top10", f"+data.sources.pool={pool}",
            "build.inputs.scale=pool", "build.scale_fraction=0.3", "annotator=openai",
            f"annotator.base_url={server.url}", "annotator.model=served",
            f"annotator.cache_dir={tmp_path / 'c'}",
            # Seed 004's split: text rated by an LLM, captions by an MLLM on a server of its own.
            "+annotator.routes.scale_text_quality=text-llm",
            f"+annotator.routes.scale_caption_general=vlm@{captioner.url}",
            f"+annotator.routes.scale_caption_task=vlm@{captioner.url}",
            *data_overrides(data),
        ]  # fmt: skip
        out = run_python(build, timeout=300, cwd=tmp_path)
        assert {m for m, _ in asked["vlm"]} == {"vlm"} and captioner.calls == 2 * 10  # two captions per image
        assert {m for m, _ in asked["llm"]} == {"served", "text-llm"}
        assert all(("rating the text" in q) == (m == "text-llm") for m, q in asked["llm"])
        calls = server.calls
        picked = Path(re.search(r"^scale: (.*)$", out, re.M).group(1))
        kept = {s.id for s in open_dataset(picked).iter(images=False)}
        assert len(kept) == 3 and not {"llava-q4", "llava-q7"} & kept  # incomplete, irrelevant
        assert not {"llava-q0", "llava-q3", "llava-q6", "llava-q9"} & kept  # blurred
        run_python(build, timeout=300, cwd=tmp_path)
        assert server.calls == calls and captioner.calls == 20  # built and cached: nothing is asked again
    finally:
        server.close()
        captioner.close()
