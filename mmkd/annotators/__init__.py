"""Annotators: the LLM/MLLM that writes recipe data, behind one small protocol (`base.Annotator`).

Backends: `world` (the oracle of the knowledge world), `openai` (any OpenAI-compatible server) and
`transformers` (a local checkpoint). `make_annotator(cfg)` picks one from `annotator.backend`.
"""

from mmkd.annotators.base import (
    Annotator,
    AnnotatorConfig,
    ParseError,
    Prompt,
    Request,
    Response,
    check_text,
    extract_json,
)


def make_annotator(cfg: AnnotatorConfig) -> Annotator:
    if cfg.backend == "world":
        from mmkd.annotators.world_oracle import WorldOracle

        return WorldOracle(cfg)
    if cfg.backend == "openai":
        from mmkd.annotators.openai_compat import OpenAICompatible

        return OpenAICompatible(cfg)
    if cfg.backend == "transformers":
        from mmkd.annotators.local_hf import LocalTransformers

        return LocalTransformers(cfg)
    raise ValueError(f"annotator.backend={cfg.backend!r}: must be one of world, openai, transformers")


__all__ = [
    "Annotator",
    "AnnotatorConfig",
    "ParseError",
    "Prompt",
    "Request",
    "Response",
    "check_text",
    "extract_json",
    "make_annotator",
]
