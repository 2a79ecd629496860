"""MMGIC (seed 003): the templates and fitting loop on hand-made documents, how both models encode a
document, label descriptions, and the builder on the world (oracle) and on a COCO-format detection
fixture through a served model (a local OpenAI-compatible server)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from PIL import Image

from mmkd import mmgic_template
from mmkd.annotators.world_oracle import LABEL_FIELDS
from mmkd.config import BuildConfig, EvalConfig, RecipeConfig, RunConfig
from mmkd.data_builders.mmgic import given_descriptions
from mmkd.data_builders.prompts import PROMPTS, parse_label_description
from mmkd.data_builders.sources import Sources
from mmkd.discrete_templates import DiscreteTemplates
from mmkd.errors import DataError
from mmkd.model.config import ModelConfig
from mmkd.schema import IMAGE_MARKER, Sample
from mmkd.shards import open_dataset
from mmkd.templates import IGNORE, Templates
from mmkd.world import glossary
from tests.conftest import REPO, SMALL_SIZES, composed, convert, data_overrides, run_python
from tests.fake_openai import FakeOpenAI, prompt_text

DOC = {
    "caption": "a red ball and a box",
    "objects": [
        {"label": "ball", "description": "A round toy."},
        {"label": "box", "description": "A crate."},
    ],
    "attributes": [{"label": "red", "objects": ["ball"], "description": "The colour of blood."}],
    "relations": [{"label": "left of", "pairs": [["ball", "box"]], "description": "Further left."}],
    "regions": [
        {"location": "Top Left", "labels": ["ball"]},
        {"location": "Center", "labels": ["box", "ball"]},
    ],
}


def _text(pieces) -> str:
    return "".join(p if isinstance(p, str) else f"<{p}>" for p in pieces)


def test_image_first_template_follows_table_23():
    pieces = mmgic_template.render(DOC, True, True, [1, 0], "cldr")
    assert _text(pieces) == (
        "# Detailed Analysis of Objects in the Image\n\n"
        "Image: <0>\n"
        "Caption: a red ball and a box\n"
        "Objects and their descriptions:\n- ball: A round toy.\n- box: A crate.\n"
        "Attributes of objects and their descriptions:\n- red ball: The colour of blood.\n"
        "Relationships between objects and their descriptions:\n- left of ball-box: Further left.\n\n"
        "## Overview of Selected Object Regions\n\n"
        "### Overview of a Selected Object Region\nRegion: <2>\n"
        "Location of the selected region in the image: Center\nObjects:\n- box\n- ball\n\n"
        "### Overview of a Selected Object Region\nRegion: <1>\n"
        "Location of the selected region in the image: Top Left\nObjects:\n- ball"
    )


def test_text_first_template_follows_table_24():
    pieces = mmgic_template.render(DOC, False, False, [0], "cldr")
    assert _text(pieces) == (
        "# Detailed Analysis of Objects in the Image\n\n"
        "Objects:\n- ball\n- box\n"
        "Attributes of objects:\n- red ball\n"
        "Relationships between objects:\n- left of ball-box\n"
        "Caption: a red ball and a box\n"
        "Image: <0>\n\n"
        "## Overview of Selected Object Regions\n\n"
        "### Overview of a Selected Object Region\n"
        "Location of the selected region in the image: Top Left\nObjects:\n- ball\nRegion: <1>"
    )


def test_ic_documents_have_no_title_and_share_the_image_caption_cue():
    doc = {"caption": "a dog", "header": False}
    assert _text(mmgic_template.render(doc, True, True, [], "cldr")) == "Image: <0>\nCaption: a dog"
    assert _text(mmgic_template.render(doc, False, True, [], "cldr")) == "Caption: a dog\nImage: <0>"


def test_a_caption_prompt_places_the_image_and_is_validated(tokenizer):
    t = Templates(tokenizer, image_tokens=3, max_seq_len=64, caption_prompt="Image: <image>\nCaption:")
    ids = t.prompt_ids("", 1)
    tok = tokenizer
    assert ids == [tok.bos_id, *tok.encode("Image: "), *[tok.image_id] * 3, *tok.encode("\nCaption:")]
    assert Templates(tokenizer, 3, 64).prompt_ids("", 1) == [tok.bos_id, *[tok.image_id] * 3]
    assert t.prompt_ids("Is it red?", 1)[4:] == tok.encode(
        "Question: Is it red?\nAnswer:"
    )  # questions keep theirs
    from mmkd.config import ConfigError

    # A run's eval builds its templates with the prompt of its config, for both families.
    from mmkd.trainer import templates_for

    cfg = RunConfig(
        recipe=RecipeConfig(mixture={"caption0": 1.0}), eval=EvalConfig(caption_prompt="A <image> B")
    )
    assert templates_for(cfg, tokenizer).caption_prompt == "A <image> B"
    cfg.model = ModelConfig(family="discrete", tie_embeddings=False, codebook_size=8, visual_grid=2)
    assert templates_for(cfg, tokenizer).caption_prompt == "A <image> B"
    with pytest.raises(ConfigError, match="must hold <image> exactly once"):
        RunConfig(
            recipe=RecipeConfig(mixture={"caption0": 1.0}), eval=EvalConfig(caption_prompt="Caption:")
        ).validate()


@pytest.mark.parametrize("parts", mmgic_template.PARTS)
def test_parts_select_the_recipes_annotations(parts):
    text = _text(mmgic_template.render(DOC, True, True, [0, 1], parts))
    assert "Caption: a red ball and a box" in text
    assert ("- ball" in text) == ("l" in parts)
    assert ("A round toy." in text) == ("d" in parts)
    assert ("Region: <1>" in text) == ("r" in parts)


def test_fitting_drops_regions_one_at_a_time_then_descriptions_then_gives_the_shortest():
    length = lambda pieces: len(_text(pieces))  # noqa: E731
    variants = {k: length(mmgic_template.render(DOC, True, True, [1, 0][:k], "cldr")) for k in range(3)}
    bare = length(mmgic_template.render(DOC, True, False, [], "cldr"))
    assert bare < variants[0] < variants[1] < variants[2]

    def fit(max_len, descriptions=True):
        return _text(mmgic_template.fit(DOC, True, descriptions, [1, 0], "cldr", length, max_len))

    assert fit(variants[2]).count("Region:") == 2
    one = fit(variants[2] - 1)
    assert one.count("Region:") == 1 and "Region: <2>" in one and "A round toy." in one  # order's last goes
    assert "Region:" not in fit(variants[1] - 1) and "A round toy." in fit(variants[1] - 1)
    assert fit(variants[0] - 1) == _text(mmgic_template.render(DOC, True, False, [], "cldr"))
    assert fit(bare - 1) == fit(variants[0] - 1)  # nothing fits: the shortest, cut later like any sample
    # Without descriptions drawn, no variant has them.
    assert "A round toy." not in fit(10_000, descriptions=False)


def _sample(n_regions: int = 2) -> Sample:
    colours = ["red", "green", "blue"]
    images = [Image.new("RGB", (16, 16), c) for c in colours[: 1 + n_regions]]
    text = "".join(IMAGE_MARKER for _ in images)
    return Sample("mmgic-x1", "mmgic", "mmgic", images, text=text, metadata={"mmgic": DOC})


def test_the_dense_model_reads_images_and_regions_in_document_order_and_learns_the_text(tokenizer):
    t = Templates(tokenizer, image_tokens=4, max_seq_len=2048, seed=3)
    enc = t.encode(_sample())
    rng = t.draws(_sample())
    image_first = rng.random() < 0.5
    descriptions, order = mmgic_template.draw(DOC, rng)
    want = mmgic_template.render(DOC, image_first, descriptions, order, "cldr")
    colour = {0: (255, 0, 0), 1: (0, 128, 0), 2: (0, 0, 255)}
    assert [im.getpixel((0, 0)) for im in enc.images] == [colour[p] for p in want if isinstance(p, int)]
    image_positions = {i for s, e in enc.spans for i in range(s, e)}
    assert all(enc.labels[i] == IGNORE for i in image_positions)
    text_positions = [i for i in range(1, len(enc)) if i not in image_positions]
    assert all(enc.labels[i] == enc.input_ids[i] for i in text_positions)
    # The draws are the run seed's and the sample's: the same every time, another seed may differ.
    assert t.encode(_sample()).input_ids == enc.input_ids
    seeds = {tuple(Templates(tokenizer, 4, 2048, seed=s).encode(_sample()).input_ids) for s in range(8)}
    assert len(seeds) > 1


@pytest.mark.parametrize("image_first", [True, False])
def test_the_discrete_model_conditions_text_on_images_or_images_on_text(tokenizer, image_first):
    cfg = ModelConfig(
        family="discrete",
        tie_embeddings=False,
        codebook_size=8,
        visual_grid=2,
        max_seq_len=2048,
        mask_prob=1.0,
        image_first_prob=1.0 if image_first else 0.0,
    ).validate()
    t = DiscreteTemplates(tokenizer, cfg, seed=0)
    sample = _sample()
    sample.metadata["visual_ids"] = [[1, 2, 3, 4]] * 3
    enc = t.encode(sample)
    assert len(enc.spans) == 3
    inside = {i for s, e in enc.spans for i in range(s + 1, e - 1)}
    text = [i for i in range(1, len(enc) - 1) if i not in {j for s, e in enc.spans for j in range(s, e)}]
    visual_learned = any(enc.labels[i] != IGNORE for i in inside)
    text_learned = any(enc.labels[i] != IGNORE for i in text)
    assert (visual_learned, text_learned) == ((False, True) if image_first else (True, False))


def test_a_dropped_text_first_document_is_its_image_alone_and_image_prompts_read_as_documents(tokenizer):
    def templates(caption_dropout: float) -> DiscreteTemplates:
        shape = {"codebook_size": 8, "visual_grid": 2, "max_seq_len": 2048, "image_first_prob": 0.0}
        cfg = ModelConfig(family="discrete", tie_embeddings=False, caption_dropout=caption_dropout, **shape)
        return DiscreteTemplates(
            tokenizer, cfg.validate(), 0, image_prompt="Caption: <caption>\nImage: <image>"
        )

    t = templates(caption_dropout=1.0)
    sample = _sample()
    sample.metadata["visual_ids"] = [[1, 2, 3, 4]] * 3
    enc = t.encode(sample)
    codes = [c + t.vocab.first_code for c in (1, 2, 3, 4)]
    # Classifier-free guidance's unconditional branch: <bos> [IMG] codes [/IMG] <eos>, the codes learnt.
    assert enc.input_ids == [tokenizer.bos_id, t.vocab.img, *codes, t.vocab.end_img, tokenizer.eos_id]
    assert enc.labels[2:6] == codes and t.generation_prompt("") == enc.input_ids[:2]
    # Not dropped, an IC document (no title, one caption) reads up to its image as the eval's prompt.
    t = templates(caption_dropout=0.0)
    ic = Sample("ic-1", "mmgic", "ic", sample.images[:1], text=IMAGE_MARKER)
    ic.metadata = {"mmgic": {"caption": "a red ball", "header": False}, "visual_ids": [[1, 2, 3, 4]]}
    prompt = t.generation_prompt("a red ball")
    assert prompt == [tokenizer.bos_id, *tokenizer.encode("Caption: a red ball\nImage: "), t.vocab.img]
    assert t.encode(ic).input_ids == [*prompt, *codes, t.vocab.end_img, tokenizer.eos_id]
    # Each recipe draws after what its own text-first documents read before their image: recipe=ic
    # as the IC document above, recipe=mmgic_c as a C document (Table 1's first recipe), title and all.
    assert _run_config("recipe=ic").image_prompt() == "Caption: <caption>\nImage: <image>"
    image_prompt = _run_config("recipe=mmgic_c").image_prompt()
    t = DiscreteTemplates(tokenizer, t.cfg, 0, mmgic_parts="c", image_prompt=image_prompt)
    doc = Sample("mmgic-1", "mmgic", "mmgic", sample.images[:1], text=IMAGE_MARKER)
    doc.metadata = {"mmgic": DOC, "visual_ids": [[1, 2, 3, 4]]}
    prompt = t.generation_prompt(DOC["caption"])
    assert t.encode(doc).input_ids == [*prompt, *codes, t.vocab.end_img, tokenizer.eos_id]


def _run_config(*overrides: str) -> RunConfig:
    from mmkd.config import to_run_config

    return to_run_config(composed("model=discrete_micro", *overrides))


def test_the_eval_prompt_overrides_the_recipes_and_plain_text_first_stays_the_default(tokenizer):
    from mmkd.trainer import templates_for

    assert _run_config("recipe=baseline").image_prompt() == ""
    ic = templates_for(_run_config("recipe=ic_part"), tokenizer)  # what the run's generation eval reads
    assert ic.generation_prompt("x") == [
        tokenizer.bos_id,
        *tokenizer.encode("Caption: x\nImage: "),
        ic.vocab.img,
    ]
    assert _run_config("recipe=mmgic_plus_ic", "eval.image_prompt=ic").image_prompt().startswith("Caption:")
    forced = _run_config("recipe=mmgic_cldr", "eval.image_prompt='<caption><image>'")
    assert forced.image_prompt() == "<caption><image>"


@pytest.mark.parametrize(
    "prompt", ["Caption: <caption>", "Caption: <image>\nImage: <caption>", "<caption> <caption> <image>"]
)
def test_an_image_prompt_must_place_the_text_once_and_end_in_the_image(prompt):
    from mmkd.config import ConfigError

    cfg = RunConfig(recipe=RecipeConfig(mixture={"caption0": 1.0}), eval=EvalConfig(image_prompt=prompt))
    with pytest.raises(ConfigError, match=r"eval\.image_prompt=.*must hold <caption> once .* end in <image>"):
        cfg.validate()
    cfg = RunConfig(recipe=RecipeConfig(mixture={"caption0": 1.0}, image_prompt=prompt))
    with pytest.raises(
        ConfigError, match=r"recipe\.image_prompt=.*or name a document kind \['mmgic', 'ic'\]"
    ):
        cfg.validate()


def test_label_descriptions_parse_and_the_oracle_knows_only_the_worlds_labels():
    import random

    assert parse_label_description("Category Description: A round toy, often red.") == (
        "A round toy, often red.",
        "",
    )
    assert parse_label_description("Invalid. It is a typo, not an object.") == (
        None,
        "It is a typo, not an object",
    )
    rng = random.Random(0)
    assert glossary.describe("object", "ball", rng, 0.0, 0.0).startswith(
        "A ball is drawn as a filled round disc"
    )
    assert glossary.describe("object", "blue", rng, 0.0, 0.0).startswith("Invalid.")
    assert glossary.describe("attribute", "large", rng, 0.0, 0.0).startswith("Large is one of the two sizes")
    assert "further to the left" in glossary.describe("relation", "left of", rng, 0.0, 0.0)
    # Hallucination swaps facts: some description of a ball then says what another kind is made of.
    noisy = {glossary.describe("object", "ball", random.Random(i), 0.0, 1.0) for i in range(5)}
    assert all("made of rubber" not in d for d in noisy)
    # The prompts are the paper's, with a system message, and the oracle reads the field they fill.
    for name, field in LABEL_FIELDS.items():
        assert "{" + field + "}" in PROMPTS[name].text and PROMPTS[name].system.startswith("# Instructions")
        assert 'generate "Invalid." as its description' in PROMPTS[name].system


def test_the_world_build_writes_valid_documents_of_true_labels(world, tmp_path):
    data, root = world
    counts = {"min_object_count": 1, "min_attribute_count": 1, "min_relation_count": 1}
    cfg = RunConfig(data=data, build=BuildConfig(unit_size=8, **counts))
    out = Sources(cfg, root).dir("mmgic")
    ds = open_dataset(out)
    manifest = ds.manifest
    detection = open_dataset(root / "detection")
    assert manifest["kinds"] == {"mmgic": manifest["num_samples"]}
    assert 0 < manifest["num_samples"] <= detection.manifest["num_samples"] <= SMALL_SIZES["detection"]
    by_id = {s.id: s for s in detection.iter(images=False)}
    for s in ds.iter():
        doc, src = s.metadata["mmgic"], by_id[s.id.removeprefix("mmgic-")]
        assert len(s.images) == 1 + len(doc["regions"]) and s.text.count(IMAGE_MARKER) == len(s.images)
        assert all(im.size == s.images[0].size for im in s.images)
        kinds = [o["category"] for o in src.metadata["objects"]]
        assert [o["label"] for o in doc["objects"]] == list(dict.fromkeys(kinds))
        assert all(set(r["labels"]) <= set(kinds) for r in doc["regions"])
        attributes = {a for o in src.metadata["objects"] for a in o["attributes"]}
        assert {a["label"] for a in doc["attributes"]} == attributes
        assert doc["caption"] == src.metadata["captions"][0]
        assert all(
            re.fullmatch(r"(Top|Middle|Bottom) (Left|Middle|Right)|Center", r["location"])
            for r in doc["regions"]
        )
    # The documents name the labels build they read; a second call finds everything built.
    labels = Path(manifest["provenance"]["labels"]["path"])
    assert (labels / "manifest.json").exists() and Sources(cfg, root).dir("mmgic") == out


def _coco_fixture(root: Path) -> Path:
    """Six images in COCO format: two usable, and one of each thing F.2 cleans away."""
    images_dir = root / "images"
    images_dir.mkdir(parents=True)
    sizes = {1: (320, 240), 2: (300, 300), 3: (200, 150), 4: (900, 240), 5: (240, 240)}
    for i, (w, h) in sizes.items():
        Image.new("RGB", (w, h), (40 * i, 90, 160)).save(images_dir / f"{i}.jpg")
    cats = [{"id": 1, "name": "dog"}, {"id": 2, "name": "frisbee"}, {"id": 3, "name": "qwzx"}]
    anns = [
        {"id": 10, "image_id": 1, "category_id": 1, "bbox": [20, 30, 100, 120], "attributes": ["brown"]},
        {"id": 11, "image_id": 1, "category_id": 2, "bbox": [180, 40, 60, 50], "attributes": ["red"]},
        {"id": 12, "image_id": 1, "category_id": 3, "bbox": [150, 150, 60, 60]},
        {"id": 20, "image_id": 2, "category_id": 1, "bbox": [50, 50, 120, 120], "attributes": ["brown"]},
        {"id": 21, "image_id": 2, "category_id": 2, "bbox": [400, 10, 30, 30]},  # outside the image
        {"id": 30, "image_id": 3, "category_id": 1, "bbox": [10, 10, 50, 50]},  # image too small
        {"id": 40, "image_id": 4, "category_id": 1, "bbox": [10, 10, 50, 50]},  # aspect ratio 3.75
        {"id": 50, "image_id": 5, "category_id": 3, "bbox": [10, 10, 80, 80]},  # only an invalid label
    ]
    relations = [
        {"image_id": 1, "subject_id": 10, "predicate": "chasing", "object_id": 11},
        {"image_id": 1, "subject_id": 12, "predicate": "near", "object_id": 10},
    ]
    images = [{"id": i, "file_name": f"{i}.jpg", "width": w, "height": h} for i, (w, h) in sizes.items()]
    (root / "instances.json").write_text(
        json.dumps({"images": images, "annotations": anns, "categories": cats, "relations": relations})
    )
    # Image 2 has no caption: the builder synthesises one (F.4).
    captions = [{"id": i, "image_id": i, "caption": f"a photo number {i} of a dog"} for i in sizes if i != 2]
    (root / "captions.json").write_text(json.dumps({"images": images, "annotations": captions}))
    # Localized Narratives as Open Images ships them: image 1 by its file stem, then three rejects.
    narrative = {"dataset_id": "open_images", "image_id": "1", "annotator_id": 7, "traces": [[]]}
    lines = [
        json.dumps(narrative | {"caption": "In this  picture we can see a dog and a frisbee."}),
        "{not json",
        json.dumps(narrative | {"image_id": "99", "caption": "an image the file does not list"}),
        json.dumps({"image_id": "2"}),
    ]
    (root / "narratives.jsonl").write_text("\n".join(lines) + "\n")
    return root


CANDIDATES = ["a brown dog sitting on green grass outside", "a dog", "a dog with a frisbee in a park"]


def _describer(body: dict, calls: int):
    text = prompt_text(body)
    if "different short captions" in text:
        return 200, json.dumps(CANDIDATES)
    label = re.search(r"Category Label: (.*)", text).group(1).strip()
    if label == "qwzx":
        return 200, "Invalid. 'qwzx' is not a word."
    return 200, f"The {label} is a thing that people see in pictures every day."


def test_a_coco_detection_fixture_builds_through_a_served_model(world, tmp_path, tiny_clip):
    data, _ = world
    fixture = _coco_fixture(tmp_path / "coco")
    converted = convert(
        "detection", "--instances", str(fixture / "instances.json"), "--images", str(fixture / "images"),
        "--captions", str(fixture / "captions.json"), "--image-size", "64", "--min-side", "224",
        "--max-aspect", "3.0", "--narratives", str(fixture / "narratives.jsonl"), out=tmp_path / "detection",
    )  # fmt: skip
    rejects = [json.loads(line)["reason"] for line in (converted / "rejects.jsonl").open()]
    assert sorted(rejects) == [
        "bad_aspect_ratio", "bad_bbox", "image_too_small", "malformed_json", "missing_field", "unknown_image"
    ]  # fmt: skip
    given = tmp_path / "descriptions.json"  # as a dataset ships them (V3Det): not asked for
    given.write_text(json.dumps({"object": {"dog": "A  dog, as the dataset describes it."}}))
    server = FakeOpenAI(_describer)
    try:
        build = [
            str(REPO / "launch/build.py"), "recipe=mmgic_cldr", f"+data.sources.detection={converted}",
            f"build.label_descriptions={given}",
            "annotator=openai", f"annotator.base_url={server.url}", "annotator.model=served-llm",
            f"annotator.cache_dir={tmp_path / 'cache'}", "build.min_object_count=1",
            "build.min_attribute_count=2", "build.min_relation_count=1", "build.max_reject_share=1.0",
            f"build.caption_scorer=clip:{tiny_clip}",
            "build.caption_min_score=1.0",  # no candidate reaches it: every attempt is made
            *data_overrides(data),
        ]  # fmt: skip
        out = run_python(build, timeout=300, cwd=tmp_path)
        calls = server.calls
        # frisbee, qwzx (the dog's is given); brown (red is rare); chasing, near; image 2's caption
        # candidates, each attempt
        assert calls == 5 + 10
        path = Path(re.search(r"^mmgic: (.*)$", out, re.M).group(1))
        samples = {s.metadata["image_id"]: s for s in open_dataset(path)}
        assert sorted(samples) == [1, 2]  # image 5 held only the invalid label
        # No candidate qualifies: ten attempts, then the best-scoring (F.4 step 4).
        assert samples[2].metadata["caption_synthesized"] and not samples[1].metadata["caption_synthesized"]
        assert samples[2].metadata["mmgic"]["caption"] in CANDIDATES
        doc = samples[1].metadata["mmgic"]
        assert [o["label"] for o in doc["objects"]] == ["dog", "frisbee"]
        assert doc["objects"][0]["description"] == "A dog, as the dataset describes it."
        assert (
            doc["objects"][1]["description"]
            == "The frisbee is a thing that people see in pictures every day."
        )
        assert [r["label"] for r in doc["relations"]] == ["chasing"] and doc[
            "caption"
        ] == "a photo number 1 of a dog"
        assert doc["narrative"] == "In this picture we can see a dog and a frisbee."
        assert "narrative" not in samples[2].metadata["mmgic"]
        assert "Localized narrative caption: In this picture" in samples[1].text
        assert all("qwzx" not in r["labels"] for r in doc["regions"])
        manifest = json.loads((path / "manifest.json").read_text())
        assert manifest["rejects"]["no_objects"] == 1 and manifest["rejects"]["label_removed"] == 2
        assert manifest["rejects"]["relation_removed"] == 1  # near: its subject's label is invalid
        labels = json.loads(Path(manifest["provenance"]["labels"]["path"], "manifest.json").read_text())
        assert labels["rejects"] == {"invalid_label": 1, "rare_label": 1}
        assert manifest["rejects"]["attribute_removed"] == 1  # the frisbee's red
        assert [a["label"] for a in doc["attributes"]] == ["brown"]
        # Everything is built: the same command sends nothing to the server.
        run_python(build, timeout=300, cwd=tmp_path)
        assert server.calls == calls
    finally:
        server.close()


def test_an_mmgic_recipe_trains_the_dense_model(world, tmp_path):
    from mmkd.distributed import DistInfo
    from mmkd.launch._pipeline import run
    from tests.conftest import micro_run_config

    cfg = micro_run_config(world[0], tmp_path / "run", budget_samples=64)
    cfg.recipe.name, cfg.recipe.mixture, cfg.recipe.mmgic_parts = "mmgic_cld", {"mmgic": 1.0}, "cld"
    cfg.build.min_object_count, cfg.eval.abilities, cfg.eval.max_items = 1, ["captioning"], 4
    run(cfg, DistInfo())
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run/metrics.jsonl").open() if "loss" in line]
    assert losses and all(v == v for v in losses)
    mixture = json.loads((tmp_path / "run/mixture.json").read_text())
    assert list(mixture["sources"]) == ["mmgic"]
    # The eval reports how many of the captioning benchmark's concepts the documents mention (C.1).
    concepts = json.loads(next((tmp_path / "run").glob("eval*/concepts.json")).read_text())
    entry = concepts["world/captioning"]
    assert entry["concepts"] > 0 and entry["all"] == entry["by_source"]["mmgic"]


@pytest.mark.parametrize(
    "content, error",
    [
        ({"objects": {}}, "'objects' is not a label type; use ['attribute', 'object', 'relation']"),
        ({"object": ["dog"]}, "'object' must map labels to descriptions, not a list"),
        ({"relation": {"on": " "}}, "relation 'on' has no description"),
    ],
)
def test_given_label_descriptions_name_what_is_wrong(tmp_path, content, error):
    path = tmp_path / "given.json"
    path.write_text(json.dumps(content))
    with pytest.raises(DataError, match=re.escape(f"{path}: {error}")):
        given_descriptions(path)


def test_visual_genome_files_convert_into_detection_data(tmp_path):
    images = tmp_path / "VG_100K"
    images.mkdir()
    for i in (1, 2, 3, 4):
        Image.new("RGB", (400, 300), (60 * i, 120, 90)).save(images / f"{i}.jpg")
    obj = lambda oid, name, x, *synsets: {  # noqa: E731
        "object_id": oid, "x": x, "y": 20, "w": 80, "h": 90, "names": [name], "synsets": list(synsets),
    }  # fmt: skip
    files = {
        "image_data": [{"image_id": i, "coco_id": 77 if i == 1 else None} for i in (1, 2, 3, 4)],
        "objects": [
            {"image_id": 1, "objects": [
                obj(11, "Clock", 10, "clock.n.01"), obj(12, "tower", 200, "tower.n.01"),
            ]},
            {"image_id": 2, "objects": [
                obj(21, "man", 10, "man.n.01"), obj(22, "batter", 150, "a.n.01", "b.n.02"),
                obj(23, "batter", 250, "batter.n.01"),
            ]},
            {"image_id": 3, "objects": [  # a tower without a synset counts as tower.n.01; one kite is rare
                obj(31, "clock", 10, "clock.n.01"), obj(32, "tower", 150), obj(33, "man", 250, "man.n.01"),
                obj(34, "batter", 300, "batter.n.02"), obj(35, "kite", 100, "kite.n.03"),
            ]},
            {"image_id": 4, "objects": [
                obj(41, "batter", 10, "batter.n.01"), obj(42, "batter", 150, "batter.n.02"),
            ]},
        ],
        "attributes": [{"image_id": 1, "attributes": [{"object_id": 11, "attributes": ["green ", "Tall"]}]}],
        "relationships": [{"image_id": 1, "relationships": [
            {"predicate": "ON", "subject": {"object_id": 11}, "object": {"object_id": 12}},
        ]}],
        "coco_captions": {"annotations": [{"image_id": 77, "caption": "a clock  on a tower"}]},
        "synset_names": {"batter.n.01": "baseball player"},
    }  # fmt: skip
    for name, value in files.items():
        (tmp_path / f"{name}.json").write_text(json.dumps(value))
    flags = [a for name in files for a in (f"--{name.replace('_', '-')}", str(tmp_path / f"{name}.json"))]
    out = convert("visual_genome", *flags, "--images", str(images), "--image-size", "64", out=tmp_path / "vg")
    samples = {s.metadata["image_id"]: s for s in open_dataset(out)}
    one = samples[1].metadata
    assert [(o["category"], o["attributes"]) for o in one["objects"]] == [
        ("clock", ["green", "tall"]),
        ("tower", []),
    ]
    assert one["relations"] == [{"subject_id": 11, "predicate": "on", "object_id": 12}]
    assert one["captions"] == ["a clock on a tower"] and samples[2].metadata["captions"] == []
    # F.2 step 3: batter has two senses, each its own label; the kite's pair occurs once.
    categories = {i: [o["category"] for o in s.metadata["objects"]] for i, s in samples.items()}
    assert categories[2] == ["man", "batter (baseball player)"]
    assert categories[3] == ["clock", "tower", "man", "batter (batter.n.02)"]
    assert categories[4] == ["batter (baseball player)", "batter (batter.n.02)"]
    rejects = [json.loads(line) for line in (out / "rejects.jsonl").open()]
    assert [r["reason"] for r in rejects] == ["multiple_synsets", "rare_label_synset"]
    assert (
        "object_id=22" in rejects[0]["where"]
        and "('kite', 'kite.n.03') occurs 1 time" in rejects[1]["detail"]
    )
