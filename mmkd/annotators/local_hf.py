"""Annotator backend for a local Hugging Face causal-LM checkpoint (`annotator.model=/path/to/ckpt`).

For the text-only steps of the pipeline: caption-to-VQA (A.1.2) and knowledge extraction (A.1.5) read
text alone. Steps that must see images (captions, semantic analysis, the filter, pair captions,
interleaved) need a multimodal model: serve it with vLLM or SGLang and use `annotator=openai`; here
such a request is rejected with reason `images_unsupported`. Nothing is downloaded: the checkpoint
must be a local directory, loaded from safetensors. Generation is greedy at temperature 0 and seeded
otherwise, so the same config gives the same annotations.

    python launch/build.py recipe=synthetic_vqa annotator.backend=transformers annotator.model=/ckpt/llm
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

from mmkd.annotators.base import Annotator, AnnotatorConfig, Request, TransportError, Usage


class LocalTransformers(Annotator):
    def __init__(self, cfg: AnnotatorConfig):
        super().__init__(cfg)
        path = Path(cfg.model)
        if not (path / "config.json").exists():
            raise ValueError(
                f"annotator.model={cfg.model!r}: the transformers backend loads a local checkpoint "
                "directory (with config.json); it never downloads from a hub"
            )
        try:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer
        except ImportError as e:
            raise ImportError(f"the transformers annotator needs `pip install transformers` ({e})") from e
        self._torch = torch
        self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self.model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, use_safetensors=True)
        self.model.eval()
        self._generate = threading.Lock()  # one generate() at a time: the model is not thread-safe

    def _prompt(self, messages: list[dict[str, Any]]) -> str:
        if self.tokenizer.chat_template:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return "\n\n".join(m["content"] for m in messages) + "\n\n"

    def _answer(self, request: Request, messages: list[dict[str, Any]]) -> tuple[str, Usage]:
        if request.images:
            raise TransportError(
                "images_unsupported",
                f"prompt {request.prompt.id} needs images; serve a multimodal model and use annotator=openai",
            )
        enc = self.tokenizer(self._prompt(messages), return_tensors="pt")
        sample = self.cfg.temperature > 0
        kwargs = {"do_sample": sample, "max_new_tokens": self.cfg.max_tokens}
        if sample:
            kwargs.update(temperature=self.cfg.temperature, top_p=self.cfg.top_p)
        with self._generate, self._torch.no_grad():
            self._torch.manual_seed(self.cfg.seed)
            out = self.model.generate(**enc, **kwargs, pad_token_id=self.tokenizer.pad_token_id)
        n = enc["input_ids"].shape[1]
        text = self.tokenizer.decode(out[0, n:], skip_special_tokens=True)
        return text, Usage(n, int(out.shape[1] - n))
