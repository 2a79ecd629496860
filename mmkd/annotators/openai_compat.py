"""Annotator backend for any OpenAI-compatible `/v1/chat/completions` server (vLLM, SGLang, hosted APIs).

Images travel as base64 PNG data URLs. Timeouts, dropped or reset connections, truncated replies,
429 and 5xx are retried with exponential backoff (a server's `Retry-After` wins); other 4xx fail the
request at once. Every successful response is
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
import http.client
import io
import json
import os
import random
import sqlite3
import threading
import time
import urllib.error
import urllib.request
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
        data = self._post(body, key, self.cfg.route(request.prompt.name)[1].rstrip("/") + "/chat/completions")
        try:
            text = data["choices"][0]["message"]["content"] or ""
        except (KeyError, IndexError, TypeError):
            raise TransportError("bad_response", "no choices[0].message.content in the reply") from None
        usage = data.get("usage") or {}
        if self.cache is not None:
            self.cache.put(key, text, usage)
        return text, Usage(int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0)))

    def _post(self, body: dict, key: str, url: str) -> dict:
        headers = {"Content-Type": "application/json"}
        if api_key := os.environ.get(self.cfg.api_key_env):
            headers["Authorization"] = f"Bearer {api_key}"
        payload = json.dumps(body).encode()
        jitter = random.Random(key)  # deterministic per request, different across requests
        for attempt in range(self.cfg.max_retries + 1):
            wait: float | None = None
            try:
                self.count(http_calls=1)
                req = urllib.request.Request(url, data=payload, headers=headers, method="POST")
                with urllib.request.urlopen(req, timeout=self.cfg.timeout_s) as resp:
                    raw = resp.read()
                try:
                    return json.loads(raw)
                except json.JSONDecodeError:
                    reason, detail = "bad_response", f"reply is not JSON: {raw[:80]!r}"
            except urllib.error.HTTPError as e:
                reason, detail = f"http_{e.code}", e.read()[:200].decode(errors="replace")
                if e.code in FATAL_STATUS:
                    raise AnnotatorUnreachable(reason, f"{url} answered {e.code}: {detail}") from None
                if e.code not in RETRY_STATUS:
                    raise TransportError(reason, detail) from None
                if (after := e.headers.get("Retry-After")) and after.replace(".", "", 1).isdigit():
                    wait = float(after)
            except TimeoutError:
                reason, detail = "timeout", f"no reply within {self.cfg.timeout_s} s"
            except urllib.error.URLError as e:
                if not isinstance(e.reason, TimeoutError | ConnectionError):
                    raise AnnotatorUnreachable("connection", f"{url}: {e.reason}") from None
                reason, detail = "connection", f"{url}: {e.reason}"
                if isinstance(e.reason, ConnectionRefusedError):
                    reason = "refused"
            except (ConnectionError, http.client.HTTPException) as e:  # reset, closed, cut short mid-reply
                reason, detail = "connection", f"{url}: {type(e).__name__}: {e}"
            if attempt == self.cfg.max_retries:
                break
            self.count(**{f"retries.{reason}": 1})
            if wait is None:
                wait = self.cfg.backoff_s * 2**attempt * (1 + 0.25 * jitter.random())
            time.sleep(min(wait, self.cfg.max_backoff_s))
        error = AnnotatorUnreachable if reason == "refused" else TransportError  # nobody listens there
        raise error(reason, f"{detail} (after {self.cfg.max_retries} retries)")
