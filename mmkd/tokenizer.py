"""A byte-level BPE tokenizer trained locally on the data, saved as `tokenizer.json` with it.

Byte-level BPE never produces unknown tokens (OCR words, numbers and any real text still encode), and
the saved file is the Hugging Face `tokenizers` format, which `transformers.PreTrainedTokenizerFast`
loads directly for export. Special tokens are fixed here so every model agrees on their ids.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from tokenizers import Tokenizer as HFTokenizer
from tokenizers import decoders, models, pre_tokenizers, trainers

from mmkd.schema import IMAGE_MARKER

PAD, BOS, EOS = "<pad>", "<bos>", "<eos>"
SPECIAL_TOKENS = (PAD, BOS, EOS, IMAGE_MARKER)


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


class Tokenizer:
    """Thin wrapper: encode/decode plus the special-token ids the templates and model need."""

    def __init__(self, tok: HFTokenizer):
        self._tok = tok
        ids = {t: tok.token_to_id(t) for t in SPECIAL_TOKENS}
        missing = [t for t, i in ids.items() if i is None]
        if missing:
            raise ValueError(f"tokenizer lacks special tokens {missing}; retrain it with mmkd.tokenizer")
        self.pad_id, self.bos_id, self.eos_id, self.image_id = (ids[t] for t in SPECIAL_TOKENS)

    @classmethod
    def load(cls, path: str | Path) -> Tokenizer:
        if not Path(path).exists():
            raise FileNotFoundError(f"tokenizer file {path} does not exist (build the data first)")
        return cls(HFTokenizer.from_file(str(path)))

    @classmethod
    def from_str(cls, data: str) -> Tokenizer:
        return cls(HFTokenizer.from_str(data))

    def to_str(self) -> str:
        """The whole tokenizer as JSON, so a checkpoint carries its own tokenizer."""
        return self._tok.to_str()

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size()

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode(ids, skip_special_tokens=True)
