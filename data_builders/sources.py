"""Where each source of a recipe comes from, and building the ones that are missing.

A recipe names sources; each must be one of:
  - a dataset directory given in `data.sources` (real data or annotator output, with a manifest);
  - a world source (`caption0`, `vqa0`, `text`, `other`), built on first use; `detection` (the
    world's detection data, for MMGIC) and `alttext` (web-like AltText, seed 002) only when read;
  - an annotated source (`caption1`, `vqa1`, `pair_caption`, `interleaved`, `mmgic`, `ic`, the caption
    formats `ssc`, `dsc`, `dsc_plus`, `afc` and `alttext_<format>` concatenations), built on first
    use by its builder from the dataset `build.inputs` names, under <data.root>/annotated/<source>-<hash>/,
    where the hash covers the builder and prompt versions, the annotator, the input's content and the
    build settings: a change to any of them builds anew, and nothing is ever built twice;
  - otherwise it is an error, raised before any compute, that names the source and what makes it.
The world's tokenizer and benchmarks are built with its sources, in one directory per build setting.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import asdict
from itertools import chain
from pathlib import Path

from mmkd.annotators import Annotator, make_annotator
from mmkd.annotators.world_oracle import ORACLE_VERSION
from mmkd.config import ConfigError, DataConfig, RunConfig
from mmkd.data_builders import adapters, caption_formats, detection, ic, mmgic, scale, world_sources
from mmkd.data_builders.annotated import (
    BUILDER_VERSION,
    Job,
    build_caption,
    build_interleaved,
    build_pair_caption,
    build_semantic,
    build_vqa_from_caption,
)
from mmkd.data_builders.engine import BuildFailed
from mmkd.data_builders.prompts import PROMPTS, check_routes
from mmkd.data_builders.rejects import RejectLog
from mmkd.shards import is_complete, open_dataset, write_json_atomic
from mmkd.tokenizer import train_tokenizer
from mmkd.world import descriptions
from mmkd.world.benchmarks import BENCH_VERSION, build_benchmarks
from mmkd.world.scene import world_identity

WORLD_SOURCES = tuple(world_sources.SOURCES)
# World sources built only when a recipe reads them, not with the others (nor into the tokenizer).
WORLD_ON_REQUEST = ("detection", *world_sources.ON_REQUEST)
WORLD_NAMES = (*WORLD_SOURCES, *WORLD_ON_REQUEST)
# Annotator texts in the tokenizer's corpus: one tokenizer for every recipe, covering their words.
TOKENIZER_ANNOTATOR_SAMPLES = 2000
# Sources made by LLM/MLLM annotators (seed 000 Sec. 3.2, 4.2), built by data_builders/annotated.py.
ANNOTATED_SOURCES = {
    "caption1": "captions of the VQA images by a captioning annotator (seed 000 A.1.1)",
    "vqa1": "Q/A synthesised from Caption1 by the caption-to-VQA annotator (seed 000 A.1.2)",
    "pair_caption": "pair captions: image pairing, LLM filter, pair captioning (seed 000 Sec. 4.2.1)",
    "interleaved": "interleaved descriptions of groups of related images (seed 000 Sec. 4.2.2)",
    "mmgic": "multi-grained concept documents from detection data (seed 003 Sec. 2, F.2-F.7)",
    "ic": "image-caption data selected by noun phrases and re-captioned (seed 003 G)",
    "ic_part": "as many IC images as MMGIC has documents (seed 003 Table 2, IC-PART)",
    "ssc": "short synthetic captions of AltText images (seed 002 Sec. 3, SSC)",
    "dsc": "descriptive synthetic captions (seed 002 Sec. 3, DSC)",
    "dsc_plus": "dense synthetic captions (seed 002 Sec. 3, DSC+)",
    "afc": "descriptive captions with the AltText's information fused in (seed 002 Sec. 3, AFC)",
    "alttext_ssc": "AltText then SSC, one sample per image (seed 002 Table 5, AltText + SSC (*))",
    "alttext_dsc": "AltText then DSC, one sample per image (seed 002 Table 5, AltText + DSC (*))",
    "alttext_dsc_plus": "AltText then DSC+, one sample per image (seed 002 Table 5, AltText + DSC+ (*))",
    "scale": "the best build.scale_fraction of a pool by SCALE's five stages (seed 004 Sec. 3.2)",
    "scale_random": "a random selection of the same size (seed 004 Sec. 4.1 baseline)",
    "scale_iqa": "the same share by image quality alone (seed 004 baseline IQA)",
    "scale_tqa": "the same share by text quality alone (seed 004 baseline TQA)",
    "scale_it": "the same share by the mean of image and text quality (seed 004 baseline I+T)",
    "scale_clip": "the same share by image-text CLIP similarity (seed 004 baseline CLIP)",
}
SCALE_MODES = {
    "scale": "scale",
    "scale_random": "random",
    "scale_iqa": "iqa",
    "scale_tqa": "tqa",
    "scale_it": "i+t",
    "scale_clip": "clip",
}


class SourceError(ConfigError):
    """A recipe names a source that does not exist and cannot be built here."""


def world_dir(data: DataConfig | dict) -> Path:
    """One directory per set of build settings, so runs with different data never share a directory.
    `data` may be the `data` section of a saved config (results.json) as a dict."""
    fields = data if isinstance(data, dict) else asdict(data)
    loading = ("root", "sources", "num_workers", "max_bad_samples")  # how data is read, not what it is
    settings = {k: v for k, v in fields.items() if k not in loading}
    settings["world"] = world_identity(settings["world"])
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    return Path(fields["root"]) / f"world-{digest}"


def check_sources(recipe_name: str, names: list[str], cfg: RunConfig) -> None:
    """Fail before any compute if a source can be neither found nor built, or if a dataset given in
    `data.sources` is used by no weight of the recipe (nor read by a builder it needs): a typo in a
    mixture would otherwise train without it."""
    check_routes(cfg.annotator.routes)
    used = {n for name in names for n in _chain(name, cfg)}
    unused = sorted(set(cfg.data.sources) - used)
    if unused:
        raise SourceError(
            f"recipe {recipe_name!r}: data.sources.{unused[0]} is used by no weight of the mixture "
            f"(sources it uses: {sorted(used)}); give it a weight or drop it"
        )
    _check_names(recipe_name, names, cfg)


def _check_names(recipe_name: str, names: list[str], cfg: RunConfig) -> None:
    data = cfg.data
    for name in names:
        if name in data.sources:
            if not is_complete(data.sources[name]):
                raise SourceError(
                    f"recipe {recipe_name!r}: data.sources.{name}={data.sources[name]!r} "
                    "is not a finished dataset (no manifest.json)"
                )
        elif name in WORLD_NAMES:
            continue
        elif name in ANNOTATED_SOURCES:
            _check_annotated(recipe_name, name, cfg)
        else:
            known = sorted([*WORLD_NAMES, *ANNOTATED_SOURCES])
            raise SourceError(
                f"recipe {recipe_name!r}: unknown source {name!r}; known sources: {known}, "
                "or give a dataset directory as +data.sources.<name>=DIR"
            )


def _chain(name: str, cfg: RunConfig) -> list[str]:
    """A source and, for an annotated one, the sources its `build.inputs` chain reads, in order."""
    seen = [name]
    while seen[-1] in ANNOTATED_SOURCES and seen[-1] not in cfg.data.sources:
        nxt = cfg.build.inputs.get(seen[-1])
        if nxt is None or nxt in seen:
            break  # check_sources names the problem
        seen.append(nxt)
    return seen


def _origin(name: str, cfg: RunConfig) -> str:
    """The source a source is ultimately made from: itself, or the end of its `build.inputs` chain."""
    return _chain(name, cfg)[-1]


def needs_world(cfg: RunConfig, training: bool = True) -> bool:
    """Whether a run (or, with `training=False`, an eval-only run) uses the knowledge world: its
    tokenizer, a source made from world data, or the world benchmarks. A run on real data with a
    pretrained tokenizer and its own suites never builds it."""
    evaluates = cfg.eval.after_train or cfg.eval.every or not training
    world_bench = evaluates and (cfg.eval.abilities or "mmkd_world_knowledge" in cfg.eval.lm_eval_tasks)
    if not training:
        return bool(world_bench)
    return cfg.tokenizer_dir() is None or bool(world_bench) or _from_world(cfg, cfg.recipe.sources())


def pretrains_on_world(cfg: RunConfig) -> bool:
    """Whether a stage before the instruction stage draws world data (world sources, or sources
    built from them): the runs the world protocol's foundations and instruction data are for."""
    plan = cfg.recipe.plan()
    stages = plan[:-1] if cfg.recipe.sft_fraction else plan
    return _from_world(cfg, sorted({n for stage in stages for n in stage.mixture}))


def _from_world(cfg: RunConfig, names: list[str]) -> bool:
    return any(_origin(n, cfg) in WORLD_NAMES and _origin(n, cfg) not in cfg.data.sources for n in names)


def _check_annotated(recipe_name: str, name: str, cfg: RunConfig) -> None:
    chain = [name]
    while chain[-1] in ANNOTATED_SOURCES and chain[-1] not in cfg.data.sources:
        nxt = cfg.build.inputs.get(chain[-1])
        if nxt is None:
            raise SourceError(
                f"recipe {recipe_name!r} needs {chain[-1]!r} ({ANNOTATED_SOURCES[chain[-1]]}): "
                f"build.inputs has no entry for it; add build.inputs.{chain[-1]}=<source name>"
            )
        if nxt in chain:
            raise SourceError(f"build.inputs loops: {' -> '.join([*chain, nxt])}")
        chain.append(nxt)
    _check_names(recipe_name, [chain[-1]], cfg)
    if name == "scale_clip" and not cfg.build.scale_clip.startswith("clip:"):
        raise SourceError(
            f"recipe {recipe_name!r} needs scale_clip (selection by CLIP similarity): set "
            "build.scale_clip=clip:<CLIP model directory> (a local Hugging Face CLIP or SigLIP, or the "
            "world CLIP of `python launch/clip.py`, whose model/ folder it writes)"
        )
    if cfg.annotator.backend == "world" and chain[-1] in cfg.data.sources:
        raise SourceError(
            f"recipe {recipe_name!r}: {name!r} would be annotated from data.sources.{chain[-1]} (real "
            "images) by the world oracle, which knows only knowledge-world scenes; choose a model: "
            "annotator=openai (any OpenAI-compatible server) or annotator.backend=transformers"
        )


WAIT_POLL_S = 5.0  # how often a waiting build process checks the others' done files


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:10]


class Sources:
    """Resolves source names to dataset directories for one run config, building what is missing."""

    def __init__(self, cfg: RunConfig, world_root: Path | None):
        self.cfg, self.world_root = cfg, world_root
        self._annotator: Annotator | None = None

    @property
    def annotator(self) -> Annotator:
        if self._annotator is None:
            self._annotator = make_annotator(self.cfg.annotator)
        return self._annotator

    @property
    def used_annotator(self) -> Annotator | None:
        """The annotator, if anything needed it (its report says what the build cost)."""
        return self._annotator

    def knowledge_dir(self, name: str, path: Path) -> Path:
        """Where the knowledge records of source `name` (at `path`) go."""
        settings = {"limit": self.cfg.build.limit, "unit_size": self.cfg.build.unit_size}
        return self._out(f"knowledge-{name}", path, ["knowledge"], settings)

    def _out(self, what: str, source: Path, prompts: list[str], settings: dict) -> Path:
        key = {
            "builder": what,
            "version": BUILDER_VERSION,
            "prompts": [PROMPTS[p].id for p in prompts],
            "annotator": self.annotator.identity(prompts),
            "input": json.loads((source / "manifest.json").read_text())["content_hash"],
            "settings": settings,
        }
        return Path(self.cfg.data.root) / "annotated" / f"{what}-{_digest(key)}"

    def dir(self, name: str, build: bool = True) -> Path | None:
        """The dataset directory of `name`; None while other processes still build parts of it."""
        if name in self.cfg.data.sources:
            return Path(self.cfg.data.sources[name])
        if name in WORLD_SOURCES:
            return self.world_root / name
        if name == "detection":
            return world_detection(self.cfg.data, self.world_root) if build else self.world_root / name
        if name in WORLD_ON_REQUEST:
            if not build:
                return self.world_root / name
            return world_on_request(name, self.cfg.data, self.world_root, self.cfg.model.patch_size)
        source = self.dir(self.cfg.build.inputs[name], build)
        if source is None:
            return None
        common = {"limit": self.cfg.build.limit, "unit_size": self.cfg.build.unit_size}
        return BUILDERS[name](self, name, source, common, build)

    def _from_caption(self, name: str, source: Path, common: dict, build: bool) -> Path | None:
        """Caption1 (a captioning annotator over the VQA images) or VQA1 (Q/A from those captions)."""
        prompt = "caption" if name == "caption1" else "vqa_from_caption"
        out = self._out(name, source, [prompt], common)
        if build and not is_complete(out):
            job = Job(self.annotator, self.cfg.build, open_dataset(source))
            builder = build_caption if name == "caption1" else build_vqa_from_caption
            self._finish(out, lambda: builder(job, out, name))
        return out if is_complete(out) or not build else None

    def _from_semantic(self, name: str, source: Path, common: dict, build: bool) -> Path | None:
        """Pair captions or interleaved groups: the images' semantic records first, then the pairs or
        groups built over them (data_builders/annotated.py)."""
        b = self.cfg.build
        semantic = self._out("semantic", source, ["semantic"], common)
        if name == "pair_caption":
            prompts, settings = ["pair_filter", "pair_caption", "caption"], {"pairs": b.pairs_per_image}
        else:
            prompts, settings = ["interleaved"], {"groups": [b.group_min, b.group_max]}
        out = self._out(name, source, ["semantic", *prompts], {**common, **settings})
        if not build:
            return out
        if not is_complete(out):
            job = Job(self.annotator, b, open_dataset(source))
            if not is_complete(semantic) and not self._finish(
                semantic, lambda: build_semantic(job, semantic)
            ):
                return None
            builder = build_pair_caption if name == "pair_caption" else build_interleaved
            self._finish(out, lambda: builder(job, semantic, out, name))
        return out if is_complete(out) else None

    def _mmgic(self, name: str, source: Path, common: dict, build: bool) -> Path | None:
        """Label descriptions, then documents (data_builders/mmgic.py)."""
        b, prompts = self.cfg.build, list(mmgic.LABEL_PROMPTS.values())
        counts = {k: getattr(b, k) for k in ("min_object_count", "min_attribute_count", "min_relation_count")}
        if given := mmgic.descriptions_id(b.label_descriptions):  # the file's content, wherever it lies
            counts["label_descriptions"] = given["sha256"]
        regions = {k: getattr(b, k) for k in ("region_min_side", "region_max_side", "region_ioa")}
        labels = self._out("mmgic-labels", source, prompts, {**common, **counts})
        captions = {"captions": ic.settings(b)}  # for images without one (F.4)
        out = self._out(
            "mmgic", source, [*prompts, "caption_candidates"], {**common, **counts, **regions, **captions}
        )
        if not build:
            return out
        if not is_complete(out):
            job = Job(self.annotator, b, open_dataset(source))
            if not is_complete(labels) and not self._finish(labels, lambda: mmgic.build_labels(job, labels)):
                return None
            self._finish(out, lambda: mmgic.build_documents(job, labels, out))
        return out if is_complete(out) else None

    def _ic(self, name: str, source: Path, common: dict, build: bool) -> Path | None:
        """IC (data_builders/ic.py); IC-PART, a subset of IC the size of MMGIC."""
        b = self.cfg.build
        if name == "ic":
            fusion = {"detailed_captions": b.detailed_captions}
            out = self._out("ic", source, ic.prompts(b), {**common, **ic.settings(b), **fusion})
            if build and not is_complete(out):
                self._finish(out, lambda: ic.build_ic(Job(self.annotator, b, open_dataset(source)), out))
            return out if is_complete(out) or not build else None
        mmgic_dir = self.dir("mmgic", build)
        if mmgic_dir is None or not is_complete(mmgic_dir):
            return None
        n = json.loads((mmgic_dir / "manifest.json").read_text())["num_samples"]
        out = self._out("ic_part", source, [], {"n": n, "seed": self.annotator.cfg.seed})
        if build and not is_complete(out):
            job = Job(self.annotator, b, open_dataset(source))
            self._finish(out, lambda: ic.build_subset(job, out, n, "ic_part"))
        return out if is_complete(out) or not build else None

    def _caption_format(self, name: str, source: Path, common: dict, build: bool) -> Path | None:
        """A caption format of seed 002 (its input is the AltText), or AltText + a format (its input is
        that format's dataset, whose own input holds the AltText)."""
        b = self.cfg.build
        if name in caption_formats.FORMATS:
            out = self._out(name, source, [caption_formats.prompt_name(name)], common)
            if build and not is_complete(out):
                job = Job(self.annotator, b, open_dataset(source))
                self._finish(out, lambda: caption_formats.build_format(job, out, name))
            return out if is_complete(out) or not build else None
        alt = self.dir(b.inputs[caption_formats.CONCATS[name]], build)
        if alt is None:
            return None
        out = self._out(name, source, [], {**common, "alttext": _content_hash(alt)})
        if build and not is_complete(out):
            job = Job(self.annotator, b, open_dataset(source))
            self._finish(out, lambda: caption_formats.build_concat(job, open_dataset(alt), out, name))
        return out if is_complete(out) or not build else None

    def scale_stages(self, pool: Path) -> dict[str, Path]:
        """Where SCALE's scoring stages of `pool` are built (once per pool, annotator and settings)."""
        b = self.cfg.build
        common = {"limit": b.limit, "unit_size": b.unit_size}
        iqa = scale.iqa_setting(b.scale_iqa)
        mm_prompts = ["scale_task", "scale_caption_general", "scale_caption_task", "scale_multimodal"]
        return {
            "unimodal": self._out("scale_unimodal", pool, scale.unimodal_prompts(b.scale_iqa), common | iqa),
            "tasks": self._out("scale_tasks", pool, ["scale_task"], common),
            "multimodal": self._out("scale_multimodal", pool, mm_prompts, common),
        }

    def _scale(self, name: str, source: Path, common: dict, build: bool) -> Path | None:
        """SCALE's scoring stages over the pool (data_builders/scale.py), each built once and shared by
        every selection of that pool, then the selection `name` asks for."""
        b = self.cfg.build
        stages = self.scale_stages(source)
        mm_prompts = ["scale_task", "scale_caption_general", "scale_caption_task", "scale_multimodal"]
        settings = {"mode": SCALE_MODES[name], "fraction": b.scale_fraction, "seed": b.scale_seed}
        settings |= {"weights": b.scale_weights} if name == "scale" else {}
        settings |= scale.iqa_setting(b.scale_iqa)
        prompts = [*scale.unimodal_prompts(b.scale_iqa), *mm_prompts]
        if name == "scale_clip":  # a similarity, no annotator: only the CLIP's stage
            stages = {"clip": self._out("scale_clip_scores", source, [], {**common, "scorer": b.scale_clip})}
            prompts, settings = [], {**settings, "scorer": b.scale_clip}
        out = self._out(name, source, prompts, {**common, **settings, "version": scale.SCALE_VERSION})
        if not build or is_complete(out):
            return out
        job = Job(self.annotator, b, open_dataset(source))
        steps = {
            "unimodal": lambda: scale.build_unimodal(job, stages["unimodal"]),
            "tasks": lambda: scale.build_tasks(job, stages["tasks"]),
            "multimodal": lambda: scale.build_multimodal(job, stages["tasks"], stages["multimodal"]),
            "clip": lambda: scale.build_clip_scores(job, stages["clip"], b.scale_clip),
        }
        for stage, make in ((s, steps[s]) for s in stages):
            if not is_complete(stages[stage]) and not self._finish(stages[stage], make):
                return None
        mode, fraction, seed = SCALE_MODES[name], b.scale_fraction, b.scale_seed
        self._finish(
            out, lambda: scale.build_selection(job, stages, out, mode, fraction, seed, b.scale_weights)
        )
        return out if is_complete(out) else None

    def _finish(self, out: Path, build: Callable[[], dict | None]) -> bool:
        """Build this process's share of `out`; then, with `build.wait_s`, keep checking (each call
        resumes, so it also writes the manifest once every share is done) until the other processes
        have finished theirs. False if they have not and there is no waiting."""
        deadline = time.monotonic() + self.cfg.build.wait_s
        while build() is None:
            left = deadline - time.monotonic()
            if left <= 0:
                if self.cfg.build.wait_s:
                    raise BuildFailed(
                        f"{out}: the other build.shard processes did not finish their units within "
                        f"build.wait_s={self.cfg.build.wait_s} (are all {self.cfg.build.shard_index()[1]} "
                        "running?)"
                    )
                return False
            time.sleep(min(WAIT_POLL_S, left))
        return True


# Annotated source -> the Sources method that builds it from its input (`build.inputs`): a new source
# is its builder module, its ANNOTATED_SOURCES line and its entry here.
BUILDERS: dict[str, Callable[..., Path | None]] = {
    "caption1": Sources._from_caption,
    "vqa1": Sources._from_caption,
    "pair_caption": Sources._from_semantic,
    "interleaved": Sources._from_semantic,
    "mmgic": Sources._mmgic,
    "ic": Sources._ic,
    "ic_part": Sources._ic,
    **{name: Sources._caption_format for name in (*caption_formats.FORMATS, *caption_formats.CONCATS)},
    **{name: Sources._scale for name in SCALE_MODES},
}


def _stamp_ok(path: Path, stamp: dict) -> bool:
    return path.exists() and json.loads(path.read_text()) == stamp


def prepare_world(data: DataConfig, patch_size: int = 8) -> Path:
    """Build (idempotently) the world sources, tokenizer and benchmarks; returns the world directory.

    A part is rebuilt only when its recorded provenance differs from what the config asks for. Build
    processes started together take turns (a file lock): the first builds, the others find it built.
    """
    root = world_dir(data)
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        _prepare_world(root, data, patch_size)
    return root


def _prepare_world(root: Path, data: DataConfig, patch_size: int) -> None:
    rebuilt = False
    for source in WORLD_SOURCES:
        out = root / source
        n = data.sizes.get(source)
        if n is None:
            raise ConfigError(f"data.sizes has no entry for world source {source!r}")
        want = world_sources.provenance(data.world, source, n, data.vqa_turns)
        manifest = out / "manifest.json"
        if manifest.exists() and json.loads(manifest.read_text())["provenance"] == want:
            continue
        world_sources.build_source(
            data.world, source, n, out, data.samples_per_shard, data.vqa_turns, patch_size
        )
        rebuilt = True
    tok_stamp = {
        "vocab_size": data.vocab_size,
        "sources": {s: _content_hash(root / s) for s in WORLD_SOURCES},
        "annotator_language": [ORACLE_VERSION, TOKENIZER_ANNOTATOR_SAMPLES],
    }
    if (
        rebuilt
        or not _stamp_ok(root / "tokenizer.stamp.json", tok_stamp)
        or not (root / "tokenizer.json").exists()
    ):
        text = chain(
            world_sources.corpus(root, list(WORLD_SOURCES)),
            descriptions.corpus(data.world, TOKENIZER_ANNOTATOR_SAMPLES),
        )
        train_tokenizer(text, data.vocab_size, root / "tokenizer.json")
        write_json_atomic(root / "tokenizer.stamp.json", tok_stamp)
    bench_stamp = {"world": data.world.identity(), "n": data.bench_per_ability, "version": BENCH_VERSION}
    if not _stamp_ok(root / "bench" / "stamp.json", bench_stamp):
        build_benchmarks(data.world, root / "bench", data.bench_per_ability)
        write_json_atomic(root / "bench" / "stamp.json", bench_stamp)


def world_detection(data: DataConfig, root: Path) -> Path:
    """The world's detection data as a dataset under the world directory `root` (COCO files written,
    then read by the real detection adapter, captions included); built once per world setting, under
    a lock like the other sources."""
    root.mkdir(parents=True, exist_ok=True)
    n = data.sizes.get("detection")
    if n is None:
        raise ConfigError("data.sizes has no entry for world source 'detection'")
    out = root / "detection"
    want = {**world_sources.provenance(data.world, "detection", n, 0), "adapter": adapters.ADAPTER_VERSION}
    with open(root / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        manifest = out / "manifest.json"
        if manifest.exists() and json.loads(manifest.read_text())["provenance"] == want:
            return out
        raw = root / "detection-coco"
        instances = world_sources.build_detection(data.world, n, raw)
        rejects = RejectLog()
        samples = detection.detection(
            instances, raw / "images", rejects, data.world.image_size, "detection", raw / "captions.json"
        )
        adapters.convert(
            samples, out, "detection", want, data.samples_per_shard, data.world.image_size, rejects=rejects
        )
    return out


def world_on_request(name: str, data: DataConfig, root: Path, patch_size: int = 8) -> Path:
    """A world source built only when read (the AltText of seed 002), once per world setting."""
    root.mkdir(parents=True, exist_ok=True)
    n = data.sizes.get(name)
    if n is None:
        raise ConfigError(f"data.sizes has no entry for world source {name!r}")
    out = root / name
    with open(root / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        manifest = out / "manifest.json"
        want = world_sources.provenance(data.world, name, n, data.vqa_turns)
        if not (manifest.exists() and json.loads(manifest.read_text())["provenance"] == want):
            world_sources.build_source(
                data.world, name, n, out, data.samples_per_shard, data.vqa_turns, patch_size
            )
    return out


def source_dirs(names: list[str], cfg: RunConfig, world_root: Path | None) -> dict[str, Path]:
    """Directories of already-built sources (every rank calls it after rank 0 built them)."""
    sources = Sources(cfg, world_root)
    return {n: sources.dir(n, build=False) for n in names}  # type: ignore[misc]


def prepare_sources(names: list[str], cfg: RunConfig, world_root: Path | None) -> dict[str, Path | None]:
    """Build every missing source of `names` (this process's share, under build.shard=i/n)."""
    sources = Sources(cfg, world_root)
    return {n: sources.dir(n) for n in names}


def _content_hash(path: Path) -> str:
    return json.loads((path / "manifest.json").read_text())["content_hash"]
