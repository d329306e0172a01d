"""A real chat-completions HTTP server on 127.0.0.1 for tests, scriptable to misbehave.

`FakeChatServer` runs `ThreadingHTTPServer` on a random loopback port in a thread. Each
request to ``POST /v1/chat/completions`` is answered by the next scripted `Action` (a queue;
when empty, `default` answers). Actions: `reply(content)`, `status(code, retry_after=)`,
`delay` (latency before any of these), `hang` (sleep past the client's timeout), `reset`
(close the socket without answering), `raw_body` (a 200 with a broken JSON body) and
`truncated` (Content-Length larger than the body). Every request is recorded with its
arrival time, headers and JSON body, so tests can assert retries and concurrency.
"""

from __future__ import annotations

import json
import socket
import struct
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Action:
    kind: str = "reply"  # reply | status | hang | reset | raw_body | truncated
    content: str = ""
    code: int = 200
    retry_after: str | None = None
    delay: float = 0.0
    body: bytes = b""
    usage: dict[str, int] = field(default_factory=lambda: {
        "prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15})


def reply(content: str, delay: float = 0.0, **kw: Any) -> Action:
    return Action("reply", content=content, delay=delay, **kw)


def status(code: int, retry_after: str | None = None, delay: float = 0.0) -> Action:
    return Action("status", code=code, retry_after=retry_after, delay=delay)


def hang(seconds: float) -> Action:
    return Action("hang", delay=seconds)


def reset() -> Action:
    return Action("reset")


def raw_body(body: bytes) -> Action:
    return Action("raw_body", body=body)


def truncated() -> Action:
    return Action("truncated")


@dataclass
class Seen:
    t_start: float
    t_end: float
    headers: dict[str, str]
    body: dict[str, Any] | None
    raw: bytes


class FakeChatServer:
    """Context manager: ``with FakeChatServer(default=...) as srv: srv.base_url``."""

    def __init__(self, default: Callable[[dict[str, Any]], Action] | Action | None = None):
        self.script: deque[Action] = deque()
        self.default = default or reply('{"caption": "a test image"}')
        self.requests: list[Seen] = []
        self._lock = threading.Lock()
        self.in_flight = 0
        self.max_in_flight = 0
        self._server: ThreadingHTTPServer | None = None

    # -- scripting --------------------------------------------------------------------
    def push(self, *actions: Action) -> None:
        with self._lock:
            self.script.extend(actions)

    def _next(self, body: dict[str, Any] | None) -> Action:
        with self._lock:
            if self.script:
                return self.script.popleft()
        d = self.default
        return d(body or {}) if callable(d) else d

    @property
    def base_url(self) -> str:
        assert self._server is not None
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    # -- lifecycle --------------------------------------------------------------------
    def __enter__(self) -> FakeChatServer:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:  # noqa: N802
                t0 = time.perf_counter()
                n = int(self.headers.get("Content-Length", 0))
                raw = self.rfile.read(n)
                try:
                    body = json.loads(raw)
                except ValueError:
                    body = None
                with outer._lock:
                    outer.in_flight += 1
                    outer.max_in_flight = max(outer.max_in_flight, outer.in_flight)
                try:
                    outer._answer(self, outer._next(body), body)
                finally:
                    with outer._lock:
                        outer.in_flight -= 1
                        outer.requests.append(
                            Seen(t0, time.perf_counter(), dict(self.headers), body, raw))

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc: Any) -> None:
        assert self._server is not None
        self._server.shutdown()
        self._server.server_close()

    # -- answering --------------------------------------------------------------------
    @staticmethod
    def _send(h: BaseHTTPRequestHandler, code: int, body: bytes,
              headers: dict[str, str] | None = None, length: int | None = None) -> None:
        h.send_response(code)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(body) if length is None else length))
        for k, v in (headers or {}).items():
            h.send_header(k, v)
        h.end_headers()
        h.wfile.write(body)
        h.wfile.flush()

    def _answer(self, h: BaseHTTPRequestHandler, a: Action, body: dict[str, Any] | None) -> None:
        if a.delay and a.kind != "hang":
            time.sleep(a.delay)
        if a.kind == "hang":
            time.sleep(a.delay)
            h.close_connection = True
            return
        if a.kind == "reset":
            # SO_LINGER 0 makes close() send RST: a genuine connection reset.
            h.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            h.connection.close()
            h.close_connection = True
            return
        if a.kind == "status":
            hdrs = {"Retry-After": a.retry_after} if a.retry_after is not None else {}
            self._send(h, a.code, json.dumps({"error": {"message": "scripted"}}).encode(), hdrs)
            return
        if a.kind == "raw_body":
            self._send(h, 200, a.body)
            return
        model = (body or {}).get("model", "?")
        payload = json.dumps({
            "id": "cmpl-test", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": a.content}}],
            "usage": a.usage,
        }).encode()
        if a.kind == "truncated":
            self._send(h, 200, payload[: len(payload) // 2], length=len(payload))
            h.close_connection = True
            return
        self._send(h, 200, payload)
