"""One client layer over the official ``openai`` package, for the app under test (the
``llm`` fixture) and for the judge (``judge_client``).

It looks like the OpenAI client (``client.chat.completions.create(...)``,
``client.embeddings.create(...)``, and ``await client.aio.chat.completions.create(...)``)
and adds the response cache, retries with backoff and jitter that honour ``Retry-After``,
a bound on requests in flight per endpoint, and usage, cost and latency written into the
running test's record. Every response is validated before it is returned or cached. After
the last retry a failure raises a subclass of :class:`LLMCallError` (errors.py) named by
its cause: the test is then an error, not a quality failure.

Async calls (``.aio``) run on the caller's event loop with ``openai.AsyncOpenAI``: one per
loop (one connection pool per endpoint and loop), closed when its loop shuts down or at
the run's end. Sync and async share all but the sending and the sleeping, and one
limiter per endpoint and API key (limits.py), shared by the run's clients of it, bounds
the requests in flight across both and paces them by the provider's rate-limit headers;
each client's ``max_concurrency`` caps its own requests in flight within it. The
limiters, the waiting threads of :func:`off_loop`, the judge's threads and the list of
clients a Ctrl-C stops belong to the run (pools.py): a client takes the current run's
unless given ``pools=``. The pools' threads are daemons, so an interrupted run never
waits at exit for their requests.
"""

from __future__ import annotations

import asyncio
import functools
import json
import random
import threading
import time
from collections.abc import Awaitable, Callable, Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

# The module, not its names: context.py imports client.pools, so this may run while it loads.
from .. import context
from ..errors import AuthError, CacheMissError, LLMCallError, LLMEvalError, call_error
from ..records import Record, Step, ToolCall, current_record
from .cache import (
    Entry,
    InvalidResponse,
    ResponseCache,
    cache_key,
    describe,
    keyed_request,
    parse_body,
)
from .limits import Cap, Limiter, Ticket, retry_after
from .pools import DaemonPool, Pools
from .pricing import cost_usd

if TYPE_CHECKING:
    import openai
    from openai.types import CreateEmbeddingResponse
    from openai.types.chat import ChatCompletion

CHAT = "chat.completions"
EMBEDDINGS = "embeddings"
# The most retries of a refused connection in a call (below llmeval_max_retries): most
# likely a server that is down or restarting. Timeouts have their own setting.
CONNECTION_RETRIES = 2
# The default bound on a client's requests in flight (the endpoint's limiter's ceiling is
# the highest of its clients': the adaptive limit's).
MAX_CONCURRENCY = 256


@dataclass(frozen=True)
class ClientConfig:
    """How one role (the app under test, or the judge) reaches its model."""

    role: str = "app"
    model: str | None = None
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    temperature: float | None = None
    max_concurrency: int = MAX_CONCURRENCY
    # Whether the bound on requests in flight adapts between 1 and max_concurrency (AIMD on
    # latency and 429s); if not, it is max_concurrency. Rate-limit headers count either way.
    adaptive: bool = False
    timeout: float = 60.0
    max_retries: int = 4
    # A request that timed out may still run on the server (llama.cpp keeps generating
    # after the client hangs up), and the next attempt queues behind it.
    timeout_retries: int = 1
    retry_base_delay: float = 0.5
    retry_max_delay: float = 30.0
    prices: Mapping[str, tuple[float, float]] = field(default_factory=dict)


@dataclass
class CallStats:
    """Counters of one client, safe to update from many threads."""

    requests: int = 0  # HTTP requests sent, retries included
    cache_hits: int = 0
    cache_misses: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def bump(self, name: str) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + 1)

    def error(self, kind: str) -> None:
        with self._lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1


def classify(exc: BaseException) -> tuple[str, bool, float | None] | None:
    """(class, retryable, Retry-After seconds) of an exception from an API call, or None
    when it is not an API failure at all (a bug, which should surface as itself)."""
    import openai

    if isinstance(exc, InvalidResponse):  # a 200 whose body is not a valid response
        return "bad_response", exc.retryable, None
    if isinstance(exc, openai.APITimeoutError):
        return "timeout", True, None
    if isinstance(exc, openai.APIConnectionError):
        # No connection at all (refused, unknown host) is not the server failing a request.
        return ("connection" if _not_connected(exc) else "server_error"), True, None
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        if status == 429:
            return "rate_limit", True, retry_after(exc.response.headers)
        if status >= 500 or status in (408, 409):
            return "server_error", True, retry_after(exc.response.headers)
        if status in (401, 403):
            return "auth", False, None
        return "bad_request", False, None
    if isinstance(exc, openai.OpenAIError):  # e.g. no API key configured
        return "auth", False, None
    return None


def _not_connected(exc: BaseException) -> bool:
    """Whether the cause is a connection never made (httpx's ConnectError: refused,
    unreachable, unknown host), as opposed to one dropped mid-request."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, ConnectionRefusedError) or type(seen).__name__ == "ConnectError":
            return True
        seen = seen.__cause__ or seen.__context__
    return False


T = TypeVar("T")
GiveUp = Callable[[BaseException], bool]  # whether a failed request is final at once
Sent = tuple[Any, dict[str, Any], float]  # (parsed, response, latency) of a request sent


def interrupt_all() -> None:
    """Stop every client of the current run from sending anything more (a Ctrl-C)."""
    context.current_run().pools.interrupt()


class LLMClient:
    """The synchronous client; ``.aio`` is its asynchronous twin."""

    def __init__(
        self, config: ClientConfig, cache: ResponseCache, *, pools: Pools | None = None
    ) -> None:
        self.config = config
        self.cache = cache
        self.stats = CallStats()
        self.chat = _Chat(self._chat_create)
        self.embeddings = _Embeddings(self._embeddings_create)
        self.aio = AsyncLLMClient(self)
        self._openai: openai.OpenAI | None = None
        self._executor: DaemonPool | None = None
        self._limiter: Limiter | None = None
        self._cap: Cap | None = None  # this client's max_concurrency within the limiter
        self._lock = threading.Lock()
        self._in_flight: dict[str, Future[Sent | None]] = {}
        self._jitter = random.Random()
        # The run's, so that its bound per endpoint holds across all of its clients.
        self.pools = context.current_run().pools if pools is None else pools
        self._interrupted = self.pools.add(self)  # set by a Ctrl-C: send nothing more

    def complete(self, prompt: str | list[dict[str, Any]], **params: Any) -> str:
        """The reply's text for a prompt string or a list of messages."""
        __tracebackhide__ = True
        return self._complete(current_record(), prompt, **params)

    def _complete(
        self, record: Record | None, prompt: str | list[dict[str, Any]], **params: Any
    ) -> str:
        __tracebackhide__ = True
        reply = self._chat(record, messages=_messages(prompt), **params)
        return reply.choices[0].message.content or ""

    def close(self) -> None:
        """Close the sync client and the pool (the async clients are the run's: its
        pools close them)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
        if self._openai is not None:
            self._openai.close()

    # --- the call path ------------------------------------------------------------------
    # The record a call writes into is the caller's, taken when the call is made. Sync
    # and async share everything but the sending and the sleeping: the call's setup,
    # lookup and bookkeeping (_begin, _hit, _lost, _done), the in-flight dedup (_claim,
    # _settle), the retry policy (_Attempts) and what an answer says (_received).

    def _chat_create(self, **params: Any) -> ChatCompletion:
        __tracebackhide__ = True
        return self._chat(current_record(), **params)

    def _embeddings_create(self, **params: Any) -> CreateEmbeddingResponse:
        __tracebackhide__ = True
        return self._embeddings(current_record(), **params)

    def _chat(
        self,
        record: Record | None,
        *,
        llmeval_sample: int = 0,
        llmeval_give_up: GiveUp | None = None,
        **params: Any,
    ) -> ChatCompletion:
        """A chat completion; ``llmeval_give_up(exc)`` says which failures are final at
        once, not retried (the judge's: a server refusing a response format)."""
        __tracebackhide__ = True
        call = self._begin(CHAT, self._chat_params(params), llmeval_sample, record, llmeval_give_up)
        reply: ChatCompletion = self._call(call)
        return reply

    async def _achat(
        self,
        record: Record | None,
        *,
        llmeval_sample: int = 0,
        llmeval_give_up: GiveUp | None = None,
        **params: Any,
    ) -> ChatCompletion:
        __tracebackhide__ = True
        call = self._begin(CHAT, self._chat_params(params), llmeval_sample, record, llmeval_give_up)
        reply: ChatCompletion = await self._acall(call)
        return reply

    def _chat_params(self, params: dict[str, Any]) -> dict[str, Any]:
        if "temperature" not in params and self.config.temperature is not None:
            params["temperature"] = self.config.temperature
        return params

    def _has_cached_chat(self, *, llmeval_sample: int = 0, **params: Any) -> bool:
        """Whether the cache holds the reply of this chat call (which is then free)."""
        self._chat_params(params)
        params.setdefault("model", self.config.model)
        return self.cache.holds(keyed_request(CHAT, params, llmeval_sample))

    def _embeddings(self, record: Record | None, **params: Any) -> CreateEmbeddingResponse:
        __tracebackhide__ = True
        reply: CreateEmbeddingResponse = self._call(self._begin(EMBEDDINGS, params, 0, record))
        return reply

    async def _aembeddings(self, record: Record | None, **params: Any) -> CreateEmbeddingResponse:
        __tracebackhide__ = True
        call = self._begin(EMBEDDINGS, params, 0, record)
        reply: CreateEmbeddingResponse = await self._acall(call)
        return reply

    def _call(self, call: _Call) -> Any:
        """The validated response (from the cache, or sent), written into the record."""
        __tracebackhide__ = True
        try:
            entry = self._lookup(call.request)
            if entry is not None:
                return self._hit(call, entry)
            parsed, response, latency, shared = self._send_once(call)
        except LLMCallError as exc:
            self._lost(call, exc)
            raise
        return self._done(call, parsed, response, latency, shared)

    async def _acall(self, call: _Call) -> Any:
        """:meth:`_call` on the caller's event loop."""
        __tracebackhide__ = True
        try:
            entry = self._lookup(call.request)
            if entry is not None:
                return self._hit(call, entry)
            parsed, response, latency, shared = await self._asend_once(call)
        except LLMCallError as exc:
            self._lost(call, exc)
            raise
        return self._done(call, parsed, response, latency, shared)

    def _begin(
        self,
        endpoint: str,
        params: dict[str, Any],
        sample: int,
        record: Record | None,
        give_up: GiveUp | None = None,
    ) -> _Call:
        """A call about to be made: its model, its cache key, its trajectory step."""
        __tracebackhide__ = True
        params.setdefault("model", self.config.model)
        model = params["model"]
        if not model:
            raise ValueError(
                f"no model for the {self.config.role} client: pass model= or set "
                f"--llmeval-{'judge-' if self.config.role == 'judge' else ''}model"
            )
        request = keyed_request(endpoint, params, sample)
        if record is not None and record.draw and record.draw > 1 and self.config.role == "app":
            # Each draw of a repeated example is an independent request (draw 1 is the
            # one a run without repeats makes): its number is part of the cache key.
            request["draw"] = record.draw
        step: Step | None = None  # the judge's calls are no steps
        if record is not None and self.config.role == "app":  # reserved before paying for it
            step = record.begin_step(
                {"kind": _STEP_KINDS[endpoint], "name": model, "source": "llm"}
            )
        return _Call(endpoint, params, request, model, record, step, give_up)

    def _hit(self, call: _Call, entry: Entry) -> Any:
        self.stats.bump("cache_hits")
        self._note(
            call.record, call.model, entry.response, entry.latency_s, hit=True, step=call.step
        )
        return entry.parsed

    def _lost(self, call: _Call, exc: LLMCallError) -> None:
        if call.record is not None:  # a call made, and lost: counted, costing nothing
            call.record.note_call(
                call.model, prompt_tokens=0, completion_tokens=0, cost_usd=None, cached=False
            )
        if call.step is not None:
            call.step["error"] = exc.kind

    def _done(
        self, call: _Call, parsed: Any, response: dict[str, Any], latency: float, shared: bool
    ) -> Any:
        self.stats.bump("cache_hits" if shared else "cache_misses")
        self._note(call.record, call.model, response, latency, hit=shared, step=call.step)
        return parsed

    def _lookup(self, request: Mapping[str, Any]) -> Entry | None:
        __tracebackhide__ = True
        try:
            return self.cache.get(request)
        except CacheMissError as exc:  # replay mode, which never calls the API
            self.stats.error(exc.kind)
            raise

    def _send_once(self, call: _Call) -> tuple[Any, dict[str, Any], float, bool]:
        """Send the request, or, when the same request is already in flight (a batch
        computes two tests of one example at once), wait for that one's response:
        (parsed, response, latency, shared). With the cache off every call is its own."""
        __tracebackhide__ = True
        if self.cache.mode == "off":
            return (*self._send(call), False)
        while True:
            key, pending, owner = self._claim(call.request)
            if owner:
                break
            got = pending.result()
            if got is not None:
                return (*_shared(got), True)
            # Its owner stopped (cancelled, interrupted) without failing: claim it anew.
        try:
            sent, shared = self._recheck(call.request), True
            if sent is None:
                sent, shared = self._send(call), False
                self.cache.put(call.request, sent[1], sent[2])
        except BaseException as exc:
            self._settle(key, pending, exc=exc)
            raise
        self._settle(key, pending, sent)
        return (*sent, shared)

    async def _asend_once(self, call: _Call) -> tuple[Any, dict[str, Any], float, bool]:
        """:meth:`_send_once` on the caller's event loop; its twin may be sync or async."""
        __tracebackhide__ = True
        if self.cache.mode == "off":
            return (*await self._asend(call), False)
        while True:
            key, pending, owner = self._claim(call.request)
            if owner:
                break
            got = await _from_elsewhere(asyncio.wrap_future(pending))
            if got is not None:
                return (*_shared(got), True)
        try:
            sent, shared = self._recheck(call.request), True
            if sent is None:
                sent, shared = await self._asend(call), False
                self.cache.put(call.request, sent[1], sent[2])
        except BaseException as exc:
            self._settle(key, pending, exc=exc)
            raise
        self._settle(key, pending, sent)
        return (*sent, shared)

    def _claim(self, request: Mapping[str, Any]) -> tuple[str, Future[Sent | None], bool]:
        """(key, the future of its response, whether this call sends it). The future's
        None: its owner stopped without an answer or a failure of its own (a cancelled
        task, a KeyboardInterrupt): the twin claims the request anew."""
        key = cache_key(request)
        with self._lock:
            pending = self._in_flight.get(key)
            if pending is not None:
                return key, pending, False
            pending = self._in_flight[key] = Future()
        # Running: a twin that stops waiting (a cancelled task) cannot cancel it.
        pending.set_running_or_notify_cancel()
        return key, pending, True

    def _recheck(self, request: Mapping[str, Any]) -> Sent | None:
        """A twin may have sent the request and written the cache between this call's
        first look and its claim: look again, or it would be paid for twice (a corrupt
        entry was warned about at the first look: not twice)."""
        __tracebackhide__ = True
        entry = self._lookup(request) if self.cache.holds(request) else None
        return None if entry is None else (entry.parsed, entry.response, entry.latency_s)

    def _settle(
        self,
        key: str,
        pending: Future[Sent | None],
        result: Sent | None = None,
        *,
        exc: BaseException | None = None,
    ) -> None:
        """The twins' answer: the owner's, or its failure. An owner stopped by a
        cancellation or an interrupt hands that to no twin (the twin's own task was not
        cancelled): None tells them to send it themselves."""
        with self._lock:
            del self._in_flight[key]
        if isinstance(exc, Exception):
            pending.set_exception(exc)
        else:
            assert exc is not None or result is not None
            pending.set_result(result)

    def _send(self, call: _Call) -> Sent:
        """(parsed, response, latency) of the request, retried; every HTTP request sent
        is counted in the record."""
        __tracebackhide__ = True
        client = self._client()
        create = _creator(client, call.endpoint)
        limiter, cap = self._limits(str(client.base_url))
        attempts = _Attempts(self, call)
        sent = _sent(call)
        while True:
            attempts.start()
            ticket = limiter.acquire(cap)
            try:
                start = time.perf_counter()
                try:
                    raw = create(**sent)
                    body = raw.http_response.content
                except BaseException as exc:
                    limiter.release(ticket, **_failure(exc))
                    raise
                latency = time.perf_counter() - start
                return self._received(call, limiter, ticket, raw, body, latency)
            except KeyboardInterrupt:
                self.pools.interrupt()
                raise
            except Exception as exc:
                delay = attempts.failed(exc)
                if delay is None:
                    raise
                if self._interrupted.wait(delay):
                    raise KeyboardInterrupt from None

    async def _asend(self, call: _Call) -> Sent:
        """:meth:`_send` with the async client of the caller's event loop."""
        __tracebackhide__ = True
        client = await self._aclient()
        create = _creator(client, call.endpoint)
        limiter, cap = self._limits(str(client.base_url))
        attempts = _Attempts(self, call)
        sent = _sent(call)
        while True:
            attempts.start()
            ticket = await limiter.acquire_async(cap)
            try:
                start = time.perf_counter()
                try:
                    raw = await create(**sent)
                    body = raw.http_response.content
                except BaseException as exc:
                    limiter.release(ticket, **_failure(exc))
                    raise
                latency = time.perf_counter() - start
                return self._received(call, limiter, ticket, raw, body, latency)
            except KeyboardInterrupt:
                self.pools.interrupt()
                raise
            except Exception as exc:
                delay = attempts.failed(exc)
                if delay is None:
                    raise
                await self._asleep(delay)

    async def _asleep(self, delay: float) -> None:
        """Sleep before a retry, as the sync path's wait: cut short by a Ctrl-C."""
        if self._interrupted.is_set():
            raise KeyboardInterrupt from None
        await self.pools.sleep(delay)

    def _received(
        self, call: _Call, limiter: Limiter, ticket: Ticket, raw: Any, body: bytes, latency: float
    ) -> Sent:
        """An answer: its headers and latency go to the limiter, its body is validated
        (InvalidResponse when it is no response: retried as any failure)."""
        __tracebackhide__ = True
        # The app's and the judge's requests to one model differ (prompts, lengths).
        lane = f"{self.config.role} {call.endpoint} {call.model}"
        limiter.release(ticket, latency=latency, headers=raw.http_response.headers, lane=lane)
        response, parsed = parse_body(call.endpoint, body)
        usage = response.get("usage") or {}
        if usage.get("total_tokens"):
            limiter.note_usage(int(usage["total_tokens"]))
        return parsed, response, latency

    def _limits(self, base_url: str) -> tuple[Limiter, Cap]:
        """This client's endpoint's limiter (the run's, shared by its clients of that
        endpoint and key) and this client's cap on its requests in flight there."""
        with self._lock:
            if self._limiter is None or self._cap is None:
                config = self.config
                self._limiter, self._cap = self.pools.slots(
                    base_url,
                    config.api_key,
                    config.max_concurrency,
                    config.adaptive,
                    config.retry_max_delay,
                )
            return self._limiter, self._cap

    def _retry_limit(self, kind: str) -> int:
        """The most retries of one class of failure in a call."""
        if kind == "timeout":
            return self.config.timeout_retries
        return CONNECTION_RETRIES if kind == "connection" else self.config.max_retries

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        """Retry-After when the server gave one, else exponential backoff, full jitter."""
        if retry_after is not None:
            return min(retry_after, self.config.retry_max_delay)
        ceiling = self.config.retry_base_delay * 2 ** (attempt - 1)
        return self._jitter.uniform(0, min(ceiling, self.config.retry_max_delay))

    def _note(
        self,
        record: Record | None,
        model: str,
        response: Mapping[str, Any],
        latency: float,
        *,
        hit: bool,
        step: Step | None = None,
    ) -> None:
        """Write the call into the running test's record. A cached response costs nothing;
        only the app's calls make up the app's model and latency."""
        if record is None:
            return
        usage = {} if hit else (response.get("usage") or {})
        prompt = int(usage.get("prompt_tokens") or 0)
        completion = int(usage.get("completion_tokens") or 0)
        priced_as = str(response.get("model") or model)  # the dated name the server reports
        cost = 0.0 if hit else cost_usd(self.config.prices, priced_as, prompt, completion)
        record.note_call(
            model, prompt_tokens=prompt, completion_tokens=completion, cost_usd=cost, cached=hit
        )
        if self.config.role == "app":
            record.model = record.model or model
            record.latency_s = (record.latency_s or 0.0) + latency
        if step is not None:
            step.update(llm_step(model, response))
            step["prompt_tokens"], step["completion_tokens"] = prompt, completion
            step["cost_usd"], step["latency_s"], step["cached"] = cost, round(latency, 6), hit

    def _client(self) -> openai.OpenAI:
        with self._lock:
            if self._openai is None:
                import openai

                self._openai = _built(openai.OpenAI, self.config)
            return self._openai

    async def _aclient(self) -> openai.AsyncOpenAI:
        """The async client of the running event loop for this client's endpoint and
        key: the run's, shared by its clients (one connection pool per endpoint and
        loop), closed when the loop shuts down or the run ends (pools.py)."""
        config = self.config
        key = ("openai", config.base_url, config.api_key, config.timeout)
        return await self.pools.on_loop(key, self._new_aclient)

    def _new_aclient(self) -> openai.AsyncOpenAI:
        import openai

        return _built(openai.AsyncOpenAI, self.config)

    def _pool(self) -> DaemonPool:
        """The threads the judge's samples run on (judge.py)."""
        with self._lock:
            if self._executor is None:
                self._executor = DaemonPool(
                    max(32, 2 * self.config.max_concurrency), f"llmeval-{self.config.role}"
                )
            return self._executor


@dataclass(eq=False)
class _Call:
    """One call being made: what it asks (its cache key) and where it is written."""

    endpoint: str
    params: dict[str, Any]
    request: dict[str, Any]
    model: str
    record: Record | None
    step: Step | None
    give_up: GiveUp | None


class _Attempts:
    """The retry policy of one call, without I/O: each attempt is counted; each failure
    is final (raised as the call's error, classified) or says how long to wait."""

    def __init__(self, client: LLMClient, call: _Call) -> None:
        self.client = client
        self.call = call
        self.attempt = 0
        self.failures: dict[str, int] = {}

    def start(self) -> None:
        """Before each attempt: nothing more is sent once the run was interrupted."""
        self.attempt += 1
        if self.client._interrupted.is_set():
            raise KeyboardInterrupt
        self.client.stats.bump("requests")
        if self.call.record is not None:
            self.call.record.note_request(self.call.model)

    def failed(self, exc: Exception) -> float | None:
        """The wait before the next attempt; None when ``exc`` is no API failure (a
        bug, to be raised as itself). A final failure raises its LLMCallError."""
        __tracebackhide__ = True
        verdict = classify(exc)
        if verdict is None:
            return None
        kind, retryable, retry_after = verdict
        self.failures[kind] = self.failures.get(kind, 0) + 1
        give_up = self.call.give_up
        if (
            not retryable
            or (give_up is not None and give_up(exc))
            or self.attempt > self.client.config.max_retries
            or self.failures[kind] > self.client._retry_limit(kind)
        ):
            self.client.stats.error(kind)
            # The message says what failed; the openai and httpx frames behind it would
            # only bury the user's line, so the chain is kept as .original.
            name = "" if isinstance(exc, InvalidResponse) else f"{type(exc).__name__}: "
            where = describe(self.call.request)
            error = call_error(kind, f"{name}{exc} ({where})", attempts=self.attempt)
            error.original = exc
            raise error from None
        return self.client._delay(self.attempt, retry_after)


def _messages(prompt: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"role": "user", "content": prompt}] if isinstance(prompt, str) else prompt


def _shared(result: Sent) -> Sent:
    parsed, response, latency = result
    return _copied(parsed), response, latency


def _sent(call: _Call) -> dict[str, Any]:
    """The parameters as sent."""
    sent = dict(call.params)
    if call.endpoint == EMBEDDINGS:  # the API's default; the client would ask for base64
        sent.setdefault("encoding_format", "float")
    return sent


def _creator(client: openai.OpenAI | openai.AsyncOpenAI, endpoint: str) -> Callable[..., Any]:
    """The raw ``create`` of an endpoint: the body as sent, for the openai client builds
    its objects without validating them (a 200 carrying an error would pass for a
    response, and be cached), and the headers, for the limiter."""
    resource = client.chat.completions if endpoint == CHAT else client.embeddings
    create: Callable[..., Any] = resource.with_raw_response.create
    return create


def _failure(exc: BaseException) -> dict[str, Any]:
    """What a failed request tells the limiter: its status and headers, if answered."""
    import openai

    if isinstance(exc, openai.APIStatusError):
        return {"status": exc.status_code, "headers": exc.response.headers}
    return {}


C = TypeVar("C", "openai.OpenAI", "openai.AsyncOpenAI")


def _built(kind: type[C], config: ClientConfig) -> C:
    import openai

    try:
        return kind(
            api_key=config.api_key,
            base_url=config.base_url,
            timeout=config.timeout,
            max_retries=0,
        )
    except openai.OpenAIError as exc:
        raise AuthError(f"{exc} (set OPENAI_API_KEY)") from None


_STEP_KINDS = {CHAT: "llm", EMBEDDINGS: "embedding"}


def llm_step(model: str, response: Mapping[str, Any]) -> Step:
    """The trajectory step of a response: for a chat completion, the reply's text and
    the tool calls the model asked for (their arguments parsed from JSON)."""
    choices = response.get("choices")
    if not choices:  # an embedding
        return {"kind": "embedding", "name": model, "source": "llm"}
    message = choices[0].get("message") or {}
    step: Step = {"kind": "llm", "name": model, "source": "llm"}
    if message.get("content"):
        step["content"] = message["content"]
    calls = message.get("tool_calls")
    if calls:
        step["tool_calls"] = [tool_call(c.get("function") or {}, c.get("id")) for c in calls]
    return step


def tool_call(function: Mapping[str, Any], call_id: str | None) -> ToolCall:
    """A :class:`ToolCall` of an OpenAI ``function`` entry (``arguments`` a JSON text)."""
    arguments = function.get("arguments")
    try:
        args = json.loads(arguments) if isinstance(arguments, str) else arguments
    except ValueError:
        args = arguments  # what the model wrote, kept as text: a call it got wrong
    return {"name": str(function.get("name") or ""), "args": args, "id": call_id}


def _copied(parsed: Any) -> Any:
    """A twin's own copy of a shared response object, which its caller may change."""
    copy = getattr(parsed, "model_copy", None)
    return copy(deep=True) if copy is not None else parsed


class AsyncLLMClient:
    """``await client.aio.chat.completions.create(...)``: the same calls, on the caller's
    event loop with ``openai.AsyncOpenAI``."""

    def __init__(self, sync: LLMClient) -> None:
        self._sync = sync
        self.chat = _Chat(self._chat_create)
        self.embeddings = _Embeddings(self._embeddings_create)

    async def complete(self, prompt: str | list[dict[str, Any]], **params: Any) -> str:
        """The reply's text for a prompt string or a list of messages."""
        __tracebackhide__ = True
        reply = await self._sync._achat(current_record(), messages=_messages(prompt), **params)
        return reply.choices[0].message.content or ""

    async def _chat_create(self, **params: Any) -> ChatCompletion:
        __tracebackhide__ = True
        return await self._sync._achat(current_record(), **params)

    async def _embeddings_create(self, **params: Any) -> CreateEmbeddingResponse:
        __tracebackhide__ = True
        return await self._sync._aembeddings(current_record(), **params)


async def _from_elsewhere(work: Awaitable[T]) -> T:
    """The result of work done in a thread, or by a twin call (another task's or
    thread's). The plugin's own errors are raised as if from here (a hidden frame): the
    frames they carry are the client's and asyncio's, and would bury the caller's line,
    as the sync path's hidden frames do not."""
    __tracebackhide__ = True
    try:
        return await work
    except LLMEvalError as exc:
        raise exc.with_traceback(None) from exc.__cause__


class _Completions:
    def __init__(self, create: Callable[..., Any]) -> None:
        self.create = create


class _Chat:
    def __init__(self, create: Callable[..., Any]) -> None:
        self.completions = _Completions(create)


class _Embeddings:
    def __init__(self, create: Callable[..., Any]) -> None:
        self.create = create


async def off_loop(method: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Await a blocking call, run in one of the run's waiting threads in this task's
    context (its record), so that other tasks' calls proceed meanwhile."""
    __tracebackhide__ = True
    call = functools.partial(method, *args, **kwargs)
    waiting = context.current_run().pools.waiting()
    return await _from_elsewhere(asyncio.get_running_loop().run_in_executor(waiting, call))


def build_client(
    config: ClientConfig, cache_dir: Path, cache_mode: str, pools: Pools | None = None
) -> LLMClient:
    return LLMClient(config, ResponseCache(cache_dir, cache_mode), pools=pools)
