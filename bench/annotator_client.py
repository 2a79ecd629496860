"""The served annotator's client (`annotator=openai`) against a loopback server's capacity.

    python bench/annotator_client.py [--requests 2000] [--concurrency 32] [--rounds 3] [--json PATH]

A minimal OpenAI-compatible server runs in a process of its own (HTTP/1.1 keep-alive, one canned
caption per request), twice: as Python's http.server sends by default (Nagle's algorithm on: header
and body go as two segments and each request waits for the client's delayed ACK, ~40 ms, which caps
32 connections near 700 requests/s; the server of issue 40's measurement) and with TCP_NODELAY, as
production servers (uvicorn under vLLM) send. A server's capacity is what a bare client gets from it:
threads on kept-alive `http.client` connections posting one pre-built body, the size of a captioning
request with a world image. Then mmkd's client annotates the same number of captioning requests (a
world image each, the response cache off), at the same concurrency. The two take turns for
`--rounds` rounds per server; each round's ratio is reported and the medians are the figures.
Target (issue 40): >= 0.9.
"""

from __future__ import annotations

import argparse
import http.client
import json
import statistics
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from _record import write_record

from mmkd.annotators import make_annotator
from mmkd.annotators.base import AnnotatorConfig, Request
from mmkd.data_builders.prompts import PROMPTS, parse_caption
from mmkd.world.render import render
from mmkd.world.scene import WorldConfig, sample_scene

REPLY = json.dumps(
    {
        "choices": [{"message": {"role": "assistant", "content": "A small red circle above a blue square."}}],
        "usage": {"prompt_tokens": 80, "completion_tokens": 9},
    }
).encode()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: connections are reused, as a real server's are

    def log_message(self, *args) -> None:
        pass

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers["Content-Length"]))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(REPLY)))
        self.end_headers()
        self.wfile.write(REPLY)


class Server(ThreadingHTTPServer):
    request_queue_size = 256  # the default backlog of 5 resets connections opened 32 at a time
    daemon_threads = True


class NoDelayHandler(Handler):
    disable_nagle_algorithm = True  # TCP_NODELAY: the body follows the header at once


SERVERS = {"nagle": Handler, "nodelay": NoDelayHandler}


def serve(kind: str) -> None:
    """The server process: prints its port, then answers until killed."""
    httpd = Server(("127.0.0.1", 0), SERVERS[kind])
    print(httpd.server_address[1], flush=True)
    httpd.serve_forever()


def requests(n: int) -> list[Request]:
    """Captioning requests, each with its own rendered world image."""
    world = WorldConfig()
    images = [render(sample_scene(world, "train", k), 64) for k in range(64)]
    return [Request(f"r{k}", PROMPTS["caption"], parse_caption, images=[images[k % 64]]) for k in range(n)]


def capacity(port: int, body: bytes, n: int, concurrency: int) -> float:
    """Requests/s a bare keep-alive client gets: the server's capacity for this body."""
    counts = [n // concurrency + (k < n % concurrency) for k in range(concurrency)]

    def worker(count: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port)
        for _ in range(count):
            conn.request("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
            conn.getresponse().read()
        conn.close()

    threads = [threading.Thread(target=worker, args=(c,)) for c in counts]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return n / (time.perf_counter() - start)


def client(port: int, batch: list[Request], concurrency: int) -> float:
    """Requests/s of mmkd's served-annotator client on the same server."""
    cfg = AnnotatorConfig(backend="openai", model="bench", base_url=f"http://127.0.0.1:{port}/v1",
                          cache_dir="", concurrency=concurrency)  # fmt: skip
    annotator = make_annotator(cfg)
    start = time.perf_counter()
    answers = annotator.annotate(batch, "bench")
    seconds = time.perf_counter() - start
    if bad := [a for a in answers if a.error]:
        raise SystemExit(f"{len(bad)} requests failed, the first: {bad[0].error} {bad[0].detail}")
    return len(batch) / seconds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=2000, help="requests per loop per round")
    ap.add_argument("--concurrency", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--json", type=Path, help="also write the figures to this JSON file")
    ap.add_argument("--serve", choices=sorted(SERVERS), help=argparse.SUPPRESS)  # the server process
    args = ap.parse_args()
    if args.serve:
        return serve(args.serve)
    batch = requests(args.requests)
    annotator = make_annotator(AnnotatorConfig(backend="openai", model="bench", cache_dir=""))
    body = json.dumps(annotator._payload(batch[0], batch[0].messages())[0]).encode()
    servers: dict[str, dict] = {}
    for kind in SERVERS:
        server = subprocess.Popen(
            [sys.executable, __file__, "--serve", kind], stdout=subprocess.PIPE, text=True
        )
        try:
            port = int(server.stdout.readline())
            client(port, batch[:64], args.concurrency)  # warm-up: connections, imports
            rounds = []
            for k in range(args.rounds):
                cap = capacity(port, body, args.requests, args.concurrency)
                ours = client(port, batch, args.concurrency)
                rounds.append({"capacity": cap, "client": ours, "ratio": ours / cap})
                figures = f"capacity {cap:.0f} requests/s, mmkd client {ours:.0f}, ratio {ours / cap:.2f}"
                print(f"{kind} server, round {k + 1}: {figures}", flush=True)
        finally:
            server.kill()
        servers[kind] = {"rounds": rounds, "ratio": statistics.median(r["ratio"] for r in rounds)}
    print(f"{args.requests} requests per loop, {len(body):,}-byte bodies, concurrency {args.concurrency}")
    for kind, got in servers.items():
        print(f"{kind} server: ratio client / capacity (median of rounds) {got['ratio']:.2f}")
    if args.json:
        write_record(args.json, {"command": "python bench/annotator_client.py", "requests": args.requests,
                                 "concurrency": args.concurrency, "body_bytes": len(body),
                                 "servers": servers})  # fmt: skip


if __name__ == "__main__":
    main()
