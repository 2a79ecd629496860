"""Evaluate a saved checkpoint (eval-only): world benchmarks, custom suites, lm-eval, VLMEvalKit.

    python launch/eval.py checkpoint=runs/baseline/seed0            # a run directory or a checkpoint dir
    python launch/eval.py checkpoint=runs/baseline/seed0 abilities=[counting,spatial] max_items=50
    python launch/eval.py checkpoint=runs/baseline/seed0 abilities=[] custom.invoices=data/invoices.jsonl
    python launch/eval.py checkpoint=runs/baseline/seed0 abilities=[] lm_eval_tasks=[mmkd_world_knowledge]
    python launch/eval.py checkpoint=runs/baseline/seed0 abilities=[] vlmeval_datasets=[MME,POPE]
    python launch/eval.py checkpoint=runs/mmgic_c/seed0 caption_prompt=$'Image: <image>\nCaption:'
    python launch/eval.py checkpoint=runs/baseline/seed0 shots=4     # 4-shot, into eval-<checkpoint>-4shot/
    python launch/eval.py checkpoint=runs/baseline/seed0 noise_checkpoints=3  # + noise.json
    python launch/eval.py checkpoint=runs/baseline/seed0 abilities=[] generation_prompts=1024 \
        cfg_scale=1 out=runs/baseline/seed0/eval-gen1024-cfg1    # a discrete model's generation alone
    python launch/eval.py checkpoint=runs/ic/seed0 image_prompt=ic    # draw after IC's own document prompt

The checkpoint carries its config and tokenizer (meta.json); results go to <run>/eval-<checkpoint>/
(or `out`).
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from mmkd.checkpoint import check_checkpoint, read_meta
from mmkd.config import saved_run_config
from mmkd.data_builders.sources import needs_world, prepare_world
from mmkd.distributed import local_device
from mmkd.errors import reported
from mmkd.eval.suites import evaluate_checkpoint, evaluate_noise
from mmkd.launch._arguments import parse
from mmkd.run_lock import RunLocked, run_lock
from mmkd.tokenizer import Tokenizer

USAGE = (
    "usage: python launch/eval.py checkpoint=PATH [abilities=[...]] [max_items=N] [batch_size=N] "
    "[custom.NAME=FILE.jsonl|.tsv ...] [lm_eval_tasks=[TASK,...]] [lm_eval_include=DIR] "
    "[vlmeval_datasets=[NAME,...]] [vlmeval_data=DIR] [judge_url=URL judge_model=NAME] [shots=K] "
    "[noise_checkpoints=K] [generation_prompts=N] [cfg_scale=S] [temperature=T] [top_k=K] "
    "[image_prompt=TEXT|mmgic|ic] [out=DIR]"
)
EVAL_KEYS = (
    "abilities",
    "max_items",
    "batch_size",
    "custom",
    "lm_eval_tasks",
    "lm_eval_include",
    "vlmeval_datasets",
    "vlmeval_data",
    "judge_url",
    "judge_model",
    "judge_api_key_env",
    "caption_prompt",
    "image_prompt",
    "shots",
    "generation_prompts",
    "cfg_scale",
    "temperature",
    "top_k",
    "noise_checkpoints",
)
# overwrite: replace a finished evaluation in the same place (never silently); out: that place
FLAGS = ("overwrite", "out")


def main(argv: list[str] | None = None) -> None:
    """`argv` defaults to the command line: the console script `mmkd-eval` calls main()."""
    args = parse(argv, USAGE, __doc__, required=["checkpoint"], allowed=["checkpoint", *EVAL_KEYS, *FLAGS])
    with reported():
        evaluate(args)


def evaluate(args: DictConfig) -> None:
    """Check the checkpoint and the overrides, then evaluate."""
    ckpt = check_checkpoint(Path(args.checkpoint))
    meta = read_meta(ckpt)
    saved = dict(meta["config"])
    overrides = OmegaConf.to_container(args)  # plain lists and dicts, as the saved config holds
    saved["eval"] = {**saved["eval"], **{k: overrides[k] for k in EVAL_KEYS if k in overrides}}
    cfg = saved_run_config(saved)
    tokenizer = Tokenizer.from_str(meta["tokenizer"], meta.get("special_tokens"))
    default = ckpt.parent.parent / f"eval-{ckpt.name}{f'-{cfg.eval.shots}shot' if cfg.eval.shots else ''}"
    out = Path(args.get("out") or default)
    # Two evaluations into one directory would interleave their files: the second waits for nothing.
    with run_lock(out, remedy=f"give another out=DIR, or, if that job is gone, delete {out / 'LOCK'}"):
        if (out / "results.json").exists() and not args.get("overwrite", False):
            raise RunLocked(f"{out} already holds an evaluation of {ckpt}; add overwrite=true to replace it")
        world_root = (
            prepare_world(cfg.data, cfg.model.patch_size) if needs_world(cfg, training=False) else None
        )
        title = f"{cfg.recipe.name} (seed {cfg.seed}, {ckpt.name})"
        evaluate_checkpoint(ckpt, cfg, tokenizer, world_root, out, title, device=local_device())
        if cfg.eval.noise_checkpoints:
            evaluate_noise(ckpt, cfg, tokenizer, world_root, out, local_device())
    print((out / "report.md").read_text())


if __name__ == "__main__":
    main()
