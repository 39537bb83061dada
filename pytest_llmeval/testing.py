"""A local OpenAI-compatible server for tests and demos: chat completions and embeddings
on 127.0.0.1, scripted replies, switchable latency, fault injection, request counters.

Standard library only. Start it in a fixture::

    with FakeOpenAIServer(reply=lambda request: "hello") as server:
        client = OpenAI(base_url=server.base_url, api_key="test")

Faults are drawn per request from seeded rates, so a run is reproducible:
``server.faults = {"429": 0.05, "500": 0.05, "timeout": 0.05, "malformed": 0.05}``;
``server.fault_sequence = ["429", "500"]`` makes the next requests fail in that order.
Besides HTTP errors: "timeout" stalls ``hang`` seconds, "malformed" answers 200 with a
truncated body, "error200" with ``{"error": {...}}``, "invalid" with a response missing
its ``choices`` (or ``data``), "drop" closes the connection. ``per_token_embeddings``
answers embeddings as llama.cpp's server does for a model without pooling.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

FAULTS = (
    "429",
    "500",
    "503",
    "timeout",
    "malformed",
    "error200",
    "invalid",
    "drop",
    "401",
    "400",
)
EMBEDDING_DIMENSIONS = 64

# A reply is the assistant's text, or its whole message (``tool_calls`` for a model that
# calls tools: see :func:`calls`).
Reply = Callable[[dict[str, Any]], "str | Mapping[str, Any]"]


def calls(*wanted: tuple[str, Mapping[str, Any]]) -> dict[str, Any]:
    """An assistant message asking for tool calls: ``calls(("lookup_order", {"id": "A1"}))``.
    Each call's id is derived from its name, arguments and position."""
    tool_calls = []
    for n, (name, arguments) in enumerate(wanted):
        text = json.dumps(dict(arguments), sort_keys=True)
        digest = hashlib.sha256(f"{n}:{name}:{text}".encode()).hexdigest()[:12]
        tool_calls.append(
            {
                "id": f"call_{digest}",
                "type": "function",
                "function": {"name": name, "arguments": text},
            }
        )
    return {"content": None, "tool_calls": tool_calls}


def echo(request: dict[str, Any]) -> str:
    """The default reply: the last user message, echoed."""
    users = [m for m in request.get("messages", []) if m.get("role") == "user"]
    return f"echo: {users[-1]['content']}" if users else "echo"


class FakeOpenAIServer:
    """An OpenAI-compatible HTTP server on 127.0.0.1 with an ephemeral port."""

    def __init__(
        self,
        reply: Reply = echo,
        *,
        latency: float = 0.0,
        faults: Mapping[str, float] | None = None,
        seed: int = 0,
        retry_after: float = 0.01,
        hang: float = 5.0,
        capacity: int | None = None,
    ) -> None:
        self.reply = reply
        self.latency = latency
        self.faults = dict(faults or {})
        self.fault_sequence: list[str | None] = []
        self.reject_formats: set[str] = set()  # response_format types answered with a 400
        self.retry_after = retry_after  # seconds announced on a 429
        self.hang = hang  # how long a "timeout" fault stalls before answering
        self.per_token_embeddings = False  # one vector per word, as llama.cpp unpooled
        self._stopping = threading.Event()  # ends a stall early when the server stops
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(capacity) if capacity else None
        self.requests: Counter[str] = Counter()  # by path
        self.injected: Counter[str] = Counter()  # by fault
        self.in_flight = 0
        self.peak_in_flight = 0
        self.bodies: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self._httpd = _Server(("127.0.0.1", 0), _handler_for(self))
        self._httpd.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        port = self._httpd.server_address[1]
        return f"http://127.0.0.1:{port}/v1"

    @property
    def total_requests(self) -> int:
        return sum(self.requests.values())

    def start(self) -> FakeOpenAIServer:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        self._httpd.shutdown()
        self._httpd.server_close()

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def reset_counters(self) -> None:
        with self._lock:
            self.requests.clear()
            self.injected.clear()
            self.bodies.clear()
            self.headers.clear()
            self.peak_in_flight = self.in_flight

    def _draw_fault(self) -> str | None:
        with self._lock:
            if self.fault_sequence:
                fault = self.fault_sequence.pop(0)
                if fault is not None:
                    self.injected[fault] += 1
                return fault
            roll = self._rng.random()
            for fault, rate in self.faults.items():
                if roll < rate:
                    self.injected[fault] += 1
                    return fault
                roll -= rate
        return None

    def _enter(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> None:
        with self._lock:
            self.requests[path] += 1
            self.bodies.append(body)
            self.headers.append(headers)
            self.in_flight += 1
            self.peak_in_flight = max(self.peak_in_flight, self.in_flight)

    def _leave(self) -> None:
        with self._lock:
            self.in_flight -= 1


class _Server(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5: a batch opening 64 connections at once
    # would see resets and 1 s SYN retries.
    request_queue_size = 256


def _handler_for(server: FakeOpenAIServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        # Headers and body go out in two writes: without this, Nagle's algorithm and the
        # client's delayed ACK add about 40 ms to every response.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_POST(self) -> None:
            length = int(self.headers.get("content-length", 0))
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError:
                self._send(400, {"error": {"message": "body is not JSON", "type": "bad_request"}})
                return
            path = self.path.rstrip("/").removeprefix("/v1")
            server._enter(path, body, dict(self.headers))
            self.counted = True
            if server._slots is not None:
                server._slots.acquire()
            try:
                self._serve(path, body)
            finally:
                self._leave()

        def _serve(self, path: str, body: dict[str, Any]) -> None:
            if path not in ("/chat/completions", "/embeddings"):
                self._send(404, {"error": {"message": f"no route {path}", "type": "not_found"}})
                return
            if server.latency:
                time.sleep(server.latency)
            requested = (body.get("response_format") or {}).get("type")
            if requested in server.reject_formats:
                message = f"response_format {requested!r} is not supported"
                self._send(400, {"error": {"message": message, "type": "invalid_request"}})
                return
            fault = server._draw_fault()
            if fault == "429":
                self._send(
                    429,
                    {"error": {"message": "rate limited", "type": "rate_limit"}},
                    {"retry-after-ms": str(int(server.retry_after * 1000))},
                )
            elif fault in ("500", "503", "401", "400"):
                self._send(int(fault), {"error": {"message": f"fault {fault}", "type": "fault"}})
            elif fault == "timeout":
                server._stopping.wait(server.hang)
                self._send(504, {"error": {"message": "too slow", "type": "timeout"}})
            elif fault == "malformed":
                self._raw(200, b'{"id": "chatcmpl-broken", "choices": [', "application/json")
            elif fault == "error200":  # some proxies and servers report errors this way
                self._send(200, {"error": {"message": "model overloaded", "type": "server"}})
            elif fault == "invalid":
                good = _embeddings(body) if path == "/embeddings" else _completion(body, "x")
                self._send(200, {k: v for k, v in good.items() if k not in ("choices", "data")})
            elif fault == "drop":
                self.close_connection = True
                self.connection.shutdown(2)
            elif path == "/embeddings":
                self._send(200, _embeddings(body, per_token=server.per_token_embeddings))
            else:
                self._send(200, _completion(body, server.reply(body)))

        def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
            self._raw(status, json.dumps(payload).encode(), "application/json", headers)

        def _leave(self) -> None:
            """No longer in flight (before the reply goes out: a client that gets it can
            send its next request at once, and must not find this one still counted)."""
            if getattr(self, "counted", False):
                self.counted = False
                if server._slots is not None:
                    server._slots.release()
                server._leave()

        def _raw(
            self, status: int, data: bytes, ctype: str, headers: dict[str, str] | None = None
        ) -> None:
            self._leave()
            try:
                self.send_response(status)
                self.send_header("content-type", ctype)
                self.send_header("content-length", str(len(data)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)
            except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
                self.close_connection = True

    return Handler


def _words(value: Any) -> int:
    if isinstance(value, str):
        return len(value.split())
    if isinstance(value, list):
        return sum(_words(v) for v in value)
    if isinstance(value, dict):
        return _words(value.get("content", ""))
    return 0


def _completion(body: dict[str, Any], reply: str | Mapping[str, Any]) -> dict[str, Any]:
    message: dict[str, Any] = {"content": reply} if isinstance(reply, str) else dict(reply)
    prompt_tokens = _words(body.get("messages", []))
    completion_tokens = _words(message.get("content") or "") + _words(
        [c["function"]["arguments"] for c in message.get("tool_calls") or []]
    )
    digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()[:24]
    return {
        "id": f"chatcmpl-{digest}",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": body.get("model", "fake-model"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", **message},
                "finish_reason": "tool_calls" if message.get("tool_calls") else "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def embed_text(text: str, dimensions: int = EMBEDDING_DIMENSIONS) -> list[float]:
    """A deterministic bag-of-words embedding: texts sharing words get a higher cosine."""
    vector = [0.0] * dimensions
    for word in text.lower().split():
        slot = int(hashlib.sha256(word.strip(".,!?;:").encode()).hexdigest(), 16) % dimensions
        vector[slot] += 1.0
    norm = math.sqrt(sum(v * v for v in vector)) or 1.0
    return [v / norm for v in vector]


def _embeddings(body: dict[str, Any], *, per_token: bool = False) -> dict[str, Any]:
    inputs = body.get("input", [])
    texts = [inputs] if isinstance(inputs, str) else list(inputs)

    def vectors(text: str) -> Any:
        return [embed_text(w) for w in text.split()] if per_token else embed_text(text)

    return {
        "object": "list",
        "model": body.get("model", "fake-embedding"),
        "data": [
            {"object": "embedding", "index": i, "embedding": vectors(str(t))}
            for i, t in enumerate(texts)
        ],
        "usage": {"prompt_tokens": _words(texts), "total_tokens": _words(texts)},
    }
