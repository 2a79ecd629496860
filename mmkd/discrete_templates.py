"""Samples as the discrete model trains on them (seed 003 E.1, F.6): images are their pre-tokenised
visual ids between `[IMG]` and `[/IMG]`, and the loss follows the template and `mask_prob`.

  caption / pair  image-first  <bos> [IMG] v... [/IMG] caption <eos>      (probability image_first_prob)
                  text-first   <bos> caption [IMG] v... [/IMG] <eos>
  interleaved     in document order, as written
  mmgic           an MMGIC document, image- or text-first (mmkd/mmgic_template.py)
  vqa / other     image-first, answers supervised (instruction data keeps its format, E.1)
  text            <bos> text <eos>

`mask_prob` is the probability that a sample's loss covers only what follows its condition: with an
image-first template only the text, with a text-first one only the visual ids (the paper's "vice
versa"; for interleaved documents, whose images are not a condition, only the text). Otherwise the
loss covers every text and visual token. The markers are never targets: generation writes them
itself. A text-first sample (a caption, or an MMGIC document whose text comes first) drops its
text with probability `caption_dropout` and is the image alone, so the model also learns images
unconditioned, which classifier-free guidance needs.

The draws are a function of the run seed and the sample id only: a sample keeps its template for the
run, whether it is read fresh, re-encoded for a packed row or met again after a resume.
"""

from __future__ import annotations

from mmkd.errors import DataError
from mmkd.model.config import ModelConfig
from mmkd.model.discrete import VisualVocab
from mmkd.schema import CAPTION_MARKER, IMAGE_MARKER, Sample
from mmkd.templates import IGNORE, Encoded, Templates
from mmkd.tokenizer import Tokenizer


class DiscreteTemplates(Templates):
    def __init__(
        self,
        tokenizer: Tokenizer,
        cfg: ModelConfig,
        seed: int | str,
        mmgic_parts: str = "cldr",
        caption_prompt: str = "",
        image_prompt: str = "",
    ):
        draws = (seed, mmgic_parts, cfg.image_first_prob)
        super().__init__(tokenizer, cfg.image_tokens, cfg.max_seq_len, *draws, caption_prompt)
        self.cfg, self.seed, self.image_prompt = cfg, seed, image_prompt
        self.vocab = VisualVocab(cfg.vocab_size or tokenizer.vocab_size, cfg.codebook_size)

    def _visual(self, enc: Encoded, codes: list[int], loss: bool) -> None:
        ids = [self.vocab.img, *(c + self.vocab.first_code for c in codes), self.vocab.end_img]
        labels = [IGNORE, *(ids[1:-1] if loss else [IGNORE] * len(codes)), IGNORE]
        enc.add_image(ids, labels)

    def codes(self, sample: Sample) -> list[list[int]]:
        """The sample's images as code ids (`metadata["visual_ids"]`, written by build_visual_ids)."""
        codes = sample.metadata.get("visual_ids")
        want = self.cfg.visual_grid**2
        if codes is None or len(codes) != len(sample.images) or any(len(c) != want for c in codes):
            raise DataError(
                f"sample {sample.id!r} of source {sample.source!r} has no visual ids for its "
                f"{len(sample.images)} image(s) of {want} codes: the discrete model trains on "
                "pre-tokenised data (data_builders/visual_ids.py; the pipeline builds it)"
            )
        bad = [c for image in codes for c in image if not 0 <= c < self.vocab.codes]
        if bad:
            raise DataError(
                f"sample {sample.id!r}: visual id {bad[0]} outside the codebook of {self.vocab.codes}"
            )
        return codes

    def encode(self, sample: Sample) -> Encoded:
        if sample.kind == "text":
            return super().encode(sample)
        codes = self.codes(sample)
        rng = self.draws(sample)
        image_first = rng.random() < self.cfg.image_first_prob
        masked = rng.random() < self.cfg.mask_prob
        dropped = rng.random() < self.cfg.caption_dropout
        enc = Encoded()
        enc.add([self.tok.bos_id], loss=False)
        if sample.kind in ("caption", "pair") and image_first:
            for c in codes:
                self._visual(enc, c, loss=not masked)
            enc.add(self.tok.encode(sample.text), loss=True)
        elif sample.kind in ("caption", "pair"):
            if not dropped:
                enc.add(self.tok.encode(sample.text), loss=not masked)
            for c in codes:
                self._visual(enc, c, loss=True)
        elif sample.kind in ("vqa", "other"):
            for c in codes:  # none for a text-only conversation
                self._visual(enc, c, loss=False)
            self._turns(enc, sample)
        elif sample.kind == "interleaved":
            for i, piece in enumerate(sample.text.split(IMAGE_MARKER)):
                if piece:
                    enc.add(self.tok.encode(piece), loss=True)
                if i < len(codes):
                    self._visual(enc, codes[i], loss=not masked)
        elif sample.kind == "mmgic" and not image_first and dropped:
            self._visual(enc, codes[0], loss=True)
        elif sample.kind == "mmgic":
            # As a caption: image-first conditions the text on the images, text-first the images on it.
            visual_loss = not masked or not image_first
            place = lambda e, i: self._visual(e, codes[i], loss=visual_loss)  # noqa: E731
            self._document(enc, sample, rng, image_first, image_first or not masked, place)
        else:
            raise ValueError(f"sample {sample.id!r}: no discrete template for kind {sample.kind!r}")
        enc.add([self.tok.eos_id], loss=True)
        return self._truncate(enc, sample.id)

    def generation_prompt(self, text: str) -> list[int]:
        """Text-first, up to the image: <bos> text [IMG], or `image_prompt` with the text in its place;
        "" gives the unconditional prompt <bos> [IMG] (what a caption-dropped sample reads)."""
        if text and self.image_prompt:
            text = self.image_prompt.removesuffix(IMAGE_MARKER).replace(CAPTION_MARKER, text)
        return [self.tok.bos_id, *(self.tok.encode(text) if text else []), self.vocab.img]
