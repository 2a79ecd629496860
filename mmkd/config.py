"""Typed run configuration: the single source of defaults (`build.*` in mmkd/build_config.py).
Registered with Hydra's ConfigStore as `mmkd_schema`, which `recipes/config.yaml` composes first, so
each YAML in `recipes/` states only what differs from these dataclasses and every key can be
overridden on the command line.

Unknown keys and wrong types fail at once with the key's full name (OmegaConf structured merge), and
`RunConfig.validate()` checks values before any data is built or any step is taken.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from hydra.core.config_store import ConfigStore
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from mmkd.annotators.base import AnnotatorConfig
from mmkd.build_config import BuildConfig
from mmkd.config_ranges import RANGES
from mmkd.engines.registry import ENGINES, engine_class
from mmkd.errors import ConfigError
from mmkd.foundations.config import FoundationConfig, is_foundation
from mmkd.mmgic_template import DOCUMENT_KINDS, text_to_image_prompt
from mmkd.model.config import ModelConfig
from mmkd.model.pretrained_shape import adopt_pretrained_shapes
from mmkd.recipe_config import RecipeConfig
from mmkd.schedules import DECAY_SHAPES, SCHEDULES
from mmkd.schema import CAPTION_MARKER, IMAGE_MARKER
from mmkd.world.benchmarks import ABILITIES
from mmkd.world.scene import LEGACY_NEUTRAL, WorldConfig


@dataclass
class DataConfig:
    root: str = "data"  # world datasets are built under <root>/world-<hash of the world config>/
    world: WorldConfig = field(default_factory=WorldConfig)
    # Number of samples to build per world source.
    sizes: dict[str, int] = field(
        default_factory=lambda: {
            "caption0": 20000,
            "vqa0": 10000,
            "text": 8000,
            "other": 6000,
            "detection": 4000,
            "alttext": 4000,
            "scale_pool": 4000,
            "instruct": 10000,
        }
    )
    vqa_turns: int = 8
    bench_per_ability: int = 200
    vocab_size: int = 1024
    samples_per_shard: int = 2000
    # Datasets built elsewhere (real data, annotator outputs): source name -> dataset directory.
    sources: dict[str, str] = field(default_factory=dict)
    # Loader processes per rank. On a GPU they overlap data work with the device's compute; on a
    # CPU-only machine they compete with the compute threads, and 0 (load inline) trains faster
    # (bench/RESULTS.md, "Trainer overhead": 0.85 of a bare loop inline, 0.73 with one worker, 2 cores).
    num_workers: int = 1
    # Samples whose image does not decode mid-run are left out and logged (source, shard, id); a rank
    # that meets more than this many stops the run naming them.
    max_bad_samples: int = 10


@dataclass
class TrainConfig:
    # Budget: the number of training samples (seed 000 states budgets in samples), or with packing
    # the number of tokens (rows x model.max_seq_len; global_batch and micro_batch then count rows).
    budget_samples: int = 60000
    budget_tokens: int = 0
    packing: bool = False  # several samples per row of model.max_seq_len tokens (mmkd/packing.py)
    global_batch: int = 64
    # Samples (rows) per forward pass on each rank; 0: global_batch / world size, one forward per rank
    # per step, so the same config runs on any number of ranks that divides the global batch.
    micro_batch: int = 0
    lr: float = 1e-3
    # Adam betas and eps of seed 000 Sec. 3.2.
    beta1: float = 0.9
    beta2: float = 0.98
    eps: float = 1e-6
    weight_decay: float = 0.0
    optimizer: str = "adam"  # adam (L2 decay, seed 000) | adamw (decoupled decay, MMGIC)
    schedule: str = "cosine"  # cosine | wsd (warmup-stable-decay; mmkd/schedules.py)
    warmup_frac: float = 0.05
    min_lr_ratio: float = 0.1  # the schedule decays to this fraction of the peak
    decay_frac: float = 0.2  # wsd: the last fraction of steps that decays
    decay_shape: str = "1-sqrt"  # wsd: linear | cosine | 1-sqrt | exp
    # Per-module learning rates, by parameter-name prefix (e.g. {vision: 0.1}), and frozen prefixes
    # (e.g. [vision, decoder] to train the projector alone: the alignment stage).
    lr_multipliers: dict[str, float] = field(default_factory=dict)
    freeze: list[str] = field(default_factory=list)
    grad_clip: float = 1.0
    log_every: int = 10
    # Also log to wandb (offline unless WANDB_MODE is set): one wandb run per run directory, resumes
    # included, whose summary holds the final evaluation's scores. metrics.jsonl is written always.
    wandb: bool = False
    wandb_project: str = "mmkd"
    checkpoint_every: int = 200  # steps; 0 disables periodic checkpoints (the final one is always written)
    keep_checkpoints: int = 2  # periodic checkpoints kept (the final one is kept too)
    # true: continue from the run directory's latest checkpoint if its run is the same one (seed, data,
    # world size, ...; a difference is an error naming the keys); false: start over; force: continue
    # even so (the data stream then differs from an uninterrupted run's).
    resume: str = "true"
    # Start from another run's checkpoint where this run's curriculum first differs from that run's (a
    # run directory): a recipe that shares its pre-training with another and differs in its last stages
    # (an SFT selection) trains only those, bit for bit as if from scratch (mmkd/resume.py). Ignored once
    # this run has a checkpoint of its own.
    branch_from: str = ""
    # Keep the checkpoint where each curriculum stage ends (outside keep_checkpoints), for branching.
    stage_checkpoints: bool = True
    # Seconds a collective may take before the job fails (NCCL's watchdog); and how long the other
    # ranks wait while rank 0 builds data or evaluates alone (they wait outside the default group).
    dist_timeout_s: int = 1800
    wait_timeout_s: int = 86400
    # Take over the run directory's lock although a job on another host holds it (mmkd/run_lock.py):
    # only once that job is gone. A lock whose process died on this host is taken over anyway.
    break_lock: bool = False
    # ddp (replicas) | fsdp2 (sharded parameters, gradients, optimizer state) | deepspeed (ZeRO)
    engine: str = "ddp"
    zero_stage: int = 2  # deepspeed: 1 optimizer state, 2 + gradients, 3 + parameters partitioned
    bf16: bool = False  # fsdp2 / deepspeed: bf16 parameters for compute, fp32 gradient reduction
    # Recompute each block's activations in the backward pass: less memory, ~1/3 more compute.
    activation_checkpointing: bool = False
    # A torch.compile backend per block ("inductor"); "" = eager. Pays once a run's steps outweigh the
    # first compile (seconds to a minute): long GPU runs, not smoke runs (docs/scale.md).
    compile: str = ""
    threads: int = 0  # torch intra-op threads per rank; 0 = cores / world size
    trace_samples: bool = False  # write the ids of every trained sample to <run_dir>/samples.rank<r>.txt


def micro_batch_for(t: TrainConfig, world_size: int) -> int:
    """The micro-batch on `world_size` ranks; the global batch must split into whole micro-batches
    on every rank (checked before any data is built)."""
    micro = t.micro_batch or t.global_batch // world_size
    if micro < 1 or t.global_batch % (micro * world_size):
        fix = "train.micro_batch=0 lets it follow the world size" if t.micro_batch else "change it"
        raise ConfigError(
            f"train.global_batch={t.global_batch} must be a multiple of micro_batch x world size "
            f"({micro} x {world_size}); {fix}"
        )
    return micro


@dataclass
class EvalConfig:
    after_train: bool = True
    # Noise within a run (eval/noise.py): also evaluate the k - 1 checkpoints before the evaluated one
    # and record each score's spread in <eval dir>/noise.json, which launch/report.py turns into SNR.
    # 0: off; else >= 2 and at most train.keep_checkpoints + 1 (the kept ones and the final).
    noise_checkpoints: int = 0
    # Also evaluate every K steps, on that step's checkpoint (RUN/eval-step-N/); scores go to the
    # metrics as eval/<suite>/<benchmark>. K must be a multiple of train.checkpoint_every.
    every: int = 0
    abilities: list[str] = field(default_factory=lambda: list(ABILITIES))
    max_items: int = 0  # 0: every item of each benchmark
    # Solved examples before each item (seed 002's 0/4/8-shot), from the rest of its benchmark, for
    # the world benchmarks and custom suites (eval/few_shot.py).
    shots: int = 0
    batch_size: int = 64
    max_new_tokens: int = 40
    # The discrete model's text-to-image evaluation (eval/image_generation.py): this many held-out
    # scene prompts (0: none), classifier-free guidance scale (1: none), sampling temperature (0:
    # greedy) and top-k (0: every code). 256 prompts: at 64 the CIs were +-5 points, wider than what
    # separates a small model from the random-id floor; 256 take ~3 minutes on 2 CPU cores.
    generation_prompts: int = 256
    cfg_scale: float = 3.0
    temperature: float = 1.0
    top_k: int = 0
    # Before evaluating, look for eval items in the training shards (eval/decontamination.py).
    # How a captioning prompt reads: "" is <bos> <image> (the caption follows the image directly, as
    # in caption samples); else a text with one <image> where the image goes, e.g. seed 003's
    # "Image: <image>\nCaption:" (its MMGIC and IC templates), and the caption ends at a newline.
    caption_prompt: str = ""
    # How a text-to-image prompt reads (the discrete model): "" is the recipe's (recipe.image_prompt;
    # by default <bos> text [IMG], as text-first caption samples read); else a text with one
    # <caption> where the prompt's text goes, ending in <image>, e.g. "Caption: <caption>\nImage:
    # <image>", or a document kind, "mmgic" or "ic" (seed 003's text-first documents up to their
    # image). "<caption><image>" forces <bos> text [IMG]. The unconditional prompt (guidance, prompt
    # gain) stays <bos> [IMG], as a caption-dropped sample reads.
    image_prompt: str = ""
    decontamination: bool = True
    # report.html beside report.md: curves, bars, the answers beside their images (eval/html_report.py;
    # ~2 s of plotting per evaluation).
    html: bool = True
    # The share of the captioning benchmarks' concepts (noun phrases, build.noun_phrases) that the
    # recipe's training texts mention (seed 003 C.1): concepts.json and a table in report.md.
    concept_overlap: bool = True
    # Custom suites: name -> a .jsonl or VLMEvalKit-style .tsv file (format: eval/custom.py).
    custom: dict[str, str] = field(default_factory=dict)
    # lm-eval text tasks by name (mmkd_world_knowledge, mmlu_pro, ...) and a folder of your task YAMLs.
    lm_eval_tasks: list[str] = field(default_factory=list)
    lm_eval_include: str = ""
    # VLMEvalKit datasets by name (MMBench_DEV_EN, POPE, MME, ...), read from <vlmeval_data>/NAME.tsv;
    # vlmeval_data "" reads $LMUData. Judged datasets (MMVet, MathVista, ...) need the judge below.
    vlmeval_datasets: list[str] = field(default_factory=list)
    vlmeval_data: str = ""
    # An OpenAI-compatible chat endpoint (vLLM, SGLang, a hosted API) and model for LLM-judged scoring.
    judge_url: str = ""
    judge_model: str = ""
    judge_api_key_env: str = "OPENAI_API_KEY"  # the variable holding the key; the key is never logged


@dataclass
class ClipConfig:
    """`clip.*`: the world CLIP's shape and training (seed 002; mmkd/world_clip.py, launch/clip.py)."""

    hidden_size: int = 128
    layers: int = 2
    heads: int = 4
    projection_dim: int = 64
    patch_size: int = 16
    max_text_tokens: int = 77
    steps: int = 1500
    batch_size: int = 64
    lr: float = 5e-4
    weight_decay: float = 0.1
    warmup_steps: int = 100
    eval_items: int = 300

    def validate(self) -> ClipConfig:
        for name in ("hidden_size", "layers", "heads", "projection_dim", "steps", "batch_size", "eval_items"):
            if getattr(self, name) < 1:
                raise ConfigError(f"clip.{name}={getattr(self, name)}: must be >= 1")
        if self.hidden_size % self.heads:
            raise ConfigError(
                f"clip.hidden_size={self.hidden_size}: must be a multiple of clip.heads={self.heads}"
            )
        if self.max_text_tokens < 3:
            raise ConfigError(f"clip.max_text_tokens={self.max_text_tokens}: must be >= 3 (<bos> text <eos>)")
        return self


@dataclass
class RunConfig:
    seed: int = 0
    run_dir: str = "runs/default"
    # world: the BPE trained on the world's text; DIR: a local Hugging Face tokenizer directory; auto:
    # model.init_decoder's directory when a pretrained decoder is loaded (its ids mean its words), else
    # the world's.
    tokenizer: str = "auto"
    recipe: RecipeConfig = field(default_factory=RecipeConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    annotator: AnnotatorConfig = field(default_factory=AnnotatorConfig)
    build: BuildConfig = field(default_factory=BuildConfig)
    clip: ClipConfig = field(default_factory=ClipConfig)
    foundations: FoundationConfig = field(default_factory=FoundationConfig)

    def named_decoder(self) -> str:
        """model.init_decoder where it names a pretrained decoder of its own; "" where it is empty or
        the world foundation a run with model.init=world filled in (which reads the world's ids)."""
        decoder = self.model.init_decoder
        return "" if self.model.init == "world" and is_foundation(decoder) else decoder

    def tokenizer_dir(self) -> Path | None:
        """The Hugging Face tokenizer directory this run uses, or None for the world's tokenizer."""
        if self.tokenizer == "auto":
            return Path(self.named_decoder()) if self.named_decoder() else None
        return None if self.tokenizer == "world" else Path(self.tokenizer)

    def validate(self) -> RunConfig:
        """Every group's keys, before any compute; the first wrong one is a ConfigError naming it."""
        self._validate_tokenizer()
        parts = [self.recipe, self.model, self.data.world, self.annotator, self.build, self.clip]
        for part in [*parts, self.foundations]:
            try:
                part.validate()
            except ValueError as e:
                raise ConfigError(str(e)) from None
        self._validate_model()
        for key, ok, want in RANGES:  # the numeric keys of every group (mmkd/config_ranges.py)
            section, name = key.split(".")
            value = getattr(getattr(self, section), name)
            real = isinstance(value, float)
            if not ok(value) or (real and not math.isfinite(value)):  # inf passes "> 0"
                raise ConfigError(f"{key}={value}: must be {want}" + (" and finite" if real else ""))
        self._validate_train()
        if self.build.group_max < self.build.group_min:
            raise ConfigError(
                f"build.group_max={self.build.group_max}: must be >= build.group_min={self.build.group_min}"
            )
        self._validate_eval()
        return self

    def _validate_tokenizer(self) -> None:
        """The tokenizer against the pretrained decoder (whose shapes are read here) and the foundations."""
        if self.tokenizer == "world" and self.named_decoder():
            raise ConfigError(
                f"tokenizer=world with model.init_decoder={self.model.init_decoder!r}: the pretrained "
                "decoder's token ids mean the words of its own tokenizer; use tokenizer=auto (its "
                "directory) or tokenizer=<its tokenizer directory>"
            )
        if (
            self.tokenizer not in ("auto", "world")
            and not (Path(self.tokenizer) / "tokenizer.json").is_file()
        ):
            raise ConfigError(
                f"tokenizer={self.tokenizer!r}: must be auto, world or a Hugging Face tokenizer directory "
                "(with a tokenizer.json)"
            )
        try:
            adopt_pretrained_shapes(self.model)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        if (
            self.model.init == "world"
            and not self.named_decoder()
            and self.tokenizer not in ("auto", "world")
        ):
            raise ConfigError(
                f"model.init=world with tokenizer={self.tokenizer!r}: the world foundation decoder reads the "
                "world tokenizer's ids; use tokenizer=auto (or name model.init_decoder)"
            )

    def _validate_model(self) -> None:
        """What a model family needs of the model keys (the discrete family's decoder and tokenizer)."""
        m = self.model
        if m.family == "discrete" and m.tune == "lora" and not m.init_decoder:
            raise ConfigError(
                "model.tune=lora trains adapters on a pretrained decoder, but model.init_decoder is empty: "
                "give one (a decoder trained on the world's text: docs/discrete.md) or use model.tune=full"
            )
        if m.family == "discrete" and m.init_vision:
            raise ConfigError(
                f"model.init_vision={m.init_vision!r}: the discrete model has no vision tower (its images "
                "are visual-token ids); set model.visual_tokenizer instead"
            )
        if (
            m.family == "discrete"
            and m.visual_tokenizer
            and not Path(m.visual_tokenizer, "config.json").is_file()
        ):
            raise ConfigError(
                f"model.visual_tokenizer={m.visual_tokenizer!r}: not a visual tokenizer directory (no "
                "config.json); train one with launch/visual_tokenizer.py, or leave it empty to train one "
                "on the world"
            )

    def _validate_train(self) -> None:
        """Batches, budgets, resume and branching, choices and module prefixes."""
        t = self.train
        if t.micro_batch < 0 or (t.micro_batch and t.global_batch % t.micro_batch):
            raise ConfigError(
                f"train.micro_batch={t.micro_batch}: must be 0 (global batch / world size) or divide "
                f"train.global_batch={t.global_batch}"
            )
        if t.packing and t.budget_tokens <= 0:
            raise ConfigError(
                "train.packing=true needs train.budget_tokens > 0: packed rows hold a varying number "
                "of samples, so the budget is stated in tokens"
            )
        if t.budget_tokens and not t.packing:
            raise ConfigError(
                f"train.budget_tokens={t.budget_tokens} needs train.packing=true (unpacked batches "
                "vary in tokens; state their budget as train.budget_samples)"
            )
        row_tokens = t.global_batch * self.model.max_seq_len
        if t.packing and t.budget_tokens < row_tokens:
            raise ConfigError(
                f"train.budget_tokens={t.budget_tokens} is smaller than one global batch "
                f"({t.global_batch} rows x {self.model.max_seq_len} tokens)"
            )
        if t.budget_samples < t.global_batch:
            raise ConfigError(
                f"train.budget_samples={t.budget_samples} is smaller than one global batch ({t.global_batch})"
            )
        t.resume = str(t.resume).lower()  # `train.resume=false` arrives from the command line as a bool
        if t.resume not in ("true", "false", "force"):
            raise ConfigError(f"train.resume={t.resume!r}: must be true, false or force")
        if t.engine in ENGINES and t.branch_from and not engine_class(t.engine).branchable:
            raise ConfigError(
                f"train.branch_from={t.branch_from!r} with train.engine={t.engine}: branching would read "
                f"another run's {t.engine} files; branch under an engine whose checkpoints load as DCP "
                f"({', '.join(e for e in ENGINES if engine_class(e).branchable)})"
            )
        if not 0 <= t.warmup_frac < 1:
            raise ConfigError(f"train.warmup_frac={t.warmup_frac}: must be in [0, 1)")
        choices = {
            "optimizer": ("adam", "adamw"),
            "schedule": SCHEDULES,
            "decay_shape": DECAY_SHAPES,
            "engine": tuple(ENGINES),
        }
        for key, allowed in choices.items():
            if getattr(t, key) not in allowed:
                raise ConfigError(f"train.{key}={getattr(t, key)!r}: must be one of {list(allowed)}")
        if t.compile and t.compile not in torch._dynamo.list_backends(exclude_tags=()):
            known = torch._dynamo.list_backends(exclude_tags=())
            raise ConfigError(f"train.compile={t.compile!r}: not a torch.compile backend; known: {known}")
        if t.zero_stage not in (1, 2, 3):
            raise ConfigError(f"train.zero_stage={t.zero_stage}: DeepSpeed ZeRO stages are 1, 2 and 3")
        if not 0 < t.decay_frac <= 1:
            raise ConfigError(f"train.decay_frac={t.decay_frac}: must be in (0, 1]")
        modules = (
            ("vision", "projector", "decoder", "lm_head")
            if self.model.family == "dense"
            else ("decoder", "lm_head", "marker_embed", "visual_codes", "visual_proj")
        )
        for prefix in [*t.lr_multipliers, *t.freeze]:
            if prefix.split(".")[0] not in modules:
                raise ConfigError(f"train: unknown module prefix {prefix!r}; modules are {list(modules)}")

    def _validate_eval(self) -> None:
        """Evaluation's schedule, noise checkpoints, suites, judge, abilities and prompts."""
        every, ckpt = self.eval.every, self.train.checkpoint_every
        if every and (not ckpt or every % ckpt):
            raise ConfigError(
                f"eval.every={every} must be a multiple of train.checkpoint_every={ckpt}: "
                "evaluation reads the checkpoint of its step"
            )
        k = self.eval.noise_checkpoints
        if k and not 2 <= k <= self.train.keep_checkpoints + 1:
            raise ConfigError(
                f"eval.noise_checkpoints={k}: must be 0 (off) or in 2..train.keep_checkpoints + 1 = "
                f"{self.train.keep_checkpoints + 1} (the checkpoints a run keeps); raise "
                "train.keep_checkpoints to measure over more"
            )
        for name, path in self.eval.custom.items():
            if Path(path).suffix not in (".jsonl", ".tsv") or not Path(path).is_file():
                raise ConfigError(f"eval.custom.{name}={path!r}: needs an existing .jsonl or .tsv file")
            if name == "world":
                raise ConfigError("eval.custom.world: the name 'world' is the world benchmarks' suite")
        if bool(self.eval.judge_url) != bool(self.eval.judge_model):
            raise ConfigError(
                f"eval.judge_url={self.eval.judge_url!r} and eval.judge_model={self.eval.judge_model!r}: "
                "set both (an OpenAI-compatible endpoint and the model it serves) or neither"
            )
        bad = [a for a in self.eval.abilities if a not in ABILITIES]
        if bad:
            raise ConfigError(f"eval.abilities has unknown {bad}; known: {list(ABILITIES)}")
        if self.eval.caption_prompt and self.eval.caption_prompt.count(IMAGE_MARKER) != 1:
            raise ConfigError(
                f"eval.caption_prompt={self.eval.caption_prompt!r}: must hold {IMAGE_MARKER} exactly once "
                "(where the image goes), or be empty"
            )
        for key, p in (
            ("eval.image_prompt", self.eval.image_prompt),
            ("recipe.image_prompt", self.recipe.image_prompt),
        ):
            if p in DOCUMENT_KINDS or not p:
                continue
            if p.count(CAPTION_MARKER) != 1 or p.count(IMAGE_MARKER) != 1 or not p.endswith(IMAGE_MARKER):
                raise ConfigError(
                    f"{key}={p!r}: must hold {CAPTION_MARKER} once (where the text goes) and end in "
                    f"{IMAGE_MARKER} (where the image is drawn), e.g. 'Caption: {CAPTION_MARKER}\\nImage: "
                    f"{IMAGE_MARKER}', or name a document kind {list(DOCUMENT_KINDS)}, or be empty"
                )

    def image_prompt(self) -> str:
        """The discrete model's text-to-image prompt template: eval.image_prompt, else the recipe's,
        document kinds rendered as their documents read ("" is <bos> text [IMG])."""
        return text_to_image_prompt(self.eval.image_prompt, self.recipe.image_prompt)


def load_group(schema: type, path: str | Path):
    """One config-group YAML file typed by its dataclass (for code that runs outside Hydra)."""
    return OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(schema), OmegaConf.load(path)))


def to_run_config(cfg: DictConfig | dict[str, Any]) -> RunConfig:
    """Merge composed config onto the typed schema; a misspelt key or wrong type names the key."""
    schema = OmegaConf.structured(RunConfig)
    try:
        if isinstance(cfg, DictConfig):  # plain values: a key forced in with `+` must meet the schema
            cfg = OmegaConf.to_container(cfg, resolve=True)
        merged = OmegaConf.merge(schema, cfg)
        run = OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None)
        raise ConfigError(f"config key {key!r}: {str(e).splitlines()[0]}") from None
    assert isinstance(run, RunConfig)
    recipe = cfg.get("recipe") if isinstance(cfg, dict) else None
    if isinstance(recipe, dict):  # plain values (a saved config): its mixtures are whole, not changes
        for key in ("mixture", "sft_mixture"):
            if isinstance(recipe.get(key), dict):
                setattr(run.recipe, key, dict(recipe[key]))
    return run.validate()


def saved_run_config(saved: dict[str, Any]) -> RunConfig:
    """A config as an earlier run saved it (a checkpoint's meta.json): world settings added since then
    read at the value that draws the world it trained on (`LEGACY_NEUTRAL`), not at today's default."""
    data = dict(saved.get("data") or {})
    data["world"] = {**LEGACY_NEUTRAL, **(data.get("world") or {})}
    return to_run_config({**saved, "data": data})


# The schema Hydra composes first (recipes/config.yaml's defaults list): the YAMLs only state changes.
ConfigStore.instance().store(name="mmkd_schema", node=RunConfig)
