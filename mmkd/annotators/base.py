"""The annotator protocol: a chat request with optional images in, text or validated JSON out.

Every builder talks to an annotator through `Annotator.annotate(requests)`. The backends differ only
in `_answer()` (one model call); what they share lives here: bounded concurrency, the repair loop
(an answer that fails its prompt's parser is sent back with the error, at most `json_repairs` times),
refusal and empty-answer detection, token / cost accounting and the progress bar. A request that
still fails comes back as a `Response` with `error` set (the reject reason): builders count and list
it, they never crash on it.
"""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from PIL import Image
from tqdm import tqdm

from mmkd.errors import UserError
from mmkd.world.caption_formats import FORMATS as CAPTION_FORMATS


@dataclass
class AnnotatorConfig:
    """Which annotator answers the builders' prompts, and how it is called."""

    backend: str = "world"  # world | openai | transformers
    model: str = "world-oracle"  # served model name (openai), local path (transformers)
    base_url: str = "http://127.0.0.1:8000/v1"  # any OpenAI-compatible server: vLLM, SGLang, hosted APIs
    api_key_env: str = "OPENAI_API_KEY"  # the *name* of the environment variable holding the key
    concurrency: int = 8
    timeout_s: float = 120.0
    max_retries: int = 5  # per call, on timeouts, 429 and 5xx
    backoff_s: float = 1.0  # first retry wait; doubles per retry (a server's Retry-After wins)
    max_backoff_s: float = 60.0
    json_repairs: int = 2  # re-asks after an answer that fails its prompt's parser
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 2048
    seed: int = 0
    cache_dir: str = "data/annotator-cache"  # persistent response cache; "" disables it
    price_input_per_mtok: float = 0.0  # USD per million prompt tokens, for the cost report
    price_output_per_mtok: float = 0.0
    # World oracle only: P(an object is left out of a description), P(an invented object is added).
    omission: float = 0.0
    hallucination: float = 0.0
    # World oracle only: per-claim error rate of each caption format (seed 002, world/caption_formats.py).
    claim_error: dict[str, float] = field(default_factory=lambda: dict.fromkeys(CAPTION_FORMATS, 0.05))
    # Served models only: which model answers which prompt where one should not answer all (seed 004
    # rates text with an LLM and captions images with an MLLM): prompt name -> "model" on base_url,
    # or "model@url" on a server of its own. Other prompts go to `model`.
    routes: dict[str, str] = field(default_factory=dict)

    def validate(self) -> AnnotatorConfig:
        backends = ("world", "openai", "transformers")
        if self.backend not in backends:
            raise ValueError(f"annotator.backend={self.backend!r}: must be one of {backends}")
        for name in ("concurrency",):
            if getattr(self, name) < 1:
                raise ValueError(f"annotator.{name}={getattr(self, name)}: must be >= 1")
        for name in ("max_retries", "json_repairs"):
            if getattr(self, name) < 0:
                raise ValueError(f"annotator.{name}={getattr(self, name)}: must be >= 0")
        for name in ("omission", "hallucination"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"annotator.{name}={getattr(self, name)}: must be in [0, 1]")
        for fmt, rate in self.claim_error.items():
            if fmt not in CAPTION_FORMATS:
                raise ValueError(
                    f"annotator.claim_error.{fmt}: unknown caption format; known: {list(CAPTION_FORMATS)}"
                )
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"annotator.claim_error.{fmt}={rate}: must be in [0, 1]")
        missing = [f for f in CAPTION_FORMATS if f not in self.claim_error]
        if missing:
            raise ValueError(f"annotator.claim_error has no rate for {missing}")
        if self.routes:
            self._check_routes()
        return self

    def _check_routes(self) -> None:
        """Each route's form; that it names a builder prompt is the builders' check (`check_routes`
        in data_builders/prompts.py), since the prompts belong to them."""
        if self.backend != "openai":
            raise ValueError(f"annotator.routes: served models only (annotator=openai), not {self.backend!r}")
        for name, target in self.routes.items():
            model, at, url = target.partition("@")
            if not model or (at and not url.startswith(("http://", "https://"))):
                raise ValueError(
                    f"annotator.routes.{name}={target!r}: must be MODEL or MODEL@http(s)://HOST/v1"
                )

    def route(self, prompt: str) -> tuple[str, str]:
        """(model, base URL) that answers `prompt`: its route, else `model` on `base_url`."""
        model, _, url = self.routes.get(prompt, self.model).partition("@")
        return model, url or self.base_url

    def sampling(self) -> dict[str, Any]:
        """The parameters that change an answer: part of every cache key."""
        return {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "max_tokens": self.max_tokens,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class Prompt:
    """A versioned prompt template; `{field}` slots are filled by `render` (JSON braces stay as they are)."""

    name: str
    version: str
    text: str  # the user message
    output: str  # "text" or "json"
    source: str  # where it comes from, e.g. "seed 000 A.1.2"
    system: str = ""  # the system message, when the prompt has one (seed 003 F.5)

    def render(self, fields: dict[str, Any], text: str | None = None) -> str:
        out = self.text if text is None else text
        for k, v in fields.items():
            out = out.replace("{" + k + "}", str(v))
        return out

    @property
    def id(self) -> str:
        return f"{self.name}@{self.version}"


class ParseError(ValueError):
    """An answer that does not fit its prompt; `reason` is the reject category."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason, self.detail = reason, detail


@dataclass
class Request:
    key: str  # the record it annotates (sample id, pair id): names it in rejects
    prompt: Prompt
    parse: Callable[[str], Any]  # text -> value; raises ParseError
    fields: dict[str, Any] = field(default_factory=dict)
    images: list[Image.Image] = field(default_factory=list)
    # Structured inputs only the world oracle reads (scene graphs); never sent to a server.
    context: dict[str, Any] = field(default_factory=dict)

    def messages(self) -> list[dict[str, Any]]:
        """The chat as a server sees it (images are attached by the backend that sends them)."""
        system = [{"role": "system", "content": self.prompt.render(self.fields, self.prompt.system)}]
        return [
            *(system if self.prompt.system else []),
            {"role": "user", "content": self.prompt.render(self.fields)},
        ]


@dataclass
class Response:
    key: str
    value: Any = None
    text: str = ""
    error: str | None = None  # reject reason when the request failed
    detail: str = ""
    repairs: int = 0


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached: bool = False


class TransportError(RuntimeError):
    """A call that failed for good (retries exhausted or a non-retryable status)."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


class AnnotatorUnreachable(TransportError, UserError):
    """The server refuses every request (401, 403, 404) or cannot be reached at all: the build stops at
    once, naming the URL and the status, instead of finishing a dataset of rejects."""

    label = "annotator error"
    hint = " (finished units are kept: the same command resumes)"


_REFUSAL = re.compile(
    r"^\s*(?:i'?m sorry|i am sorry|sorry,|i can(?:no|')t|i am unable|i'm unable|as an ai)\b", re.I
)


def check_text(text: str) -> str:
    """A free-text answer: non-empty and not a refusal."""
    if not text.strip():
        raise ParseError("empty_answer")
    if _REFUSAL.match(text):
        raise ParseError("refusal", text.strip()[:80])
    return text.strip()


def extract_json(text: str) -> Any:
    """The first JSON value in an answer (code fences and surrounding chatter are tolerated)."""
    check_text(text)
    starts = [i for i in (text.find("{"), text.find("[")) if i >= 0]
    if not starts:
        raise ParseError("malformed_json", "no JSON object or list in the answer")
    try:
        value, _ = json.JSONDecoder().raw_decode(text[min(starts) :])
    except json.JSONDecodeError as e:
        raise ParseError("malformed_json", str(e)) from None
    return value


class Annotator:
    """Base of every backend: subclasses implement `_answer(request, messages) -> (text, Usage)`."""

    def __init__(self, cfg: AnnotatorConfig):
        self.cfg = cfg.validate()
        self._lock = threading.Lock()
        self.stats: Counter[str] = Counter()

    def identity(self, prompts: Iterable[str] = ()) -> dict[str, Any]:
        """What determines the answers to `prompts` (recorded in the provenance of every output); the
        routes of other prompts do not count, so a new route rebuilds only what it answers."""
        routes = {p: target for p, target in sorted(self.cfg.routes.items()) if p in set(prompts)}
        return {
            "backend": self.cfg.backend,
            "model": self.cfg.model,
            "sampling": self.cfg.sampling(),
            **({"routes": routes} if routes else {}),
        }

    def count(self, **deltas: int) -> None:
        with self._lock:
            self.stats.update(deltas)

    def _answer(self, request: Request, messages: list[dict[str, Any]]) -> tuple[str, Usage]:
        raise NotImplementedError

    def _one(self, request: Request) -> Response:
        messages = request.messages()
        self.count(requests=1)
        reason, detail = "", ""
        for repair in range(self.cfg.json_repairs + 1):
            try:
                text, usage = self._answer(request, messages)
            except AnnotatorUnreachable:
                raise  # no request can succeed: stop the build (finished units stay as they are)
            except TransportError as e:
                self.count(rejects=1)
                return Response(request.key, error=e.reason, detail=e.detail, repairs=repair)
            key = "cached_" if usage.cached else ""
            self.count(
                **{
                    f"{key}prompt_tokens": usage.prompt_tokens,
                    f"{key}completion_tokens": usage.completion_tokens,
                }
            )
            try:
                value = request.parse(text)
            except ParseError as e:
                reason, detail = e.reason, e.detail
                self.count(**{f"parse_errors.{e.reason}": 1})
                messages = [
                    *messages,
                    {"role": "assistant", "content": text},
                    {
                        "role": "user",
                        "content": f"Your answer could not be used ({e}). Answer again, following the "
                        "required output format exactly, and output nothing else.",
                    },
                ]
                continue
            if repair:
                self.count(repaired=1)
            return Response(request.key, value=value, text=text, repairs=repair)
        self.count(rejects=1)
        return Response(request.key, error=reason, detail=detail, repairs=self.cfg.json_repairs)

    def annotate(self, requests: Sequence[Request], desc: str = "annotate") -> list[Response]:
        """Answer every request (in order), at most `cfg.concurrency` at a time."""
        bar = tqdm(total=len(requests), desc=desc, unit="req", leave=False, mininterval=1.0)
        if self.cfg.concurrency == 1 or len(requests) <= 1:
            out = []
            for r in requests:
                out.append(self._one(r))
                bar.update()
        else:
            with ThreadPoolExecutor(self.cfg.concurrency) as pool:
                futures = [pool.submit(self._one, r) for r in requests]
                out = []
                for f in futures:
                    out.append(f.result())
                    bar.update()
        bar.close()
        return out

    def report(self) -> dict[str, Any]:
        """Token, cost and outcome counts so far (cached tokens cost nothing)."""
        s = dict(sorted(self.stats.items()))
        s["cost_usd"] = round(
            self.stats["prompt_tokens"] * self.cfg.price_input_per_mtok / 1e6
            + self.stats["completion_tokens"] * self.cfg.price_output_per_mtok / 1e6,
            6,
        )
        return s
