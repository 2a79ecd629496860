"""One run of a recipe: check sources -> build what is missing (world, annotators) -> train -> evaluate.

`launch/train.py` (Hydra) and the tests both call `run()`, so the CLI adds nothing but config
composition. Under torchrun, rank 0 builds data while the other ranks wait at a barrier.
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict
from pathlib import Path

from omegaconf import OmegaConf

import mmkd
from mmkd.checkpoint import load_checkpoint
from mmkd.config import RunConfig
from mmkd.data_builders.sources import (
    check_sources,
    prepare_sources,
    prepare_world,
    source_dirs,
    world_dir,
)
from mmkd.distributed import DistInfo, barrier
from mmkd.eval.custom import evaluate_suite, load_suite
from mmkd.eval.report import markdown_table
from mmkd.eval.world_bench import evaluate_world
from mmkd.model import VLM
from mmkd.shards import write_json_atomic
from mmkd.templates import Templates
from mmkd.tokenizer import Tokenizer
from mmkd.trainer import train


def resolved_mixture(cfg: RunConfig, dirs: dict[str, Path]) -> dict:
    """The mixture as trained: weights, their unit, and each source's manifest identity."""
    out = {"recipe": cfg.recipe.name, "weight_unit": cfg.recipe.weight_unit, "sources": {}}
    if cfg.recipe.stages:
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


def code_version() -> dict:
    """The package version and, in a git checkout, the commit and whether files differ from it."""
    repo = Path(__file__).resolve().parents[1]
    out = {"version": mmkd.__version__, "git": None, "dirty": None}
    if (repo / ".git").exists():
        git = ["git", "-C", str(repo)]
        head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True)
        status = subprocess.run([*git, "status", "--porcelain"], capture_output=True, text=True)
        if head.returncode == 0:
            out |= {"git": head.stdout.strip(), "dirty": bool(status.stdout.strip())}
    return out


def evaluate(
    model: VLM, cfg: RunConfig, tokenizer: Tokenizer, world_root: Path, out_dir: Path, title: str
) -> dict:
    """The eval suites on `model`: `results.json` (scores, resolved config, the mixture's manifest
    hashes, code version), `predictions.jsonl` (one line per item) and `report.md` in `out_dir`."""
    templates = Templates(tokenizer, cfg.model.image_tokens, cfg.model.max_seq_len)
    e = cfg.eval
    suites, records = {}, []
    if e.abilities:
        suites["world"], records = evaluate_world(
            model, templates, world_root, e.abilities, e.batch_size, e.max_new_tokens, e.max_items, cfg.seed
        )
    if e.lm_eval_tasks:
        from mmkd.eval.lm_eval_suite import evaluate_lm_eval  # optional: the [eval] extra

        suites["lm_eval"], recs = evaluate_lm_eval(
            model,
            templates,
            e.lm_eval_tasks,
            e.lm_eval_include,
            world_root,
            out_dir,
            e.batch_size,
            e.max_items,
        )
        records += [{"suite": "lm_eval", **r} for r in recs]
    for name, path in e.custom.items():
        items = load_suite(path)
        items = items[: e.max_items] if e.max_items else items
        result, recs = evaluate_suite(model, templates, items, e.batch_size, e.max_new_tokens)
        suites[name] = {name: result}
        records += [{"suite": name, "benchmark": name, **r} for r in recs]
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "predictions.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in records))
    tmp.replace(out_dir / "predictions.jsonl")
    mixture = Path(cfg.run_dir) / "mixture.json"
    write_json_atomic(
        out_dir / "results.json",
        {
            "recipe": cfg.recipe.name,
            "seed": cfg.seed,
            "model": cfg.model.name,
            "suites": suites,
            "mixture": json.loads(mixture.read_text()) if mixture.exists() else None,
            "code": code_version(),
            "config": asdict(cfg),
        },
    )
    table = "\n".join(markdown_table(results, f"{title}: {name}") for name, results in suites.items())
    (out_dir / "report.md").write_text(table)
    return suites


def run(cfg: RunConfig, info: DistInfo) -> dict | None:
    """Train `cfg.recipe` and evaluate it; returns the eval results on rank 0."""
    names = cfg.recipe.sources()
    check_sources(cfg.recipe.name, names, cfg)  # before any compute
    if cfg.eval.lm_eval_tasks:  # a misspelt task must not surface after hours of training
        from mmkd.eval.lm_eval_suite import check_tasks

        check_tasks(cfg.eval.lm_eval_tasks, cfg.eval.lm_eval_include)
    run_dir = Path(cfg.run_dir)
    if info.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
        world_root = prepare_world(cfg.data, cfg.model.patch_size)
        pending = [n for n, d in prepare_sources(names, cfg, world_root).items() if d is None]
        if pending:
            raise RuntimeError(f"sources {pending} are still being built by other build.shard processes")
    barrier()
    world_root = world_dir(cfg.data)
    dirs = source_dirs(names, cfg, world_root)
    tokenizer = Tokenizer.load(world_root / "tokenizer.json")
    if info.is_main:
        (run_dir / "config.yaml").write_text(OmegaConf.to_yaml(OmegaConf.structured(asdict(cfg))))
        write_json_atomic(run_dir / "mixture.json", resolved_mixture(cfg, dirs))
    final = train(cfg, dirs, tokenizer, run_dir, info)
    if not (cfg.eval.after_train and info.is_main):
        return None
    model = VLM(cfg.model, tokenizer.image_id)
    load_checkpoint(final, model)  # the saved weights: eval-only on them gives the same scores
    results = evaluate(
        model, cfg, tokenizer, world_root, run_dir / "eval", f"{cfg.recipe.name} (seed {cfg.seed})"
    )
    print("\n" + (run_dir / "eval" / "report.md").read_text())
    return results
