"""The training loop: `setup` decides everything before the first step, `train` runs a loop whose step
fits on a screen, with checkpointing, evaluation and logging as plain `if` blocks.

Loss normalisation: each step sums token losses over all micro-batches and ranks and divides by the
global number of supervised tokens, so a long caption and a one-word answer weigh per token alike
whatever the batch split (STYLE.md rule 7).
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from mmkd.checkpoint import (
    latest_checkpoint,
    read_loader_state,
    read_meta,
    resume_checkpoint,
    save_checkpoint,
)
from mmkd.config import ConfigError, RunConfig, TrainConfig, micro_batch_for
from mmkd.curriculum import Stage, stage_bounds, total_steps
from mmkd.discrete_templates import DiscreteTemplates
from mmkd.distributed import DistInfo, all_reduce_sum, wait_for_main
from mmkd.engines import Engine, parallelize
from mmkd.engines.registry import engine_class
from mmkd.errors import DataError, UserError
from mmkd.loader import MixtureDataset, Resumable, make_loader, to_device
from mmkd.materialize import materialize
from mmkd.model import VLM
from mmkd.model.build import model_on_meta
from mmkd.model.config import ModelConfig
from mmkd.model.decoder import resolve_attention
from mmkd.model.discrete import DiscreteVLM, VisualVocab
from mmkd.model.flops import training_flops
from mmkd.model.hf import load_decoder, load_vision
from mmkd.model.lora import trainable_share
from mmkd.model.visual_tokenizer import VisualTokenizer
from mmkd.objective import DENSE, Objective, objective_for
from mmkd.preemption import Preempted, PreemptionWatch
from mmkd.resume import branch_checkpoint, check_resumable, run_identity
from mmkd.schedules import learning_rate, param_groups
from mmkd.templates import Templates
from mmkd.tokenizer import Tokenizer
from mmkd.tracking import RunLog, Tracker, append_line, device_peak_flops, eval_summary

# Periodic evaluation, passed in by the pipeline (the core never imports eval/): (checkpoint, output
# directory, step) -> {suite: {benchmark: result}}.
Evaluate = Callable[[Path, Path, int], dict]


class NonFiniteError(UserError, RuntimeError):
    """The loss or gradient norm is NaN/Inf; raised before the optimiser step, so weights stay finite."""

    label = "training error"


def accumulate_gradients(
    engine: Engine,
    micro: list[dict],
    world_size: int = 1,
    autocast: AbstractContextManager | None = None,
    objective: Objective = DENSE,
) -> dict[str, float]:
    """Backward over all micro-batches of one step; returns the step's loss (`loss`) and, for an
    objective of several parts, each part's mean per supervised token (`loss_<part>`).

    Gradients equal those of the sum over the objective's parts of (weight x summed token losses of
    the global batch / its supervised-token count of that part), however the batch is split into
    micro-batches and ranks. `autocast`: the forward's precision context (bf16 autocast without a
    sharded engine's mixed precision), or None.
    """
    autocast = autocast or nullcontext()
    counts = all_reduce_sum(sum(objective.counts(b["labels"]) for b in micro).float()).clamp(min=1)
    weights = torch.tensor(objective.weights, device=counts.device)
    total = torch.zeros_like(counts)
    for i, b in enumerate(micro):
        with engine.sync(last=i == len(micro) - 1), autocast:  # reduce across ranks once per step
            ids, pixels, labels = b["input_ids"], b["pixels"], b["labels"]
            sums, _ = engine.module(ids, pixels, labels=labels, segments=b.get("segments"))
            sums = sums.reshape(-1)  # [parts]
            # The engines average gradients over ranks; multiply back so the result is sum / global count.
            engine.backward((sums * world_size / counts * weights).sum())
        total += sums.detach()
    means = all_reduce_sum(total) / counts
    out = {"loss": float((means * weights).sum())}
    if len(objective.parts) > 1:
        out |= {f"loss_{part}": float(m) for part, m in zip(objective.parts, means, strict=True)}
    return out


def templates_for(cfg: RunConfig, tokenizer: Tokenizer) -> Templates:
    """How the run's samples become token ids: the dense layouts, or the discrete model's visual ids
    and objective templates (`mmkd.discrete_templates`)."""
    prompt = cfg.eval.caption_prompt
    if cfg.model.family == "discrete":
        return DiscreteTemplates(
            tokenizer, cfg.model, cfg.seed, cfg.recipe.mmgic_parts, prompt, cfg.image_prompt()
        )
    m, draws = cfg.model, (cfg.seed, cfg.recipe.mmgic_parts, cfg.model.image_first_prob)
    return Templates(tokenizer, m.image_tokens, m.max_seq_len, *draws, prompt)


def _check_finite(name: str, value: float, step: int, run_dir: Path) -> None:
    if not math.isfinite(value):
        raise NonFiniteError(
            f"step {step + 1}: the {name} is {value}; stopped before the optimiser step "
            f"(the last checkpoint in {run_dir / 'checkpoints'} is intact; try a lower train.lr)"
        )


def meta_model(cfg: RunConfig, tokenizer: Tokenizer) -> VLM | DiscreteVLM:
    """The model's structure on the meta device: no memory, no weights yet (`init_model` draws them).
    The discrete family under `model.tune=lora` gets its adapters and frozen weights here."""
    if cfg.model.vocab_size == 0:
        cfg.model.vocab_size = tokenizer.vocab_size
    elif cfg.model.vocab_size < tokenizer.vocab_size:
        raise ConfigError(f"model.vocab_size={cfg.model.vocab_size} < tokenizer size {tokenizer.vocab_size}")
    return model_on_meta(cfg.model, tokenizer.image_id)


def init_model(model: VLM | DiscreteVLM, cfg: RunConfig, device: torch.device) -> None:
    """Allocate a meta-built (possibly sharded) model on `device` with the run's initial weights: drawn
    from `seed`, then the pretrained towers of `model.init_vision` / `model.init_decoder`, and the
    discrete model's visual embeddings from its tokenizer's codebook (seed 003 D.1)."""
    materialize(model, device, cfg.seed)
    if cfg.model.init_vision:
        load_vision(model, cfg.model.init_vision)
    if cfg.model.init_decoder:
        load_decoder(model, cfg.model.init_decoder)
    if cfg.model.family == "discrete" and cfg.model.visual_tokenizer:
        model.init_visual_codes(VisualTokenizer.from_pretrained(cfg.model.visual_tokenizer).codebook)


def build_model(cfg: RunConfig, tokenizer: Tokenizer, device: torch.device | None = None) -> VLM:
    """The run's initial model, whole, on `device` (the CPU by default)."""
    model = meta_model(cfg, tokenizer)
    init_model(model, cfg, device or torch.device("cpu"))
    return model


@dataclass
class Setup:
    """Everything the loop needs, decided before its first step."""

    engine: Engine
    stages: list[Stage]
    total_steps: int
    micro: int  # samples (rows) per forward pass
    accum: int  # micro-batches per rank per step
    step: int  # the step to start from (> 0 on resume)
    seen: dict[str, int]  # real samples and non-pad tokens trained on so far
    autocast: AbstractContextManager
    meta: dict[str, Any]  # what every checkpoint's meta.json holds besides the position
    loader: dict | None = None  # this rank's data-stream state saved with the resumed checkpoint


def use_threads(t: TrainConfig, info: DistInfo) -> None:
    """torch's intra-op threads per rank (`train.threads`), for every step of a run that computes:
    two jobs side by side with threads=1 each must not oversubscribe the cores while one builds."""
    torch.set_num_threads(t.threads or max(1, (os.cpu_count() or 1) // info.world_size))


def setup(
    cfg: RunConfig,
    sources: dict[str, Path],
    tokenizer: Tokenizer,
    run_dir: Path,
    info: DistInfo,
    log: RunLog,
) -> Setup:
    """Check the run, build the model on its device behind its engine, and resume if asked."""
    t, device = cfg.train, info.device
    use_threads(t, info)
    resolve_attention(cfg.model.attention, device)  # model.attention=flash without CUDA fails here
    micro = micro_batch_for(t, info.world_size)
    accum = t.global_batch // (micro * info.world_size)
    identity = run_identity(cfg, sources, info.world_size)
    steps = total_steps(cfg)
    stages = stage_bounds(cfg.recipe, steps)
    found = latest_checkpoint(run_dir) if t.resume != "false" else None
    same = found is not None and check_resumable(read_meta(found), identity, run_dir, t.resume == "force")
    branched = read_meta(found).get("branched_from") if found is not None else None
    begins = None
    if found is None and t.branch_from:  # checked before any compute, like a resume
        found, begins = branch_checkpoint(Path(t.branch_from), identity, stages)
        branched = str(found)

    def make_optimizer(model: torch.nn.Module) -> torch.optim.Optimizer:
        # Adam with L2 weight decay (seed 000) or AdamW with decoupled decay (MMGIC, seed 003 Table 10);
        # the fused CUDA kernel where the parameters are on a GPU.
        groups = param_groups(model, t.lr_multipliers, t.freeze, t.weight_decay)
        optimizer = torch.optim.AdamW if t.optimizer == "adamw" else torch.optim.Adam
        fused = device.type == "cuda" and engine_class(t.engine).fused_optimizer
        return optimizer(groups, lr=t.lr, betas=(t.beta1, t.beta2), eps=t.eps, fused=fused or None)

    model = meta_model(cfg, tokenizer)
    engine = parallelize(model, info, t, lambda m: init_model(m, cfg, device), make_optimizer, micro, accum)
    # bf16 without a sharded engine's own mixed precision (one process, DDP): autocast the forward.
    autocast = (
        torch.autocast(device.type, dtype=torch.bfloat16)
        if t.bf16 and not engine.own_precision
        else nullcontext()
    )
    step, seen, loader = 0, {"samples": 0, "tokens": 0}, None
    if found is not None:
        # The data stream's saved state holds only for the same run (else the loader fast-forwards; a
        # branch starts a stage, whose stream begins afresh).
        loader = read_loader_state(found, info.rank) if same else None
        saved = resume_checkpoint(found, engine)
        step, seen = saved["step"], saved.get("seen")
        log(
            f"branch: from {found} (step {step}), where stage {begins!r} begins"
            if begins
            else f"resume: from {found} (step {step})"
        )
        if seen is None:  # written before the counters were saved: they are metrics only
            seen = {"samples": 0 if t.packing else step * t.global_batch, "tokens": 0}
            log(f"resume: {found} predates the samples/tokens counters; token counts restart at 0")
    meta = {
        "config": asdict(cfg),
        "tokenizer": tokenizer.to_str(),
        "special_tokens": tokenizer.special_tokens(),
        "identity": identity,
    } | ({"branched_from": branched} if branched else {})
    return Setup(engine, stages, steps, micro, accum, step, seen, autocast, meta, loader)


def batches(
    cfg: RunConfig,
    s: Setup,
    k: int,
    step: int,
    sources: dict[str, Path],
    tokenizer: Tokenizer,
    info: DistInfo,
    log: RunLog,
) -> Resumable:
    """Stage k's batches from `step`: a resumed run continues the stream where it stopped."""
    name, start, _, weights = s.stages[k]
    seed = cfg.seed if len(s.stages) == 1 else f"{cfg.seed}/{name}"
    # Exact resume: from the stream's saved state (constant time), or, for a checkpoint without one,
    # by skipping the micro-batches already trained on (the stream is a pure function of the config).
    state = s.loader if s.loader is not None and s.loader.get("stage") == name and step > start else None
    skip = 0 if state is not None else (step - start) * s.accum
    if state is not None:
        log(f"resume: the data stream of stage {name!r} continues from its saved state")
    elif skip:
        log(f"resume: skipping the {skip} micro-batches of stage {name!r} already trained on")
    dataset = MixtureDataset(
        sources,
        weights,
        templates_for(cfg, tokenizer),
        seed,
        s.micro,
        cfg.model.image_size,
        info.rank,
        info.world_size,
        pack_len=cfg.model.max_seq_len if cfg.train.packing else 0,
        skip=skip,
        state=state,
        weight_unit=cfg.recipe.weight_unit,
    )
    return make_loader(dataset, cfg.data.num_workers, pin_memory=info.device.type == "cuda")


def train(
    cfg: RunConfig,
    sources: dict[str, Path],
    tokenizer: Tokenizer,
    run_dir: Path,
    info: DistInfo,
    evaluate: Evaluate | None = None,
) -> Path:
    """Train on the recipe's mixture for its budget; returns the final checkpoint.

    With `eval.every`, rank 0 runs `evaluate` on every K-th checkpoint while the other ranks wait.
    Evaluation loads that checkpoint into a plain model, so it sees the same weights whatever the
    engine sharded during training, and eval-only on it reproduces the automatic scores.
    """
    t, device = cfg.train, info.device
    if cfg.eval.every and evaluate is None:
        raise ConfigError("eval.every is set but no evaluate function was given to train()")
    log = RunLog(run_dir, info.is_main)
    s = setup(cfg, sources, tokenizer, run_dir, info, log)
    engine, step = s.engine, s.step
    if step >= s.total_steps and latest_checkpoint(run_dir) == Path(run_dir) / "checkpoints" / "final":
        log(f"done already: {latest_checkpoint(run_dir)} holds step {step}; nothing to train")
        return latest_checkpoint(run_dir)
    _log_start(cfg, s, info, log)
    stage = next((k for k, (_, _, end, _) in enumerate(s.stages) if step < end), len(s.stages) - 1)
    stream = batches(cfg, s, stage, step, sources, tokenizer, info, log)
    bad: list[dict] = []  # samples this rank left out because an image did not decode
    names = cfg.recipe.sources()  # counted per source: the mixture as trained
    desc, main = f"train {cfg.recipe.name}", info.is_main
    bar = tqdm(total=s.total_steps, initial=step, desc=desc, unit="step", disable=not main)
    tracker = Tracker(run_dir, info.is_main, t.wandb, t.wandb_project, asdict(cfg), start=step)
    window = Window(device_peak_flops(device), t.global_batch * cfg.model.max_seq_len if t.packing else 0)

    with PreemptionWatch() as preempt:
        while step < s.total_steps:
            if step >= s.stages[stage][2]:  # the next stage of the curriculum begins
                stage += 1
                log(f"stage {s.stages[stage][0]!r} begins at step {step}", echo=False)
                stream = batches(cfg, s, stage, step, sources, tokenizer, info, log)
            lr = _set_learning_rate(engine, t, step, s.total_steps)
            micro = [to_device(next(stream), device) for _ in range(s.accum)]
            losses, grad_norm = _step(cfg, s, micro, step, bad, info, run_dir)
            step += 1
            samples, tokens, s.seen = _count_seen(micro, s.seen, names, tokenizer.pad_id, device)
            window.add(losses, samples, tokens, sum(_batch_flops(cfg, b, tokenizer.pad_id) for b in micro))
            bar.update(1)
            if step % t.log_every == 0 or step == s.total_steps:
                record = window.record(step, s.stages[stage][0], s.seen, lr, grad_norm)
                bar.set_postfix(window.shown(record))
                tracker.log(record)
                shown = " ".join(f"{k} {v}" for k, v in window.shown(record).items())
                log(f"step {step}/{s.total_steps} {shown}", echo=False)
                window = window.next()

            # A stage's last checkpoint stays (outside keep_checkpoints): other runs may branch there.
            ends = t.stage_checkpoints and step == s.stages[stage][2]
            periodic = t.checkpoint_every and step % t.checkpoint_every == 0
            stop = preempt.requested(info)  # a scheduler's signal on any rank: save this step, then exit
            if (periodic or ends or stop) and step < s.total_steps:
                saved = _save_during(s, step, stage, stream, info, run_dir, ends, t.keep_checkpoints, log)
                if stop:
                    bar.close()
                    tracker.close()
                    stopped = Preempted(preempt.received or "another rank's signal", step, saved)
                    log(str(stopped), echo=False)
                    raise stopped
                if cfg.eval.every and step % cfg.eval.every == 0:
                    _evaluate_during(evaluate, saved, step, run_dir, tracker, info)
                    window = window.next()  # evaluation time is not training throughput

    bar.close()
    tracker.close()
    return _finish(s, step, stage, info, run_dir, log)


def _log_start(cfg: RunConfig, s: Setup, info: DistInfo, log: RunLog) -> None:
    engine = cfg.train.engine if info.grouped else "local"
    log(
        f"train: {cfg.recipe.name} seed {cfg.seed}, steps {s.step}..{s.total_steps}, {info.world_size} "
        f"rank(s) on {info.device}, engine {engine}, micro-batch {s.micro} x {s.accum}",
        echo=False,
    )
    share = trainable_share(s.engine.module)
    log(
        f"model: {cfg.model.name} ({cfg.model.family}), {share['total']:,} parameters, "
        f"{share['trainable']:,} trainable ({share['fraction']:.1%})",
        echo=False,
    )


def _set_learning_rate(engine: Engine, t: TrainConfig, step: int, total: int) -> float:
    """This step's rate from the schedule, into every parameter group (times its `lr_scale`)."""
    lr = learning_rate(
        step, total, t.lr, t.warmup_frac, t.min_lr_ratio, t.schedule, t.decay_frac, t.decay_shape
    )
    for group in engine.optimizer.param_groups:
        group["lr"] = lr * group["lr_scale"]
    return lr


def _step(
    cfg: RunConfig, s: Setup, micro: list[dict], step: int, bad: list[dict], info: DistInfo, run_dir: Path
) -> tuple[dict, float]:
    """One optimiser step over this rank's micro-batches: (the losses, the gradient norm), each checked
    finite before the weights change."""
    _count_bad(micro, bad, cfg.data.max_bad_samples, info.rank, run_dir)
    if cfg.train.trace_samples:
        ids = "".join(m["id"] + "\n" for b in micro for m in b["meta"])
        append_line(run_dir / f"samples.rank{info.rank}.txt", ids)
    losses = accumulate_gradients(s.engine, micro, info.world_size, s.autocast, objective_for(cfg.model))
    _check_finite("loss", losses["loss"], step, run_dir)
    grad_norm = s.engine.step(cfg.train.grad_clip)  # no update on a non-finite norm
    _check_finite("grad norm", grad_norm, step, run_dir)
    return losses, grad_norm


def _save_during(
    s: Setup,
    step: int,
    stage: int,
    stream: Resumable,
    info: DistInfo,
    run_dir: Path,
    ends: bool,
    keep: int,
    log: RunLog,
) -> Path:
    """A checkpoint inside the run, with this rank's data-stream state; a stage's last one is pinned
    (`ends`), the periodic ones beyond the last `keep` removed."""
    name = s.stages[stage][0]
    position = {**s.meta, "stage": name, "seen": s.seen}
    loader = stream.state()
    loader = None if loader is None else {**loader, "stage": name}
    saved = save_checkpoint(run_dir, step, s.engine, position, info, keep=keep, loader=loader, pin=ends)
    log(f"checkpoint: {saved}", echo=False)
    return saved


def _evaluate_during(
    evaluate: Evaluate, saved: Path, step: int, run_dir: Path, tracker: Tracker, info: DistInfo
) -> None:
    """Rank 0 evaluates `saved` (training's RNG untouched) and logs its scores; the others wait."""
    if info.is_main:
        devices = [info.device] if info.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            suites = evaluate(saved, run_dir / f"eval-{saved.name}", step)
        tracker.log({"step": step, **eval_summary(suites)})  # the keys the final scores have in wandb
    wait_for_main(info)  # the other ranks wait outside any collective of the default group


def _finish(s: Setup, step: int, stage: int, info: DistInfo, run_dir: Path, log: RunLog) -> Path:
    """The final checkpoint, and what was trained on."""
    position = {**s.meta, "stage": s.stages[stage][0], "seen": s.seen}
    final = save_checkpoint(run_dir, step, s.engine, position, info, final=True)
    log(f"done: {step} steps, {s.seen['samples']} samples, {s.seen['tokens']} tokens; {final}", echo=False)
    shares = realised_shares(s.seen)
    log(
        "mixture as trained (samples / tokens): "
        + ", ".join(f"{n} {r['sample_share']:.1%} / {r['token_share']:.1%}" for n, r in shares.items()),
        echo=False,
    )
    return final


def _count_seen(
    micro: list[dict], seen: dict, names: list[str], pad_id: int, device: torch.device
) -> tuple[int, int, dict]:
    """This step's samples and real tokens over all ranks, and the run's running totals with them,
    also per source (`seen["sources"]`: [samples, tokens] each, saved with every checkpoint).
    `names`: every source of the recipe, the same list on every rank (one all-reduce)."""
    metas = [m for b in micro for m in b["meta"]]
    counts = [len(metas), _real_tokens(micro, pad_id)]
    for name in names:
        mine = [m for m in metas if m["source"] == name]
        counts += [len(mine), sum(m["tokens"] for m in mine)]
    total = [
        int(x) for x in all_reduce_sum(torch.tensor(counts, dtype=torch.float64, device=device)).tolist()
    ]
    before = seen.get("sources", {})
    sources = {
        n: [before.get(n, [0, 0])[0] + total[2 + 2 * i], before.get(n, [0, 0])[1] + total[3 + 2 * i]]
        for i, n in enumerate(names)
    }
    samples, tokens = total[0], total[1]
    running = {"samples": seen["samples"] + samples, "tokens": seen["tokens"] + tokens, "sources": sources}
    return samples, tokens, running


def realised_shares(seen: dict) -> dict[str, dict[str, float]]:
    """Each source's share of the samples and of the tokens trained on (`seen["sources"]`)."""
    sources = seen.get("sources", {})
    samples = sum(n for n, _ in sources.values()) or 1
    tokens = sum(t for _, t in sources.values()) or 1
    return {
        name: {"samples": n, "tokens": t, "sample_share": n / samples, "token_share": t / tokens}
        for name, (n, t) in sorted(sources.items())
    }


def _count_bad(micro: list[dict], bad: list[dict], limit: int, rank: int, run_dir: Path) -> None:
    """Name this step's samples that did not decode (on stderr and in bad_samples.rank<r>.jsonl: every
    rank has its own) and stop once this rank has met more than `limit`."""
    new = [b for batch in micro for b in batch.get("bad", [])]
    for b in new:
        line = f"rank {rank}: skipped a sample whose image does not decode: {json.dumps(b)}"
        tqdm.write(line, file=sys.stderr)
        append_line(run_dir / f"bad_samples.rank{rank}.jsonl", json.dumps(b) + "\n")
    bad += new
    if len(bad) > limit:
        raise DataError(
            f"rank {rank} met {len(bad)} samples whose image does not decode, more than "
            f"data.max_bad_samples={limit}; the first: {json.dumps(bad[0])} (all in "
            f"{run_dir / f'bad_samples.rank{rank}.jsonl'}): rebuild or reconvert that source"
        )


class Window:
    """Sums over the steps since the last log line, and the metrics record they make: tokens/s,
    samples/s, FLOPs/s per device, MFU where a peak applies, the packer's non-pad fraction."""

    def __init__(self, peak: float | None, row_tokens: int):
        self.peak, self.row_tokens = peak, row_tokens  # row_tokens: a packed step's capacity, else 0
        self.losses: dict[str, float] = {}
        self.tokens, self.samples, self.steps, self.flops = 0, 0, 0, 0.0
        self.t0 = time.perf_counter()

    def next(self) -> Window:
        return Window(self.peak, self.row_tokens)

    def add(self, losses: dict[str, float], samples: int, tokens: int, flops: float) -> None:
        """`losses`: the step's loss and, for a several-part objective, each part's (`loss_<part>`)."""
        self.losses = {k: self.losses.get(k, 0.0) + v for k, v in losses.items()}
        self.samples, self.tokens = self.samples + samples, self.tokens + tokens
        self.flops += flops  # this rank's
        self.steps += 1

    def record(self, step: int, stage: str, seen: dict[str, int], lr: float, grad_norm: float) -> dict:
        dt = time.perf_counter() - self.t0
        record = {
            "step": step,
            "stage": stage,
            "samples": seen["samples"],
            "tokens": seen["tokens"],
            **{k: v / self.steps for k, v in self.losses.items()},
            "lr": lr,
            "grad_norm": grad_norm,
            "tokens_per_s": self.tokens / dt,
            "samples_per_s": self.samples / dt,
            "flops_per_s_per_device": self.flops / dt,
            "window_s": dt,  # the seconds these rates cover: averages over windows weight by it
        }
        if self.row_tokens:  # real tokens / row capacity: the packer's efficiency as trained
            record["nonpad_fraction"] = self.tokens / (self.steps * self.row_tokens)
        if self.peak:
            record["mfu"] = record["flops_per_s_per_device"] / self.peak
        return record

    @staticmethod
    def shown(record: dict) -> dict[str, str]:
        """The progress bar's summary of a record."""
        shown = {"loss": f"{record['loss']:.3f}", "tok/s": f"{record['tokens_per_s']:.0f}"}
        shown |= {"sps": f"{record['samples_per_s']:.0f}", "gnorm": f"{record['grad_norm']:.2f}"}
        return shown | ({"mfu": f"{record['mfu']:.1%}"} if "mfu" in record else {})


def head_size(cfg: ModelConfig) -> int:
    """Rows of the LM head: the text vocabulary, plus the markers and codes of the discrete model."""
    if cfg.family == "discrete":
        return VisualVocab(cfg.vocab_size, cfg.codebook_size).size
    return cfg.vocab_size


def _real_tokens(micro: list[dict], pad_id: int) -> int:
    return int(sum((b["input_ids"] != pad_id).sum() for b in micro))


def _batch_flops(cfg: RunConfig, batch: dict, pad_id: int) -> float:
    """Useful training FLOPs of one micro-batch: each sample at its real length, its images."""
    if "segments" in batch:  # packed rows: each document attends over its own length only
        docs = [torch.unique_consecutive(row[row > 0], return_counts=True)[1] for row in batch["segments"]]
        lengths = torch.cat(docs).tolist()
    else:
        lengths = (batch["input_ids"] != pad_id).sum(-1).tolist()
    images = 0 if batch["pixels"] is None else batch["pixels"].shape[0]  # the discrete model's are ids
    return training_flops(cfg.model, head_size(cfg.model), lengths, images)["total"]
