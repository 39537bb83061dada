"""The client layer against the local fake server: caching, retries, classification,
bounds, usage and cost. No pytest plugin plumbing here."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

import pytest_llmeval
from pytest_llmeval.client import ERROR_CLASSES, ClientConfig, LLMCallError, LLMClient
from pytest_llmeval.client.cache import Entry, ResponseCache
from pytest_llmeval.client.pricing import cost_usd, parse_prices
from pytest_llmeval.errors import CacheCorruptWarning
from pytest_llmeval.records import Record, bind
from pytest_llmeval.testing import FakeOpenAIServer, embed_text

API_KEY = "sk-test-secret-0123456789"


@pytest.fixture
def make_client(fake_openai: FakeOpenAIServer, tmp_path: Path) -> Iterator[Any]:
    clients: list[LLMClient] = []

    def make(mode: str = "use", **config: Any) -> LLMClient:
        from pytest_llmeval.client.cache import ResponseCache

        options: dict[str, Any] = dict(
            model="demo-model",
            base_url=fake_openai.base_url,
            api_key=API_KEY,
            retry_base_delay=0.001,
            timeout=5.0,
        )
        options.update(config)
        client = LLMClient(ClientConfig(**options), ResponseCache(tmp_path / "cache", mode))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def record() -> Iterator[Record]:
    current = Record(example_id="x", partition="golden")
    previous = bind(current)
    yield current
    bind(previous)


class Api:
    """The client's calls made one way: sync, or async (each call in a loop of its own,
    as pytest-asyncio's are per test)."""

    def __init__(self, via: str) -> None:
        self.via = via

    def create(self, client: LLMClient, **params: Any) -> Any:
        if self.via == "sync":
            return client.chat.completions.create(**params)
        return asyncio.run(client.aio.chat.completions.create(**params))

    def embed(self, client: LLMClient, **params: Any) -> Any:
        if self.via == "sync":
            return client.embeddings.create(**params)
        return asyncio.run(client.aio.embeddings.create(**params))

    def ask(self, client: LLMClient, text: str = "hello there", **params: Any) -> str:
        reply = self.create(client, messages=[{"role": "user", "content": text}], **params)
        return reply.choices[0].message.content or ""


@pytest.fixture(params=["sync", "async"])
def api(request: pytest.FixtureRequest) -> Api:
    """Each test of the call path runs against both: they must behave the same."""
    return Api(request.param)


def ask(client: LLMClient, text: str = "hello there", **params: Any) -> str:
    return Api("sync").ask(client, text, **params)


def test_a_call_looks_like_the_openai_client_and_fills_the_record(
    make_client: Any, fake_openai: FakeOpenAIServer, record: Record, api: Api
) -> None:
    client = make_client(prices=parse_prices("demo-model=1000/2000"))
    reply = api.create(client, messages=[{"role": "user", "content": "hi you"}])
    assert reply.choices[0].message.content == "echo: hi you"
    assert reply.usage is not None and reply.usage.prompt_tokens == 2
    assert record.tokens == {"prompt": 2, "completion": 3}
    assert record.cost_usd == pytest.approx((2 * 1000 + 3 * 2000) / 1e6)
    assert record.model == "demo-model" and record.llm_calls == 1 and record.cache_hits == 0
    assert record.latency_s is not None and record.latency_s > 0
    assert fake_openai.bodies[0]["model"] == "demo-model"


def test_second_identical_call_is_a_free_cache_hit(
    make_client: Any, fake_openai: FakeOpenAIServer, record: Record, api: Api
) -> None:
    client = make_client(prices=parse_prices("demo-model=1000/2000"))
    assert api.ask(client) == api.ask(client) == "echo: hello there"
    assert fake_openai.total_requests == 1
    assert (record.llm_calls, record.cache_hits) == (2, 1)
    assert record.tokens == {"prompt": 2, "completion": 3}  # counted once: the hit is free
    assert client.stats.cache_hits == 1 and client.stats.cache_misses == 1
    api.ask(client, llmeval_sample=1)  # another sample of the same request is its own entry
    assert fake_openai.total_requests == 2


def test_modes_off_and_refresh_call_the_server(
    make_client: Any, fake_openai: FakeOpenAIServer, api: Api
) -> None:
    api.ask(make_client("use"))
    api.ask(make_client("off"))
    api.ask(make_client("refresh"))
    assert fake_openai.total_requests == 3


def test_replay_miss_is_a_classified_error_without_a_request(
    make_client: Any, fake_openai: FakeOpenAIServer, api: Api
) -> None:
    with pytest.raises(LLMCallError) as info:
        api.ask(make_client("replay"))
    assert info.value.kind == "cache_miss" and "cache mode 'replay'" in str(info.value)
    assert fake_openai.total_requests == 0


def test_api_key_and_headers_never_reach_the_cache(
    make_client: Any, tmp_path: Path, api: Api
) -> None:
    api.ask(make_client(), extra_headers={"Authorization": f"Bearer {API_KEY}", "X-Key": API_KEY})
    stored = "".join(p.read_text() for p in (tmp_path / "cache").rglob("*.json"))
    assert "echo: hello there" in stored
    assert API_KEY not in stored and "Authorization" not in stored


@pytest.mark.parametrize("fault", ["429", "500", "503", "malformed", "error200", "invalid", "drop"])
def test_transient_faults_are_retried(
    make_client: Any, fake_openai: FakeOpenAIServer, fault: str, tmp_path: Path, api: Api
) -> None:
    fake_openai.fault_sequence = [fault, fault]
    client = make_client(max_retries=2, timeout=0.2)
    assert api.ask(client) == "echo: hello there"
    assert client.stats.requests == 3 and fake_openai.injected[fault] == 2
    # Only the good reply was written: a replay reads it back.
    assert len(list((tmp_path / "cache").rglob("*.json"))) == 1
    assert api.ask(make_client("replay")) == "echo: hello there"


@pytest.mark.parametrize(
    ("fault", "kind", "attempts"),
    [
        ("429", "rate_limit", 3),
        ("500", "server_error", 3),
        ("503", "server_error", 3),
        ("timeout", "timeout", 2),  # a timeout is retried once, whatever max_retries says
        ("malformed", "bad_response", 3),
        ("error200", "bad_response", 3),
        ("invalid", "bad_response", 3),
        ("drop", "server_error", 3),
        ("401", "auth", 1),
        ("400", "bad_request", 1),
    ],
)
def test_failures_after_retries_are_classified(
    make_client: Any, fake_openai: FakeOpenAIServer, fault: str, kind: str, attempts: int, api: Api
) -> None:
    fake_openai.hang = 0.5
    fake_openai.faults = {fault: 1.0}
    client = make_client(max_retries=2, timeout=0.2)
    with pytest.raises(LLMCallError) as info:
        api.ask(client)
    assert info.value.kind == kind and kind in ERROR_CLASSES
    # One exception class per cause, as openai and httpx have: catchable alone.
    by_kind = {"rate_limit": "RateLimitError", "server_error": "ServerError",
               "timeout": "CallTimeoutError", "bad_response": "BadResponseError",
               "auth": "AuthError", "bad_request": "BadRequestError"}  # fmt: skip
    assert type(info.value).__name__ == by_kind[kind]
    assert type(info.value) is getattr(pytest_llmeval, by_kind[kind])
    assert info.value.attempts == attempts == fake_openai.total_requests
    assert client.stats.errors == {kind: 1}


@pytest.mark.parametrize("fault", ["error200", "invalid"])
def test_a_200_that_is_not_a_completion_is_never_cached(
    make_client: Any, fake_openai: FakeOpenAIServer, tmp_path: Path, fault: str, api: Api
) -> None:
    fake_openai.faults = {fault: 1.0}
    with pytest.raises(LLMCallError) as info:
        api.ask(make_client(max_retries=0))
    assert info.value.kind == "bad_response"
    if fault == "error200":
        assert "answered 200 with an error instead of a ChatCompletion: model overloaded" in str(
            info.value
        )
    else:
        assert "not a valid ChatCompletion" in str(info.value) and "choices" in str(info.value)
    assert not list((tmp_path / "cache").rglob("*.json"))
    fake_openai.faults = {}  # the next run asks again, and gets the completion
    assert api.ask(make_client(max_retries=0)) == "echo: hello there"
    assert fake_openai.total_requests == 2


def test_a_timeout_is_retried_once_not_max_retries_times(
    make_client: Any, fake_openai: FakeOpenAIServer, api: Api
) -> None:
    """A request that timed out may still run on a local server: asking four more times
    queues behind it. One retry, then the call fails."""
    fake_openai.hang = 2.0
    fake_openai.faults = {"timeout": 1.0}
    client = make_client(max_retries=4, timeout=0.2)
    start = time.perf_counter()
    with pytest.raises(LLMCallError, match="timeout after 2 attempts"):
        api.ask(client)
    assert time.perf_counter() - start < 1.0
    assert fake_openai.total_requests == 2
    fake_openai.faults = {}
    fake_openai.fault_sequence = ["timeout"]  # one timeout, then an answer
    assert api.ask(client, "again") == "echo: again"


def test_a_refused_connection_is_its_own_class_retried_twice(make_client: Any, api: Api) -> None:
    with socket.socket() as probe:  # a port with nothing listening on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = make_client(base_url=f"http://127.0.0.1:{port}/v1", max_retries=4)
    with pytest.raises(LLMCallError) as info:
        api.ask(client)
    assert info.value.kind == "connection" and "connection" in ERROR_CLASSES
    # openai's, from httpx's, from the socket's (the async transport wraps it once more)
    chain: list[BaseException] = []
    seen: BaseException | None = info.value.original
    while seen is not None and len(chain) < 10:
        chain.append(seen)
        seen = seen.__cause__ or seen.__context__
    assert info.value.attempts == 3
    assert any(isinstance(e, ConnectionRefusedError) for e in chain), chain
    assert client.stats.errors == {"connection": 1}


def test_per_token_embeddings_are_a_classified_error_that_says_what_to_do(
    make_client: Any, fake_openai: FakeOpenAIServer, tmp_path: Path, record: Record, api: Api
) -> None:
    """llama.cpp's server returns one vector per token for a model without pooling: not
    a pydantic ValidationError (a quality failure), not retried, not cached."""
    fake_openai.per_token_embeddings = True
    client = make_client(max_retries=4)
    with pytest.raises(LLMCallError) as info:
        api.embed(client, input=["the refund window", "is 30 days"])
    message = str(info.value)
    assert info.value.kind == "bad_response" and info.value.attempts == 1
    assert "one vector per token (3 vectors of 64 for input 0)" in message
    assert "--pooling mean" in message and "embedding model" in message
    assert fake_openai.total_requests == 1 and not list((tmp_path / "cache").rglob("*.json"))
    assert (record.llm_calls, record.requests) == (1, 1)


def test_every_request_sent_is_counted_in_the_record_failed_ones_too(
    make_client: Any, fake_openai: FakeOpenAIServer, record: Record, api: Api
) -> None:
    client = make_client(max_retries=2)
    fake_openai.fault_sequence = ["500", "500"]
    api.ask(client)  # two failures, then the answer
    fake_openai.fault_sequence = ["500", "500", "500"]
    with pytest.raises(LLMCallError):
        api.ask(client, "lost")
    api.ask(client)  # a cache hit: no request
    assert record.requests == fake_openai.total_requests == 6
    assert (record.llm_calls, record.cache_hits) == (3, 1)
    assert record.usage["demo-model"]["requests"] == 6
    assert record.usage["demo-model"]["calls"] == 3


def test_a_corrupt_entry_is_refetched_with_a_warning_and_rewritten(
    make_client: Any, fake_openai: FakeOpenAIServer, tmp_path: Path, api: Api
) -> None:
    api.ask(make_client())
    (entry,) = (tmp_path / "cache").rglob("*.json")
    document = json.loads(entry.read_text())
    del document["response"]["choices"]
    entry.write_text(json.dumps(document))
    with pytest.raises(LLMCallError) as info:  # replay: corrupt, not missing
        api.ask(make_client("replay"))
    assert info.value.kind == "cache_corrupt" and f"corrupt entry {entry}" in str(info.value)
    assert "no recorded response" not in str(info.value)
    with pytest.warns(CacheCorruptWarning, match=f"corrupt entry, refetched: {entry}"):
        assert api.ask(make_client()) == "echo: hello there"
    assert fake_openai.total_requests == 2
    assert "choices" in json.loads(entry.read_text())["response"]  # rewritten whole
    assert api.ask(make_client("replay")) == "echo: hello there"


class FirstLookWaits(ResponseCache):
    """A cache whose first lookup misses and then waits until released: a twin sends the
    request and writes the response in between."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, "use")
        self.looking = threading.Event()
        self.release = threading.Event()
        self.looks = 0
        self._lock = threading.Lock()

    def get(self, request: Mapping[str, Any]) -> Entry | None:
        entry = super().get(request)
        with self._lock:
            self.looks += 1
            first = self.looks == 1
        if first:
            self.looking.set()
            assert self.release.wait(10)
        return entry


def test_a_twin_that_looked_before_the_cache_was_written_does_not_send_again(
    fake_openai: FakeOpenAIServer, tmp_path: Path, api: Api
) -> None:
    """The race behind 'assert 10 == 9' in the batched tests: call A misses the cache;
    its twin B sends, writes the cache and leaves the in-flight slot; then A claims the
    slot. A looks again after claiming, and takes B's response."""
    config = ClientConfig(model="demo-model", base_url=fake_openai.base_url, api_key=API_KEY)
    client = LLMClient(config, FirstLookWaits(tmp_path))
    replies: list[str] = []
    first = threading.Thread(target=lambda: replies.append(api.ask(client)))
    first.start()
    try:
        assert client.cache.looking.wait(10)  # type: ignore[attr-defined]
        replies.append(api.ask(client))  # the twin: sent, cached, done
    finally:
        client.cache.release.set()  # type: ignore[attr-defined]
        first.join(10)
    client.close()
    assert replies == ["echo: hello there"] * 2
    assert fake_openai.total_requests == 1
    assert (client.stats.cache_misses, client.stats.cache_hits) == (1, 1)


def test_retry_after_is_honoured(make_client: Any, fake_openai: FakeOpenAIServer, api: Api) -> None:
    fake_openai.retry_after = 0.3
    fake_openai.fault_sequence = ["429"]
    client = make_client(max_retries=3, retry_base_delay=0.0)
    start = time.perf_counter()
    api.ask(client)
    assert fake_openai.injected["429"] == 1
    assert time.perf_counter() - start >= 0.3


def test_missing_api_key_is_an_auth_error(
    make_client: Any, monkeypatch: pytest.MonkeyPatch, api: Api
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(LLMCallError, match="set OPENAI_API_KEY") as info:
        api.ask(make_client(api_key=None))
    assert info.value.kind == "auth"


def test_missing_model_is_a_usage_error(make_client: Any, api: Api) -> None:
    with pytest.raises(ValueError, match="--llmeval-model"):
        api.ask(make_client(model=None))


def test_async_calls_run_concurrently_within_the_bound(
    make_client: Any, fake_openai: FakeOpenAIServer, record: Record
) -> None:
    fake_openai.latency = 0.2
    client = make_client(max_concurrency=4, mode="off")

    async def many() -> list[str]:
        calls = [client.aio.complete(f"question {i}") for i in range(12)]
        return list(await asyncio.gather(*calls))

    start = time.perf_counter()
    replies = asyncio.run(many())
    elapsed = time.perf_counter() - start
    assert replies == [f"echo: question {i}" for i in range(12)]
    assert fake_openai.peak_in_flight == 4  # the bound holds, and is used
    # Three waves of 0.2 s, not twelve (2.4 s): wide, for a loaded two-core machine.
    assert 0.55 < elapsed < 2.0
    assert record.llm_calls == 12  # the caller's record, filled from the pool's threads


def test_async_and_sync_share_the_cache(make_client: Any, fake_openai: FakeOpenAIServer) -> None:
    client = make_client()
    reply = asyncio.run(
        client.aio.chat.completions.create(messages=[{"role": "user", "content": "hello there"}])
    )
    assert reply.choices[0].message.content == ask(client)
    assert fake_openai.total_requests == 1


def test_embeddings_are_cached_and_similar_texts_are_closer(
    make_client: Any, fake_openai: FakeOpenAIServer, api: Api
) -> None:
    client = make_client()
    first = api.embed(client, input=["the refund window is 30 days"]).data[0].embedding
    again = api.embed(client, input=["the refund window is 30 days"]).data[0].embedding
    assert first == again and fake_openai.total_requests == 1

    def cosine(a: list[float], b: list[float]) -> float:
        return sum(x * y for x, y in zip(a, b, strict=True))

    close = embed_text("refunds within 30 days of the window")
    far = embed_text("reset two factor authentication on a new phone")
    assert cosine(first, close) > cosine(first, far)


def test_prices_parse_and_match_dated_models() -> None:
    prices = parse_prices("gpt-4o-mini=0.15/0.60, gpt-4o=2.5/10")
    assert cost_usd(prices, "gpt-4o-mini-2024-07-18", 1_000_000, 0) == pytest.approx(0.15)
    assert cost_usd(prices, "gpt-4o", 0, 1_000_000) == pytest.approx(10)
    assert cost_usd(prices, "llama3:8b", 10, 10) is None
    with pytest.raises(ValueError, match="model=input/output"):
        parse_prices("gpt-4o:2.5/10")


def test_the_pool_runs_work_concurrently_on_daemon_threads(make_client: Any) -> None:
    """Daemon threads: an interrupted run does not wait at exit for their requests (see
    test_client_interrupt.py)."""
    pool = make_client()._pool()
    start = time.perf_counter()
    futures = [pool.submit(time.sleep, 0.3) for _ in range(6)]
    assert [f.result(timeout=5) for f in futures] == [None] * 6
    assert time.perf_counter() - start < 1.2  # at once, not one after the other
    workers = pool._workers
    assert len(workers) == 6 and all(t.daemon and t.name.startswith("llmeval-app") for t in workers)
    assert pool.submit(lambda: 1 / 0).exception(timeout=5).__class__ is ZeroDivisionError
    pool.shutdown(wait=True)
    with pytest.raises(RuntimeError, match="after shutdown"):
        pool.submit(time.sleep, 0)
