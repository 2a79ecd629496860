"""The world is deterministic, and every fact its language states holds in the scene graph.

The checker below re-derives each fact from the scene with its own parsing, independent of the
generators in mmkd.world.language.
"""

import io
import random
import re
from dataclasses import asdict

import pytest

from mmkd.bench_item import load_benchmark
from mmkd.config import saved_run_config, to_run_config
from mmkd.data_builders.sources import world_dir
from mmkd.world import encyclopedia, language
from mmkd.world.benchmarks import build_benchmarks
from mmkd.world.render import render
from mmkd.world.scene import (
    COLOURS,
    KINDS,
    POSITIONS,
    THEMES,
    Scene,
    WorldConfig,
    is_held_out,
    sample_scene,
    sign_vocabulary,
)

CFG = WorldConfig(image_size=48)
K, C, P = "|".join(KINDS), "|".join(COLOURS), "|".join(POSITIONS)
PHRASE = re.compile(rf"\ba (?:(small|large) )?(?:({C}) )?({K})(?: at the ({P}))?")


def _png(im):
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def _matches(o, size, colour, kind, pos):
    return (
        o.kind == kind and size in (None, o.size) and colour in (None, o.colour) and pos in (None, o.position)
    )


def check_caption(scene: Scene, text: str) -> int:
    """Assert every object phrase / theme / word / bar in `text` holds; returns facts checked."""
    facts = 0
    if scene.layout == "objects":
        for size, colour, kind, pos in PHRASE.findall(text):
            assert any(_matches(o, size or None, colour or None, kind, pos or None) for o in scene.objects), (
                text
            )
            facts += 1
        theme = re.search(r"\bin a (\w+)$|^a (\w+) with", text)
        if theme:
            assert scene.theme in theme.groups(), text
    elif scene.layout == "sign":
        for word in re.findall(r"says (\w+)$|^(?!a sign$)(\w+) sign$", text):
            assert scene.word in word, text
    else:
        for colour, value in re.findall(rf"a ({C}) bar of (\d)", text):
            assert (colour, int(value)) in scene.bars, text
            facts += 1
    return facts


def _ref(scene: Scene, ref: str):
    words = ref.split()
    found = [o for o in scene.objects if o.kind == words[-1] and (len(words) == 1 or o.colour == words[0])]
    assert len(found) == 1, f"reference {ref!r} is not unique in {scene.id}"
    return found[0]


def expected_answer(scene: Scene, q: str) -> str:
    if m := re.fullmatch(r"Is there a (\w+) in the image\?", q):
        return "yes" if m[1] in scene.kinds() else "no"
    if m := re.fullmatch(r"What colour is the (.+)\?", q):
        return _ref(scene, m[1]).colour
    if m := re.fullmatch(r"What size is the (.+)\?", q):
        return _ref(scene, m[1]).size
    if m := re.fullmatch(r"How many (\w+) are there\?", q):
        if m[1] == "objects":
            return str(len(scene.objects))
        return str(sum(encyclopedia.plural(o.kind) == m[1] for o in scene.objects))
    if m := re.fullmatch(r"Where is the (.+)\?", q):
        return _ref(scene, m[1]).position
    if m := re.fullmatch(r"What is at the (.+)\?", q):
        return scene.objects[[o.position for o in scene.objects].index(m[1])].kind
    if m := re.fullmatch(r"Is the (.+) (left of|right of|above|below) the (.+)\?", q):
        a, b = _ref(scene, m[1]), _ref(scene, m[3])
        dr, dc = a.row - b.row, a.col - b.col
        holds = {"left of": dc < 0, "right of": dc > 0, "above": dr < 0, "below": dr > 0}[m[2]]
        return "yes" if holds else "no"
    if q == "Where was this picture taken?":
        return scene.theme
    if m := re.fullmatch(r"What is the value of the (\w+) bar\?", q):
        return str(dict(scene.bars)[m[1]])
    if q == "Which bar is the tallest?":
        return max(scene.bars, key=lambda b: b[1])[0]
    if q == "What word is written on the sign?":
        return scene.word
    if m := re.fullmatch(r"Give the box of the (.+)\.", q):
        return "[" + ", ".join(map(str, _ref(scene, m[1]).box(CFG.image_size))) + "]"
    if m := re.fullmatch(r"What is in the box \[(\d+), (\d+), (\d+), (\d+)\]\?", q):
        box = tuple(int(v) for v in m.groups())
        return next(o.kind for o in scene.objects if o.box(CFG.image_size) == box)
    raise AssertionError(f"unknown question template: {q!r}")


def test_same_seed_same_world_other_seed_other_world():
    for i in range(20):
        a, b = sample_scene(CFG, "vqa0", i), sample_scene(CFG, "vqa0", i)
        assert a == b and _png(render(a, 48)) == _png(render(b, 48))
    other = WorldConfig(image_size=48, seed=1)
    assert [sample_scene(CFG, "vqa0", i) for i in range(20)] != [
        sample_scene(other, "vqa0", i) for i in range(20)
    ]


def test_every_caption_and_answer_holds_in_its_scene_graph():
    facts = answers = 0
    ground = language.q_ground(CFG.image_size)
    for i in range(600):
        scene = sample_scene(CFG, "check", i)
        rng = random.Random(i)
        facts += check_caption(scene, language.alt_text(scene, rng))
        facts += check_caption(scene, language.dense_caption(scene, rng))
        if scene.layout == "objects":
            gens = [*language.OBJECT_QUESTIONS, ground]
        elif scene.layout == "chart":
            gens = list(language.CHART_QUESTIONS)
        else:
            gens = [language.q_ocr]
        for qa in language.ask_many(scene, rng, gens, len(gens)):
            assert qa.answer == expected_answer(scene, qa.question), (scene, qa)
            answers += 1
    assert facts > 1000 and answers > 2000


def test_scene_graph_geometry():
    for i in range(200):
        s = sample_scene(CFG, "geo", i, layout="objects")
        cells = [o.cell for o in s.objects]
        assert len(set(cells)) == len(cells) and 1 <= len(cells) <= CFG.max_objects
        for o in s.objects:
            x0, y0, x1, y1 = o.box(48)
            assert 0 <= x0 < x1 <= 48 and 0 <= y0 < y1 <= 48
            assert x0 // 16 <= o.col <= (x1 - 1) // 16  # the box overlaps its own grid cell


def test_themes_are_coarse_categories_with_fine_attribute_variation():
    scenes = [sample_scene(CFG, "theme", i, layout="objects") for i in range(400)]
    for theme, (_, pool) in THEMES.items():
        kinds = [o.kind for s in scenes if s.theme == theme for o in s.objects]
        in_pool = sum(k in pool for k in kinds) / len(kinds)
        assert in_pool > 0.8  # a theme is recognisable from which kinds it holds
        colours = {o.colour for s in scenes if s.theme == theme for o in s.objects}
        assert len(colours) == len(COLOURS)  # fine attributes vary inside a theme


def test_held_out_compositions_split_the_scene_space():
    draws = [sample_scene(CFG, "caption0", i) for i in range(3000)]
    assert not any(is_held_out(CFG, s) for s in draws)
    # Forcing one object makes few compositions (4 themes x 6 kinds x 6 colours x 2 sizes x 9 cells),
    # so training draws repeat them; the benchmark split draws from the other side of the hash split.
    single = [sample_scene(CFG, "bench-x", i, layout="objects", n_objects=1) for i in range(200)]
    assert all(is_held_out(CFG, s) and len(s.objects) == 1 for s in single)
    probe = [sample_scene(CFG, "vqa0", i) for i in range(400)]
    share = sum(is_held_out(WorldConfig(image_size=48, seed=1), s) for s in probe) / len(probe)
    assert 0.04 < share < 0.2  # another world seed holds out other compositions, about 10% of them
    with pytest.raises(ValueError, match=r"world\.holdout_fraction=0\.0"):
        WorldConfig(holdout_fraction=0.0).validate()


def test_signs_hold_out_compositions_not_words():
    """Every word a benchmark sign shows is one training signs show (on other placards or
    backgrounds), while no benchmark sign's composition is ever a training one."""
    vocabulary = set(sign_vocabulary(CFG.seed, CFG.sign_words))
    assert len(vocabulary) == CFG.sign_words == 120
    training = [sample_scene(CFG, "caption0", i, layout="sign") for i in range(2000)]
    bench = [sample_scene(CFG, "bench-ocr", i, layout="sign") for i in range(200)]
    assert {s.word for s in training} == vocabulary and {s.placard for s in training} == set(COLOURS)
    assert {s.word for s in bench} <= vocabulary
    assert not {s.composition() for s in bench} & {s.composition() for s in training}
    # Mostly distinct images: 200 draws from ~288 held-out compositions (10% of 4 x 6 x 120).
    assert len({s.composition() for s in bench}) > 130
    other = WorldConfig(image_size=48, seed=1)
    assert set(sign_vocabulary(other.seed, other.sign_words)) != vocabulary  # drawn per world seed
    open_words = WorldConfig(image_size=48, sign_words=0)
    assert len({sample_scene(open_words, "caption0", i, layout="sign").word for i in range(300)}) > 250
    with pytest.raises(ValueError, match=r"world\.sign_words=4901: must be in 0\.\.4900"):
        WorldConfig(sign_words=4901).validate()


def test_a_config_saved_before_sign_vocabularies_reads_its_own_world():
    """A checkpoint's config from before `world.sign_words` is evaluated on the world it trained on:
    the same data directory as then (0 is left out of a world's identity), not today's default."""
    today = to_run_config({"recipe": {"name": "t", "mixture": {"caption0": 1.0}}})
    before = asdict(today)
    del before["data"]["world"]["sign_words"]
    saved = saved_run_config(before)
    assert saved.data.world.sign_words == 0 and today.data.world.sign_words == 120
    assert world_dir(saved.data) == world_dir(before["data"]) != world_dir(today.data)
    assert sample_scene(saved.data.world, "caption0", 0, layout="sign").placard is None  # white, as then


def test_benchmarks_are_disjoint_from_training_and_well_formed(tmp_path):
    counts = build_benchmarks(CFG, tmp_path, n_per_ability=30, stats_n=200)
    assert set(counts.values()) == {30}
    train = [sample_scene(CFG, split, i) for split in ("caption0", "vqa0", "other") for i in range(2000)]
    train_images = {_png(render(s, 48)) for s in train[:600]}
    train_compositions = {s.composition() for s in train}
    for ability in counts:
        items = load_benchmark(tmp_path / f"{ability}.jsonl")
        for it in items:
            if it.options is not None:
                assert it.answer in it.options and len(set(it.options)) == len(it.options)
            if it.image is not None:
                assert _png(it.image) not in train_images
                scene = Scene.from_json(it.metadata["scene"])
                assert scene.composition() not in train_compositions
                assert scene.id.startswith(f"bench-{ability}")
                if it.question and it.qtype not in ("caption",) and not it.qtype.startswith("kii_"):
                    assert it.answer == expected_answer(scene, it.question)
            if ability == "captioning":
                assert len(it.references) == 5
                for ref in it.references:
                    check_caption(Scene.from_json(it.metadata["scene"]), ref)
            if ability == "knowledge":
                assert (
                    it.image is None and it.answer == encyclopedia.FACTS[it.metadata["kind"]][it.qtype[10:]]
                )
    existence = load_benchmark(tmp_path / "existence.jsonl")
    assert sum(it.answer == "yes" for it in existence) == 15
    assert {it.metadata["pope"] for it in existence} == {"present", "random", "popular", "adversarial"}


def test_instruction_data_teaches_every_format_and_never_a_benchmark_fact(tmp_path, tokenizer):
    """The `instruct` source: each benchmark's question format on training compositions, dense
    captions, and knowledge questions on the half of the facts the knowledge benchmarks never ask;
    a text-only question supervises its answers and places no image."""
    from mmkd.data_builders.world_sources import INSTRUCTION_FACTS, build_source
    from mmkd.shards import open_dataset
    from mmkd.templates import IGNORE, Templates

    manifest = build_source(CFG, "instruct", 120, tmp_path / "instruct", 100, 8)
    assert manifest["parts"] == {
        "objects": 42, "chart": 12, "sign": 12, "knowledge": 18, "knowledge_in_image": 12, "caption": 24
    }  # fmt: skip
    assert len(INSTRUCTION_FACTS) == 12 and all(
        sum(k == kind for k, _ in INSTRUCTION_FACTS) == 2 for kind in encyclopedia.FACTS
    )
    asked, text_only = set(), []
    for s in open_dataset(tmp_path / "instruct").iter():
        if not s.images:
            text_only.append(s)
            for t in s.turns:
                kind = re.fullmatch(r".* an? (\w+) .*\?", t.question)[1]
                attribute = next(
                    a for a, q in encyclopedia.QUESTIONS.items() if q.format(kind=kind) == t.question
                )
                assert t.answer == encyclopedia.FACTS[kind][attribute]
                asked.add((kind, attribute))
            continue
        scene = Scene.from_json(s.metadata["scene"])
        assert not is_held_out(CFG, scene)
        if s.kind == "caption":
            check_caption(scene, s.text)
            continue
        for t, qtype in zip(s.turns, s.metadata["qtypes"], strict=True):
            if qtype.startswith("kii_"):
                asked.add((scene.objects[0].kind, qtype[4:]))
                assert t.answer == encyclopedia.FACTS[scene.objects[0].kind][qtype[4:]]
            else:
                assert t.answer == expected_answer(scene, t.question)
    assert asked <= set(INSTRUCTION_FACTS) and len(asked) >= 10

    build_benchmarks(CFG, tmp_path / "bench", n_per_ability=48, stats_n=200)
    benchmark = {
        (it.metadata["kind"], it.qtype[10:]) for it in load_benchmark(tmp_path / "bench/knowledge.jsonl")
    }
    benchmark |= {
        (Scene.from_json(it.metadata["scene"]).objects[0].kind, it.qtype[4:])
        for it in load_benchmark(tmp_path / "bench/knowledge_in_image.jsonl")
    }
    assert not benchmark & set(INSTRUCTION_FACTS) and len(benchmark) == 12

    templates = Templates(tokenizer, image_tokens=36, max_seq_len=256)
    enc = templates.encode(text_only[0])
    assert tokenizer.image_id not in enc.input_ids and not enc.images
    supervised = tokenizer.decode([i for i, label in zip(enc.input_ids, enc.labels) if label != IGNORE])
    assert supervised.split() == " ".join(t.answer for t in text_only[0].turns).split()


def test_quiz_sheets_ask_true_facts_in_other_words_than_the_benchmarks():
    """Training text asks facts too (as the web does), never in a benchmark question's words."""
    docs = [language.text_document(CFG, "text", i) for i in range(300)]
    sheets = [text for text, genre in docs if genre == "quiz"]
    assert 15 <= len(sheets) <= 50
    benchmark = {q.format(kind=k).lower() for q in encyclopedia.QUESTIONS.values() for k in KINDS}
    forms = {
        a: re.escape(t).replace(r"\{kind\}", "(?P<kind>\\w+)").replace(r"\{value\}", "(?P<value>[a-z ]+)")
        for a, t in encyclopedia.QUIZ.items()
    }
    asked = set()
    for sheet in sheets:
        items = re.findall(r"Quiz: .*?\? Answer: .*?\.", sheet)
        assert 2 <= len(items) <= 4 and " ".join(items) == sheet
        for item in items:
            assert item.split("? ")[0][6:].lower() + "?" not in benchmark
            attribute, m = next((a, m) for a, f in forms.items() if (m := re.fullmatch(f, item)))
            assert m["value"] == encyclopedia.FACTS[m["kind"]][attribute]
            asked.add((m["kind"], attribute))
    assert len(asked) >= 20
