"""The training loop: one function, a step that fits on a screen, checkpoint/log as plain `if` blocks.

Loss normalisation: each step sums token losses over all micro-batches and ranks and divides by the
global number of supervised tokens, so a long caption and a one-word answer weigh per token alike
whatever the batch split (STYLE.md rule 7).
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Iterator
from contextlib import nullcontext
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from mmkd import deepspeed_engine
from mmkd.checkpoint import latest_checkpoint, load_checkpoint, read_meta, save_checkpoint
from mmkd.config import ConfigError, RecipeConfig, RunConfig
from mmkd.distributed import (
    DistInfo,
    all_reduce_sum,
    backward,
    gradient_sync,
    local_float,
    parallelize,
    wait_for_main,
)
from mmkd.loader import MixtureDataset, make_loader, to_device
from mmkd.materialize import materialize
from mmkd.model import VLM
from mmkd.model.decoder import resolve_attention
from mmkd.model.flops import training_flops
from mmkd.model.hf import load_decoder, load_vision
from mmkd.schedules import learning_rate, param_groups
from mmkd.templates import IGNORE, Templates
from mmkd.tokenizer import Tokenizer
from mmkd.tracking import Tracker, append_line, device_peak_flops


class NonFiniteError(RuntimeError):
    """The loss or gradient norm is NaN/Inf; raised before the optimiser step, so weights stay finite."""


def accumulate_gradients(
    model: torch.nn.Module, micro: list[dict], world_size: int = 1, autocast: Any = None
) -> float:
    """Backward over all micro-batches of one step; returns the step's mean loss per supervised token.

    Gradients equal those of (summed token losses of the global batch) / (its supervised-token count),
    however the batch is split into micro-batches and ranks. `autocast`: the forward's precision
    context (bf16 autocast without a sharded engine's mixed precision), or None.
    """
    autocast = autocast or nullcontext()
    n_global = all_reduce_sum(sum((b["labels"][:, 1:] != IGNORE).sum() for b in micro).float())
    total = torch.zeros((), device=n_global.device)
    for i, b in enumerate(micro):
        with gradient_sync(model, i == len(micro) - 1), autocast:  # reduce across ranks once per step
            loss_sum, _ = model(b["input_ids"], b["pixels"], labels=b["labels"], segments=b.get("segments"))
            # The engines average gradients over ranks; multiply back so the result is sum / global count.
            backward(model, loss_sum * world_size / n_global)
        total += loss_sum.detach()
    return float(all_reduce_sum(total) / n_global)


def _check_finite(name: str, value: float, step: int, run_dir: Path) -> None:
    if not math.isfinite(value):
        raise NonFiniteError(
            f"step {step + 1}: the {name} is {value}; stopped before the optimiser step "
            f"(the last checkpoint in {run_dir / 'checkpoints'} is intact; try a lower train.lr)"
        )


def meta_model(cfg: RunConfig, tokenizer: Tokenizer) -> VLM:
    """The model's structure on the meta device: no memory, no weights yet (`init_model` draws them)."""
    if cfg.model.vocab_size == 0:
        cfg.model.vocab_size = tokenizer.vocab_size
    elif cfg.model.vocab_size < tokenizer.vocab_size:
        raise ConfigError(f"model.vocab_size={cfg.model.vocab_size} < tokenizer size {tokenizer.vocab_size}")
    with torch.device("meta"):
        return VLM(cfg.model, tokenizer.image_id)


def init_model(model: VLM, cfg: RunConfig, device: torch.device) -> None:
    """Allocate a meta-built (possibly sharded) model on `device` with the run's initial weights: drawn
    from `seed`, then the pretrained towers of `model.init_vision` / `model.init_decoder`."""
    materialize(model, device, cfg.seed)
    if cfg.model.init_vision:
        load_vision(model, cfg.model.init_vision)
    if cfg.model.init_decoder:
        load_decoder(model, cfg.model.init_decoder)


def build_model(cfg: RunConfig, tokenizer: Tokenizer, device: torch.device | None = None) -> VLM:
    """The run's initial model, whole, on `device` (the CPU by default)."""
    model = meta_model(cfg, tokenizer)
    init_model(model, cfg, device or torch.device("cpu"))
    return model


# Settings that change neither the data stream nor the optimisation: a resume may change them.
RESUME_FREE = {
    "train.resume",
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
    for name, path in sorted(sources.items()):
        flat[f"sources.{name}"] = json.loads((path / "manifest.json").read_text()).get("content_hash")
    return json.loads(json.dumps({k: v for k, v in flat.items() if k not in RESUME_FREE}))


def check_resumable(meta: dict, identity: dict[str, Any], run_dir: Path, force: bool) -> None:
    """Refuse to resume a run that differs in what makes the stream, naming every differing key.

    Checkpoints written before identities were saved are compared on their config alone."""
    saved = meta.get("identity")
    if saved is None:
        saved = _flatten({k: v for k, v in meta["config"].items() if isinstance(v, dict)})
        saved["seed"] = meta["config"].get("seed")
    diff = [
        f"{k} (saved {saved[k]!r}, now {v!r})" for k, v in identity.items() if k in saved and saved[k] != v
    ]
    if not diff:
        return
    if force:
        print(f"resume: train.resume=force continues {run_dir} although {'; '.join(diff)} changed")
        return
    raise ConfigError(
        f"{run_dir} holds a run that differs in {'; '.join(diff)}: resuming would not continue the same "
        "run. Use another run_dir, train.resume=false to start over, or train.resume=force to continue "
        "anyway (the data stream will then differ from an uninterrupted run's)"
    )


# Periodic evaluation, passed in by the pipeline (the core never imports eval/): (checkpoint, output
# directory, step) -> {suite: {benchmark: result}}.
Evaluate = Callable[[Path, Path, int], dict]


def train(
    cfg: RunConfig,
    sources: dict[str, Path],
    tokenizer: Tokenizer,
    run_dir: Path,
    info: DistInfo,
    evaluate: Evaluate | None = None,
) -> Path:
    """Train on the recipe's mixture for `train.budget_samples`; returns the final checkpoint.

    With `eval.every`, rank 0 runs `evaluate` on every K-th checkpoint while the other ranks wait.

    Evaluation loads that checkpoint into a plain model, so it sees the same weights whatever the
    engine sharded during training, and eval-only on it reproduces the automatic scores.
    """
    t, device = cfg.train, info.device
    if cfg.eval.every and evaluate is None:
        raise ConfigError("eval.every is set but no evaluate function was given to train()")
    torch.set_num_threads(t.threads or max(1, (os.cpu_count() or 1) // info.world_size))
    resolve_attention(cfg.model.attention, device)  # model.attention=flash without CUDA fails here
    identity = run_identity(cfg, sources, info.world_size)
    found = latest_checkpoint(run_dir) if t.resume != "false" else None
    if found is not None:  # before any compute
        check_resumable(read_meta(found), identity, run_dir, force=t.resume == "force")
    model = meta_model(cfg, tokenizer)
    # Distribution first (the model on the meta device), then the weights on each rank's device, then
    # the optimiser over the (possibly sharded) parameters: torchtitan's order.
    wrapped = parallelize(
        model,
        info,
        lambda m: init_model(m, cfg, device),
        t.activation_checkpointing,
        t.compile,
        t.engine,
        t.bf16,
    )
    groups = param_groups(model, t.lr_multipliers, t.freeze, t.weight_decay)
    # Adam with L2 weight decay (seed 000) or AdamW with decoupled decay (MMGIC, seed 003 Table 10);
    # the fused CUDA kernel where the parameters are on a GPU.
    optimizer_class = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
    fused = device.type == "cuda" and t.engine != "deepspeed"
    optimizer = optimizer_class(groups, lr=t.lr, betas=(t.beta1, t.beta2), eps=t.eps, fused=fused or None)
    # bf16 without a sharded engine's mixed precision (one process, DDP): autocast the forward.
    sharded_bf16 = info.grouped and t.engine != "ddp"
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16) if t.bf16 and not sharded_bf16 else nullcontext()
    )
    row_tokens = t.global_batch * cfg.model.max_seq_len
    total_steps = t.budget_tokens // row_tokens if t.packing else t.budget_samples // t.global_batch
    accum = t.global_batch // (t.micro_batch * info.world_size)
    if accum < 1 or t.global_batch % (t.micro_batch * info.world_size):
        raise ConfigError(
            f"train.global_batch={t.global_batch} must be a multiple of micro_batch x world size "
            f"({t.micro_batch} x {info.world_size})"
        )
    deepspeed = t.engine == "deepspeed" and info.grouped
    if deepspeed:  # it partitions the optimiser: its wrapper is what steps and holds the groups
        wrapped = deepspeed_engine.wrap(model, optimizer, t, accum)
        optimizer = wrapped.optimizer
    # What checkpoints save and load: DeepSpeed's engine (its own layout), else the plain module (DCP).
    state_owner = wrapped if deepspeed else model
    step, seen = 0, {"samples": 0, "tokens": 0}  # seen: real samples and non-pad tokens trained on
    if found is not None:
        saved = load_checkpoint(found, state_owner, optimizer)
        step, seen = saved["step"], saved.get("seen")
        if seen is None:  # written before the counters were saved: they are metrics only
            seen = {"samples": 0 if t.packing else step * t.global_batch, "tokens": 0}
            if info.is_main:
                print(f"resume: {found} predates the samples/tokens counters; token counts restart at 0")
    templates = Templates(tokenizer, cfg.model.image_tokens, cfg.model.max_seq_len)
    stages = stage_bounds(cfg.recipe, total_steps)

    def stream(k: int) -> Iterator[dict]:
        """Stage k's batches from the current step; a resumed run skips those already trained on."""
        name, start, _, weights = stages[k]
        seed = cfg.seed if len(stages) == 1 else f"{cfg.seed}/{name}"
        # Exact resume: a stage's stream is a pure function of the config, so the loader skips the
        # micro-batches already trained on (drawn, not collated) and continues the same stream.
        skip = (step - start) * accum
        if skip and info.is_main:
            print(f"resume: skipping the {skip} micro-batches of stage {name!r} already trained on")
        dataset = MixtureDataset(
            sources,
            weights,
            templates,
            seed,
            t.micro_batch,
            cfg.model.image_size,
            info.rank,
            info.world_size,
            pack_len=cfg.model.max_seq_len if t.packing else 0,
            skip=skip,
        )
        return make_loader(dataset, cfg.data.num_workers, pin_memory=device.type == "cuda")

    stage = next((k for k, (_, _, end, _) in enumerate(stages) if step < end), len(stages) - 1)
    batches = stream(stage)
    bar = tqdm(
        total=total_steps,
        initial=step,
        desc=f"train {cfg.recipe.name}",
        unit="step",
        disable=not info.is_main,
    )
    window = _new_window()
    tracker = Tracker(run_dir, info.is_main, t.wandb, t.wandb_project, asdict(cfg))
    peak = device_peak_flops(device)  # None off CUDA: no MFU where no peak applies

    meta = {
        "config": asdict(cfg),
        "tokenizer": tokenizer.to_str(),
        "special_tokens": tokenizer.special_tokens(),
        "identity": identity,
    }

    while step < total_steps:
        if step >= stages[stage][2]:  # the next stage of the curriculum begins
            stage += 1
            batches = stream(stage)
        lr = learning_rate(
            step, total_steps, t.lr, t.warmup_frac, t.min_lr_ratio, t.schedule, t.decay_frac, t.decay_shape
        )
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        micro = [to_device(next(batches), device) for _ in range(accum)]
        if t.trace_samples:
            ids = "".join(m["id"] + "\n" for b in micro for m in b["meta"])
            append_line(run_dir / f"samples.rank{info.rank}.txt", ids)
        loss = accumulate_gradients(wrapped, micro, info.world_size, autocast)
        _check_finite("loss", loss, step, run_dir)
        if deepspeed:  # it clips, and skips the update when the gradient norm is not finite
            wrapped.step()
            grad_norm = float(wrapped.get_global_grad_norm())
            _check_finite("grad norm", grad_norm, step, run_dir)
        else:
            grad_norm = local_float(torch.nn.utils.clip_grad_norm_(model.parameters(), t.grad_clip))
            _check_finite("grad norm", grad_norm, step, run_dir)
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        step += 1
        counts = torch.tensor(
            [sum(len(b["meta"]) for b in micro), _real_tokens(micro, tokenizer.pad_id)], device=device
        )
        samples, tokens = all_reduce_sum(counts).tolist()
        seen["samples"] += samples
        seen["tokens"] += tokens
        window["loss"] += loss
        window["tokens"] += tokens
        window["samples"] += samples
        window["flops"] += sum(_batch_flops(cfg, b, tokenizer.pad_id) for b in micro)  # this rank's
        window["steps"] += 1
        bar.update(1)

        if step % t.log_every == 0 or step == total_steps:
            dt = time.perf_counter() - window["t0"]
            record = {
                "step": step,
                "stage": stages[stage][0],
                "samples": seen["samples"],
                "tokens": seen["tokens"],
                "loss": window["loss"] / window["steps"],
                "lr": lr,
                "grad_norm": grad_norm,
                "tokens_per_s": window["tokens"] / dt,
                "samples_per_s": window["samples"] / dt,
                "flops_per_s_per_device": window["flops"] / dt,
            }
            if t.packing:  # real tokens / row capacity: the packer's efficiency as trained
                capacity = window["steps"] * row_tokens
                record["nonpad_fraction"] = window["tokens"] / capacity
            if peak:
                record["mfu"] = record["flops_per_s_per_device"] / peak
            shown = {"loss": f"{record['loss']:.3f}", "tok/s": f"{record['tokens_per_s']:.0f}"}
            shown |= {"sps": f"{record['samples_per_s']:.0f}", "gnorm": f"{grad_norm:.2f}"}
            bar.set_postfix(shown | ({"mfu": f"{record['mfu']:.1%}"} if peak else {}))
            tracker.log(record)
            window = _new_window()

        if t.checkpoint_every and step % t.checkpoint_every == 0 and step < total_steps:
            position = {**meta, "stage": stages[stage][0], "seen": seen}
            saved = save_checkpoint(
                run_dir, step, state_owner, optimizer, position, info, keep=t.keep_checkpoints
            )
            if cfg.eval.every and step % cfg.eval.every == 0:
                if info.is_main:
                    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                        suites = evaluate(saved, run_dir / f"eval-{saved.name}", step)  # training's RNG stays
                    scores = {f"eval/{s}/{b}": r["score"] for s, rs in suites.items() for b, r in rs.items()}
                    tracker.log({"step": step, **scores})
                wait_for_main(info)  # the other ranks wait outside any collective of the default group
                window = _new_window()  # evaluation time is not training throughput

    bar.close()
    tracker.close()
    position = {**meta, "stage": stages[stage][0], "seen": seen}
    return save_checkpoint(run_dir, step, state_owner, optimizer, position, info, final=True)


def stage_bounds(recipe: RecipeConfig, total_steps: int) -> list[tuple[str, int, int, dict[str, float]]]:
    """(name, first step, end step, weights) of each curriculum stage; boundaries round to steps."""
    plan = recipe.plan()
    out, done, start = [], 0.0, 0
    for i, s in enumerate(plan):
        done += s.fraction
        end = total_steps if i == len(plan) - 1 else round(done * total_steps)
        out.append((s.name, start, end, s.mixture))
        start = end
    return [b for b in out if b[2] > b[1]]


def _new_window() -> dict:
    """Sums over the steps since the last log line."""
    return {"loss": 0.0, "tokens": 0, "samples": 0, "steps": 0, "flops": 0.0, "t0": time.perf_counter()}


def _real_tokens(micro: list[dict], pad_id: int) -> int:
    return int(sum((b["input_ids"] != pad_id).sum() for b in micro))


def _batch_flops(cfg: RunConfig, batch: dict, pad_id: int) -> float:
    """Useful training FLOPs of one micro-batch: each sample at its real length, its images."""
    if "segments" in batch:  # packed rows: each document attends over its own length only
        docs = [torch.unique_consecutive(row[row > 0], return_counts=True)[1] for row in batch["segments"]]
        lengths = torch.cat(docs).tolist()
    else:
        lengths = (batch["input_ids"] != pad_id).sum(-1).tolist()
    images = 0 if batch["pixels"] is None else batch["pixels"].shape[0]
    return training_flops(cfg.model, cfg.model.vocab_size, lengths, images)["total"]
