"""Turn samples into token ids, loss labels and the images they place.

Each image becomes `image_tokens` copies of the `<image>` id; the model swaps in vision features at
those positions. Labels are -100 (no loss) on BOS, images, questions and padding; the loss covers
captions, answers (and the separator/EOS that ends them) and pure text. Layouts:

  caption / pair   <bos> [img]... caption <eos>
  vqa / other      <bos> [img] "Question: q1\nAnswer:" " a1" "\n" ... "Question: qn\nAnswer:" " an" <eos>
                   (no [img] in a text-only conversation)
  text             <bos> text <eos>
  interleaved      <bos> text [img] text [img] ... <eos>
  mmgic            <bos> an MMGIC document, image- or text-first, fitted (mmkd/mmgic_template.py) <eos>
Evaluation builds its prompts with `prompt_ids` so they match training exactly.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from PIL import Image

from mmkd import mmgic_template
from mmkd.bench_item import BenchItem
from mmkd.schema import IMAGE_MARKER, Sample
from mmkd.tokenizer import Tokenizer

IGNORE = -100


def question_text(question: str) -> str:
    return f"Question: {question}\nAnswer:"


def answer_text(answer: str) -> str:
    return f" {answer}"


def chat_template(image_token: str) -> str:
    """The training layout as a transformers chat template, for an export's chat_template.jinja, so
    `apply_chat_template` gives exactly the ids `Templates.prompt_ids` gives. A user turn is its images
    (written `image_token`), then "Question: ...\\nAnswer:" (nothing for an image alone: a caption
    prompt); an assistant turn is " answer" (a caption, after an image alone, has no space); turns
    are separated by "\\n" and a conversation that ends on an answer ends with EOS. System turns are
    refused: the model was trained on none."""
    image = image_token.replace("\\", "\\\\").replace("'", "\\'")
    return _CHAT_TEMPLATE.replace("IMAGE", image)


_CHAT_TEMPLATE = (
    "{{- bos_token -}}"
    "{%- set ns = namespace(asked=false) -%}"
    "{%- for message in messages -%}"
    "{%- set parts = [{'type': 'text', 'text': message['content']}] if message['content'] is string "
    "else message['content'] -%}"
    "{%- set text = parts | selectattr('type', 'equalto', 'text') | map(attribute='text') | join('') -%}"
    "{%- if message['role'] == 'user' -%}"
    "{%- if not loop.first -%}{{ '\\n' }}{%- endif -%}"
    "{%- for part in parts if part['type'] == 'image' -%}{{ 'IMAGE' }}{%- endfor -%}"
    "{%- if text -%}{{ 'Question: ' + text + '\\nAnswer:' }}{%- endif -%}"
    "{%- set ns.asked = text != '' -%}"
    "{%- elif message['role'] == 'assistant' -%}"
    "{{ (' ' if ns.asked else '') + text }}{%- if loop.last -%}{{ eos_token }}{%- endif -%}"
    "{%- else -%}"
    "{{ raise_exception('the model was trained on user and assistant turns only, not ' + message['role']) }}"
    "{%- endif -%}"
    "{%- endfor -%}"
)


@dataclass
class Encoded:
    input_ids: list[int] = field(default_factory=list)
    labels: list[int] = field(default_factory=list)
    images: list[Image.Image] = field(default_factory=list)
    spans: list[tuple[int, int]] = field(default_factory=list)  # each image's positions [start, end)

    def add(self, ids: list[int], loss: bool) -> None:
        self.input_ids += ids
        self.labels += ids if loss else [IGNORE] * len(ids)

    def add_image(self, ids: list[int], labels: list[int]) -> None:
        """An image's positions: their ids and labels, remembered as one span truncation never cuts."""
        self.spans.append((len(self.input_ids), len(self.input_ids) + len(ids)))
        self.input_ids += ids
        self.labels += labels

    def __len__(self) -> int:
        return len(self.input_ids)


class Templates:
    def __init__(
        self,
        tokenizer: Tokenizer,
        image_tokens: int,
        max_seq_len: int,
        seed: int | str = 0,
        mmgic_parts: str = "cldr",
        image_first_prob: float = 0.5,
        caption_prompt: str = "",
    ):
        self.tok, self.image_tokens, self.max_seq_len = tokenizer, image_tokens, max_seq_len
        # Per-sample draws (MMGIC templates) are a function of the run seed and the sample id only.
        self.seed, self.mmgic_parts, self.image_first_prob = seed, mmgic_parts, image_first_prob
        self.caption_prompt = caption_prompt  # eval.caption_prompt: how a captioning prompt reads
        self._newline = tokenizer.encode("\n")

    def _image(self, enc: Encoded, image: Image.Image) -> None:
        enc.add_image([self.tok.image_id] * self.image_tokens, [IGNORE] * self.image_tokens)
        enc.images.append(image)

    def encode(self, sample: Sample) -> Encoded:
        enc = Encoded()
        enc.add([self.tok.bos_id], loss=False)
        if sample.kind in ("caption", "pair"):
            for im in sample.images:
                self._image(enc, im)
            enc.add(self.tok.encode(sample.text), loss=True)
        elif sample.kind in ("vqa", "other"):
            for im in sample.images:  # none for a text-only conversation
                self._image(enc, im)
            self._turns(enc, sample)
        elif sample.kind == "text":
            enc.add(self.tok.encode(sample.text), loss=True)
        elif sample.kind == "interleaved":
            pieces = sample.text.split(IMAGE_MARKER)
            for i, piece in enumerate(pieces):
                if piece:
                    enc.add(self.tok.encode(piece), loss=True)
                if i < len(sample.images):
                    self._image(enc, sample.images[i])
        elif sample.kind == "mmgic":
            # The dense model reads every image and region and learns the text, whichever comes first.
            rng = self.draws(sample)
            image_first = rng.random() < self.image_first_prob
            self._document(enc, sample, rng, image_first, True, lambda e, i: self._image(e, sample.images[i]))
        else:
            raise ValueError(f"sample {sample.id!r}: no template for kind {sample.kind!r}")
        enc.add([self.tok.eos_id], loss=True)
        return self._truncate(enc, sample.id)

    def draws(self, sample: Sample) -> random.Random:
        return random.Random(f"{self.seed}/{sample.id}")

    def _document(
        self,
        enc: Encoded,
        sample: Sample,
        rng: random.Random,
        image_first: bool,
        text_loss: bool,
        place: Callable[[Encoded, int], None],
    ) -> None:
        """An MMGIC document fitted to max_seq_len; `place(enc, i)` writes image i (0 = the image)."""
        ids: dict[str, list[int]] = {}

        def tokens(text: str) -> list[int]:
            return ids.setdefault(text, self.tok.encode(text))

        def length(pieces: list[mmgic_template.Piece]) -> int:
            return 2 + sum(len(tokens(p)) if isinstance(p, str) else self.image_tokens for p in pieces)

        doc = sample.metadata["mmgic"]
        descriptions, order = mmgic_template.draw(doc, rng)
        pieces = mmgic_template.fit(
            doc, image_first, descriptions, order, self.mmgic_parts, length, self.max_seq_len
        )
        for p in pieces:
            if isinstance(p, str):
                enc.add(tokens(p), loss=text_loss)
            else:
                place(enc, p)

    def _turns(self, enc: Encoded, sample: Sample) -> None:
        """Question/answer turns after the image: the answers (and the newlines between turns) are
        supervised, the questions are not."""
        for i, turn in enumerate(sample.turns):
            if i:
                enc.add(self._newline, loss=True)
            enc.add(self.tok.encode(question_text(turn.question)), loss=False)
            enc.add(self.tok.encode(answer_text(turn.answer)), loss=True)

    def _truncate(self, enc: Encoded, sample_id: str) -> Encoded:
        if len(enc) <= self.max_seq_len:
            return enc
        # Cut text at the end; never cut through an image's tokens.
        cut = self.max_seq_len
        for start, end in enc.spans:
            if start < cut < end:
                cut = start
        if cut == 0:
            raise ValueError(f"sample {sample_id!r}: its images alone exceed max_seq_len={self.max_seq_len}")
        spans = [(s, e) for s, e in enc.spans if e <= cut]
        return Encoded(enc.input_ids[:cut], enc.labels[:cut], enc.images[: len(spans)], spans)

    def prompt_ids(self, question: str, images: int) -> list[int]:
        """Tokens before an answer: <bos> [img]... "Question: ...\\nAnswer:"; for a caption <bos> [img],
        or `caption_prompt` with the image in its place."""
        return [self.tok.bos_id, *self._prompt_body(question, images)]

    def item_prompt_ids(self, item: BenchItem) -> list[int]:
        """An eval item's prompt; a few-shot item's solved examples come first, each as its prompt, its
        answer and a newline (as turns are separated in training), each with its own images."""
        ids = [self.tok.bos_id]
        for shot in item.shots:
            answer = self.tok.encode(shot.answer) if not shot.question else self.answer_ids(shot.answer)
            ids += [*self._prompt_body(shot.question, len(shot.images())), *answer, *self._newline]
        return ids + self._prompt_body(item.question, len(item.images()) - len(item.shot_images()))

    def _prompt_body(self, question: str, images: int) -> list[int]:
        image = [self.tok.image_id] * self.image_tokens
        if not question and self.caption_prompt and images == 1:
            before, after = self.caption_prompt.split(IMAGE_MARKER)
            return [*self.tok.encode(before), *image, *self.tok.encode(after)]
        return image * images + (self.tok.encode(question_text(question)) if question else [])

    def answer_ids(self, answer: str) -> list[int]:
        """An answer's tokens as in training. No terminator: in training an answer is followed by a newline
        or EOS depending on whether more turns follow, so scoring it would only add noise."""
        return self.tok.encode(answer_text(answer))
