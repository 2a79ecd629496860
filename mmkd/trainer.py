"""The training loop: one function, a step that fits on a screen, checkpoint/log as plain `if` blocks.

Loss normalisation: each step sums token losses over all micro-batches and ranks and divides by the
global number of supervised tokens, so a long caption and a one-word answer weigh per token alike
whatever the batch split (STYLE.md rule 7).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterator
from dataclasses import asdict
from pathlib import Path

import torch
from tqdm import tqdm

from mmkd import deepspeed_engine
from mmkd.checkpoint import latest_checkpoint, load_checkpoint, read_meta, save_checkpoint
from mmkd.config import ConfigError, RecipeConfig, RunConfig
from mmkd.data_builders.sources import world_dir
from mmkd.distributed import (
    DistInfo,
    all_reduce_sum,
    backward,
    barrier,
    gradient_sync,
    local_float,
    parallelize,
)
from mmkd.eval.suites import evaluate_checkpoint
from mmkd.loader import MixtureDataset, make_loader
from mmkd.model import VLM
from mmkd.model.flops import training_flops
from mmkd.model.hf import load_decoder, load_vision
from mmkd.schedules import learning_rate, param_groups
from mmkd.templates import IGNORE, Templates
from mmkd.tokenizer import Tokenizer
from mmkd.tracking import Tracker, append_line, device_peak_flops


class NonFiniteError(RuntimeError):
    """The loss or gradient norm is NaN/Inf; raised before the optimiser step, so weights stay finite."""


def accumulate_gradients(model: torch.nn.Module, micro: list[dict], world_size: int = 1) -> float:
    """Backward over all micro-batches of one step; returns the step's mean loss per supervised token.

    Gradients equal those of (summed token losses of the global batch) / (its supervised-token count),
    however the batch is split into micro-batches and ranks.
    """
    n_global = all_reduce_sum(sum((b["labels"][:, 1:] != IGNORE).sum() for b in micro).float())
    total = torch.zeros(())
    for i, b in enumerate(micro):
        with gradient_sync(model, i == len(micro) - 1):  # reduce across ranks once per step
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


def build_model(cfg: RunConfig, tokenizer: Tokenizer) -> VLM:
    if cfg.model.vocab_size == 0:
        cfg.model.vocab_size = tokenizer.vocab_size
    elif cfg.model.vocab_size < tokenizer.vocab_size:
        raise ConfigError(f"model.vocab_size={cfg.model.vocab_size} < tokenizer size {tokenizer.vocab_size}")
    torch.manual_seed(cfg.seed)
    model = VLM(cfg.model, tokenizer.image_id)
    if cfg.model.init_vision:
        load_vision(model, cfg.model.init_vision)
    if cfg.model.init_decoder:
        load_decoder(model, cfg.model.init_decoder)
    return model


def _check_resumable(saved: dict, cfg: RunConfig, run_dir: Path) -> None:
    now = asdict(cfg)
    diff = [
        f"{sec}.{k}"
        for sec in ("recipe", "model", "train")
        for k in now[sec]
        if k not in ("resume", "log_every", "checkpoint_every", "activation_checkpointing", "compile")
        and saved[sec].get(k) != now[sec][k]
    ]
    if diff:
        raise ConfigError(
            f"{run_dir} holds a run with a different config ({', '.join(diff)}); "
            "use another run_dir or train.resume=false"
        )


def train(
    cfg: RunConfig, sources: dict[str, Path], tokenizer: Tokenizer, run_dir: Path, info: DistInfo
) -> Path:
    """Train on the recipe's mixture for `train.budget_samples`; returns the final checkpoint.

    Evaluation loads that checkpoint into a plain model, so it sees the same weights whatever the
    engine sharded during training, and eval-only on it reproduces the automatic scores.
    """
    t = cfg.train
    torch.set_num_threads(t.threads or max(1, (os.cpu_count() or 1) // info.world_size))
    model = build_model(cfg, tokenizer)
    # Distribution first, then the optimiser over the (possibly sharded) parameters (torchtitan's order).
    wrapped = parallelize(model, info, t.activation_checkpointing, t.compile, t.engine, t.bf16)
    groups = param_groups(model, t.lr_multipliers, t.freeze, t.weight_decay)
    # Adam with L2 weight decay (seed 000) or AdamW with decoupled decay (MMGIC, seed 003 Table 10).
    optimizer_class = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
    optimizer = optimizer_class(groups, lr=t.lr, betas=(t.beta1, t.beta2), eps=t.eps)
    row_tokens = t.global_batch * cfg.model.max_seq_len
    total_steps = t.budget_tokens // row_tokens if t.packing else t.budget_samples // t.global_batch
    accum = t.global_batch // (t.micro_batch * info.world_size)
    if accum < 1 or t.global_batch % (t.micro_batch * info.world_size):
        raise ConfigError(
            f"train.global_batch={t.global_batch} must be a multiple of micro_batch x world size "
            f"({t.micro_batch} x {info.world_size})"
        )
    deepspeed = t.engine == "deepspeed" and info.world_size > 1
    if deepspeed:  # it partitions the optimiser: its wrapper is what steps and holds the groups
        wrapped = deepspeed_engine.wrap(model, optimizer, t, accum)
        optimizer = wrapped.optimizer
    # What checkpoints save and load: DeepSpeed's engine (its own layout), else the plain module (DCP).
    state_owner = wrapped if deepspeed else model
    step, seen = 0, {"samples": 0, "tokens": 0}  # seen: real samples and non-pad tokens trained on
    found = latest_checkpoint(run_dir) if t.resume else None
    if found is not None:
        _check_resumable(read_meta(found)["config"], cfg, run_dir)
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
        return make_loader(dataset, cfg.data.num_workers)

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
    peak = device_peak_flops()

    meta = {"config": asdict(cfg), "tokenizer": tokenizer.to_str()}

    while step < total_steps:
        if step >= stages[stage][2]:  # the next stage of the curriculum begins
            stage += 1
            batches = stream(stage)
        lr = learning_rate(
            step, total_steps, t.lr, t.warmup_frac, t.min_lr_ratio, t.schedule, t.decay_frac, t.decay_shape
        )
        for group in optimizer.param_groups:
            group["lr"] = lr * group["lr_scale"]
        micro = [next(batches) for _ in range(accum)]
        if t.trace_samples:
            ids = "".join(m["id"] + "\n" for b in micro for m in b["meta"])
            append_line(run_dir / f"samples.rank{info.rank}.txt", ids)
        loss = accumulate_gradients(wrapped, micro, info.world_size)
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
        counts = torch.tensor([sum(len(b["meta"]) for b in micro), _real_tokens(micro, tokenizer.pad_id)])
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
                    with torch.random.fork_rng():  # building the eval model must not move training's RNG
                        suites = evaluate_checkpoint(
                            saved,
                            cfg,
                            tokenizer,
                            world_dir(cfg.data),
                            run_dir / f"eval-{saved.name}",
                            f"{cfg.recipe.name} (seed {cfg.seed}, step {step})",
                            decontaminate=False,  # once per run, at the end, is enough
                        )
                    scores = {f"eval/{s}/{b}": r["score"] for s, rs in suites.items() for b, r in rs.items()}
                    tracker.log({"step": step, **scores})
                barrier()
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
