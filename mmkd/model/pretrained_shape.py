"""The architecture a pretrained checkpoint states in its config.json, as model config keys.

`model.init_decoder` (a Llama-family decoder) and `model.init_vision` (a SigLIP vision tower) name
Hugging Face directories whose config.json decides the tower's shape: a 1B Llama is not the `tiny`
size, so a run starts from one with no other model key. The checkpoint's values replace the size
file's, and the run's config.yaml records them. A setting our modules cannot compute (attention or MLP
biases, another activation, a head_dim that is not width / heads, a RoPE form `mmkd.model.rope` does
not know) is refused naming the config.json key.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmkd.model import rope
from mmkd.model.config import ModelConfig


def read_config(path: str | Path) -> dict:
    """config.json of a Hugging Face directory (a full SigLIP's vision part where it has one)."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(f"{path} has no config.json: not a Hugging Face checkpoint directory")
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path}/config.json is not JSON: {e}") from None
    if not isinstance(cfg, dict):
        raise ValueError(f"{path}/config.json holds a {type(cfg).__name__}, not an object")
    return cfg.get("vision_config", cfg) if "vision_config" in cfg and "hidden_size" not in cfg else cfg


def _need(cfg: dict, path: Path, key: str) -> Any:
    if key not in cfg:
        raise ValueError(f"{path}/config.json has no {key!r}")
    return cfg[key]


def _refuse(cfg: dict, path: Path, allowed: dict[str, tuple]) -> None:
    """Each stated key of `allowed` must hold one of its values (a missing key means the first)."""
    for key, values in allowed.items():
        if cfg.get(key, values[0]) not in values:
            raise ValueError(
                f"{path}/config.json: {key}={cfg[key]!r} is not supported (mmkd computes {key}={values[0]!r})"
            )


def decoder_shape(path: str | Path) -> dict[str, Any]:
    """ModelConfig keys of a Llama-family decoder directory."""
    path = Path(path)
    cfg = read_config(path)
    if "text_config" in cfg:
        raise ValueError(
            f"{path}/config.json is a vision-language model's; model.init_decoder takes a decoder-only "
            "(LlamaForCausalLM) directory"
        )
    _refuse(cfg, path, {"hidden_act": ("silu",), "attention_bias": (False,), "mlp_bias": (False,)})
    width, heads = int(_need(cfg, path, "hidden_size")), int(_need(cfg, path, "num_attention_heads"))
    head_dim = cfg.get("head_dim") or width // heads
    if head_dim * heads != width:
        raise ValueError(
            f"{path}/config.json: head_dim={head_dim} with {heads} heads is not hidden_size={width} "
            "(mmkd's attention splits the width evenly)"
        )
    try:
        theta, scaling = rope.from_hf(cfg)
    except ValueError as e:
        raise ValueError(f"{path}/config.json: {e}") from None
    return {
        "width": width,
        "layers": int(_need(cfg, path, "num_hidden_layers")),
        "heads": heads,
        "kv_heads": int(cfg.get("num_key_value_heads") or heads),
        "ffn": int(_need(cfg, path, "intermediate_size")),
        "norm_eps": float(cfg.get("rms_norm_eps", 1e-6)),  # LlamaConfig's default
        "rope_theta": theta,
        "rope_scaling": scaling,
        "tie_embeddings": bool(cfg.get("tie_word_embeddings", False)),
    }


def vision_shape(path: str | Path) -> dict[str, Any]:
    """ModelConfig keys of a SigLIP vision tower directory (a vision model or a whole SigLIP)."""
    path = Path(path)
    cfg = read_config(path)
    _refuse(cfg, path, {"hidden_act": ("gelu_pytorch_tanh",), "num_channels": (3,)})
    return {
        "vision_width": int(_need(cfg, path, "hidden_size")),
        "vision_layers": int(_need(cfg, path, "num_hidden_layers")),
        "vision_heads": int(_need(cfg, path, "num_attention_heads")),
        "vision_mlp": int(_need(cfg, path, "intermediate_size")),
        "image_size": int(_need(cfg, path, "image_size")),
        "patch_size": int(_need(cfg, path, "patch_size")),
        "vision_norm_eps": float(cfg.get("layer_norm_eps", 1e-6)),  # SiglipVisionConfig's default
    }


def adopt_pretrained_shapes(model: ModelConfig) -> dict[str, tuple[Any, Any]]:
    """Set the keys the pretrained towers state (in place); returns {key: (was, now)} of those that
    changed. ValueError names `model.init_*` and the file where a directory cannot be read."""
    changes = {}
    for key, shape in (("init_decoder", decoder_shape), ("init_vision", vision_shape)):
        path = getattr(model, key)
        if not path:
            continue
        try:
            stated = shape(path)
        except (FileNotFoundError, ValueError) as e:
            raise ValueError(f"model.{key}={path!r}: {e}") from None
        if model.family == "discrete":  # its head spans the extended vocabulary: never tied
            stated.pop("tie_embeddings", None)
        for name, value in stated.items():
            if getattr(model, name) != value:
                changes[name] = (getattr(model, name), value)
                setattr(model, name, value)
    return changes
