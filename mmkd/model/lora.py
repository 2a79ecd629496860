"""Partial training of the discrete model (seed 003 Sec. 3.2, `model.tune=lora`): the new vocabulary
(markers, visual codes and their projection), LoRA adapters on every projection of the decoder, the
norms and the LM head train; the pretrained decoder's weights stay frozen.

The adapters are peft's, injected into our own modules (`peft.inject_adapter_in_model`), not a
`PeftModel` wrapper: the trainer, the engines and checkpoints see one plain module tree. That sidesteps
peft's trap with new embeddings (rows added to a wrapped model are neither trained nor saved unless
listed in `modules_to_save`): here every trainable tensor is named below, checkpoints hold the whole
state dict, and a test checks which parameters receive gradients.
"""

from __future__ import annotations

import torch
from torch import nn

TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
NEW_VOCABULARY = ("marker_embed.", "visual_codes.", "visual_proj.")


def trains(name: str) -> bool:
    """Whether the parameter of this name trains under `model.tune=lora`."""
    return (
        "lora_" in name
        or name.startswith((*NEW_VOCABULARY, "lm_head."))
        or name.endswith("norm.weight")  # input_layernorm, post_attention_layernorm, the final norm
    )


def apply_lora(model: nn.Module, rank: int, alpha: float) -> None:
    """Inject LoRA adapters into the decoder (works on the meta device: the adapters are built where
    their layer's weights are) and freeze everything `trains` does not name."""
    try:
        from peft import LoraConfig, inject_adapter_in_model
    except ImportError:
        from mmkd.config import ConfigError

        raise ConfigError("model.tune=lora needs peft: pip install 'mmkd[lora]' (or peft)") from None

    config = LoraConfig(r=rank, lora_alpha=alpha, target_modules=TARGETS, lora_dropout=0.0, bias="none")
    inject_adapter_in_model(config, model.decoder)
    for name, p in model.named_parameters():
        p.requires_grad_(trains(name))


def trainable_share(model: nn.Module) -> dict[str, float]:
    """Trainable and total parameters, and their ratio (the paper's "< 8%"). Whole sizes also under
    DeepSpeed ZeRO-3, whose partitioned parameters hold no elements locally (`ds_numel` is theirs)."""

    def size(p: torch.nn.Parameter) -> int:
        return getattr(p, "ds_numel", p.numel())

    total = sum(size(p) for p in model.parameters())
    trainable = sum(size(p) for p in model.parameters() if p.requires_grad)
    return {"trainable": trainable, "total": total, "fraction": trainable / max(total, 1)}


@torch.no_grad()
def merged_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict with each adapted layer's LoRA update added into its weight under the plain
    name (`...q_proj.weight`), adapters dropped: the model as a plain decoder computes it."""
    state = model.state_dict()
    out = {k: v for k, v in state.items() if "lora_" not in k and ".base_layer." not in k}
    for name, m in model.named_modules():
        if hasattr(m, "get_delta_weight"):
            base = state[f"{name}.base_layer.weight"]
            out[f"{name}.weight"] = base + m.get_delta_weight("default").to(base.dtype)
    return out
