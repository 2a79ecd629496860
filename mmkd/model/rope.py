"""Rotary position embeddings in every form a Llama-family checkpoint states, read from and written to
its config.json.

transformers writes RoPE two ways: 5.x as `rope_parameters` ({"rope_type", "rope_theta", "factor",
...}), 4.x as a top-level `rope_theta` beside `rope_scaling` ({"rope_type" or "type", "factor", ...}).
Both name the same frequencies; `from_hf` reads either into our config, `to_hf` writes the form both
versions read. The scaled forms change the frequencies, not the rotation, so one table serves all:
- linear (position interpolation): every frequency / factor;
- llama3 (Llama 3.1/3.2): long wavelengths / factor, short ones kept, a smooth ramp between;
- yarn (Peng et al. 2023): the same idea with a ramp over rotation counts, and cos/sin scaled by an
  attention factor (0.1 ln(factor) + 1 unless stated);
- dynamic (NTK): transformers changes the base only for sequences longer than the checkpoint's
  context, so within it the default frequencies are exact: accepted while model.max_seq_len fits.
Anything else (longrope, partial rotary dimensions, DeepSeek's mscale) is refused, naming the key.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

ROPE_TYPES = ("default", "linear", "dynamic", "llama3", "yarn")


@dataclass
class RopeScaling:
    """`model.rope_scaling`: how the frequencies of `model.rope_theta` are stretched (the defaults
    leave them as they are)."""

    type: str = "default"  # default | linear | dynamic | llama3 | yarn
    factor: float = 1.0
    # llama3, yarn: the context of the pretraining the scaling extends; dynamic: the checkpoint's context
    original_max_position: int = 0
    low_freq_factor: float = 1.0  # llama3
    high_freq_factor: float = 4.0  # llama3
    beta_fast: float = 32.0  # yarn: rotations above which a frequency is kept
    beta_slow: float = 1.0  # yarn: rotations below which it is divided by factor
    attention_factor: float = 0.0  # yarn: scales cos and sin; 0 = 0.1 ln(factor) + 1 (YaRN Eq. 21)

    def problems(self, max_seq_len: int) -> list[tuple[str, str]]:
        """(key under model.rope_scaling, why) for each setting the tables cannot honour."""
        out = []
        if self.type not in ROPE_TYPES:
            out.append(("type", f"must be one of {'|'.join(ROPE_TYPES)}"))
        if self.factor <= 0:
            out.append(("factor", "must be positive"))
        if self.type in ("llama3", "yarn", "dynamic") and self.original_max_position <= 0:
            out.append(("original_max_position", f"must be positive for type={self.type}"))
        if self.type == "llama3" and self.high_freq_factor <= self.low_freq_factor:
            out.append(("high_freq_factor", f"must exceed low_freq_factor={self.low_freq_factor}"))
        if self.type == "dynamic" and max_seq_len > self.original_max_position > 0:
            out.append(
                (
                    "type",
                    f"dynamic changes the frequencies past {self.original_max_position} positions, per "
                    f"sequence; model.max_seq_len={max_seq_len} must not exceed it",
                )
            )
        return out


def inverse_frequencies(head_dim: int, theta: float, scaling: RopeScaling) -> tuple[torch.Tensor, float]:
    """([head_dim / 2] rotation frequencies, the factor on cos and sin)."""
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, dtype=torch.float32) / head_dim)
    kind, factor = scaling.type, scaling.factor
    if kind == "linear":
        return inv / factor, 1.0
    if kind == "llama3":
        context = scaling.original_max_position
        wavelength = 2 * math.pi / inv
        # 0 where the wavelength is longer than context / low (divide by factor), 1 where shorter than
        # context / high (keep), linear in context / wavelength between.
        keep = (context / wavelength - scaling.low_freq_factor) / (
            scaling.high_freq_factor - scaling.low_freq_factor
        )
        keep = keep.clamp(0, 1)
        return (1 - keep) * inv / factor + keep * inv, 1.0
    if kind == "yarn":
        return _yarn(inv, head_dim, theta, scaling)
    return inv, 1.0  # default; dynamic within the checkpoint's context


def _yarn(inv: torch.Tensor, head_dim: int, theta: float, s: RopeScaling) -> tuple[torch.Tensor, float]:
    def dim_of(rotations: float) -> float:  # the dimension whose frequency turns `rotations` times
        return (
            head_dim * math.log(s.original_max_position / (rotations * 2 * math.pi)) / (2 * math.log(theta))
        )

    low = max(math.floor(dim_of(s.beta_fast)), 0)
    high = min(math.ceil(dim_of(s.beta_slow)), head_dim - 1)
    ramp = (torch.arange(head_dim // 2, dtype=torch.float32) - low) / max(high - low, 1e-3)
    keep = 1 - ramp.clamp(0, 1)  # 1 for the fast dimensions (extrapolate), 0 for the slow (interpolate)
    attention = s.attention_factor or (0.1 * math.log(s.factor) + 1 if s.factor > 1 else 1.0)
    return inv / s.factor * (1 - keep) + inv * keep, attention


def rope_tables(
    head_dim: int, max_len: int, theta: float, scaling: RopeScaling | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin [max_len, head_dim] in the rotate-half layout (each frequency twice)."""
    inv, attention = inverse_frequencies(head_dim, theta, scaling or RopeScaling())
    freqs = torch.outer(torch.arange(max_len, dtype=torch.float32), inv)  # [L, Dh/2]
    emb = torch.cat([freqs, freqs], dim=-1)  # [L, Dh]
    return emb.cos() * attention, emb.sin() * attention


# transformers' names of RopeScaling's fields (the rest are ours as they are)
_HF_NAMES = {"type": "rope_type", "original_max_position": "original_max_position_embeddings"}
_FROM_HF = {v: k for k, v in _HF_NAMES.items()} | {"type": "type"}  # 4.x also wrote "type"
_DEFAULT_THETA = 10000.0  # transformers' Llama default when a config states none


def from_hf(config: dict) -> tuple[float, RopeScaling]:
    """(rope_theta, scaling) stated by a transformers config.json; ValueError names a key of it that
    states a RoPE we cannot compute."""
    params = config.get("rope_parameters") or {}
    if params and isinstance(next(iter(params.values())), dict):
        raise ValueError(f"rope_parameters per layer type ({sorted(params)}) are not supported")
    legacy = config.get("rope_scaling") or {}
    where = "rope_parameters" if params else "rope_scaling"
    stated = {**legacy, **params}
    theta = float(stated.pop("rope_theta", config.get("rope_theta", _DEFAULT_THETA)))
    if stated.pop("truncate", True) is not True:
        raise ValueError(f"{where}.truncate=false is not supported (yarn rounds its ramp's ends)")
    if config.get("partial_rotary_factor", stated.get("partial_rotary_factor", 1.0)) != 1.0:
        raise ValueError("partial_rotary_factor != 1 (RoPE on part of each head) is not supported")
    stated.pop("partial_rotary_factor", None)
    scaling = RopeScaling()
    known = {f.name for f in fields(RopeScaling)}
    for key, value in stated.items():
        name = _FROM_HF.get(key, key)
        if name not in known:
            raise ValueError(f"{where}.{key}={value!r} is not a RoPE setting mmkd can honour")
        if value is not None:
            setattr(scaling, name, type(getattr(scaling, name))(value))
    context = int(config.get("max_position_embeddings", 0))
    if scaling.type == "dynamic":  # transformers rescales past the checkpoint's context
        scaling.original_max_position = min(scaling.original_max_position or context, context or 1 << 30)
    if scaling.type == "yarn" and stated.get("factor") is None and scaling.original_max_position:
        scaling.factor = context / scaling.original_max_position  # DeepSeek-V3's form
    bad = scaling.problems(max_seq_len=0)
    if bad:
        key, why = bad[0]
        raise ValueError(f"{where}.{_HF_NAMES.get(key, key)}={getattr(scaling, key)!r}: {why}")
    return theta, scaling


def to_hf(theta: float, scaling: RopeScaling) -> dict:
    """The config.json keys for this RoPE, in the form transformers 4.x and 5.x both read."""
    if scaling.type == "default":
        return {"rope_theta": theta}
    keys = {"type": scaling.type, "factor": scaling.factor}
    if scaling.type in ("llama3", "yarn", "dynamic"):
        keys["original_max_position"] = scaling.original_max_position
    if scaling.type == "llama3":
        keys |= {"low_freq_factor": scaling.low_freq_factor, "high_freq_factor": scaling.high_freq_factor}
    if scaling.type == "yarn":
        keys |= {"beta_fast": scaling.beta_fast, "beta_slow": scaling.beta_slow}
        if scaling.attention_factor:
            keys["attention_factor"] = scaling.attention_factor
    return {"rope_theta": theta, "rope_scaling": {_HF_NAMES.get(k, k): v for k, v in keys.items()}}
