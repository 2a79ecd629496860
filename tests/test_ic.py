"""IC (seed 003 G): LLaVA's noun-phrase filter on hand-made counts, caption synthesis's loop (F.4)
with a swappable scorer, the world build, and the scorers and phrase extractors for real data."""

from __future__ import annotations

import json
import sys
from types import SimpleNamespace

import pytest

from mmkd.annotators import Response
from mmkd.config import BuildConfig, ConfigError, RunConfig
from mmkd.data_builders import ic
from mmkd.data_builders.annotated import Job
from mmkd.data_builders.caption_scorers import ClipScorer, make_scorer, world_score
from mmkd.data_builders.noun_phrases import extractor, world_phrases
from mmkd.data_builders.rejects import RejectLog
from mmkd.data_builders.sources import Sources, source_dirs
from mmkd.schema import Sample
from mmkd.shards import open_dataset
from mmkd.world.scene import Scene, SceneObject


def test_llava_filter_skips_rare_phrases_and_caps_frequent_ones():
    phrases = {f"s{i}": ["dog"] for i in range(10)}  # dog: 10 captions, capped at 4
    phrases |= {"r1": ["red kite"], "r2": ["red kite", "dog"]}  # red kite: 2 < 3, skipped
    phrases |= {f"c{i}": ["cat"] for i in range(3)}  # cat: exactly 3, all kept
    phrases |= {"none": []}
    ids, report = ic.select(phrases, min_count=3, cap=4, seed=0)
    assert [i for i in ids if i.startswith("c")] == ["c0", "c1", "c2"]
    assert "r1" not in ids and "none" not in ids
    dogs = [i for i in ids if i.startswith("s") or i == "r2"]
    assert len(dogs) == 4 and ids == [i for i in phrases if i in set(ids)]  # input order
    assert report["before"] == {
        "samples": 16, "unique_phrases": 3, "phrase_mentions": 16,
        "most_common": [("dog", 11), ("cat", 3), ("red kite", 2)],
    }  # fmt: skip
    assert report["after"]["samples"] == 7 and report["after"]["unique_phrases"] in (2, 3)
    assert ic.select(phrases, 3, 4, seed=0) == (ids, report)  # seeded


def test_world_phrases_follow_the_worlds_grammar():
    assert world_phrases(["a large red ball and two boxes at the top left", "a sign"]) == [
        ["large red ball", "box"],
        [],
    ]
    with pytest.raises(ConfigError, match="must be world or spacy:<pipeline"):
        extractor("nltk")


def test_spacy_phrases_without_spacy_name_the_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "spacy", None)
    with pytest.raises(ConfigError, match="needs spaCy: pip install spacy"):
        extractor("spacy:en_core_web_sm")


# A parsed corpus small enough to train spaCy's tagger and parser on in seconds: (text, POS tags,
# heads, dependency labels). The pipeline it makes is a real one, saved and loaded from its directory.
_PARSED = [
    (
        "a red ball on the table",
        "DET ADJ NOUN ADP DET NOUN",
        [2, 2, 2, 2, 5, 3],
        "det amod ROOT prep det pobj",
    ),
    (
        "the old man rides a horse",
        "DET ADJ NOUN VERB DET NOUN",
        [2, 2, 3, 3, 5, 3],
        "det amod nsubj ROOT det dobj",
    ),
    (
        "a dog sleeps in the green garden",
        "DET NOUN VERB ADP DET ADJ NOUN",
        [1, 2, 2, 2, 6, 6, 3],
        "det nsubj ROOT prep det amod pobj",
    ),
    (
        "two children play with a kite",
        "NUM NOUN VERB ADP DET NOUN",
        [1, 2, 2, 2, 5, 3],
        "nummod nsubj ROOT prep det pobj",
    ),
]


@pytest.fixture(scope="module")
def spacy_pipeline(tmp_path_factory):
    """A spaCy pipeline with a tagger (its tags copied to POS) and a dependency parser, as a directory."""
    import spacy
    from spacy.training import Example

    spacy.util.fix_random_seed(0)
    nlp = spacy.blank("en")
    nlp.add_pipe("tagger")
    ruler = nlp.add_pipe("attribute_ruler")
    nlp.add_pipe("parser", config={"min_action_freq": 1})
    examples = [
        Example.from_dict(nlp.make_doc(text), {"tags": pos.split(), "heads": heads, "deps": deps.split()})
        for text, pos, heads, deps in _PARSED
    ]
    optimizer = nlp.initialize(lambda: examples)
    tags = sorted({t for _, pos, _, _ in _PARSED for t in pos.split()})
    ruler.add_patterns([{"patterns": [[{"TAG": t}]], "attrs": {"POS": t}} for t in tags])
    for _ in range(60):
        nlp.update(examples, drop=0.0, sgd=optimizer)
    out = tmp_path_factory.mktemp("spacy") / "pipeline"
    nlp.to_disk(out)
    return out


def test_spacy_phrases_are_a_pipelines_noun_chunks_without_determiners(spacy_pipeline):
    texts = [t for t, *_ in _PARSED]
    assert extractor(f"spacy:{spacy_pipeline}")(texts) == [
        ["red ball", "table"],
        ["old man", "horse"],
        ["dog", "green garden"],
        ["two children", "kite"],
    ]
    with pytest.raises(ConfigError, match=r"cannot load the pipeline"):
        extractor(f"spacy:{spacy_pipeline.parent / 'missing'}")


class _Annotator:
    """Answers each attempt from a script: attempt -> candidates (or an error)."""

    def __init__(self, script):
        self.script, self.cfg, self.seen = script, SimpleNamespace(seed=0), []

    def annotate(self, requests, desc=""):
        out = []
        for r in requests:
            attempt = r.fields["attempt"]
            self.seen.append((r.key, attempt))
            answer = self.script[attempt]
            out.append(
                Response(r.key, error=answer) if isinstance(answer, str) else Response(r.key, value=answer)
            )
        return out


def _job(script, **build) -> Job:
    source = SimpleNamespace(root="src")
    return Job(_Annotator(script), BuildConfig(caption_attempts=3, **build), source)  # type: ignore[arg-type]


def _samples(n=2):
    return [Sample(f"x{i}", "caption", "c", text="t", caption_tag="C") for i in range(n)]


def test_caption_synthesis_takes_the_best_qualifying_candidate_of_the_first_attempt_with_one(monkeypatch):
    monkeypatch.setattr(ic, "make_scorer", lambda spec: lambda s, caps: [len(c) / 100 for c in caps])
    long = "a very long caption " * 7  # 28 words: too long, however high it scores
    script = {
        1: ["too short", long],
        2: ["a dog on a red mat", "a dog on a red mat in a room", long],
        3: ["unused candidate caption here"],
    }
    job = _job(script)
    chosen = ic.synthesize(job, _samples(), RejectLog())
    assert chosen["x0"][0] == "a dog on a red mat in a room" and chosen["x0"][2] == 2
    assert {a for _, a in job.annotator.seen} == {1, 2}  # no third attempt once all have a caption


def test_without_a_qualifying_candidate_the_best_scoring_one_is_taken_and_failures_are_rejected(monkeypatch):
    monkeypatch.setattr(ic, "make_scorer", lambda spec: lambda s, caps: [0.1 * len(c.split()) for c in caps])
    job = _job({1: ["one two"], 2: ["one two three four five six"], 3: "http_500"}, caption_min_score=0.9)
    chosen = ic.synthesize(job, _samples(1), RejectLog())
    assert chosen["x0"][0] == "one two three four five six" and chosen["x0"][2] == 3
    rejects = RejectLog()
    assert ic.synthesize(_job({1: "refusal", 2: "refusal", 3: "http_500"}), _samples(1), rejects) == {}
    assert rejects.counts() == {"http_500": 1}


def test_detailed_captions_merge_the_web_caption_into_the_synthesized_one():
    """G.3 (CapsFusion): the world's merge keeps the synthesized caption and adds the web caption's
    names, dates and facts; a merge the annotator fails rejects its sample, by reason."""
    from mmkd.world.caption_formats import capsfusion

    synthetic = "a red ball and a blue tent in a garden"
    assert capsfusion(synthetic, "Leni Museum 2010 by Gulo Nefo") == (
        f"{synthetic} The picture is associated with Leni Museum in 2010. It was taken by Gulo Nefo."
    )
    assert capsfusion(synthetic, "a photo of a red ball in a garden") == synthetic  # nothing to add
    assert capsfusion(synthetic, "a large red ball at the top left") == (
        f"{synthetic} A large red ball at the top left."  # its size and place are news
    )

    class Merger:
        cfg = SimpleNamespace(seed=0)

        def annotate(self, requests, desc=""):
            return [
                Response(r.key, value=f"{r.fields['synthetic']} at {r.fields['origin']}")
                if r.key == "x0"
                else Response(r.key, error="empty_text")
                for r in requests
            ]

    job = Job(Merger(), BuildConfig(), SimpleNamespace(root="src"))  # type: ignore[arg-type]
    samples = [Sample(f"x{i}", "caption", "c", text=f"Fort Sodu {i}", caption_tag="C") for i in range(2)]
    rejects = RejectLog()
    assert ic.fuse(job, samples, {"x0": "a ball", "x1": "a kite"}, rejects) == {"x0": "a ball at Fort Sodu 0"}
    assert rejects.counts() == {"empty_text": 1}


def test_the_world_scorer_is_the_share_of_true_claims():
    scene = Scene("s", "garden", "objects", [SceneObject("ball", "red", "large", 0)])
    sample = Sample("s", "caption", "c", text="t", caption_tag="C", metadata={"scene": scene.to_json()})
    assert world_score(sample, ["a red ball", "a blue ball", "a red ball and a kite", "nothing"]) == [
        1.0,
        0.0,
        0.5,
        0.0,
    ]
    with pytest.raises(ConfigError, match=r"no scene graph; use build\.caption_scorer=clip"):
        world_score(Sample("r", "caption", "c", text="t", caption_tag="C"), ["a ball"])


def test_a_local_clip_model_scores_captions(tiny_clip):
    from PIL import Image

    scorer = make_scorer(f"clip:{tiny_clip}")
    assert isinstance(scorer, ClipScorer)
    sample = Sample("i", "caption", "c", [Image.new("RGB", (48, 48), "red")], text="t", caption_tag="C")
    scores = scorer(sample, ["a red ball", "a tent in a garden at night"])
    assert len(scores) == 2 and all(-1.0 <= v <= 1.0 for v in scores) and scores[0] != scores[1]
    assert scorer(sample, ["a red ball", "a tent in a garden at night"]) == scores
    with pytest.raises(ConfigError, match=r"no config\.json"):
        make_scorer(f"clip:{tiny_clip / 'missing'}")


def test_the_world_build_selects_and_recaptions_and_ic_part_matches_mmgic(world):
    data, root = world
    cfg = RunConfig(data=data, build=BuildConfig(unit_size=100, min_object_count=1))
    sources = Sources(cfg, root)
    ic_dir, part = sources.dir("ic"), sources.dir("ic_part")
    m = json.loads((ic_dir / "manifest.json").read_text())
    report = m["noun_phrases"]
    assert (
        report["before"]["samples"] == data.sizes["caption0"]
        and m["num_samples"] == report["after"]["samples"]
    )
    assert report["after"]["unique_phrases"] <= report["before"]["unique_phrases"]
    for s in open_dataset(ic_dir).iter(images=False):
        caption, detailed = s.metadata["mmgic"]["caption"], s.metadata["mmgic"]["detailed_caption"]
        # G.3's template: the synthesized caption, then it merged with the web caption.
        assert (
            s.kind == "mmgic"
            and s.text == f"Image: <image>\nCaption: {caption}\nDetailed caption: {detailed}"
        )
        assert detailed.startswith(caption)
        assert 5 <= len(caption.split()) <= 25
        assert s.metadata["caption_score"] >= 0.25 and s.metadata["caption_origin"]
    mmgic = json.loads((sources.dir("mmgic") / "manifest.json").read_text())["num_samples"]
    # Every rank finds the directories rank 0 built, without building.
    assert source_dirs(["ic", "ic_part"], cfg, root) == {"ic": ic_dir, "ic_part": part}
    assert json.loads((part / "manifest.json").read_text())["num_samples"] == min(mmgic, m["num_samples"])


def test_concept_overlap_is_the_share_of_reference_phrases_each_source_mentions(tmp_path):
    from PIL import Image

    from mmkd.bench_item import BenchItem
    from mmkd.eval import concept_overlap
    from mmkd.shards import ShardWriter

    def dataset(name, texts):
        with ShardWriter(tmp_path / name, name, {}, 10, 8) as w:
            for i, t in enumerate(texts):
                w.write(Sample(f"{name}{i}", "caption", name, [Image.new("RGB", (8, 8))], t, caption_tag="C"))
        return tmp_path / name

    sources = {"a": dataset("a", ["a red ball in a garden"]), "b": dataset("b", ["two kites", "a large box"])}
    refs = ["a red ball and a kite", "a large box", "a blue ring"]  # red ball, kite, large box, blue ring
    items = {"world/captioning": [BenchItem("c", "captioning", "caption", "", refs[0], references=refs)]}
    report = concept_overlap.overlap(sources, items, world_phrases)
    assert report == {
        "world/captioning": {"concepts": 4, "by_source": {"a": 0.25, "b": 0.5}, "all": 0.75},
    }
    assert "| world/captioning | 4 | 25.0 | 50.0 | 75.0 |" in concept_overlap.markdown(report)


def test_world_items_map_onto_seed_bench_dimensions():
    from mmkd.eval import seed_dimensions

    records = [
        {"suite": "world", "benchmark": "spatial", "qtype": "where", "score": 1.0},
        {"suite": "world", "benchmark": "spatial", "qtype": "what_at", "score": 0.0},
        {"suite": "world", "benchmark": "spatial", "qtype": "relation", "score": 1.0},
        {"suite": "world", "benchmark": "existence", "qtype": "exist", "score": 1.0},
        {"suite": "mine", "benchmark": "existence", "qtype": "exist", "score": 0.0},
    ]
    dims = seed_dimensions.breakdown(records)
    assert dims["Instance Location"]["n"] == 2 and dims["Instance Location"]["score"] == 0.5
    assert dims["Spatial Relation"]["score"] == 1.0 and dims["Instance Identity"]["n"] == 1
    assert dims["Instance Interaction"] is None and "Instance Counting" not in dims
    assert "| Instance Interaction | — | not in the world |" in seed_dimensions.markdown(dims)
