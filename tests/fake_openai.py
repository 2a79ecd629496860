"""A real HTTP server on 127.0.0.1 that speaks the OpenAI chat-completions protocol, for tests.

`respond(body, calls)` decides each reply: return (status, content) or (status, content, headers);
a 200's content becomes choices[0].message.content, any other status sends {"error": content}.
The status may also be a broken connection: "disconnect" (closed before any reply: the client sees
RemoteDisconnected), "reset" (a TCP reset: ConnectionResetError) or "truncate" (a 200 whose body
stops short of its Content-Length: IncompleteRead).
"""

from __future__ import annotations

import json
import socket
import struct
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FakeOpenAI:
    def __init__(self, respond: Callable[[dict, int], tuple]):
        self.calls = 0
        self.auth: set[str] = set()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.auth.add(self.headers.get("Authorization", ""))
                outer.calls += 1
                status, content, *rest = respond(body, outer.calls)
                headers = rest[0] if rest else {}
                if status in ("disconnect", "reset"):
                    if status == "reset":  # SO_LINGER 0: close() sends RST instead of FIN
                        self.connection.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                    self.close_connection = True
                    self.connection.close()
                    return
                if status == "truncate":
                    self.send_response(200)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", "1000")
                    self.end_headers()
                    self.wfile.write(b'{"choices": [')
                    self.close_connection = True
                    return
                if status == 200:
                    obj = {
                        "choices": [{"message": {"role": "assistant", "content": content}}],
                        "usage": {"prompt_tokens": 10, "completion_tokens": 5},
                    }
                else:
                    obj = {"error": content}
                data = json.dumps(obj).encode()
                try:
                    self.send_response(status)
                    for k, v in headers.items():
                        self.send_header(k, v)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client timed out and left, as it should

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def prompt_text(body: dict) -> str:
    """The text of the first user message (after its images, if any)."""
    first = next(m for m in body["messages"] if m["role"] == "user")["content"]
    return first if isinstance(first, str) else first[-1]["text"]
