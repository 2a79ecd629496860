"""Hugging Face checkpoints in and out, through one explicit key map (STYLE.md rule 6).

In: a Llama-family decoder (`model.layers.N.self_attn.q_proj.weight`, ...) and a SigLIP vision tower
(`vision_model.encoder.layers.N...`, q/k/v fused into our `qkv`) from local safetensors; the projector
stays fresh. Shapes and the settings that change the function (norm eps, RoPE theta) must match our
config; a mismatch is an error naming the key. Out: the decoder as a `LlamaForCausalLM` directory
(config.json + model.safetensors) that transformers, vLLM and lm-eval load. Only safetensors are
read or written: no pickle.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from mmkd.model.config import ModelConfig
from mmkd.model.vlm import VLM


class CheckpointMismatch(ValueError):
    """A pretrained checkpoint does not fit the configured model; the message names what differs."""


def _read(path: Path) -> dict[str, torch.Tensor]:
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FileNotFoundError(f"{path}: no *.safetensors files (only safetensors checkpoints are loaded)")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(f))
    return state


def _config(path: Path) -> dict:
    if not (path / "config.json").exists():
        raise FileNotFoundError(f"{path} has no config.json: not a Hugging Face checkpoint directory")
    cfg = json.loads((path / "config.json").read_text())
    return cfg.get("vision_config", cfg) if "vision_config" in cfg and "hidden_size" not in cfg else cfg


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


def _check(ours: dict[str, torch.Tensor], key: str, hf_key: str, value: torch.Tensor, path: Path) -> None:
    if ours[key].shape != value.shape:
        raise CheckpointMismatch(
            f"{path}: {hf_key} has shape {tuple(value.shape)}, model key {key} needs {tuple(ours[key].shape)}"
        )


def _settings(path: Path, want: dict[str, float], got: dict) -> None:
    for name, value in want.items():
        if name in got and abs(float(got[name]) - value) > 1e-12:
            raise CheckpointMismatch(f"{path}/config.json: {name}={got[name]}, our model config has {value}")


def load_decoder(model: VLM, path: str | Path) -> None:
    """Initialise the decoder (and untied LM head) from a local Llama-family checkpoint."""
    path, cfg = Path(path), model.cfg
    _settings(path, {"rms_norm_eps": cfg.norm_eps, "rope_theta": cfg.rope_theta}, _config(path))
    state, ours = _read(path), model.state_dict()
    keys = decoder_map(cfg)
    if cfg.tie_embeddings and "lm_head.weight" in state:
        raise CheckpointMismatch(f"{path}: has its own lm_head.weight; set model.tie_embeddings=false")
    extra = sorted(set(state) - set(keys))
    if extra:
        raise CheckpointMismatch(f"{path}: keys our decoder has no place for (e.g. biases): {extra[:5]}")
    missing = sorted(set(keys) - set(state))
    if missing:
        raise CheckpointMismatch(f"{path}: missing {missing[:5]} ({len(missing)} keys)")
    with torch.no_grad():
        for hf_key, key in keys.items():
            _check(ours, key, hf_key, state[hf_key], path)
            ours[key].copy_(state[hf_key])


def load_vision(model: VLM, path: str | Path) -> None:
    """Initialise the ViT from a local SigLIP (vision model or full SigLIP) checkpoint."""
    path, cfg = Path(path), model.cfg
    _settings(path, {"layer_norm_eps": model.vision.post_layernorm.eps}, _config(path))
    state = _strip(_read(path), ("vision_model.", "model.vision_model."))
    ours = model.state_dict()
    pairs = {
        "embeddings.patch_embedding.weight": "vision.patch_embedding.weight",
        "embeddings.patch_embedding.bias": "vision.patch_embedding.bias",
        "post_layernorm.weight": "vision.post_layernorm.weight",
        "post_layernorm.bias": "vision.post_layernorm.bias",
    }
    for i in range(cfg.vision_layers):
        hf, me = f"encoder.layers.{i}.", f"vision.layers.{i}."
        for part in ("layer_norm1", "layer_norm2", "mlp.fc1", "mlp.fc2", "self_attn.out_proj"):
            for kind in ("weight", "bias"):
                pairs[f"{hf}{part}.{kind}"] = f"{me}{part.replace('mlp.', '')}.{kind}"
    try:
        tensors = {key: state[hf_key] for hf_key, key in pairs.items()}
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
            ours[key].copy_(value)


def export_decoder(model: VLM, out_dir: str | Path) -> Path:
    """The decoder as a transformers `LlamaForCausalLM` directory (config.json + model.safetensors)."""
    out, cfg = Path(out_dir), model.cfg
    out.mkdir(parents=True, exist_ok=True)
    ours = model.state_dict()
    tensors = {hf: ours[key].detach().clone().contiguous() for hf, key in decoder_map(cfg).items()}
    if cfg.tie_embeddings:
        tensors.pop("lm_head.weight", None)
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": cfg.width,
        "intermediate_size": cfg.ffn,
        "num_hidden_layers": cfg.layers,
        "num_attention_heads": cfg.heads,
        "num_key_value_heads": cfg.kv_heads,
        "head_dim": cfg.width // cfg.heads,
        "max_position_embeddings": cfg.max_seq_len,
        "rms_norm_eps": cfg.norm_eps,
        "rope_theta": cfg.rope_theta,
        "vocab_size": cfg.vocab_size,
        "tie_word_embeddings": cfg.tie_embeddings,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "torch_dtype": "float32",
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out
