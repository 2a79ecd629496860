"""Annotator backend for any OpenAI-compatible `/v1/chat/completions` server (vLLM, SGLang, hosted APIs).

Requests go through the openai SDK's client (pooled connections; its own retries off). Images travel
as base64 PNG data URLs. Timeouts, dropped or reset connections, truncated replies, 429 and 5xx are
retried here, each counted by its reason, with exponential backoff (a server's `Retry-After` wins);
other 4xx fail the request at once. Every successful response is
stored in a SQLite cache keyed by (model, prompt version, messages with image hashes, sampling
parameters), so rerunning a build, or resuming one after a kill, sends no request twice. The API key
is read from the environment variable named by `annotator.api_key_env` and appears in no log,
exception or file.

    # a vLLM server on a GPU box:  vllm serve Qwen/Qwen2.5-VL-7B-Instruct --port 8000
    python launch/build.py recipe=pair_caption_v2 annotator=openai annotator.model=Qwen/Qwen2.5-VL-7B-Instruct
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import random
import socket
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from PIL import Image

from mmkd.annotators.base import (
    Annotator,
    AnnotatorConfig,
    AnnotatorUnreachable,
    Request,
    TransportError,
    Usage,
)

RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
FATAL_STATUS = {401, 403, 404}  # a wrong key, a forbidden model, a wrong URL: every request would fail


def _png(im: Image.Image) -> bytes:
    buf = io.BytesIO()
    im.convert("RGB").save(buf, format="PNG")
    return buf.getvalue()


def _root(error: BaseException | None, kind: type[BaseException]) -> BaseException | None:
    """The first exception of `kind` behind `error` (its cause chain): the socket error under whichever
    HTTP library the openai SDK wraps, found without naming that library's classes."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, kind):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


class ResponseCache:
    """A persistent key -> (text, usage) store shared by threads and by processes building other shards."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=60, check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS responses (key TEXT PRIMARY KEY, text TEXT, usage TEXT)")
        self._db.commit()
        self._lock = threading.Lock()

    def get(self, key: str) -> tuple[str, dict] | None:
        with self._lock:
            row = self._db.execute("SELECT text, usage FROM responses WHERE key = ?", (key,)).fetchone()
        return None if row is None else (row[0], json.loads(row[1]))

    def put(self, key: str, text: str, usage: dict) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO responses VALUES (?, ?, ?)", (key, text, json.dumps(usage))
            )
            self._db.commit()


class OpenAICompatible(Annotator):
    def __init__(self, cfg: AnnotatorConfig):
        super().__init__(cfg)
        self.cache = ResponseCache(Path(cfg.cache_dir) / "responses.sqlite") if cfg.cache_dir else None
        self._clients: dict[str, Any] = {}
        self._clients_lock = threading.Lock()

    def _payload(self, request: Request, messages: list[dict[str, Any]]) -> tuple[dict, str]:
        """The request body, and its cache key (images enter the key by hash, not by bytes)."""
        images = [_png(im) for im in request.images]
        first = [
            {
                "type": "image_url",
                "image_url": {"url": "data:image/png;base64," + base64.b64encode(b).decode()},
            }
            for b in images
        ]
        user = next(i for i, m in enumerate(messages) if m["role"] == "user")  # images go with the ask
        wire = [
            {"role": m["role"], "content": [*first, {"type": "text", "text": m["content"]}]}
            if i == user and images
            else m
            for i, m in enumerate(messages)
        ]
        model, _ = self.cfg.route(request.prompt.name)
        body = {"model": model, "messages": wire, **self.cfg.sampling()}
        ident = {
            "model": model,
            "prompt": request.prompt.id,
            "messages": messages,
            "images": [hashlib.sha256(b).hexdigest() for b in images],
            "sampling": self.cfg.sampling(),
        }
        return body, hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()

    def _answer(self, request: Request, messages: list[dict[str, Any]]) -> tuple[str, Usage]:
        body, key = self._payload(request, messages)
        if self.cache is not None and (hit := self.cache.get(key)) is not None:
            self.count(cache_hits=1)
            return hit[0], Usage(hit[1].get("prompt_tokens", 0), hit[1].get("completion_tokens", 0), True)
        data = self._post(body, key, self.cfg.route(request.prompt.name)[1])
        try:
            text = data["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise TransportError("bad_response", "no choices[0].message.content in the reply") from None
        usage = data.get("usage") or {}
        if self.cache is not None:
            self.cache.put(key, text, usage)
        return text, Usage(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)))

    def _client(self, base_url: str) -> Any:
        """The openai SDK's client for one server (a route may name another), kept for its pooled
        connections; the SDK's own retries are off, this class's loop counts each by its reason."""
        with self._clients_lock:
            if base_url not in self._clients:
                import openai  # here, not at the top: a second of import for runs that never ask a server

                self._clients[base_url] = openai.OpenAI(
                    base_url=base_url,
                    api_key=os.environ.get(self.cfg.api_key_env) or "none",  # a local server needs none
                    timeout=self.cfg.timeout_s,
                    max_retries=0,
                )
            return self._clients[base_url]

    def _post(self, body: dict, key: str, base_url: str) -> dict:
        import openai

        url = base_url.rstrip("/") + "/chat/completions"
        client = self._client(base_url.rstrip("/"))
        # The client's plain `post`, not `chat.completions.create`: the body is built here already,
        # and the SDK's per-request walk of it against its typed schema took 40% of the client's time.
        no_key = not os.environ.get(self.cfg.api_key_env)  # then no Authorization header at all
        headers = {"Authorization": openai.Omit()} if no_key else {}
        jitter = random.Random(key)  # deterministic per request, different across requests
        for attempt in range(self.cfg.max_retries + 1):
            wait: float | None = None
            try:
                self.count(http_calls=1)
                raw = client.post("/chat/completions", cast_to=bytes, body=body, options={"headers": headers})
                try:
                    return json.loads(raw)
                except json.JSONDecodeError:
                    reason, detail = "bad_response", f"reply is not JSON: {raw[:80]!r}"
            except openai.APIStatusError as e:
                code = e.status_code
                reason, detail = f"http_{code}", e.response.text[:200]
                if code in FATAL_STATUS:
                    raise AnnotatorUnreachable(reason, f"{url} answered {code}: {detail}") from None
                if code not in RETRY_STATUS:
                    raise TransportError(reason, detail) from None
                if (after := e.response.headers.get("Retry-After")) and after.replace(".", "", 1).isdigit():
                    wait = float(after)
            except openai.APITimeoutError:
                reason, detail = "timeout", f"no reply within {self.cfg.timeout_s} s"
            except openai.APIConnectionError as e:  # refused, reset, closed or cut short mid-reply
                cause = e.__cause__ or e
                if unresolved := _root(e, socket.gaierror):  # no such host: every request would fail
                    raise AnnotatorUnreachable("connection", f"{url}: {unresolved}") from None
                reason = "refused" if _root(e, ConnectionRefusedError) else "connection"
                detail = f"{url}: {type(cause).__name__}: {cause}"
            if attempt == self.cfg.max_retries:
                break
            self.count(**{f"retries.{reason}": 1})
            if wait is None:
                wait = self.cfg.backoff_s * 2**attempt * (1 + 0.25 * jitter.random())
            time.sleep(min(wait, self.cfg.max_backoff_s))
        error = AnnotatorUnreachable if reason == "refused" else TransportError  # nobody listens there
        raise error(reason, f"{detail} (after {self.cfg.max_retries} retries)")
