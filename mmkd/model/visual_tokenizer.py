"""The discrete model's visual tokenizer: image -> grid of code ids -> image (seed 003 Sec. 3.1, D.1).

A small convolutional VQ autoencoder: the encoder downsamples by `downsample` (48 px -> 12 x 12 = 144
codes by default), `vector_quantize_pytorch.VectorQuantize` maps each position to the nearest of
`codebook_size` 32-dim codes (k-means initialised, EMA updates, dead codes reset to batch vectors:
codebook collapse is the classic failure, so usage is measured), and the decoder upsamples back.

Saved as a directory (`save` / `from_pretrained`): `config.json` + `model.safetensors`, nothing
pickled; a pretrained tokenizer from elsewhere plugs in through the same three calls: `encode`,
`decode`, `codebook` (docs/discrete.md).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F

from mmkd.errors import CheckpointError


@dataclass
class VQConfig:
    image_size: int = 48
    # Image pixels per code, each side (a power of 2): 48 px -> 12 x 12 = 144 codes, 2 x 2 per 8-px
    # small object. At 8 (36 codes) the reconstructions kept 72% of the scenes' objects, at 4 97%.
    downsample: int = 4
    width: int = 16  # channels of the first stage; each downsampling stage doubles them, up to 4x
    code_dim: int = 32  # seed 003 D.1: 32-dim codes, projected to the LLM width by the model
    codebook_size: int = 1024
    commitment: float = 0.25
    decay: float = 0.99  # EMA of the codebook
    dead_code_threshold: float = 2.0  # a code used less (EMA count) is reset to a batch vector

    def validate(self) -> VQConfig:
        stages = math.log2(self.downsample)
        if self.downsample < 1 or stages != int(stages):
            raise ValueError(f"downsample={self.downsample}: must be a power of 2")
        if self.image_size % self.downsample:
            raise ValueError(
                f"image_size={self.image_size}: must be a multiple of downsample={self.downsample}"
            )
        return self

    @property
    def grid(self) -> int:
        return self.image_size // self.downsample

    @property
    def tokens(self) -> int:
        """Codes per image."""
        return self.grid**2


class ResBlock(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.body = nn.Sequential(
            nn.GroupNorm(8, channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
            nn.GroupNorm(8, channels),
            nn.SiLU(),
            nn.Conv2d(channels, channels, 3, padding=1),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class VisualTokenizer(nn.Module):
    def __init__(self, cfg: VQConfig):
        super().__init__()
        from vector_quantize_pytorch import VectorQuantize  # the maintained quantiser (k-means, dead codes)

        self.cfg = cfg.validate()
        stages = int(math.log2(cfg.downsample))
        widths = [cfg.width * min(2**i, 4) for i in range(stages + 1)]
        down: list[nn.Module] = [nn.Conv2d(3, widths[0], 3, padding=1)]
        for i in range(stages):
            down += [ResBlock(widths[i]), nn.Conv2d(widths[i], widths[i + 1], 4, stride=2, padding=1)]
        down += [
            ResBlock(widths[-1]),
            nn.GroupNorm(8, widths[-1]),
            nn.SiLU(),
            nn.Conv2d(widths[-1], cfg.code_dim, 1),
        ]
        self.encoder = nn.Sequential(*down)
        self.quantizer = VectorQuantize(
            dim=cfg.code_dim,
            codebook_size=cfg.codebook_size,
            decay=cfg.decay,
            commitment_weight=cfg.commitment,
            kmeans_init=True,
            kmeans_iters=10,
            threshold_ema_dead_code=cfg.dead_code_threshold,
        )
        up: list[nn.Module] = [nn.Conv2d(cfg.code_dim, widths[-1], 3, padding=1), ResBlock(widths[-1])]
        for i in reversed(range(stages)):
            up += [
                nn.Upsample(scale_factor=2, mode="nearest"),
                nn.Conv2d(widths[i + 1], widths[i], 3, padding=1),
                ResBlock(widths[i]),
            ]
        up += [nn.GroupNorm(8, widths[0]), nn.SiLU(), nn.Conv2d(widths[0], 3, 3, padding=1)]
        self.decoder = nn.Sequential(*up)

    @property
    def codebook(self) -> torch.Tensor:
        """[codebook_size, code_dim]: what the discrete model's visual embeddings start from (D.1)."""
        return self.quantizer.codebook

    def _latents(self, pixels: torch.Tensor) -> torch.Tensor:
        z = self.encoder(pixels)  # [B, code_dim, g, g]
        return z.flatten(2).transpose(1, 2)  # [B, g*g, code_dim], row-major

    def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(reconstruction, ids [B, tokens], commitment loss) of pixels in [-1, 1]."""
        quantized, ids, commit = self.quantizer(self._latents(pixels))
        return self._pixels(quantized), ids, commit.sum()

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """[B, 3, H, W] in [-1, 1] -> code ids [B, tokens] (row-major over the grid)."""
        if not bool(self.quantizer._codebook.initted):  # the library's k-means flag
            # The quantizer would k-means its codebook on this batch: ids would depend on the batch.
            raise ValueError("the visual tokenizer's codebook is not initialised: train it first")
        return self.quantizer(self._latents(pixels))[1]

    @torch.no_grad()
    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """Code ids [B, tokens] -> pixels [B, 3, H, W] in [-1, 1]."""
        return self._pixels(F.embedding(ids, self.codebook)).clamp(-1, 1)

    def _pixels(self, codes: torch.Tensor) -> torch.Tensor:
        g = self.cfg.grid
        return self.decoder(codes.transpose(1, 2).reshape(codes.shape[0], self.cfg.code_dim, g, g))

    def save(self, out: str | Path) -> Path:
        """`config.json` + `model.safetensors` (written to temp names, then renamed)."""
        out = Path(out)
        out.mkdir(parents=True, exist_ok=True)
        tmp = out / "model.safetensors.tmp"
        save_file({k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}, tmp)
        tmp.replace(out / "model.safetensors")
        (out / "config.json.tmp").write_text(json.dumps(asdict(self.cfg), indent=2) + "\n")
        (out / "config.json.tmp").replace(out / "config.json")
        return out

    @classmethod
    def from_pretrained(cls, path: str | Path) -> VisualTokenizer:
        path = Path(path)
        try:
            cfg = VQConfig(**json.loads((path / "config.json").read_text()))
            state = load_file(path / "model.safetensors")
        except (OSError, ValueError, TypeError) as e:
            raise CheckpointError(f"{path} is not a visual tokenizer directory ({e})") from None
        model = cls(cfg)
        model.load_state_dict(state)
        return model.eval()
