"""The client layer against the local fake server: caching, retries, classification,
bounds, usage and cost. No pytest plugin plumbing here."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_llmeval.client import ERROR_CLASSES, ClientConfig, LLMCallError, LLMClient
from pytest_llmeval.pricing import cost_usd, parse_prices
from pytest_llmeval.records import Record, bind
from pytest_llmeval.testing import FakeOpenAIServer, embed_text

API_KEY = "sk-test-secret-0123456789"


@pytest.fixture
def make_client(fake_openai: FakeOpenAIServer, tmp_path: Path) -> Iterator[Any]:
    clients: list[LLMClient] = []

    def make(mode: str = "use", **config: Any) -> LLMClient:
        from pytest_llmeval.cache import ResponseCache

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


def ask(client: LLMClient, text: str = "hello there", **params: Any) -> str:
    reply = client.chat.completions.create(messages=[{"role": "user", "content": text}], **params)
    return reply.choices[0].message.content or ""


def test_a_call_looks_like_the_openai_client_and_fills_the_record(
    make_client: Any, fake_openai: FakeOpenAIServer, record: Record
) -> None:
    client = make_client(prices=parse_prices("demo-model=1000/2000"))
    reply = client.chat.completions.create(messages=[{"role": "user", "content": "hi you"}])
    assert reply.choices[0].message.content == "echo: hi you"
    assert reply.usage is not None and reply.usage.prompt_tokens == 2
    assert record.tokens == {"prompt": 2, "completion": 3}
    assert record.cost_usd == pytest.approx((2 * 1000 + 3 * 2000) / 1e6)
    assert record.model == "demo-model" and record.llm_calls == 1 and record.cache_hits == 0
    assert record.latency_s is not None and record.latency_s > 0
    assert fake_openai.bodies[0]["model"] == "demo-model"


def test_second_identical_call_is_a_free_cache_hit(
    make_client: Any, fake_openai: FakeOpenAIServer, record: Record
) -> None:
    client = make_client(prices=parse_prices("demo-model=1000/2000"))
    assert ask(client) == ask(client) == "echo: hello there"
    assert fake_openai.total_requests == 1
    assert (record.llm_calls, record.cache_hits) == (2, 1)
    assert record.tokens == {"prompt": 2, "completion": 3}  # counted once: the hit is free
    assert client.stats.cache_hits == 1 and client.stats.cache_misses == 1
    ask(client, llmeval_sample=1)  # another sample of the same request is its own entry
    assert fake_openai.total_requests == 2


def test_modes_off_and_refresh_call_the_server(
    make_client: Any, fake_openai: FakeOpenAIServer
) -> None:
    ask(make_client("use"))
    ask(make_client("off"))
    ask(make_client("refresh"))
    assert fake_openai.total_requests == 3


def test_replay_miss_is_a_classified_error_without_a_request(
    make_client: Any, fake_openai: FakeOpenAIServer
) -> None:
    with pytest.raises(LLMCallError) as info:
        ask(make_client("replay"))
    assert info.value.kind == "cache_miss" and "cache mode 'replay'" in str(info.value)
    assert fake_openai.total_requests == 0


def test_api_key_and_headers_never_reach_the_cache(make_client: Any, tmp_path: Path) -> None:
    ask(make_client(), extra_headers={"Authorization": f"Bearer {API_KEY}", "X-Key": API_KEY})
    stored = "".join(p.read_text() for p in (tmp_path / "cache").rglob("*.json"))
    assert "echo: hello there" in stored
    assert API_KEY not in stored and "Authorization" not in stored


@pytest.mark.parametrize("fault", ["429", "500", "503", "timeout", "malformed", "drop"])
def test_transient_faults_are_retried(
    make_client: Any, fake_openai: FakeOpenAIServer, fault: str
) -> None:
    fake_openai.hang = 0.5
    fake_openai.fault_sequence = [fault, fault]
    client = make_client(max_retries=2, timeout=0.2)
    assert ask(client) == "echo: hello there"
    assert client.stats.requests == 3 and fake_openai.injected[fault] == 2


@pytest.mark.parametrize(
    ("fault", "kind"),
    [
        ("429", "rate_limit"),
        ("500", "server_error"),
        ("503", "server_error"),
        ("timeout", "timeout"),
        ("malformed", "server_error"),
        ("drop", "server_error"),
        ("401", "auth"),
        ("400", "bad_request"),
    ],
)
def test_failures_after_retries_are_classified(
    make_client: Any, fake_openai: FakeOpenAIServer, fault: str, kind: str
) -> None:
    fake_openai.hang = 0.5
    fake_openai.faults = {fault: 1.0}
    client = make_client(max_retries=2, timeout=0.2)
    with pytest.raises(LLMCallError) as info:
        ask(client)
    assert info.value.kind == kind and kind in ERROR_CLASSES
    retried = kind not in ("auth", "bad_request")
    assert info.value.attempts == (3 if retried else 1)
    assert client.stats.errors == {kind: 1}


def test_retry_after_is_honoured(make_client: Any, fake_openai: FakeOpenAIServer) -> None:
    fake_openai.retry_after = 0.3
    fake_openai.fault_sequence = ["429"]
    client = make_client(max_retries=3, retry_base_delay=0.0)
    start = time.perf_counter()
    ask(client)
    assert fake_openai.injected["429"] == 1
    assert time.perf_counter() - start >= 0.3


def test_missing_api_key_is_an_auth_error(
    make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    with pytest.raises(LLMCallError, match="set OPENAI_API_KEY") as info:
        ask(make_client(api_key=None))
    assert info.value.kind == "auth"


def test_missing_model_is_a_usage_error(make_client: Any) -> None:
    with pytest.raises(ValueError, match="--llmeval-model"):
        ask(make_client(model=None))


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
    assert 0.55 < elapsed < 1.5  # three waves of 0.2 s, not twelve
    assert record.llm_calls == 12  # the caller's record, filled from the pool's threads


def test_async_and_sync_share_the_cache(make_client: Any, fake_openai: FakeOpenAIServer) -> None:
    client = make_client()
    reply = asyncio.run(
        client.aio.chat.completions.create(messages=[{"role": "user", "content": "hello there"}])
    )
    assert reply.choices[0].message.content == ask(client)
    assert fake_openai.total_requests == 1


def test_embeddings_are_cached_and_similar_texts_are_closer(
    make_client: Any, fake_openai: FakeOpenAIServer
) -> None:
    client = make_client()
    first = client.embeddings.create(input=["the refund window is 30 days"]).data[0].embedding
    again = client.embeddings.create(input=["the refund window is 30 days"]).data[0].embedding
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
