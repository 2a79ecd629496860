"""Export a checkpoint to a Hugging Face directory (safetensors + config + tokenizer).

    python launch/export.py checkpoint=runs/baseline/seed0 out=exports/baseline-seed0
    python launch/export.py checkpoint=runs/x/checkpoints/step-00000400 out=exports/x format=llama

format=llava: the whole model as `LlavaForConditionalGeneration` with its processor (VLMEvalKit,
vLLM); it needs a model trained with `model.vision_post_norm=false` (dense_3b is). format=llama: the
decoder alone as `LlamaForCausalLM` (lm-eval, text tasks). format=auto (default): llava when the
model allows it, else llama. A checkpoint of the instruction stage also gets chat_template.jinja (the
training layout, for `apply_chat_template`). A discrete model (model.family=discrete) exports as one
`LlamaForCausalLM` over text and visual ids (`export_discrete`). Works for every engine's checkpoints,
on one CPU process.
"""

from __future__ import annotations

from pathlib import Path

import torch

from mmkd.checkpoint import check_checkpoint, load_checkpoint, read_meta
from mmkd.config import ConfigError, saved_run_config
from mmkd.errors import reported
from mmkd.launch._arguments import parse
from mmkd.materialize import materialize
from mmkd.model import VLM
from mmkd.model.build import model_on_meta
from mmkd.model.hf import export_decoder, export_discrete, export_vlm
from mmkd.recipe_config import SFT_STAGE
from mmkd.tokenizer import Tokenizer

USAGE = "usage: python launch/export.py checkpoint=PATH out=DIR [format=auto|llava|llama]"
FORMATS = ("auto", "llava", "llama")


def main(argv: list[str] | None = None) -> None:
    """`argv` defaults to the command line: the console script `mmkd-export` calls main()."""
    args = parse(
        argv, USAGE, __doc__, required=["checkpoint", "out"], allowed=["checkpoint", "out", "format"]
    )
    with reported():
        export(Path(args.checkpoint), Path(args.out), args.get("format", "auto"))


def export(checkpoint: Path, out: Path, kind: str) -> None:
    """Check the format and the checkpoint, then write the Hugging Face directory."""
    if kind not in FORMATS:
        raise ConfigError(f"format={kind!r}: must be one of {list(FORMATS)}")
    ckpt = check_checkpoint(checkpoint)
    meta = read_meta(ckpt)
    cfg = saved_run_config(meta["config"])
    if kind == "llava" and cfg.model.vision_post_norm:
        raise ConfigError(
            "format=llava needs a model trained with model.vision_post_norm=false (LLaVA reads the ViT's "
            "last hidden state, before SigLIP's post-layernorm); use format=llama for the decoder alone"
        )
    if kind == "auto":
        kind = "llama" if cfg.model.vision_post_norm else "llava"
    tokenizer = Tokenizer.from_str(meta["tokenizer"], meta.get("special_tokens"))
    if cfg.model.family == "discrete":
        if kind == "llava":
            raise ConfigError("format=llava: a discrete model has no vision tower; it exports as llama")
        model = model_on_meta(cfg.model, tokenizer.image_id)
        materialize(model, torch.device("cpu"), seed=None)
        load_checkpoint(ckpt, model)
        out = export_discrete(model, out, tokenizer)
        print(f"exported {ckpt} (step {meta['step']}) as LlamaForCausalLM over text + visual ids to {out}")
        return
    model = VLM(cfg.model, tokenizer.image_id)
    load_checkpoint(ckpt, model)
    # A checkpoint of the instruction stage (recipe.sft_fraction) answers a conversation.
    chat = meta.get("stage") == SFT_STAGE
    out = (export_vlm if kind == "llava" else export_decoder)(model, out, tokenizer, chat)
    what = "LlavaForConditionalGeneration" if kind == "llava" else "LlamaForCausalLM (the decoder)"
    template = "with its chat template" if chat else "no chat template (not instruction-tuned)"
    print(f"exported {ckpt} (step {meta['step']}) as {what}, {template}, to {out}")


if __name__ == "__main__":
    main()
