"""The world language foundation: a Llama trained as a causal LM on the world's text, as the papers'
decoders were pretrained on web text before any image.

Its shape is the run model's decoder (so `model.init_decoder` loads it through the code that loads a
real Llama) and its vocabulary the world tokenizer's. The corpus is the `text` source's kind of
document (encyclopedia passages, scene stories, theme prose; `mmkd.world.language.text_document`) on
a split of its own, each `<bos> text <eos>`, concatenated and cut into rows of `model.max_seq_len`
tokens (packing as LM pretraining does). It is scored on held-out documents (loss per token) and on
fact recall: for every (kind, attribute) fact of the encyclopedia, whether the true value is the most
likely of the attribute's values after the statement's first words ("A tent is made of" -> canvas),
chance 1 / number of values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import torch

from mmkd.foundations.config import FoundationConfig
from mmkd.foundations.fit import fit
from mmkd.model.config import ModelConfig
from mmkd.model.hf import llama_config
from mmkd.tokenizer import Tokenizer
from mmkd.world import encyclopedia
from mmkd.world.language import text_document
from mmkd.world.scene import KINDS, WorldConfig

SPLIT = "foundation-text"


def build_llama(model: ModelConfig, tokenizer: Tokenizer) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = llama_config(dataclasses.replace(model, vocab_size=tokenizer.vocab_size))
    ids = {
        "bos_token_id": tokenizer.bos_id,
        "eos_token_id": tokenizer.eos_id,
        "pad_token_id": tokenizer.pad_id,
    }
    return LlamaForCausalLM(LlamaConfig(**config, **ids))


def _rows(world: WorldConfig, tokenizer: Tokenizer, split: str, length: int) -> Iterator[list[int]]:
    """Rows of `length` ids cut from the split's documents, end to end."""
    buffer: list[int] = []
    i = 0
    while True:
        while len(buffer) < length:
            body, _ = text_document(world, split, i)
            buffer += [tokenizer.bos_id, *tokenizer.encode(body), tokenizer.eos_id]
            i += 1
        yield buffer[:length]
        buffer = buffer[length:]


@torch.no_grad()
def _held_out_loss(
    llama: Any, world: WorldConfig, tokenizer: Tokenizer, n: int, device: torch.device
) -> float:
    """Mean loss per token of `n` documents of a split no training row comes from."""
    total, count = 0.0, 0
    for i in range(n):
        body, _ = text_document(world, f"{SPLIT}-eval", i)
        ids = torch.tensor([[tokenizer.bos_id, *tokenizer.encode(body), tokenizer.eos_id]], device=device)
        total += float(llama(input_ids=ids, labels=ids).loss) * (ids.shape[1] - 1)
        count += ids.shape[1] - 1
    return total / count


@torch.no_grad()
def fact_recall(
    logits: Callable[[torch.Tensor], torch.Tensor], tokenizer: Tokenizer, device: torch.device
) -> dict[str, float]:
    """Share of the encyclopedia's facts whose value a model ranks first among the attribute's values,
    by the summed log-probability of the value's tokens after the statement's first words: what the
    model knows, whatever question format it was taught. `logits`: [1, T] ids -> [1, T, V]."""
    right, total = 0, 0
    for attribute in encyclopedia.ATTRIBUTES:
        template = encyclopedia.STATEMENTS[attribute][0]
        options = encyclopedia.options_for(attribute)
        for kind in KINDS:
            prefix = template.split("{value}")[0].format(kind=kind, plural=encyclopedia.plural(kind))
            context = [tokenizer.bos_id, *tokenizer.encode(prefix.rstrip())]
            scores = []
            for value in options:
                cont = tokenizer.encode(" " + value)
                ids = torch.tensor([context + cont], device=device)
                logp = logits(ids)[0, :-1].float().log_softmax(-1)
                targets = ids[0, len(context) :]
                scores.append(float(logp[len(context) - 1 :].gather(1, targets[:, None]).sum()))
            right += (
                options[max(range(len(options)), key=scores.__getitem__)]
                == encyclopedia.FACTS[kind][attribute]
            )
            total += 1
    chance = sum(1 / len(encyclopedia.options_for(a)) for a in encyclopedia.ATTRIBUTES) / len(
        encyclopedia.ATTRIBUTES
    )
    return {"fact_recall": right / total, "fact_recall_chance": chance, "facts": total}


def train_text(
    model: ModelConfig,
    f: FoundationConfig,
    world: WorldConfig,
    tokenizer: Tokenizer,
    device: torch.device,
) -> tuple[Any, dict[str, Any]]:
    """The trained Llama (eval mode) and its scores: training loss, held-out loss, fact recall."""
    torch.manual_seed(f.seed)
    llama = build_llama(model, tokenizer).to(device)
    rows = _rows(world, tokenizer, SPLIT, model.max_seq_len)

    def loss_at(step: int) -> torch.Tensor:
        ids = torch.tensor([next(rows) for _ in range(f.text_batch)], device=device)  # [B, T]
        return llama(input_ids=ids, labels=ids).loss

    scores = fit(
        llama, f.text_steps, f.text_lr, f.warmup_fraction, loss_at, "world language foundation (Llama)"
    )
    scores |= {
        "held_out_loss": _held_out_loss(llama, world, tokenizer, f.eval_items, device),
        **fact_recall(lambda ids: llama(input_ids=ids).logits, tokenizer, device),
    }
    return llama, scores
