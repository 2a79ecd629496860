"""One run of a recipe: check sources -> build what is missing (world, annotators) -> verify every shard
against its manifest -> train -> evaluate.

`launch/train.py` (Hydra) and the tests both call `run()`, so the CLI adds nothing but config
composition. Under torchrun, rank 0 builds data while the other ranks wait outside the default process
group (`wait_for_main`), so a build longer than a collective's timeout does not end the job.
"""

from __future__ import annotations

import importlib.util
import json
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path

from omegaconf import OmegaConf

from mmkd.checkpoint import COMMITTED, read_meta
from mmkd.config import ConfigError, RunConfig, micro_batch_for
from mmkd.data_builders.sources import (
    check_sources,
    needs_world,
    prepare_sources,
    prepare_world,
    pretrains_on_world,
    source_dirs,
    world_dir,
)
from mmkd.data_builders.visual_ids import discrete_sources
from mmkd.distributed import DistInfo, wait_for_main
from mmkd.errors import DataError
from mmkd.eval.suites import evaluate_checkpoint, evaluate_noise
from mmkd.foundations.store import VISUAL_TOKENIZER, foundation_paths, prepare_foundations
from mmkd.foundations.store import parts as foundation_parts
from mmkd.recipe_config import SFT_KINDS
from mmkd.run_lock import run_lock
from mmkd.shards import open_dataset, verify, write_json_atomic
from mmkd.tokenizer import Tokenizer
from mmkd.tracking import RunLog, log_eval
from mmkd.trainer import realised_shares, train, use_threads
from mmkd.visual_tokenizer_training import check_fits, tokenizer_for


def resolved_mixture(cfg: RunConfig, dirs: dict[str, Path]) -> dict:
    """The mixture as trained: weights, their unit, and each source's manifest identity."""
    out = {"recipe": cfg.recipe.name, "weight_unit": cfg.recipe.weight_unit, "sources": {}}
    if len(cfg.recipe.plan()) > 1:  # a curriculum, or a mixture and its instruction stage
        out["stages"] = [
            {"name": s.name, "fraction": s.fraction, "mixture": s.mixture} for s in cfg.recipe.plan()
        ]
    weights = cfg.recipe.active()  # empty for a curriculum: each stage states its own weights
    for name in cfg.recipe.sources():
        weight = weights.get(name)
        m = json.loads((dirs[name] / "manifest.json").read_text())
        out["sources"][name] = {
            "weight": weight,
            "path": str(dirs[name]),
            "num_samples": m["num_samples"],
            "kinds": m["kinds"],
            "content_hash": m["content_hash"],
        }
    return out


def run(cfg: RunConfig, info: DistInfo) -> dict | None:
    """Train `cfg.recipe` and evaluate it; returns the eval results on rank 0. Rank 0 holds the run
    directory's lock throughout, so a second job on it stops before building or training anything."""
    check(cfg, info)
    with run_lock(Path(cfg.run_dir), cfg.train.break_lock) if info.is_main else nullcontext():
        return _run(cfg, info)


def check(cfg: RunConfig, info: DistInfo) -> None:
    """Every check that needs no compute: sources, the batch split over the ranks, eval suites."""
    names = cfg.recipe.sources()
    check_sources(cfg.recipe.name, names, cfg)  # before any compute
    if Path(cfg.run_dir).exists() and not Path(cfg.run_dir).is_dir():
        raise ConfigError(
            f"run_dir={cfg.run_dir!r} is a file; a run needs a directory there (or give another)"
        )
    micro_batch_for(cfg.train, info.world_size)  # the batch splits over these ranks
    if cfg.model.family == "discrete":
        tokenizer_for(cfg.model)  # the tokenizer shape the model states is one we can build
        if cfg.model.tune == "lora" and importlib.util.find_spec("peft") is None:
            raise ConfigError("model.tune=lora needs peft: pip install 'mmkd[lora]' (or peft)")
        if cfg.model.visual_tokenizer:
            check_fits(cfg.model, Path(cfg.model.visual_tokenizer))
        elif not needs_world(cfg):
            raise ConfigError(
                "model.family=discrete on real data alone needs model.visual_tokenizer (a tokenizer "
                "directory: docs/discrete.md); only the knowledge world can train one here"
            )
    check_protocol(cfg)
    if cfg.eval.lm_eval_tasks:  # a misspelt task must not surface after hours of training
        from mmkd.eval.lm_eval_suite import check_tasks

        check_tasks(cfg.eval.lm_eval_tasks, cfg.eval.lm_eval_include)
    if cfg.eval.vlmeval_datasets:  # likewise a missing TSV
        from mmkd.eval.vlmeval_suite import check_datasets, judge_from

        check_datasets(cfg.eval.vlmeval_datasets, cfg.eval.vlmeval_data, judge_from(cfg.eval))


def check_protocol(cfg: RunConfig) -> None:
    """The world protocol's defaults (protocol=instruct) serve runs that pre-train on the world; a run
    on data of its own is told which key to set rather than given the world's towers or its
    instruction data behind its back."""
    if pretrains_on_world(cfg):
        return
    towers = foundation_parts(cfg.model) if cfg.model.init == "world" else []
    if towers:
        keys = " / ".join(f"model.init_{'vision' if t == 'vision' else 'decoder'}" for t in towers)
        raise ConfigError(
            f"model.init=world starts the {' and '.join(towers)} tower from the world foundations, but this "
            f"run pre-trains on no world data: name {keys}, or model.init=scratch (protocol=pretrain)"
        )
    if cfg.recipe.sft_fraction and "instruct" in cfg.recipe.plan()[-1].mixture:
        raise ConfigError(
            "recipe.sft_mixture.instruct: the world's instruction data would end a run that pre-trains on "
            "no world data: set recipe.sft_mixture to your own Q/A data, or recipe.sft_fraction=0 "
            "(protocol=pretrain)"
        )


def visual_tokenizer_dir(cfg: RunConfig, world_root: Path | None) -> Path:
    """The discrete model's tokenizer: `model.visual_tokenizer`, or the world's foundation of this
    shape (built or not)."""
    if cfg.model.visual_tokenizer:
        return Path(cfg.model.visual_tokenizer)
    world_tokenizer = Tokenizer.load(world_root / "tokenizer.json")  # not read by the visual tokenizer
    path = foundation_paths(
        cfg.model, cfg.foundations, cfg.data.world, world_root, world_tokenizer, [VISUAL_TOKENIZER]
    )
    return path[VISUAL_TOKENIZER] / "model"


def evaluated(out_dir: Path, checkpoint: Path, cfg: RunConfig) -> bool:
    """Whether `out_dir` holds an evaluation of `checkpoint` as committed now, with these eval
    settings: a rerun of a finished run then does not evaluate it again (eval-only with
    `overwrite=true` redoes it)."""
    results = out_dir / "results.json"
    if not results.exists() or results.stat().st_mtime < (checkpoint / COMMITTED).stat().st_mtime:
        return False
    saved = json.loads(results.read_text()).get("config", {}).get("eval")
    return json.dumps(saved, sort_keys=True) == json.dumps(asdict(cfg.eval), sort_keys=True)


def check_sft_sources(cfg: RunConfig, dirs: dict) -> None:
    """An SFT stage trains on answers only: each of its sources must hold Q/A samples alone."""
    if not cfg.recipe.sft_fraction:
        return
    for name in cfg.recipe.plan()[-1].mixture:
        kinds = json.loads((Path(dirs[name]) / "manifest.json").read_text()).get("kinds", {})
        other = sorted(set(kinds) - set(SFT_KINDS))
        if other:
            raise ConfigError(
                f"recipe.sft_mixture.{name}: {dirs[name]} holds {other} samples; the SFT stage trains on "
                f"answers only, so its sources must hold {list(SFT_KINDS)} samples alone"
            )


def _run(cfg: RunConfig, info: DistInfo) -> dict | None:
    use_threads(cfg.train, info)  # the builds (foundations, visual tokenizer) share the cores too
    names = cfg.recipe.sources()
    run_dir = Path(cfg.run_dir)
    world_root = world_dir(cfg.data) if needs_world(cfg) else None  # real data alone: no world built
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        if world_root is not None:
            prepare_world(cfg.data, cfg.model.patch_size)
        prepared = prepare_sources(names, cfg, world_root)
        pending = [n for n, d in prepared.items() if d is None]
        if pending:
            raise RuntimeError(f"sources {pending} are still being built by other build.shard processes")
        if cfg.model.family == "discrete":  # images become visual ids once, before training
            if not cfg.model.visual_tokenizer:
                world_tokenizer = Tokenizer.load(world_root / "tokenizer.json")
                prepare_foundations(
                    cfg.model,
                    cfg.foundations,
                    cfg.data.world,
                    world_root,
                    world_tokenizer,
                    info.device,
                    [VISUAL_TOKENIZER],
                )
            tokenizer_dir = visual_tokenizer_dir(cfg, world_root)
            prepared = discrete_sources(prepared, tokenizer_dir, Path(cfg.data.root), cfg.build, info.device)
        for name, d in prepared.items():  # a corrupt shard or an empty source is named now
            dataset = open_dataset(d)
            verify(dataset, Path(cfg.data.root) / "verified")
            if not len(dataset):
                raise DataError(
                    f"source {name!r}: {d} holds no samples (its manifest lists none); rebuild it or drop "
                    "it from the recipe"
                )
        check_sft_sources(cfg, prepared)
        if cfg.model.init == "world":
            world_tokenizer = Tokenizer.load(world_root / "tokenizer.json")
            prepare_foundations(
                cfg.model, cfg.foundations, cfg.data.world, world_root, world_tokenizer, info.device
            )
    wait_for_main(info)
    dirs = source_dirs(names, cfg, world_root)
    if cfg.model.family == "discrete":
        cfg.model.visual_tokenizer = str(visual_tokenizer_dir(cfg, world_root))
        dirs = discrete_sources(dirs, Path(cfg.model.visual_tokenizer), Path(cfg.data.root))
    tokenizer_dir = cfg.tokenizer_dir()
    if tokenizer_dir is not None:
        tokenizer = Tokenizer.from_pretrained(tokenizer_dir)
    else:
        tokenizer = Tokenizer.load(world_root / "tokenizer.json")
    if cfg.model.init == "world":  # the run starts from them, and its config.yaml records which
        world_tokenizer = Tokenizer.load(world_root / "tokenizer.json")
        found = foundation_paths(cfg.model, cfg.foundations, cfg.data.world, world_root, world_tokenizer)
        for part, key in (("text", "init_decoder"), ("vision", "init_vision")):
            if part in found:
                setattr(cfg.model, key, str(found[part] / "model"))
    if info.is_main:
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(asdict(cfg))))
        write_json_atomic(run_dir / "mixture.json", resolved_mixture(cfg, dirs))

    def evaluate_step(checkpoint: Path, out_dir: Path, step: int) -> dict:
        """Periodic evaluation (`eval.every`); decontamination once per run, at the end, is enough."""
        title = f"{cfg.recipe.name} (seed {cfg.seed}, step {step})"
        return evaluate_checkpoint(
            checkpoint, cfg, tokenizer, world_root, out_dir, title, decontaminate=False, device=info.device
        )

    final = train(cfg, dirs, tokenizer, run_dir, info, evaluate_step)
    if info.is_main:  # the mixture as trained, beside the mixture as asked
        mixture = json.loads((run_dir / "mixture.json").read_text())
        mixture["realised"] = realised_shares(read_meta(final)["seen"])
        write_json_atomic(run_dir / "mixture.json", mixture)
    if not (cfg.eval.after_train and info.is_main):
        return None
    # The saved weights, whatever engine sharded them: eval-only on them gives the same scores.
    title = f"{cfg.recipe.name} (seed {cfg.seed})"
    if evaluated(run_dir / "eval", final, cfg):
        RunLog(run_dir, True)(f"eval: {run_dir / 'eval'} already holds this checkpoint's evaluation")
        results = json.loads((run_dir / "eval" / "results.json").read_text())["suites"]
    else:
        results = evaluate_checkpoint(
            final, cfg, tokenizer, world_root, run_dir / "eval", title, device=info.device
        )
        RunLog(run_dir, True)(f"eval: {final.name} -> {run_dir / 'eval' / 'report.md'}", echo=False)
        if cfg.train.wandb:
            log_eval(run_dir, cfg.train.wandb_project, results)
    if cfg.eval.noise_checkpoints:
        evaluate_noise(final, cfg, tokenizer, world_root, run_dir / "eval", info.device)
    print("\n" + (run_dir / "eval" / "report.md").read_text())
    return results
