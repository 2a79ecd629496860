"""What makes a run the same run: a resumed run must match the saved one in everything that shapes its
data stream and its optimisation, or it does not continue that run (docs/design.md, "Resumption").
A branching run (`train.branch_from`) must match its donor in all of that up to where their curricula
part, and starts from the donor's checkpoint there.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

from mmkd.checkpoint import COMMITTED, latest_checkpoint, read_meta
from mmkd.config import ConfigError, RecipeConfig, RunConfig, micro_batch_for
from mmkd.curriculum import Stage, stage_bounds
from mmkd.recipe_config import StageConfig

# Settings that change neither the data stream nor the optimisation: a resume may change them.
RESUME_FREE = {
    "train.resume",
    "train.branch_from",
    "train.stage_checkpoints",
    "train.log_every",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "train.activation_checkpointing",
    "train.compile",
    "train.threads",
    "train.wandb",
    "train.wandb_project",
    "train.trace_samples",
    "train.dist_timeout_s",
    "train.wait_timeout_s",
    "train.break_lock",
    "data.root",
}


def _flatten(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        out |= _flatten(v, f"{key}.") if isinstance(v, dict) and v else {key: v}
    return out


def run_identity(cfg: RunConfig, sources: dict[str, Path], world_size: int) -> dict[str, Any]:
    """Everything a resumed run must share with the saved one to continue the same stream and
    optimisation: seed, recipe, model, data and train settings, world size, and each source's
    content hash (a rebuilt source is other data under the same name)."""
    config = asdict(cfg)
    flat = {"seed": cfg.seed, "world_size": world_size}
    flat |= _flatten({sec: config[sec] for sec in ("recipe", "model", "data", "train")})
    flat["train.micro_batch"] = micro_batch_for(cfg.train, world_size)  # as trained (0 means "follow")
    for name, path in sorted(sources.items()):
        flat[f"sources.{name}"] = json.loads((path / "manifest.json").read_text()).get("content_hash")
    return json.loads(json.dumps({k: v for k, v in flat.items() if k not in RESUME_FREE}))


def check_resumable(meta: dict, identity: dict[str, Any], run_dir: Path, force: bool) -> bool:
    """Refuse to resume a run that differs in what makes the stream, naming every differing key;
    True when nothing differs (with `force`, False lets a differing run continue).

    Checkpoints written before identities were saved are compared on their config alone."""
    saved = meta.get("identity")
    if saved is None:
        saved = _flatten({k: v for k, v in meta["config"].items() if isinstance(v, dict)})
        saved["seed"] = meta["config"].get("seed")
    diff = [
        f"{k} (saved {saved[k]!r}, now {v!r})" for k, v in identity.items() if k in saved and saved[k] != v
    ]
    if not diff:
        return True
    if force:
        print(f"resume: train.resume=force continues {run_dir} although {'; '.join(diff)} changed")
        return False
    raise ConfigError(
        f"{run_dir} holds a run that differs in {'; '.join(diff)}: resuming would not continue the same "
        "run. Use another run_dir, train.resume=false to start over, or train.resume=force to continue "
        "anyway (the data stream will then differ from an uninterrupted run's)"
    )


# Recipe keys that only say which stages a run trains: a branching run compares the stages themselves
# (names, bounds, mixtures), so two recipes that share their first stages may differ here.
PLAN_KEYS = (
    "recipe.name",
    "recipe.description",
    "recipe.mixture",
    "recipe.stages",
    "recipe.sft_fraction",
    "recipe.sft_mixture",
)


def shared_stages(ours: list[Stage], theirs: list[Stage]) -> int:
    """How many leading stages two curricula share exactly: name, first and end step, mixture."""
    k = 0
    while k < min(len(ours), len(theirs)) and ours[k] == theirs[k]:
        k += 1
    return k


def _show(stage: Stage) -> str:
    name, start, end, weights = stage
    return f"{name!r} (steps {start}..{end}, {weights})"


def _their_stages(donor: Path, meta: dict, total: int) -> list[Stage]:
    recipe = meta["config"]["recipe"]
    try:  # exactly as saved: complete, so not merged onto the schema (whose default mixtures add keys)
        saved = RecipeConfig(**recipe | {"stages": [StageConfig(**s) for s in recipe["stages"]]})
    except (TypeError, KeyError) as e:
        raise ConfigError(f"train.branch_from={donor}: its saved recipe does not read ({e})") from None
    return stage_bounds(saved, total)


def _differences(meta: dict, identity: dict[str, Any], sources: set[str], where: Path) -> list[str]:
    """The identity keys outside the recipe's plan, and the content of `sources`, that differ."""
    saved = meta.get("identity")
    if saved is None:
        raise ConfigError(f"{where} predates saved run identities: unchecked, so no run branches from it")
    keys = {
        key
        for key in set(identity) | set(saved)
        if not any(key == p or key.startswith(f"{p}.") for p in PLAN_KEYS)
        and (not key.startswith("sources.") or key.removeprefix("sources.") in sources)
    }
    return [
        f"{key} (theirs {saved.get(key)!r}, ours {identity.get(key)!r})"
        for key in sorted(keys)
        if saved.get(key) != identity.get(key)
    ]


def branch_checkpoint(donor: Path, identity: dict[str, Any], stages: list[Stage]) -> tuple[Path, str]:
    """The donor run's checkpoint where this run's curriculum first differs from the donor's, and the
    name of the stage that begins there. Up to that checkpoint the two runs must have trained the same
    stages on the same data with the same settings (the identity less the recipe's plan, and the
    sources of the stages after it); a `ConfigError` names what differs or what is missing."""
    latest = latest_checkpoint(donor)
    if latest is None:
        raise ConfigError(f"train.branch_from={donor}: no committed checkpoint under {donor / 'checkpoints'}")
    meta, total = read_meta(latest), stages[-1][2]
    if diff := _differences(meta, identity, set(), latest):
        raise ConfigError(f"train.branch_from={donor} differs from this run in {'; '.join(diff)}")
    theirs = _their_stages(donor, meta, total)
    k = shared_stages(stages, theirs)
    if k == 0:
        raise ConfigError(
            f"train.branch_from={donor}: its first stage {_show(theirs[0])} is not this run's "
            f"{_show(stages[0])}, so the runs share nothing to branch from (a one-stage recipe's stream "
            "is seeded apart from a curriculum's)"
        )
    if k == len(stages):
        raise ConfigError(
            f"train.branch_from={donor} trains this run's whole curriculum: it is this run; "
            "evaluate or resume it instead"
        )
    name, step = stages[k][0], stages[k][1]
    path = donor / "checkpoints" / f"step-{step:08d}"
    if not (path / COMMITTED).exists():
        kept = sorted(int(p.name[5:]) for p in donor.glob("checkpoints/step-*") if (p / COMMITTED).exists())
        raise ConfigError(
            f"train.branch_from={donor} has no committed checkpoint at step {step}, where this run's stage "
            f"{name!r} begins (it keeps steps {kept}); a run keeps one where each stage ends unless "
            "train.stage_checkpoints=false"
        )
    # Checked again as that checkpoint recorded it (a forced resume may have changed the run since),
    # with the content of the data the two runs share.
    meta = read_meta(path)
    shared = {source for stage in stages[:k] for source in stage[3]}
    diff = _differences(meta, identity, shared, path)
    if diff or shared_stages(stages, _their_stages(donor, meta, total)) < k:
        raise ConfigError(
            f"train.branch_from={donor} differs from this run before step {step} in "
            f"{'; '.join(diff) or 'its curriculum'}"
        )
    return path, name
