"""Seed 002: the world's AltText, caption formats through the annotator, concatenation and per-sample
mixing, and the caption metrics (CHAIR, ANA, CapScore, unique entities, token lengths)."""

from __future__ import annotations

import json
import random
import re
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mmkd.config import BuildConfig, ConfigError, RunConfig, to_run_config
from mmkd.data_builders.sources import Sources
from mmkd.eval import caption_metrics as cm
from mmkd.loader import MixtureSampler
from mmkd.shards import open_dataset
from mmkd.world import alttext, assertions, caption_formats, claims, encyclopedia
from mmkd.world.language import join_phrases, object_phrase
from mmkd.world.scene import Scene, SceneObject, WorldConfig, sample_scene, scene_rng
from tests.conftest import REPO, composed, convert, data_overrides, run_python
from tests.fake_openai import FakeOpenAI, prompt_text

SCENE = Scene(
    "s",
    "garden",
    "objects",
    [SceneObject("ball", "red", "large", 0), SceneObject("kite", "green", "small", 8)],
)


def _scenes(n: int, split: str = "alttext") -> list[Scene]:
    cfg = WorldConfig()
    return [sample_scene(cfg, split, i, layout="objects") for i in range(n)]


def test_alttext_is_web_like_junk_wrong_or_about_what_no_pixel_shows():
    cfg = WorldConfig()
    alts, wrong = [], 0
    for i in range(3000):
        scene = sample_scene(cfg, "alttext", i, layout="objects")
        alt = alttext.alt_text(scene, scene_rng(cfg, "alttext-text", i))
        alts.append(alt)
        wrong += bool(set(cm.ObjectVocabulary.world().mentions(alt.text)) - scene.kinds())
    junk = sum(not a.entities for a in alts) / len(alts)
    assert abs(junk - alttext.JUNK_SHARE) < 0.02
    assert 0.05 < wrong / len(alts) < alttext.WRONG_SHARE + 0.02  # a wrong kind; some templates name none
    for a in alts:  # the names it carries are the ones a reader finds
        assert set(a.entities) <= set(alttext.ENTITY.findall(a.text))
    assert len({e for a in alts for e in a.entities}) > 1000  # a heavy tail of rare names
    again = alttext.alt_text(
        sample_scene(cfg, "alttext", 7, layout="objects"), scene_rng(cfg, "alttext-text", 7)
    )
    assert again == alts[7]


def test_error_free_captions_assert_only_truths_and_grow_in_length_and_assertions():
    words, counts = {f: [] for f in caption_formats.FORMATS}, {f: [] for f in caption_formats.FORMATS}
    for i, scene in enumerate(_scenes(200)):
        for fmt in caption_formats.FORMATS:
            text = caption_formats.write(
                fmt, scene, "Photo by Bako Dive at Lake Tiru 2019", 0.0, random.Random(i)
            )
            found = assertions.extract(text)
            assert all(assertions.verify(a, scene) for a in found), (fmt, text)
            words[fmt].append(len(text.split()))
            counts[fmt].append(len(found))
    mean = {f: np.mean(v) for f, v in words.items()}
    assert 8 <= mean["ssc"] < 15 < mean["dsc"] < 60 < mean["dsc_plus"]
    assert np.mean(counts["ssc"]) < np.mean(counts["dsc"]) < np.mean(counts["dsc_plus"])
    afc = caption_formats.write(
        "afc", SCENE, "A red ball at Lake Tiru by Bako Dive. A ball is made of rubber.", 0.0, random.Random(0)
    )
    assert "Lake Tiru" in afc and "Bako Dive" in afc and "A ball is made of rubber." in afc


def test_assertions_are_atomic_and_checked_exactly():
    caption = (
        "A red ball at the top left and a blue kite. The red ball is left of the kite. "
        "The center of the picture is empty."
    )
    found = assertions.extract(caption)
    assert found == [
        "There is a ball.",
        "There is a red ball.",
        "There is a ball at the top left.",
        "There is a kite.",
        "There is a blue kite.",
        "The red ball is left of the kite.",
        "The center of the picture is empty.",
    ]
    verdicts = cm.exact_assertions([caption], [SCENE])
    assert verdicts == [[True, True, True, True, False, True, True]]
    summary = cm.summarize_assertions(verdicts)
    assert summary["ana"][0] == 7 and summary["capscore"][0] == pytest.approx(600 / 7)


def test_encyclopedia_sentences_read_back_as_facts():
    """Every statement template is read as its fact (AFC keeps an AltText's facts through this reader)."""
    rng = random.Random(0)
    for kind in ("ball", "box"):
        passage = encyclopedia.passage(rng, kind)
        facts = {c.args for c in claims.read(passage) if c.kind == "fact"}
        assert facts == {(kind, a, encyclopedia.FACTS[kind][a]) for a in encyclopedia.ATTRIBUTES}


def test_chair_counts_hallucinated_mentions_with_synonyms(tmp_path):
    synonyms = tmp_path / "synonyms.txt"
    synonyms.write_text("person, man, woman, women, people\nhot dog, hotdog\ndog, puppy\nbus\n")
    vocab = cm.ObjectVocabulary.from_synonyms(synonyms)
    captions = ["A man eats a hot dog. A puppy watches him.", "Two women wait for the buses."]
    truths = [{"person", "hot dog"}, {"person", "bus", "dog"}]
    assert vocab.mentions(captions[0]) == ["person", "hot dog", "dog"]  # 'hot dog' is not a dog
    out = cm.chair(captions, truths, vocab)
    assert out["chair_i"][0] == pytest.approx(100 / 5)  # 1 of 5 mentions
    assert out["chair_s"][0] == 50  # 1 of 2 captions
    assert out["chair_s_sentence"][0] == pytest.approx(100 / 3)  # 1 of 3 sentences
    assert out["recall"][0] == pytest.approx(100 * 4 / 5)
    synonyms.write_text("dog, puppy\ncat, puppy\n")
    with pytest.raises(ValueError, match="'puppy' is already a synonym of 'dog'"):
        cm.ObjectVocabulary.from_synonyms(synonyms)


def test_a_planted_hallucination_rate_is_recovered_within_its_interval():
    rate, captions, truths = 0.2, [], []
    for i, scene in enumerate(_scenes(1500, "planted")):
        objects = [o for o, _ in caption_formats.reported(scene, rate, random.Random(i))]
        captions.append(join_phrases([object_phrase(o, False, True, False) for o in objects]) + ".")
        truths.append(scene.kinds())
    _, low, high = cm.chair(captions, truths, cm.ObjectVocabulary.world())["chair_i"]
    assert low <= 100 * rate <= high and high - low < 5


def test_per_sample_mixing_follows_the_ratio_and_concatenation_keeps_the_order(world, tmp_path):
    recipe = to_run_config(composed("recipe=caption_ratio_66_33")).recipe
    weights = recipe.active()
    sampler = MixtureSampler(weights, seed=0)
    draws = Counter(next(sampler) for _ in range(10_000))
    assert all(abs(draws[name] / 10_000 - w) < 0.01 for name, w in weights.items())
    captions = MixtureSampler({k: weights[k] for k in ("dsc", "alttext")}, seed=1)
    assert abs(sum(next(captions) == "dsc" for _ in range(10_000)) / 10_000 - 2 / 3) < 0.01
    data, root = world
    cfg = RunConfig(data=data)
    cfg.annotator.cache_dir = str(tmp_path / "cache")
    sources = Sources(cfg, root)
    alts = {s.id: s.text for s in open_dataset(sources.dir("alttext")).iter(images=False)}
    ssc = {s.provenance["from"][0]: s.text for s in open_dataset(sources.dir("ssc")).iter(images=False)}
    joined = list(open_dataset(sources.dir("alttext_ssc")).iter(images=False))
    assert len(joined) == len(alts) == data.sizes["alttext"]
    for s in joined:
        alt_id, _ = s.provenance["from"]
        assert s.text == f"{alts[alt_id]} {ssc[alt_id]}" and s.caption_tag == "AltText+SSC"
    with pytest.raises(ValueError, match=r"annotator\.claim_error\.dscplus: unknown caption format"):
        type(cfg.annotator)(claim_error={"dscplus": 0.1}).validate()


def test_bad_caption_report_settings_are_named():
    with pytest.raises(ConfigError, match=r"build\.chair_instances and build\.chair_synonyms go together"):
        BuildConfig(chair_instances="instances.json").validate()


def _coco_fixture(root: Path) -> Path:
    (root / "images").mkdir(parents=True)
    for i in (1, 2):
        Image.new("RGB", (64, 48), (200, 30 * i, 40)).save(root / "images" / f"{i}.jpg")
    images = [{"id": i, "file_name": f"{i}.jpg", "width": 64, "height": 48} for i in (1, 2)]
    captions = [
        {"id": 11, "image_id": 1, "caption": "Rex at Brighton beach, 2019"},
        {"id": 21, "image_id": 2, "caption": "IMG_2231.jpg"},
    ]
    (root / "captions.json").write_text(json.dumps({"images": images, "annotations": captions}))
    cats = [{"id": 1, "name": "dog"}, {"id": 2, "name": "frisbee"}, {"id": 3, "name": "person"}]
    anns = [
        {"id": 1, "image_id": 1, "category_id": 1, "bbox": [1, 1, 20, 20]},
        {"id": 2, "image_id": 1, "category_id": 2, "bbox": [30, 5, 10, 10]},
        {"id": 3, "image_id": 2, "category_id": 3, "bbox": [5, 5, 30, 40]},
    ]
    (root / "instances.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats})
    )
    (root / "synonyms.txt").write_text("dog, puppy\nfrisbee\nperson, man, woman\n")
    return root


DENSE = "A brown puppy catches a red frisbee on the sand. A man stands behind the puppy."


def _captioner(body: dict, calls: int):
    text = prompt_text(body)
    if "Dense Synthetic Caption" in text:
        return 200, DENSE
    if "AltText Fusion Caption" in text:
        alt = re.search(r"AltText: (.*)", text).group(1)
        return 200, f"A dog on a beach. The AltText said: {alt}"
    if "Break the following image caption" in text:
        caption = re.search(r"Caption: (.*)", text).group(1)
        return 200, json.dumps([f"There is a {w}." for w in ("puppy", "frisbee", "man") if w in caption])
    statement = re.search(r"Statement: (.*)", text).group(1)
    return 200, "no" if "man" in statement else "yes"


def test_a_coco_fixture_is_recaptioned_and_reported_through_a_served_model(world, tmp_path):
    data, _ = world
    fixture = _coco_fixture(tmp_path / "coco")
    web = convert(
        "coco", "--annotations", str(fixture / "captions.json"), "--images", str(fixture / "images"),
        "--image-size", "48", out=tmp_path / "web",
    )  # fmt: skip
    server = FakeOpenAI(_captioner)
    try:
        build = [
            str(REPO / "launch/build.py"), "recipe=caption_dsc_plus", f"+data.sources.web={web}",
            "build.inputs.dsc_plus=web", "build.inputs.afc=web", "annotator=openai",
            f"annotator.base_url={server.url}", "annotator.model=served-mllm",
            f"annotator.cache_dir={tmp_path / 'cache'}", "+captions=true",
            "build.caption_sources=[web,dsc_plus,afc]", f"build.chair_instances={fixture / 'instances.json'}",
            f"build.chair_synonyms={fixture / 'synonyms.txt'}",
            *data_overrides(data),
        ]  # fmt: skip
        out = run_python(build, timeout=300, cwd=tmp_path)
        calls = server.calls
        path = Path(re.search(r"^dsc_plus: (.*)$", out, re.M).group(1))
        samples = {s.metadata["image_id"]: s for s in open_dataset(path)}
        assert {i: s.text for i, s in samples.items()} == {1: DENSE, 2: DENSE}
        assert (
            samples[1].caption_tag == "DSC+"
            and samples[1].metadata["alttext"] == "Rex at Brighton beach, 2019"
        )
        rows = {
            r["source"]: r
            for r in json.loads((Path(data.root) / "reports/captions-caption_dsc_plus.json").read_text())[
                "rows"
            ]
        }
        dense = rows["dsc_plus"]
        # puppy (dog), frisbee, man (person), puppy: image 1 has no person, image 2 only a person.
        assert dense["chair"]["chair_i"][0] == pytest.approx(100 * (1 + 3) / 8)
        assert dense["chair"]["chair_s"][0] == 100 and dense["chair"]["recall"][0] == 100
        assert dense["annotator"]["ana"][0] == 3 and dense["annotator"]["capscore"][0] == pytest.approx(
            200 / 3
        )
        assert "exact" not in dense  # real images have no scene graph
        afc = {s.metadata["image_id"]: s.text for s in open_dataset(Path(rows["afc"]["path"]))}
        assert afc[1].endswith("Rex at Brighton beach, 2019") and afc[2].endswith("IMG_2231.jpg")
        assert "| dsc_plus | 2 |" in out
        run_python(build, timeout=300, cwd=tmp_path)  # all built and cached: nothing is sent again
        assert server.calls == calls
    finally:
        server.close()
