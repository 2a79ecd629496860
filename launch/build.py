"""Build a recipe's data without training: world sources, tokenizer, benchmarks and annotated sources.

    python launch/build.py                                  # the world (what recipe=baseline needs)
    python launch/build.py recipe=pair_caption_v2           # + semantic analysis, pairs, pair captions
    python launch/build.py recipe=synthetic_vqa build.shard=0/4   # one of 4 parallel processes
    python launch/build.py recipe=pair_caption_v2 +knowledge=true # + KD per source and the Fig. 4 report
    python launch/build.py +detection=true                  # + the world's detection data (COCO files)
    python launch/build.py recipe=mmgic_cldr                # + label descriptions and MMGIC documents
    python launch/build.py recipe=caption_dsc_plus          # + web AltText and its DSC+ re-captions
    python launch/build.py +captions=true                   # + the caption report of seed 002 (Table A8)
    python launch/build.py recipe=scale_top10 +selection=true   # + every selection, checked against the truth
    python launch/build.py recipe=pair_caption_v2 annotator=openai annotator.model=MODEL  # a served model

Training builds what it needs on first use; this is for building ahead, in parallel, or on another
machine. Finished parts are skipped, so rerunning after a kill resumes (docs/builders.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf

from mmkd.config import RunConfig, to_run_config
from mmkd.data_builders.annotated import Job
from mmkd.data_builders.knowledge import build_knowledge, report
from mmkd.data_builders.sources import SCALE_MODES, Sources, check_sources, prepare_world, world_detection
from mmkd.errors import reported
from mmkd.eval import caption_report, selection_report, selection_truth
from mmkd.launch._overrides import check_overrides
from mmkd.shards import open_dataset, write_json_atomic
from mmkd.tokenizer import Tokenizer

FLAGS = ("detection", "knowledge", "captions", "selection")


@hydra.main(config_path="pkg://mmkd.recipes", config_name="tool", version_base=None)
def _main(dcfg: DictConfig) -> None:
    flags = {f: bool(OmegaConf.select(dcfg, f, default=False)) for f in FLAGS}
    dcfg = OmegaConf.masked_copy(dcfg, [k for k in dcfg if k not in FLAGS])
    with reported():
        cfg = to_run_config(dcfg)
        names = cfg.recipe.sources()
        measured = cfg.build.knowledge_sources if flags["knowledge"] else []
        measured += cfg.build.caption_sources if flags["captions"] else []
        measured += selections(cfg) if flags["selection"] else []
        check_sources(cfg.recipe.name, sorted({*names, *measured}), cfg)
        build(cfg, names, flags)


def build(cfg: RunConfig, names: list[str], flags: dict[str, bool]) -> None:
    """Build the recipe's sources (this process's share) and, if asked, the knowledge report and the
    detection annotations."""
    root = prepare_world(cfg.data, cfg.model.patch_size)
    print(f"world data: {root}")
    sources = Sources(cfg, root)
    pending = []
    for name in names:
        path = sources.dir(name)
        print(f"{name}: {path or 'this shard is done; other build.shard processes are still running'}")
        pending += [name] if path is None else []
    if flags["knowledge"]:
        results = {}
        for name in cfg.build.knowledge_sources:
            path = sources.dir(name)
            if path is None:
                pending.append(name)
                continue
            out = sources.knowledge_dir(name, path)
            job = Job(sources.annotator, cfg.build, open_dataset(path))
            if build_knowledge(job, out, name) is not None:
                results[name] = out
        if len(results) == len(cfg.build.knowledge_sources):
            table = Path(cfg.data.root) / "reports" / f"knowledge-{cfg.recipe.name}"
            report(results, table, reference=cfg.build.knowledge_sources[0])
            print(table.with_suffix(".md").read_text())
    if flags["captions"]:
        pending += write_caption_report(cfg, sources, root)
    if flags["selection"]:
        pending += write_selection_report(cfg, sources)
    if flags["detection"]:
        print(f"detection data: {world_detection(cfg.data, root)} (COCO files in detection-coco/)")
    if sources.used_annotator is not None:
        print(f"annotator: {sources.used_annotator.report()}")
    if pending:
        print(f"not finished yet (other build.shard processes): {pending}")


def write_caption_report(cfg: RunConfig, sources: Sources, root: Path) -> list[str]:
    """Measure `build.caption_sources` (seed 002 Table A8); returns those not built yet."""
    dirs = {name: sources.dir(name) for name in cfg.build.caption_sources}
    pending = [name for name, path in dirs.items() if path is None]
    if pending:
        return pending
    tokenizer_dir = cfg.tokenizer_dir()
    tokenizer = (
        Tokenizer.from_pretrained(tokenizer_dir) if tokenizer_dir else Tokenizer.load(root / "tokenizer.json")
    )
    out = Path(cfg.data.root) / "reports" / f"captions-{cfg.recipe.name}"
    caption_report.report(dirs, sources.annotator, tokenizer, cfg.build, out)  # type: ignore[arg-type]
    print(out.with_suffix(".md").read_text())
    return []


def selections(cfg: RunConfig) -> list[str]:
    """Every SCALE selection; the CLIP baseline only with a CLIP to score with (build.scale_clip)."""
    return [name for name in SCALE_MODES if name != "scale_clip" or cfg.build.scale_clip]


def write_selection_report(cfg: RunConfig, sources: Sources) -> list[str]:
    """Build every selection of the SCALE pool and, for the world's pool (planted defects), report each
    stage's agreement with the truth; returns the selections not built yet."""
    dirs = {name: sources.dir(name) for name in selections(cfg)}
    pending = [name for name, path in dirs.items() if path is None]
    pool = sources.dir(cfg.build.inputs["scale"])
    if pending or pool is None:
        return pending
    page = selection_report.write(
        pool,
        sources.scale_stages(pool),
        dirs["scale"],
        Path(cfg.data.root) / "reports" / f"selection-{cfg.recipe.name}",
    )  # type: ignore[arg-type]
    print(f"selection report: {page}")
    if not all("defect" in s.metadata for s in open_dataset(pool).iter(images=False)):
        print(f"{pool} has no planted defects: selections built, no truth to check them against")
        return []
    report = selection_truth.agreement(pool, sources.scale_stages(pool), dirs)  # type: ignore[arg-type]
    out = Path(cfg.data.root) / "reports" / f"selection-{cfg.recipe.name}" / "truth.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out, report)
    print(json.dumps(report, indent=2))
    return []


def main() -> None:
    """The command line's overrides checked in one line each, then Hydra composes and runs them (the
    console script `mmkd-build` calls this)."""
    with reported():
        check_overrides(sys.argv[1:])
    _main()


if __name__ == "__main__":
    main()
