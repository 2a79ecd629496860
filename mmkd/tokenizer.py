"""Tokenizers: the world's byte-level BPE trained locally on its data, or a pretrained LLM's own.

`tokenizer=world` trains byte-level BPE on the world's text (never an unknown token: OCR words, numbers
and any real text still encode) and saves it as `tokenizer.json` with the data. `tokenizer=DIR` reads a
local Hugging Face tokenizer directory (the one that came with `model.init_decoder`, which `auto`
picks): its `tokenizer.json` and the BOS / EOS / pad tokens its `tokenizer_config.json` names, with
the tokens we need and it lacks (`<image>`, a pad token) added at the end of its vocabulary. Either
way the tokenizer travels inside every checkpoint (JSON, with its special tokens), and the files
transformers loads are written on export.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tokenizers import AddedToken, decoders, models, pre_tokenizers, processors, trainers
from tokenizers import Tokenizer as HFTokenizer

from mmkd.schema import IMAGE_MARKER

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
SPECIAL_TOKENS = (PAD, BOS, EOS, IMAGE_MARKER)


@dataclass(frozen=True)
class SpecialTokens:
    """The text of each token with a role in our templates."""

    pad: str = PAD
    bos: str = BOS
    eos: str = EOS
    image: str = IMAGE_MARKER


WORLD_SPECIALS = SpecialTokens()


def train_tokenizer(texts: Iterable[str], vocab_size: int, path: str | Path) -> Tokenizer:
    """Train byte-level BPE on `texts` and save it to `path` (written atomically)."""
    tok = HFTokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    tok.save(str(tmp))
    tmp.replace(path)
    return Tokenizer(tok)


def _token_text(value: Any) -> str | None:
    """A special token as tokenizer_config.json writes it: a string or {"content": ...}."""
    return value.get("content") if isinstance(value, dict) else value


class Tokenizer:
    """Thin wrapper: encode/decode plus the special-token ids the templates and model need."""

    def __init__(self, tok: HFTokenizer, special: SpecialTokens = WORLD_SPECIALS):
        self._tok, self.special = tok, special
        ids = {role: tok.token_to_id(text) for role, text in asdict(special).items()}
        missing = [asdict(special)[r] for r, i in ids.items() if i is None]
        if missing:
            raise ValueError(f"tokenizer lacks special tokens {missing}; retrain it with mmkd.tokenizer")
        self.pad_id, self.bos_id, self.eos_id, self.image_id = (
            ids["pad"],
            ids["bos"],
            ids["eos"],
            ids["image"],
        )

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        if not Path(path).exists():
            raise FileNotFoundError(f"tokenizer file {path} does not exist (build the data first)")
        return cls(HFTokenizer.from_file(str(path)))

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> Tokenizer:
        """A local Hugging Face tokenizer directory (fast tokenizers: `tokenizer.json`), with `<image>`
        and, if it has none, a pad token added as special tokens after its vocabulary."""
        directory = Path(directory)
        if not (directory / "tokenizer.json").is_file():
            raise FileNotFoundError(
                f"tokenizer={directory}: no tokenizer.json there (a Hugging Face fast tokenizer directory "
                "is needed; save one with transformers' tokenizer.save_pretrained)"
            )
        config_path = directory / "tokenizer_config.json"
        config = json.loads(config_path.read_text()) if config_path.is_file() else {}
        tok = HFTokenizer.from_file(str(directory / "tokenizer.json"))
        roles = {role: _token_text(config.get(f"{role}_token")) for role in ("bos", "eos", "pad")}
        for role in ("bos", "eos"):
            if not roles[role] or tok.token_to_id(roles[role]) is None:
                raise ValueError(
                    f"{config_path}: {role}_token={roles[role]!r} is not a token of "
                    f"{directory / 'tokenizer.json'}; the templates start every sample with BOS and end it "
                    "with EOS"
                )
        pad = roles["pad"] if roles["pad"] and tok.token_to_id(roles["pad"]) is not None else PAD
        added = [t for t in (pad, IMAGE_MARKER) if tok.token_to_id(t) is None]
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in added])
        return cls(tok, SpecialTokens(pad=pad, bos=roles["bos"], eos=roles["eos"]))

    @classmethod
    def from_str(cls, data: str, special: dict[str, str] | None = None) -> Tokenizer:
        """From `to_str()` and `special_tokens()` (checkpoints written before those: the world's)."""
        return cls(HFTokenizer.from_str(data), SpecialTokens(**special) if special else WORLD_SPECIALS)

    def to_str(self) -> str:
        """The whole tokenizer as JSON, so a checkpoint carries its own tokenizer."""
        return self._tok.to_str()

    def export_str(self) -> str:
        """The tokenizer as exported for transformers (and through it lm-eval, VLMEvalKit, vLLM): encoding
        text puts BOS first, as every sequence of ours starts (a pretrained tokenizer's own
        post-processor is kept as it is)."""
        tok = HFTokenizer.from_str(self._tok.to_str())
        if tok.post_processor is None:
            bos = self.special.bos
            tok.post_processor = processors.TemplateProcessing(
                single=f"{bos} $A", pair=f"{bos} $A $B:1", special_tokens=[(bos, self.bos_id)]
            )
        return tok.to_str()

    def with_added(self, tokens: list[str]) -> Tokenizer:
        """A copy with `tokens` added as special tokens after the vocabulary, in order (the discrete
        model's markers and visual codes, so an exported tokenizer names every id)."""
        tok = HFTokenizer.from_str(self._tok.to_str())
        tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in tokens])
        return Tokenizer(tok, self.special)

    def special_tokens(self) -> dict[str, str]:
        return asdict(self.special)

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True)
