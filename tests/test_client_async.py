"""The native async client: openai.AsyncOpenAI on the caller's event loop, one per loop,
closed with it; an identical request in flight is shared between sync and async callers."""

from __future__ import annotations

import asyncio
import gc
import threading
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from pytest_llmeval.client import ClientConfig, LLMClient, Pools
from pytest_llmeval.client.cache import ResponseCache
from pytest_llmeval.records import Record, bind
from pytest_llmeval.testing import FakeOpenAIServer


@pytest.fixture
def client(fake_openai: FakeOpenAIServer, tmp_path: Path) -> Iterator[LLMClient]:
    config = ClientConfig(model="m", base_url=fake_openai.base_url, api_key="k", timeout=5.0)
    made = LLMClient(config, ResponseCache(tmp_path, "use"), pools=Pools())
    yield made
    made.close()


def loop_client(client: LLMClient) -> Any:
    """The async openai client ``client`` uses on the running loop."""
    (made,) = client.pools._on_loop[asyncio.get_running_loop()].values()
    return made


def threads_but_the_servers() -> set[threading.Thread]:
    """The live threads but the test server's: it handles each connection in a thread of
    its own, which ends a moment after the client closed the connection."""
    return {t for t in threading.enumerate() if "process_request_thread" not in t.name}


def test_async_calls_use_the_loops_own_async_client_not_threads(
    client: LLMClient, fake_openai: FakeOpenAIServer
) -> None:
    async def calls() -> tuple[Any, Any]:
        await asyncio.gather(*(client.aio.complete(f"q{i}") for i in range(5)))
        first = loop_client(client)
        await client.aio.complete("one more")
        return first, loop_client(client)

    threads = threads_but_the_servers()
    first, again = asyncio.run(calls())
    assert first is again  # one client (one connection pool) for the loop
    assert client._executor is None and client._openai is None  # no thread pool, no sync client
    assert threads_but_the_servers() == threads
    assert first.is_closed() and client.pools._on_loop == {}  # closed with its loop
    second = asyncio.run(
        client.aio.chat.completions.create(messages=[{"role": "user", "content": "x"}])
    )
    assert second.choices[0].message.content == "echo: x"
    assert fake_openai.total_requests == 7


def test_the_clients_of_a_run_share_one_connection_pool_per_endpoint_and_loop(
    client: LLMClient, fake_openai: FakeOpenAIServer, tmp_path: Path
) -> None:
    config = ClientConfig(
        role="judge", model="j", base_url=fake_openai.base_url, api_key="k", timeout=5.0
    )
    judge = LLMClient(config, ResponseCache(tmp_path, "use"), pools=client.pools)
    other = ClientConfig(model="m", base_url=fake_openai.base_url, api_key="other", timeout=5.0)
    keyed = LLMClient(other, ResponseCache(tmp_path, "off"), pools=client.pools)

    async def calls() -> int:
        await asyncio.gather(client.aio.complete("a"), judge.aio.complete("b"))
        shared = len(client.pools._on_loop[asyncio.get_running_loop()])
        await keyed.aio.complete("c")  # another API key: a client of its own
        return shared * 10 + len(client.pools._on_loop[asyncio.get_running_loop()])

    assert asyncio.run(calls()) == 12
    assert client.pools._on_loop == {}


def test_loops_that_end_leave_no_unclosed_connections(
    client: LLMClient, fake_openai: FakeOpenAIServer
) -> None:
    """pytest-asyncio makes a loop per test: each gets its client, closed at its end."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for i in range(4):
            with asyncio.Runner() as runner:
                runner.run(client.aio.complete(f"loop {i}"))
        gc.collect()
    assert [w for w in caught if issubclass(w.category, ResourceWarning)] == []
    assert client.pools._on_loop == {} and client.pools._closers == {}


def test_the_runs_end_closes_the_client_of_a_loop_still_running(client: LLMClient) -> None:
    """A long-lived loop in another thread (a batch's) is asked to close its client."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        reply = asyncio.run_coroutine_threadsafe(client.aio.complete("kept"), loop).result(10)
        assert reply == "echo: kept"
        opened: Any
        (opened,) = client.pools._on_loop[loop].values()
        client.pools.close()
        assert opened.is_closed() and loop not in client.pools._on_loop
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()


@pytest.mark.parametrize("owner", ["sync", "async"])
def test_an_identical_request_in_flight_is_shared_between_sync_and_async_callers(
    client: LLMClient, fake_openai: FakeOpenAIServer, owner: str
) -> None:
    """A batch may compute an example's answer in a task while a sync test asks for the
    same: one HTTP request, whichever of the two sends it."""
    fake_openai.latency = 0.3
    replies: list[str] = []
    sync = threading.Thread(target=lambda: replies.append(client.complete("same")))

    async def both() -> None:
        if owner == "sync":
            sync.start()
            while fake_openai.in_flight == 0:
                await asyncio.sleep(0.005)
            replies.append(await client.aio.complete("same"))
        else:
            task = asyncio.ensure_future(client.aio.complete("same"))
            while fake_openai.in_flight == 0:
                await asyncio.sleep(0.005)
            sync.start()
            replies.append(await task)
        await asyncio.to_thread(sync.join, 10)

    asyncio.run(both())
    assert replies == ["echo: same"] * 2
    assert fake_openai.total_requests == 1
    assert (client.stats.cache_misses, client.stats.cache_hits) == (1, 1)


def test_a_twin_that_stops_waiting_leaves_the_request_to_its_owner(
    client: LLMClient, fake_openai: FakeOpenAIServer
) -> None:
    fake_openai.latency = 0.2

    async def main() -> str:
        owner = asyncio.ensure_future(client.aio.complete("same"))
        while fake_openai.in_flight == 0:
            await asyncio.sleep(0.005)
        twin = asyncio.ensure_future(client.aio.complete("same"))
        await asyncio.sleep(0.01)
        twin.cancel()
        return await owner

    assert asyncio.run(main()) == "echo: same"
    assert fake_openai.total_requests == 1 and client._in_flight == {}


def test_the_callers_record_is_filled_from_its_own_task(
    client: LLMClient, fake_openai: FakeOpenAIServer
) -> None:
    records = [Record(example_id=f"x{i}", partition="golden") for i in range(3)]

    async def one(record: Record, text: str) -> None:
        bind(record)  # each task its own record, as the batch binds them
        await client.aio.complete(text)
        await client.aio.complete(text)  # a cache hit

    async def main() -> None:
        await asyncio.gather(*(one(r, f"q{i}") for i, r in enumerate(records)))

    asyncio.run(main())
    assert [(r.llm_calls, r.cache_hits, r.requests) for r in records] == [(2, 1, 1)] * 3
    assert all(r.latency_s and r.tokens == {"prompt": 1, "completion": 2} for r in records)


def test_no_async_client_in_a_loop_that_never_calls(client: LLMClient) -> None:
    asyncio.run(asyncio.sleep(0))
    assert client.pools._on_loop == {}


@pytest.mark.parametrize("twin", ["sync", "async"])
def test_a_twin_whose_owner_is_cancelled_sends_the_request_itself(
    client: LLMClient, fake_openai: FakeOpenAIServer, twin: str
) -> None:
    """The owner's cancellation is its own, not the twin's: the twin gets no
    CancelledError but its answer."""
    fake_openai.latency = 0.3
    replies: list[str] = []
    sync = threading.Thread(target=lambda: replies.append(client.complete("same")))

    async def main() -> None:
        owner = asyncio.ensure_future(asyncio.wait_for(client.aio.complete("same"), 0.15))
        while fake_openai.in_flight == 0:
            await asyncio.sleep(0.005)
        if twin == "sync":
            sync.start()
        else:
            waiting = asyncio.ensure_future(client.aio.complete("same"))
        with pytest.raises(asyncio.TimeoutError):
            await owner
        if twin == "sync":
            await asyncio.to_thread(sync.join, 10)
        else:
            replies.append(await asyncio.wait_for(waiting, 10))

    asyncio.run(main())
    assert replies == ["echo: same"]
    assert fake_openai.total_requests == 2 and client._in_flight == {}


def test_a_retry_waits_without_waking_the_loop_and_an_interrupt_ends_the_wait(
    fake_openai: FakeOpenAIServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_openai.retry_after = 20.0
    fake_openai.fault_sequence = ["429"]
    config = ClientConfig(model="m", base_url=fake_openai.base_url, api_key="k", timeout=5.0)
    client = LLMClient(config, ResponseCache(tmp_path, "off"), pools=Pools())
    naps: list[float] = []
    sleep = asyncio.sleep

    async def counted(delay: float, *args: Any) -> Any:
        naps.append(delay)
        return await sleep(delay, *args)

    async def main() -> str:
        async def call() -> str:
            try:  # caught in the task: asyncio lets a KeyboardInterrupt out of the loop
                return await client.aio.complete("q")
            except KeyboardInterrupt:
                return "interrupted"

        task = asyncio.ensure_future(call())
        while client.stats.requests == 0 or fake_openai.total_requests == 0:
            await asyncio.sleep(0.005)
        monkeypatch.setattr(asyncio, "sleep", counted)
        await sleep(0.5)  # the retry's wait: 20 s
        monkeypatch.setattr(asyncio, "sleep", sleep)
        await asyncio.to_thread(client.pools.interrupt)
        return await asyncio.wait_for(task, 5)

    assert asyncio.run(main()) == "interrupted"
    assert naps == []  # no polling while it waited
    client.close()


def test_an_async_client_is_built_outside_the_pools_lock() -> None:
    pools = Pools()
    locked: list[bool] = []

    class Made:
        async def close(self) -> None:
            pass

    def make() -> Made:
        locked.append(pools._lock.locked())
        return Made()

    async def main() -> None:
        assert await pools.on_loop("k", make) is await pools.on_loop("k", make)

    asyncio.run(main())
    assert locked == [False]
    pools.close()
