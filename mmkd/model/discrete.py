"""The discrete VLM (seed 003 Sec. 3.1, D.1): images are sequences of visual-token ids in the decoder's
extended vocabulary, read and generated like words.

Vocabulary, in id order: the text tokenizer's ids [0, T), then `[IMG]` = T and `[/IMG]` = T + 1, then
one id per visual code, T + 2 + c for code c. Input embeddings come from three tables: the decoder's
text embedding, two marker rows, and the factorised visual embedding (|V| x code_dim codes, initialised
from the tokenizer's codebook, times a code_dim x width projection; ALBERT's factorisation, D.1). The
LM head spans the whole vocabulary, so text and visual ids are predicted by one softmax.

Training reads pre-tokenised ids (`data_builders/visual_ids.py`): the visual modules never run. For
evaluation on pictures, `attach_visual_tokenizer` gives the model a frozen tokenizer (not a submodule:
never trained, never in checkpoints) that turns the `<image>` slots of a prompt into ids.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from mmkd.materialize import copy_full_
from mmkd.model.config import ModelConfig
from mmkd.model.decoder import Decoder
from mmkd.model.decoder_lm import DecoderLM
from mmkd.model.visual_tokenizer import VisualTokenizer
from mmkd.model.vlm import VLM

# Losses of the objective, in the order `forward` returns their sums (mmkd/objective.py weighs them).
LOSS_PARTS = ("text", "visual")


class VisualVocab:
    """Where the markers and the codes sit in the extended vocabulary of a text vocabulary of `text`."""

    def __init__(self, text: int, codes: int):
        self.text, self.codes = text, codes
        self.img, self.end_img = text, text + 1
        self.first_code = text + 2
        self.size = text + 2 + codes

    def ids(self, codes: torch.Tensor) -> torch.Tensor:
        """One image's span: [IMG], its codes as vocabulary ids, [/IMG] (`codes`: [..., N])."""
        shape = (*codes.shape[:-1], 1)
        return torch.cat(
            [codes.new_full(shape, self.img), codes + self.first_code, codes.new_full(shape, self.end_img)],
            dim=-1,
        )

    def is_code(self, ids: torch.Tensor) -> torch.Tensor:
        return ids >= self.first_code


class DiscreteVLM(DecoderLM):
    def __init__(self, cfg: ModelConfig, image_token_id: int):
        super().__init__()
        if cfg.vocab_size <= 0:
            raise ValueError("model.vocab_size must be set (from the tokenizer) before building the model")
        self.cfg, self.image_token_id = cfg, image_token_id
        self.vocab = VisualVocab(cfg.vocab_size, cfg.codebook_size)
        self.decoder = Decoder(cfg)  # its embed_tokens holds the text rows only (a pretrained decoder's)
        self.marker_embed = nn.Embedding(2, cfg.width)
        self.visual_codes = nn.Embedding(cfg.codebook_size, cfg.code_dim)
        self.visual_proj = nn.Linear(cfg.code_dim, cfg.width, bias=False)
        self.lm_head = nn.Linear(cfg.width, self.vocab.size, bias=False)
        self.apply(VLM._init)
        self.__dict__["visual_tokenizer"] = None  # outside the module tree: frozen, never saved

    @property
    def text_vocab_size(self) -> int:
        return self.vocab.text

    def tie_weights(self) -> None:
        """Nothing is tied: the head spans more ids than any input table."""

    def initializers(self) -> list[tuple[nn.Module, Callable[[nn.Module], None], bool]]:
        """Every random draw of `__init__` in its order (see `VLM.initializers`), then LoRA's when
        adapters were injected (`mmkd.model.lora`): as peft draws them (A Kaiming-uniform, B zero)."""
        base = list(self._base_modules())
        draws = [(m, type(m).reset_parameters, True) for m in base if hasattr(m, "reset_parameters")]
        inits = [m for m in base if isinstance(m, nn.Linear | nn.Embedding)]
        draws += [(m, VLM._init, True) for m in inits]
        for m in self.modules():
            if hasattr(m, "reset_lora_parameters"):  # peft builds A and B as Linears, then redraws them
                a, b = m.lora_A["default"], m.lora_B["default"]
                draws += [(a, nn.Linear.reset_parameters, False), (b, nn.Linear.reset_parameters, False)]
                draws += [(a, nn.Linear.reset_parameters, True), (b, _zero, True)]
        return draws

    def _base_modules(self):
        """The modules construction made, in its order (LoRA's adapters are drawn by `initializers`)."""
        for name, m in self.named_modules():
            if "lora_" not in name and not hasattr(m, "reset_lora_parameters"):
                yield m

    @torch.no_grad()
    def init_visual_codes(self, codebook: torch.Tensor) -> None:
        """D.1: visual embeddings start as the tokenizer's codebook (|V| x code_dim)."""
        if tuple(codebook.shape) != tuple(self.visual_codes.weight.shape):
            raise ValueError(
                f"the visual tokenizer's codebook is {tuple(codebook.shape)}; the model was configured for "
                f"{tuple(self.visual_codes.weight.shape)} (model.codebook_size x model.code_dim)"
            )
        copy_full_(self.visual_codes.weight, codebook)

    def attach_visual_tokenizer(self, tokenizer: VisualTokenizer) -> None:
        """Evaluation on pictures: `<image>` slots become the ids this tokenizer gives the images."""
        grid = tokenizer.cfg.grid
        if grid != self.cfg.visual_grid or tokenizer.cfg.codebook_size != self.cfg.codebook_size:
            raise ValueError(
                f"visual tokenizer: {grid}x{grid} codes from {tokenizer.cfg.codebook_size}; the model "
                f"expects {self.cfg.visual_grid}x{self.cfg.visual_grid} from {self.cfg.codebook_size}"
            )
        device = next(self.parameters()).device  # attached after the weights are on their device
        self.__dict__["visual_tokenizer"] = tokenizer.eval().requires_grad_(False).to(device)

    def image_ids(self, input_ids: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        """`input_ids` with each image's run of `<image>` slots replaced by [IMG] codes [/IMG]."""
        tokenizer = self.visual_tokenizer
        if tokenizer is None:
            raise ValueError("pixels given to a discrete model without a visual tokenizer attached")
        spans = self.vocab.ids(tokenizer.encode(pixels))  # [N, grid^2 + 2]
        slots = input_ids == self.image_token_id
        if int(slots.sum()) != spans.numel():
            n, per = spans.shape
            raise ValueError(f"{int(slots.sum())} <image> tokens for {n} images of {per} positions")
        return input_ids.masked_scatter(slots, spans.flatten())

    def embed(self, input_ids: torch.Tensor, pixels: torch.Tensor | None = None) -> torch.Tensor:
        if pixels is not None:
            input_ids = self.image_ids(input_ids, pixels)
        elif bool((input_ids == self.image_token_id).any()):
            raise ValueError("<image> tokens but no pixels were given")
        v = self.vocab
        text = input_ids < v.text
        marker = (input_ids >= v.img) & (input_ids < v.first_code)
        code = v.is_code(input_ids)
        x = self.decoder.embed_tokens(torch.where(text, input_ids, 0))  # [B, T, D]
        x = torch.where(marker[..., None], self.marker_embed(torch.where(marker, input_ids - v.img, 0)), x)
        visual = self.visual_proj(self.visual_codes(torch.where(code, input_ids - v.first_code, 0)))
        return torch.where(code[..., None], visual.to(x.dtype), x)

    def loss_sums(self, logits: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed losses and target counts of each part of the objective (`LOSS_PARTS`), each [2]."""
        losses = F.cross_entropy(logits, targets, reduction="none")
        visual = self.vocab.is_code(targets)
        sums = torch.stack([losses[~visual].sum(), losses[visual].sum()])
        return sums, torch.stack([(~visual).sum(), visual.sum()])


def _zero(m: nn.Module) -> None:
    nn.init.zeros_(m.weight)
