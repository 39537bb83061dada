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

Rate limits, as OpenAI's: ``FakeOpenAIServer(rpm=600, tpm=40_000)`` admits requests (and
tokens) through a token bucket per limit, refilling continuously at limit/60 a second and
holding ``burst`` seconds' worth (at least one request). A request the buckets cannot pay
for is answered 429 at once with ``retry-after``/``retry-after-ms`` and OpenAI's
``x-ratelimit-*`` headers; admitted requests carry the ``x-ratelimit-*`` headers too.
``server.rate_limited`` counts the 429s the limits answered.
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
from dataclasses import dataclass
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
ROUTES = ("/chat/completions", "/embeddings")

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


def duration(seconds: float) -> str:
    """A duration as OpenAI's rate-limit headers write it (Go's format, to the
    millisecond, rounded up): "0s", "20ms", "1s", "1.5s", "6m0s", "1h2m3.5s"."""
    millis = math.ceil(round(seconds * 1000, 6)) if seconds > 0 else 0
    if millis < 1000:
        return f"{millis}ms" if millis else "0s"
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    text = f"{rest // 1000}.{rest % 1000:03d}".rstrip("0").rstrip(".") + "s"
    if hours or minutes:
        text = f"{minutes}m{text}"
    return f"{hours}h{text}" if hours else text


@dataclass
class TokenBucket:
    """``per_minute`` units a minute: holds at most ``capacity`` units and refills
    continuously at per_minute/60 a second. Times are the caller's (time.monotonic())."""

    per_minute: float
    capacity: float
    level: float
    at: float  # when ``level`` was last brought up to date

    @staticmethod
    def holding(per_minute: float, burst: float) -> float:
        """The capacity of ``burst`` seconds of the limit (at least one unit)."""
        return max(1.0, per_minute * burst / 60)

    @classmethod
    def full(cls, per_minute: float, burst: float, now: float) -> TokenBucket:
        capacity = cls.holding(per_minute, burst)
        return cls(per_minute, capacity, capacity, now)

    @property
    def rate(self) -> float:
        return self.per_minute / 60

    def refill(self, now: float) -> None:
        self.level = min(self.capacity, self.level + (now - self.at) * self.rate)
        self.at = max(self.at, now)

    def wait(self, cost: float) -> float:
        """Seconds until ``cost`` units are in the bucket (0: now). A cost beyond the
        capacity is due when the bucket is full, and leaves it in debt (a negative level
        that later requests wait out), so the rate holds on average."""
        missing = min(cost, self.capacity) - self.level
        return max(0.0, missing / self.rate)

    def charge(self, cost: float) -> None:
        self.level -= cost

    def remaining(self) -> int:
        return max(0, math.floor(self.level + 1e-9))

    def reset(self) -> float:
        """Seconds until the bucket is full again."""
        return max(0.0, (self.capacity - self.level) / self.rate)


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
        rpm: float | None = None,
        tpm: float | None = None,
        burst: float = 1.0,
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
        # Rate limits (None: none), per minute; the buckets hold ``burst`` seconds' worth.
        # Tokens are charged on arrival: the prompt's words (as usage counts them) plus
        # the max_tokens (or max_completion_tokens) asked for, as OpenAI's limiter does.
        self.rpm = rpm
        self.tpm = tpm
        self.burst = burst
        self._buckets: dict[str, TokenBucket] = {}
        self.rate_limited = 0  # requests answered 429 by the limits (not injected faults)
        self.admitted = 0  # requests the limits let through (all of them without limits)
        self.first_arrival: float | None = None  # time.monotonic() of the first request
        self.last_admitted: float | None = None  # ... and of the last one admitted
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
            self.rate_limited = self.admitted = 0
            self.first_arrival = self.last_admitted = None

    def admitted_per_second(self) -> float:
        """Requests admitted per second from the first request's arrival to the last
        admission (0 before two admissions)."""
        with self._lock:
            if self.first_arrival is None or self.last_admitted is None:
                return 0.0
            span = self.last_admitted - self.first_arrival
            return self.admitted / span if span > 0 else 0.0

    def _admit(self, body: dict[str, Any]) -> tuple[dict[str, Any] | None, dict[str, str]]:
        """Charge a request to the limits: (None, headers) when admitted, else (OpenAI's
        error object, headers with the wait). Every bucket is charged, or none."""
        costs = {"requests": 1.0, "tokens": float(_token_cost(body))}
        now = time.monotonic()
        with self._lock:
            if self.first_arrival is None:
                self.first_arrival = now
            buckets = self._current_buckets(now)
            waits = {name: bucket.wait(costs[name]) for name, bucket in buckets.items()}
            short = max(waits, key=waits.__getitem__, default=None)
            if short is None or waits[short] == 0:
                for name, bucket in buckets.items():  # may leave a debt: see wait()
                    bucket.charge(costs[name])
                self.admitted += 1
                self.last_admitted = now
            else:
                self.rate_limited += 1
            headers: dict[str, str] = {}
            for name, bucket in buckets.items():
                headers[f"x-ratelimit-limit-{name}"] = _number(bucket.per_minute)
                headers[f"x-ratelimit-remaining-{name}"] = str(bucket.remaining())
                headers[f"x-ratelimit-reset-{name}"] = duration(bucket.reset())
        if short is None or waits[short] == 0:
            return None, headers
        millis = math.ceil(waits[short] * 1000)
        headers["retry-after"] = str(math.ceil(millis / 1000))  # whole seconds, as OpenAI
        headers["retry-after-ms"] = str(millis)
        unit = "RPM" if short == "requests" else "TPM"
        message = (
            f"Rate limit reached on {short} per min ({unit}): Limit "
            f"{_number(buckets[short].per_minute)}, Requested {_number(costs[short])}. "
            f"Please try again in {duration(waits[short])}."
        )
        return {"message": message, "type": short, "code": "rate_limit_exceeded"}, headers

    def _current_buckets(self, now: float) -> dict[str, TokenBucket]:
        """The buckets of the limits set now (a changed limit starts a full bucket)."""
        for name, per_minute in (("requests", self.rpm), ("tokens", self.tpm)):
            bucket = self._buckets.get(name)
            if per_minute is None:
                self._buckets.pop(name, None)
            elif bucket is None or (bucket.per_minute, bucket.capacity) != (
                per_minute,
                TokenBucket.holding(per_minute, self.burst),
            ):
                self._buckets[name] = TokenBucket.full(per_minute, self.burst, now)
            else:
                bucket.refill(now)
        return dict(self._buckets)

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
            self.limit_headers: dict[str, str] = {}  # this request's x-ratelimit-*
            length = int(self.headers.get("content-length", 0))
            try:
                body = json.loads(self.rfile.read(length) or b"{}")
            except json.JSONDecodeError:
                self._send(400, {"error": {"message": "body is not JSON", "type": "bad_request"}})
                return
            path = self.path.rstrip("/").removeprefix("/v1")
            server._enter(path, body, dict(self.headers))
            self.counted = True
            if path in ROUTES:
                refused, self.limit_headers = server._admit(body)
                if refused is not None:  # at once: a refusal waits for no slot
                    self._send(429, {"error": refused})
                    return
            if server._slots is not None:
                server._slots.acquire()
                self.slot = True
            try:
                self._serve(path, body)
            finally:
                self._leave()

        def _serve(self, path: str, body: dict[str, Any]) -> None:
            if path not in ROUTES:
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
                if getattr(self, "slot", False) and server._slots is not None:
                    self.slot = False  # (a refused request never took one)
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
                for name, value in {**self.limit_headers, **(headers or {})}.items():
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


def _number(value: float) -> str:
    return str(int(value)) if value == int(value) else str(value)


def _token_cost(body: dict[str, Any]) -> int:
    """What a request costs against a tokens limit, charged on arrival as OpenAI's limiter
    does: its prompt (counted as usage counts it) plus the completion it may ask for."""
    if "input" in body:  # embeddings
        inputs = body["input"]
        return _words([inputs] if isinstance(inputs, str) else list(inputs))
    most = body.get("max_completion_tokens") or body.get("max_tokens") or 0
    return _words(body.get("messages", [])) + (most if isinstance(most, int) else 0)


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
