"""Hugging Face checkpoints in and out, through one explicit key map (STYLE.md rule 6).

In: a Llama-family decoder (`model.layers.N.self_attn.q_proj.weight`, ...) and a SigLIP vision tower
(`vision_model.encoder.layers.N...`, q/k/v fused into our `qkv`) from local safetensors; the projector
stays fresh. Shapes and the settings that change the function (norm eps, RoPE in any form transformers
writes: mmkd/model/rope.py) must match our config; a mismatch is an error naming the key. Out: the whole
model as a `LlavaForConditionalGeneration` directory with its processor (VLMEvalKit, vLLM), or the
decoder as `LlamaForCausalLM` (lm-eval), each with config.json, model.safetensors and the tokenizer
(`launch/export.py`). Only safetensors are read or written: no pickle.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mmkd.errors import CheckpointError
from mmkd.materialize import copy_full_
from mmkd.model import rope
from mmkd.model.config import ModelConfig
from mmkd.model.discrete import DiscreteVLM
from mmkd.model.lora import merged_state
from mmkd.model.pretrained_shape import read_config
from mmkd.model.vlm import VLM
from mmkd.templates import chat_template
from mmkd.tokenizer import Tokenizer

CHAT_TEMPLATE_FILE = "chat_template.jinja"  # where transformers 5's tokenizers and processors find it


class CheckpointMismatch(CheckpointError):
    """A pretrained checkpoint does not fit the configured model; the message names what differs."""


def _read(path: Path) -> dict[str, torch.Tensor]:
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{path}: no *.safetensors files (only safetensors checkpoints are loaded)")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(f))
    return state


def _strip(state: dict[str, torch.Tensor], prefixes: tuple[str, ...]) -> dict[str, torch.Tensor]:
    for prefix in prefixes:
        if any(k.startswith(prefix) for k in state):
            return {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    return state


def decoder_map(cfg: ModelConfig) -> dict[str, str]:
    """HF Llama key -> our key (the decoder and the LM head)."""
    keys = {
        "model.embed_tokens.weight": "decoder.embed_tokens.weight",
        "model.norm.weight": "decoder.norm.weight",
    }
    for i in range(cfg.layers):
        for part in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"):
            keys[f"model.layers.{i}.{part}.weight"] = f"decoder.layers.{i}.{part}.weight"
        for part in ("mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"):
            keys[f"model.layers.{i}.{part}.weight"] = f"decoder.layers.{i}.{part}.weight"
        for norm in ("input_layernorm", "post_attention_layernorm"):
            keys[f"model.layers.{i}.{norm}.weight"] = f"decoder.layers.{i}.{norm}.weight"
    if not cfg.tie_embeddings:
        keys["lm_head.weight"] = "lm_head.weight"
    return keys


def vision_map(cfg: ModelConfig) -> dict[str, str]:
    """HF SigLIP vision key (under `vision_model.`) -> our key, for the tensors that map one to one
    (the position embedding gains a batch axis; q, k and v are fused into our `qkv`)."""
    keys = {
        "embeddings.patch_embedding.weight": "vision.patch_embedding.weight",
        "embeddings.patch_embedding.bias": "vision.patch_embedding.bias",
    }
    if cfg.vision_post_norm:
        keys |= {
            "post_layernorm.weight": "vision.post_layernorm.weight",
            "post_layernorm.bias": "vision.post_layernorm.bias",
        }
    for i in range(cfg.vision_layers):
        hf, me = f"encoder.layers.{i}.", f"vision.layers.{i}."
        for part in ("layer_norm1", "layer_norm2", "mlp.fc1", "mlp.fc2", "self_attn.out_proj"):
            for kind in ("weight", "bias"):
                keys[f"{hf}{part}.{kind}"] = f"{me}{part.replace('mlp.', '')}.{kind}"
    return keys


# Token-indexed rows: the vocabulary may have grown by the tokens we add to a pretrained tokenizer.
VOCAB_ROWS = ("decoder.embed_tokens.weight", "lm_head.weight")  # the discrete head: + markers + codes


def _grown_vocabulary(ours: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """The pretrained rows, then one row per added token (`<image>`, a pad token) set to the mean of
    the pretrained rows: a new token starts where the average token is, not at a random point."""
    extra = value.mean(0, keepdim=True).expand(ours.shape[0] - value.shape[0], -1)
    return torch.cat([value, extra])


def _check(ours: dict[str, torch.Tensor], key: str, hf_key: str, value: torch.Tensor, path: Path) -> None:
    grows = (
        key in VOCAB_ROWS and ours[key].shape[1:] == value.shape[1:] and ours[key].shape[0] > value.shape[0]
    )
    if ours[key].shape != value.shape and not grows:
        raise CheckpointMismatch(
            f"{path}: {hf_key} has shape {tuple(value.shape)}, model key {key} needs {tuple(ours[key].shape)}"
        )


def _settings(path: Path, want: dict[str, float], got: dict) -> None:
    for name, value in want.items():
        if name in got and abs(float(got[name]) - value) > 1e-12:
            raise CheckpointMismatch(f"{path}/config.json: {name}={got[name]}, our model config has {value}")


def _same_rope(path: Path, cfg: ModelConfig, hf_config: dict) -> None:
    """The checkpoint's RoPE (any form transformers writes) is the one the model is configured with:
    positions rotated otherwise would load without an error and compute something else."""
    try:
        theta, scaling = rope.from_hf(hf_config)
    except ValueError as e:
        raise CheckpointMismatch(f"{path}/config.json: {e}") from None
    if theta != cfg.rope_theta:
        raise CheckpointMismatch(
            f"{path}/config.json: rope_theta={theta:g}, our model config has "
            f"model.rope_theta={cfg.rope_theta:g}"
        )
    for f in dataclasses.fields(scaling):
        theirs, ours = getattr(scaling, f.name), getattr(cfg.rope_scaling, f.name)
        if theirs != ours:
            raise CheckpointMismatch(
                f"{path}/config.json: its RoPE scaling has {f.name}={theirs!r}, our model config has "
                f"model.rope_scaling.{f.name}={ours!r} (set model.rope_scaling to {_as_override(scaling)})"
            )


def _as_override(scaling: rope.RopeScaling) -> str:
    changed = {
        f.name: getattr(scaling, f.name)
        for f in dataclasses.fields(scaling)
        if getattr(scaling, f.name) != f.default
    }
    return "{" + ", ".join(f"{k}: {v}" for k, v in changed.items()) + "}"


def _under_adapter(key: str) -> str:
    """Where a weight lives once LoRA wraps its layer (`mmkd.model.lora`)."""
    return key.removesuffix(".weight") + ".base_layer.weight"


def load_decoder(model: VLM, path: str | Path) -> None:
    """Initialise the decoder (and untied LM head) from a local Llama-family checkpoint.

    An untied head starts from a tied checkpoint's embeddings (the discrete model's head spans the
    extended vocabulary, so it is never tied). Weights under LoRA adapters load into their base layer.
    """
    path, cfg = Path(path), model.cfg
    hf_config = read_config(path)
    _settings(path, {"rms_norm_eps": cfg.norm_eps}, hf_config)
    _same_rope(path, cfg, hf_config)
    state, ours = _read(path), model.state_dict()
    keys = decoder_map(cfg)
    if cfg.tie_embeddings and "lm_head.weight" in state:
        raise CheckpointMismatch(f"{path}: has its own lm_head.weight; set model.tie_embeddings=false")
    if not cfg.tie_embeddings and "lm_head.weight" not in state and hf_config.get("tie_word_embeddings"):
        state["lm_head.weight"] = state["model.embed_tokens.weight"]
    keys = {hf: key if key in ours else _under_adapter(key) for hf, key in keys.items()}
    extra = sorted(set(state) - set(keys))
    if extra:
        raise CheckpointMismatch(f"{path}: keys our decoder has no place for (e.g. biases): {extra[:5]}")
    missing = sorted(set(keys) - set(state))
    if missing:
        raise CheckpointMismatch(f"{path}: missing {missing[:5]} ({len(missing)} keys)")
    with torch.no_grad():
        for hf_key, key in keys.items():
            _check(ours, key, hf_key, state[hf_key], path)
            value = state[hf_key]
            if key in VOCAB_ROWS and value.shape[0] < ours[key].shape[0]:
                value = _grown_vocabulary(ours[key], value)
            copy_full_(ours[key], value)


def load_vision(model: VLM, path: str | Path) -> None:
    """Initialise the ViT from a local SigLIP (vision model or full SigLIP) checkpoint."""
    path, cfg = Path(path), model.cfg
    _settings(path, {"layer_norm_eps": cfg.vision_norm_eps}, read_config(path))
    state = _strip(_read(path), ("vision_model.", "model.vision_model."))
    ours = model.state_dict()
    try:
        tensors = {key: state[hf_key] for hf_key, key in vision_map(cfg).items()}
        tensors["vision.position_embedding"] = state["embeddings.position_embedding.weight"][None]
        for i in range(cfg.vision_layers):
            hf = f"encoder.layers.{i}.self_attn."
            for kind in ("weight", "bias"):
                qkv = [state[f"{hf}{p}_proj.{kind}"] for p in "qkv"]
                tensors[f"vision.layers.{i}.self_attn.qkv.{kind}"] = torch.cat(qkv)
    except KeyError as e:
        raise CheckpointMismatch(f"{path}: missing {e.args[0]} (is it a SigLIP vision checkpoint?)") from None
    with torch.no_grad():
        for key, value in tensors.items():
            _check(ours, key, key, value, path)
            copy_full_(ours[key], value)


def llama_config(cfg: ModelConfig) -> dict:
    """transformers' LlamaConfig keys of our decoder's shape (config.json of a LlamaForCausalLM)."""
    return {
        "model_type": "llama",
        "hidden_size": cfg.width,
        "intermediate_size": cfg.ffn,
        "num_hidden_layers": cfg.layers,
        "num_attention_heads": cfg.heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.width // cfg.heads,
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        **rope.to_hf(cfg.rope_theta, cfg.rope_scaling),
        "vocab_size": cfg.vocab_size,
        "tie_word_embeddings": cfg.tie_embeddings,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
    }


def _write(
    out: Path, tensors: dict[str, torch.Tensor], config: dict, tokenizer: Tokenizer | None, chat: bool = False
) -> Path:
    """model.safetensors and config.json; with the tokenizer, also its files, its BOS / EOS / pad ids in
    the config (the text config's too) and a generation_config.json, so transformers' `generate` stops
    at EOS; with `chat` (an instruction-tuned model), the training layout as chat_template.jinja."""
    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().clone().contiguous() for k, v in tensors.items()}
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    if tokenizer is not None:
        ids = {
            "bos_token_id": tokenizer.bos_id,
            "eos_token_id": tokenizer.eos_id,
            "pad_token_id": tokenizer.pad_id,
        }
        config = {**config, **ids}
        if "text_config" in config:
            config["text_config"] = {**config["text_config"], **ids}
        write_tokenizer(out, tokenizer)
        _write_json(out / "generation_config.json", ids)
        if chat:
            (out / CHAT_TEMPLATE_FILE).write_text(chat_template(tokenizer.special.image))
    _write_json(out / "config.json", {**config, "torch_dtype": "float32"})
    return out


def write_tokenizer(out: Path, tokenizer: Tokenizer) -> None:
    """tokenizer.json and tokenizer_config.json: our tokenizers-library file as it is, which
    AutoTokenizer (and `Tokenizer.from_pretrained`) load with the same ids and special tokens."""
    (out / "tokenizer.json").write_text(tokenizer.export_str())
    roles = tokenizer.special_tokens()
    special = {"pad_token": roles["pad"], "bos_token": roles["bos"], "eos_token": roles["eos"]}
    _write_json(out / "tokenizer_config.json", {"tokenizer_class": "PreTrainedTokenizerFast", **special})


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def export_decoder(
    model: VLM, out_dir: str | Path, tokenizer: Tokenizer | None = None, chat: bool = False
) -> Path:
    """The decoder as a transformers `LlamaForCausalLM` directory (config.json + model.safetensors,
    and the tokenizer when given; `chat`: its chat template): what lm-eval and vLLM load for text tasks."""
    cfg, ours = model.cfg, model.state_dict()
    tensors = {hf: ours[key] for hf, key in decoder_map(cfg).items()}
    config = {"architectures": ["LlamaForCausalLM"], **llama_config(cfg)}
    return _write(Path(out_dir), tensors, config, tokenizer, chat)


def export_vlm(
    model: VLM, out_dir: str | Path, tokenizer: Tokenizer | None = None, chat: bool = False
) -> Path:
    """The whole model as a transformers `LlavaForConditionalGeneration` directory: SigLIP vision
    tower, LLaVA's two-layer projector, Llama decoder; `<image>` keeps its token id. With the
    tokenizer, also the processor files: `AutoProcessor` then turns "<image> text" and a picture into
    exactly our inputs (one `<image>` expands to the image's tokens; pixels scaled to [-1, 1]); with
    `chat`, the chat template that writes a conversation that way (`apply_chat_template`).

    LLaVA feeds the projector the ViT's last hidden state without SigLIP's post-layernorm, so only a
    model trained with `model.vision_post_norm=false` exports exactly; others are refused.
    """
    cfg, ours = model.cfg, model.state_dict()
    if cfg.vision_post_norm:
        raise CheckpointMismatch(
            "export as LLaVA needs model.vision_post_norm=false (LLaVA's projector reads the ViT's last "
            "hidden state, before SigLIP's post-layernorm); export the decoder alone with format=llama"
        )
    # Llama's "model.*" keys move under "model.language_model."; an untied "lm_head.weight" stays.
    tensors = {
        hf.replace("model.", "model.language_model.", 1) if hf.startswith("model.") else hf: ours[key]
        for hf, key in decoder_map(cfg).items()
    }
    tower = "model.vision_tower.vision_model."
    tensors |= {tower + hf: ours[key] for hf, key in vision_map(cfg).items()}
    tensors[tower + "embeddings.position_embedding.weight"] = ours["vision.position_embedding"][0]
    if not cfg.vision_post_norm:  # LLaVA's tower has one but never reads it: store the identity
        tensors[tower + "post_layernorm.weight"] = torch.ones(cfg.vision_width)
        tensors[tower + "post_layernorm.bias"] = torch.zeros(cfg.vision_width)
    for i in range(cfg.vision_layers):
        for kind in ("weight", "bias"):
            q, k, v = ours[f"vision.layers.{i}.self_attn.qkv.{kind}"].chunk(3)
            for name, value in zip("qkv", (q, k, v)):
                tensors[f"{tower}encoder.layers.{i}.self_attn.{name}_proj.{kind}"] = value
    for layer in ("linear_1", "linear_2"):
        for kind in ("weight", "bias"):
            tensors[f"model.multi_modal_projector.{layer}.{kind}"] = ours[f"projector.{layer}.{kind}"]
    config = {
        "architectures": ["LlavaForConditionalGeneration"],
        "model_type": "llava",
        "text_config": llama_config(cfg),
        "vision_config": {
            "model_type": "siglip_vision_model",
            "hidden_size": cfg.vision_width,
            "intermediate_size": cfg.vision_mlp,
            "num_hidden_layers": cfg.vision_layers,
            "num_attention_heads": cfg.vision_heads,
            "image_size": cfg.image_size,
            "patch_size": cfg.patch_size,
            "layer_norm_eps": cfg.vision_norm_eps,
            "hidden_act": "gelu_pytorch_tanh",
            "vision_use_head": False,
        },
        "image_token_index": model.image_token_id,
        "image_seq_length": cfg.image_tokens,
        "projector_hidden_act": "gelu",
        "multimodal_projector_bias": True,
        "vision_feature_layer": -1,
        "vision_feature_select_strategy": "full",
        "tie_word_embeddings": cfg.tie_embeddings,
    }
    out = _write(Path(out_dir), tensors, config, tokenizer, chat)
    if tokenizer is not None:
        size = {"height": cfg.image_size, "width": cfg.image_size}
        _write_json(
            out / "preprocessor_config.json",
            {  # (x / 255 - 0.5) / 0.5 = our x / 127.5 - 1; bicubic as in mmkd.loader.image_tensor
                "image_processor_type": "SiglipImageProcessor",
                "do_resize": True,
                "size": size,
                "resample": 3,
                "do_rescale": True,
                "rescale_factor": 1 / 255,
                "do_normalize": True,
                "image_mean": [0.5, 0.5, 0.5],
                "image_std": [0.5, 0.5, 0.5],
            },
        )
        _write_json(
            out / "processor_config.json",
            {
                "processor_class": "LlavaProcessor",
                "image_token": tokenizer.special.image,
                "patch_size": cfg.patch_size,
                "vision_feature_select_strategy": "full",
                "num_additional_image_tokens": 0,
            },
        )
    return out


def export_discrete(model: DiscreteVLM, out_dir: str | Path, tokenizer: Tokenizer | None = None) -> Path:
    """The discrete model as a transformers `LlamaForCausalLM` over its whole vocabulary: the input
    embeddings are the text rows, the two markers and the factorised visual rows multiplied out
    (codes x projection), the head is ours, and LoRA updates are merged into their weights. Given the
    same ids it computes our logits, so transformers (and vLLM) generate the same visual ids. With
    the tokenizer, `[IMG]`, `[/IMG]` and `<v_c>` are added as tokens after its vocabulary.
    """
    cfg, ours = model.cfg, merged_state(model)
    visual = ours["visual_codes.weight"] @ ours["visual_proj.weight"].T  # [codes, width]
    ours["decoder.embed_tokens.weight"] = torch.cat(
        [ours["decoder.embed_tokens.weight"], ours["marker_embed.weight"], visual]
    )
    tensors = {hf: ours[key] for hf, key in decoder_map(cfg).items()}
    vocab = model.vocab
    config = {"architectures": ["LlamaForCausalLM"], **llama_config(cfg), "vocab_size": vocab.size}
    config["discrete_visual_vocabulary"] = {
        "img": vocab.img,
        "end_img": vocab.end_img,
        "first_code": vocab.first_code,
    }
    if tokenizer is not None and tokenizer.vocab_size == vocab.text:
        names = ["[IMG]", "[/IMG]", *(f"<v_{c}>" for c in range(vocab.codes))]
        tokenizer = tokenizer.with_added(names)
    return _write(Path(out_dir), tensors, config, tokenizer)
