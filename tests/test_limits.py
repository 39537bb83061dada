"""The limiter of requests per endpoint (client/limits.py): alone, then end to end through
the client against servers that answer with rate-limit headers."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from pytest_llmeval.client import ClientConfig, LLMClient, Pools
from pytest_llmeval.client.cache import ResponseCache
from pytest_llmeval.client.limits import (
    INITIAL_LIMIT,
    SLOW_START_GAIN,
    Limiter,
    parse_duration,
    retry_after,
)
from pytest_llmeval.testing import FakeOpenAIServer


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_durations_read_as_openai_writes_them() -> None:
    assert parse_duration("1s") == 1.0 and parse_duration("20ms") == pytest.approx(0.02)
    assert parse_duration("6m0s") == 360.0 and parse_duration("1.5s") == 1.5
    assert parse_duration("1h2m3s") == 3723.0 and parse_duration("0.5") == 0.5
    assert parse_duration("soon") is None and parse_duration(None) is None
    assert parse_duration("1s junk") is None
    assert retry_after({"retry-after-ms": "250"}) == pytest.approx(0.25)
    assert retry_after({"retry-after": "2"}) == 2.0
    assert retry_after({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) is None


def test_no_header_value_means_forever() -> None:
    for odd in ("inf", "nan", "1e400", "-inf"):
        assert retry_after({"retry-after": odd}) is None, odd
        assert parse_duration(odd) is None, odd
    assert parse_duration("9" * 400 + "s") is None
    # An unreadable retry-after-ms leaves retry-after to say it.
    assert retry_after({"retry-after-ms": "soon", "retry-after": "2"}) == 2.0
    assert retry_after({"retry-after-ms": "inf", "retry-after": "2"}) == 2.0


def test_an_odd_or_long_pause_holds_the_endpoint_at_most_max_pause() -> None:
    limiter = Limiter("http://x", 8, max_pause=0.2)
    limiter.release(limiter.acquire(), status=429, headers={"retry-after": "inf"})
    limiter.release(limiter.acquire(), latency=0.1)  # no pause, no OverflowError
    limiter.release(limiter.acquire(), status=429, headers={"retry-after": "3600"})
    assert limiter.stats.paused_s == pytest.approx(0.2, abs=0.05)
    begun = time.monotonic()
    limiter.release(limiter.acquire())
    assert 0.15 <= time.monotonic() - begun < 5
    # An empty budget whose reset is far off (no limit to refill by) waits max_pause.
    headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1e300"}
    limiter.release(limiter.acquire(), latency=0.1, headers=headers)
    begun = time.monotonic()

    async def later() -> None:
        limiter.release(await limiter.acquire_async())

    asyncio.run(asyncio.wait_for(later(), 5))
    assert 0.15 <= time.monotonic() - begun < 5


def test_sync_and_async_acquirers_together_never_exceed_the_limit() -> None:
    limiter = Limiter("http://x", 3)
    lock = threading.Lock()
    now = peak = 0
    done = 0

    def hold(seconds: float) -> None:
        nonlocal now, peak
        with lock:
            now += 1
            peak = max(peak, now)
        time.sleep(seconds)
        with lock:
            now -= 1

    def worker() -> None:
        nonlocal done
        for _ in range(5):
            ticket = limiter.acquire()
            hold(0.005)
            limiter.release(ticket, latency=0.005)
        with lock:
            done += 1

    async def task() -> None:
        for _ in range(5):
            ticket = await limiter.acquire_async()
            hold(0.0)
            await asyncio.sleep(0.005)
            limiter.release(ticket, latency=0.005)

    async def tasks() -> None:
        await asyncio.gather(*(counted(task()) for _ in range(6)))

    async def counted(work: Any) -> None:
        nonlocal done
        await work
        with lock:
            done += 1

    threads = [threading.Thread(target=worker) for _ in range(6)]
    for thread in threads:
        thread.start()
    asyncio.run(tasks())
    for thread in threads:
        thread.join(10)
    assert done == 12 and limiter.in_flight == 0
    assert peak <= 3 and limiter.stats.peak_in_flight == 3


def test_slots_go_first_come_first_served_whichever_kind_waits() -> None:
    limiter = Limiter("http://x", 1)
    held = limiter.acquire()
    order: list[str] = []

    def queued(count: int) -> None:
        deadline = time.monotonic() + 5
        while len(limiter._waiters) < count:
            assert time.monotonic() < deadline
            time.sleep(0.001)

    def sync(name: str) -> None:
        ticket = limiter.acquire()
        order.append(name)
        limiter.release(ticket)

    async def main() -> None:
        first = threading.Thread(target=sync, args=("thread 1",))
        first.start()
        await asyncio.to_thread(queued, 1)

        async def task() -> None:
            ticket = await limiter.acquire_async()
            order.append("task")
            limiter.release(ticket)

        waiting = asyncio.ensure_future(task())
        await asyncio.to_thread(queued, 2)
        second = threading.Thread(target=sync, args=("thread 2",))
        second.start()
        await asyncio.to_thread(queued, 3)
        limiter.release(held)
        await waiting
        await asyncio.to_thread(first.join, 5)
        await asyncio.to_thread(second.join, 5)

    asyncio.run(main())
    assert order == ["thread 1", "task", "thread 2"]


def test_a_cancelled_waiter_gives_its_place_to_the_next() -> None:
    limiter = Limiter("http://x", 1)

    async def main() -> None:
        held = await limiter.acquire_async()
        gone = asyncio.ensure_future(limiter.acquire_async())
        kept = asyncio.ensure_future(limiter.acquire_async())
        await asyncio.sleep(0.01)
        gone.cancel()
        limiter.release(held)
        ticket = await asyncio.wait_for(kept, 5)
        assert gone.cancelled() and limiter.in_flight == 1
        limiter.release(ticket)

    asyncio.run(main())
    assert limiter.in_flight == 0 and not limiter._waiters


def test_a_slot_granted_to_a_waiter_of_a_closed_loop_goes_to_the_next() -> None:
    limiter = Limiter("http://x", 1)
    held = limiter.acquire()
    loop = asyncio.new_event_loop()
    orphan = loop.create_task(limiter.acquire_async())
    loop.run_until_complete(asyncio.sleep(0.01))
    loop.close()  # its task still waits: never cancelled, never resumed
    assert not orphan.done() and len(limiter._waiters) == 1
    limiter.release(held)
    got = acquired_in_a_thread(limiter)
    assert got and limiter.in_flight == 1 and not limiter._waiters
    limiter.release(got[0])


def acquired_in_a_thread(limiter: Limiter) -> list[Any]:
    """[the ticket] a sync caller got within 5 s, or [] if it is still waiting."""
    got: list[Any] = []
    thread = threading.Thread(target=lambda: got.append(limiter.acquire()), daemon=True)
    thread.start()
    thread.join(5)
    return got


def test_a_paced_head_whose_loop_closed_leaves_the_line_and_its_slot() -> None:
    limiter = Limiter("http://x", 2)
    headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "0.2s"}
    limiter.release(limiter.acquire(), latency=0.1, headers=headers)
    loop = asyncio.new_event_loop()
    orphan = loop.create_task(limiter.acquire_async())
    loop.run_until_complete(asyncio.sleep(0.01))
    loop.close()  # its task sleeps at the head of the line, holding a slot, for ever
    assert not orphan.done() and len(limiter._paced) == 1 and limiter.in_flight == 1
    got = acquired_in_a_thread(limiter)
    assert got and limiter.in_flight == 1 and not limiter._paced
    limiter.release(got[0])


def test_a_paced_task_at_the_head_wakes_at_an_interrupt() -> None:
    limiter = Limiter("http://x", 8)
    headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "60s"}
    limiter.release(limiter.acquire(), latency=0.1, headers=headers)

    async def send() -> str:
        try:  # caught in the task: asyncio lets a KeyboardInterrupt out of the loop
            await limiter.acquire_async()
        except KeyboardInterrupt:
            return "interrupted"
        return "sent"

    async def main() -> str:
        head = asyncio.ensure_future(send())
        while not limiter._paced:
            await asyncio.sleep(0.001)
        threading.Thread(target=limiter.interrupt).start()
        return await asyncio.wait_for(head, 3)

    assert asyncio.run(main()) == "interrupted"
    assert limiter.in_flight == 0


def test_an_interrupt_wakes_every_waiter_with_keyboard_interrupt() -> None:
    limiter = Limiter("http://x", 1)
    held = limiter.acquire()
    raised: list[str] = []

    def sync() -> None:
        try:
            limiter.acquire()
        except KeyboardInterrupt:
            raised.append("thread")

    async def main() -> None:
        thread = threading.Thread(target=sync)
        thread.start()

        async def waiting() -> None:
            # Caught in the task: asyncio lets a KeyboardInterrupt out of the loop itself.
            try:
                await limiter.acquire_async()
            except KeyboardInterrupt:
                raised.append("task")

        task = asyncio.ensure_future(waiting())
        while len(limiter._waiters) < 2:
            await asyncio.sleep(0.001)
        limiter.interrupt()
        await task
        await asyncio.to_thread(thread.join, 5)

    asyncio.run(main())
    assert sorted(raised) == ["task", "thread"]
    limiter.release(held)
    with pytest.raises(KeyboardInterrupt):  # and nothing more is let through
        limiter.acquire()


def test_a_fixed_limit_never_moves() -> None:
    limiter = Limiter("http://x", 8)
    tickets = [limiter.acquire() for _ in range(8)]
    for ticket in tickets[:4]:
        limiter.release(ticket, latency=0.1)
    limiter.release(tickets[4], status=429, headers={})
    for ticket in tickets[5:]:
        limiter.release(ticket, latency=5.0)
    assert limiter.limit == 8 and limiter.stats.rate_limited == 1 and limiter.stats.cuts == 0


def test_each_clients_cap_bounds_its_own_requests_within_the_endpoints_limit() -> None:
    limiter = Limiter("http://x", 2)
    app, judge = limiter.cap(4), limiter.cap(2)
    assert limiter.limit == 4 and limiter.stats.ceiling == 4
    judged = [limiter.acquire(judge) for _ in range(2)]
    got: list[Any] = []
    blocked = threading.Thread(target=lambda: got.append(limiter.acquire(judge)), daemon=True)
    blocked.start()
    while not limiter._waiters:
        time.sleep(0.001)
    # The judge's third waits for the judge's cap; the app's go past it, up to the limit.
    apps = [limiter.acquire(app) for _ in range(2)]
    assert limiter.in_flight == 4 and not got
    limiter.release(apps.pop())
    assert limiter.in_flight == 3 and not got  # a free slot, but not within the judge's cap
    limiter.release(judged.pop())
    blocked.join(5)
    assert got and (judge.in_flight, app.in_flight) == (2, 1)
    for ticket in [*judged, *apps, *got]:
        limiter.release(ticket)
    assert limiter.in_flight == judge.in_flight == app.in_flight == 0
    # An adaptive limit starts where the highest ceiling would have had it start.
    adaptive = Limiter("http://x", 2, adaptive=True)
    assert adaptive.limit == 2
    adaptive.cap(256)
    assert adaptive.limit == INITIAL_LIMIT and adaptive.stats.ceiling == 256


def fill(limiter: Limiter) -> list[Any]:
    """Take every slot: the limit is then what holds requests back."""
    return [limiter.acquire() for _ in range(limiter.limit - limiter.in_flight)]


def test_the_adaptive_limit_ramps_fast_then_cuts_on_429_then_grows_by_one_per_round_trip() -> None:
    clock = Clock()
    limiter = Limiter("http://x", 256, adaptive=True, clock=clock)
    assert limiter.limit == INITIAL_LIMIT
    first = fill(limiter)
    tickets = []
    for ticket in first:  # one round trip answered in time, always at the limit
        clock.now += 0.01
        limiter.release(ticket, latency=0.25)
        tickets += fill(limiter)
    assert limiter.limit == min(256, int(INITIAL_LIMIT * (1 + SLOW_START_GAIN)))
    before = limiter.limit
    clock.now += 1.0
    limiter.release(tickets.pop(), status=429, headers={})
    assert limiter.limit == before // 2 and limiter.stats.cuts == 1
    limiter.release(tickets.pop(), status=429, headers={})  # the same congestion: one cut
    assert limiter.limit == before // 2 and limiter.stats.rate_limited == 2
    for ticket in tickets:  # drain what was sent before the cut
        limiter.release(ticket)
    after_cut = limiter.limit
    for _ in range(3 * after_cut):  # three round trips at the limit: +1 each
        tickets = fill(limiter)
        clock.now += 0.01
        limiter.release(tickets.pop(), latency=0.25)
        for ticket in tickets:
            limiter.release(ticket)
    assert after_cut + 2 <= limiter.limit <= after_cut + 3
    assert limiter.stats.peak == before


def test_a_burst_of_429s_before_any_answer_cuts_the_limit_once() -> None:
    clock = Clock()
    limiter = Limiter("http://x", 256, adaptive=True, clock=clock)
    tickets = [limiter.acquire() for _ in range(6)]
    for ticket in tickets:  # all sent before the first refusal: one congestion
        clock.now += 0.001
        limiter.release(ticket, status=429, headers={})
    assert limiter.limit == INITIAL_LIMIT // 2 and limiter.stats.cuts == 1
    clock.now += 0.001
    limiter.release(limiter.acquire(), status=429, headers={})  # sent after the cut
    assert limiter.limit == INITIAL_LIMIT // 4 and limiter.stats.cuts == 2


def test_the_adaptive_limit_does_not_grow_while_the_providers_budget_holds_sends() -> None:
    clock = Clock()
    limiter = Limiter("http://x", 256, adaptive=True, clock=clock)
    headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "60s"}
    tickets = fill(limiter)
    limiter.release(tickets.pop(), status=500, headers=headers)  # a failure: no growth
    # Another send now waits for the budget, holding its slot: the limit is full of
    # requests the budget holds, not of ones the limit holds back.
    paced: list[BaseException] = []

    def send() -> None:
        try:
            limiter.acquire()
        except KeyboardInterrupt as exc:
            paced.append(exc)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    while not limiter._paced:
        time.sleep(0.001)
    assert limiter.in_flight == limiter.limit
    for ticket in tickets:
        clock.now += 0.01
        limiter.release(ticket, latency=0.25)
    assert limiter.limit == INITIAL_LIMIT and limiter.stats.peak == INITIAL_LIMIT
    limiter.interrupt()
    thread.join(5)
    assert paced


def test_the_adaptive_limit_is_cut_when_latency_rises_and_does_not_grow_unused() -> None:
    clock = Clock()
    limiter = Limiter("http://x", 256, adaptive=True, clock=clock)
    for _ in range(20):  # one request at a time: the limit never held anything back
        clock.now += 0.3
        limiter.release(limiter.acquire(), latency=0.25)
    assert limiter.limit == INITIAL_LIMIT
    tickets = fill(limiter)
    for ticket in tickets[:8]:  # a server queueing them: latency four times its usual
        clock.now += 1.0
        limiter.release(ticket, latency=1.0)
    assert limiter.limit < INITIAL_LIMIT and limiter.stats.cuts >= 1
    # Another kind of request (slower by nature) is compared with its own latencies.
    other = Limiter("http://x", 256, adaptive=True, clock=clock)
    clock.now += 1
    other.release(other.acquire(), latency=0.05, lane="embeddings")
    held = fill(other)
    clock.now += 1
    other.release(held.pop(), latency=2.0, lane="chat")
    assert other.stats.cuts == 0


def sends(limiter: Limiter, clock: Clock, count: int) -> list[float]:
    """When each of ``count`` requests in a row would be sent, from now (the clock moves
    on to each), as the head of the line sees it."""
    start = clock.now
    times = []
    for _ in range(count):
        clock.now = limiter._ready(clock.now)
        times.append(clock.now - start)
        limiter._requests.take(1.0, clock.now)
        limiter._tokens.take(limiter._tokens_per_request, clock.now)
    return times


def test_the_providers_remaining_budget_paces_the_sends() -> None:
    clock = Clock()
    limiter = Limiter("http://x", 64, clock=clock)
    first = limiter.acquire()
    later = [limiter.acquire() for _ in range(2)]  # sent after the first, unanswered
    # 60 a minute (one a second); 3 left when the first was counted, 2 of them since spent.
    headers = {"x-ratelimit-remaining-requests": "3", "x-ratelimit-limit-requests": "60"}
    limiter.release(first, latency=0.1, headers=headers)
    assert sends(limiter, clock, 3) == [0.0, pytest.approx(1.0), pytest.approx(2.0)]
    for ticket in later:
        limiter.release(ticket)


def test_without_a_limit_an_empty_budget_waits_for_its_reset() -> None:
    clock = Clock()
    limiter = Limiter("http://x", 64, clock=clock)
    headers = {"x-ratelimit-remaining-requests": "4", "x-ratelimit-reset-requests": "1s"}
    limiter.release(limiter.acquire(), latency=0.1, headers=headers)
    headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "1.5s"}
    limiter.release(limiter.acquire(), latency=0.1, headers=headers)
    # At the reset the bucket is full again: as full as the provider ever said (4).
    assert sends(limiter, clock, 4) == [pytest.approx(1.5)] * 4


def test_a_send_costing_more_than_ever_reported_left_waits_for_a_full_bucket() -> None:
    clock = Clock()
    limiter = Limiter("http://x", 64, clock=clock)
    # A bucket of one request (the provider always answers "0 left"), 60 a minute.
    headers = {"x-ratelimit-remaining-requests": "0", "x-ratelimit-limit-requests": "60"}
    limiter.release(limiter.acquire(), latency=0.1, headers=headers)
    assert sends(limiter, clock, 3) == [pytest.approx(t) for t in (1.0, 2.0, 3.0)]
    # Tokens, 6000 a minute (100 a second): the bucket was seen to hold 100 (nothing left
    # after a request of 100), and requests now use far more than that.
    limiter = Limiter("http://x", 64, clock=clock)
    limiter.note_usage(100)
    headers = {"x-ratelimit-remaining-tokens": "0", "x-ratelimit-limit-tokens": "6000"}
    limiter.release(limiter.acquire(), latency=0.1, headers=headers)
    assert limiter._tokens.capacity == 100
    for _ in range(40):
        limiter.note_usage(1000)
    cost = limiter._tokens_per_request
    assert cost > 900
    # Each goes when the bucket is full, into debt that the next waits out.
    assert sends(limiter, clock, 2) == [pytest.approx(1.0), pytest.approx(1.0 + cost / 100)]


def test_a_server_with_a_bucket_of_one_is_paced_not_stalled(tmp_path: Path) -> None:
    """Every answer says 0 left: each send waits its share of the limit (a quarter of a
    second here), then goes."""
    with FakeOpenAIServer(rpm=240, burst=0.25) as server:
        client = client_for(server.base_url, tmp_path)
        done: list[str] = []

        def calls() -> None:
            done.extend(client.complete(f"q{i}") for i in range(3))

        thread = threading.Thread(target=calls, daemon=True)
        thread.start()
        thread.join(10)
        assert done == ["echo: q0", "echo: q1", "echo: q2"]
        assert server.rate_limited == 0
        client.close()


def test_the_token_budget_charges_a_send_what_requests_have_used() -> None:
    clock = Clock()
    limiter = Limiter("http://x", 64, clock=clock)
    limiter.note_usage(100)
    headers = {"x-ratelimit-remaining-tokens": "150", "x-ratelimit-limit-tokens": "6000"}
    limiter.release(limiter.acquire(), latency=0.1, headers=headers)
    # 100 tokens a second
    assert sends(limiter, clock, 3) == [0.0, pytest.approx(0.5), pytest.approx(1.5)]


def test_retry_after_on_a_429_pauses_the_whole_endpoint() -> None:
    limiter = Limiter("http://x", 8)
    waiting = limiter.acquire()
    start = time.monotonic()
    limiter.release(limiter.acquire(), status=429, headers={"retry-after-ms": "300"})
    assert limiter.stats.pauses == 1 and limiter.stats.paused_s == pytest.approx(0.3, abs=0.05)

    async def later() -> float:
        limiter.release(await limiter.acquire_async())
        return time.monotonic() - start

    assert asyncio.run(later()) >= 0.29  # another request, async
    limiter.release(limiter.acquire())
    limiter.release(waiting)
    limiter.release(limiter.acquire(), status=429, headers={"retry-after": "0.2"})
    begun = time.monotonic()
    limiter.release(limiter.acquire())  # sync
    assert time.monotonic() - begun >= 0.19 and limiter.stats.pauses == 2


# --- end to end: the client against servers that send rate-limit headers -----------------


class HeaderServer:
    """A chat endpoint answering in turn with the statuses and headers it is given (then
    200 with no headers), noting when each request arrived."""

    def __init__(self) -> None:
        self.script: list[tuple[int, dict[str, str]]] = []
        self.arrivals: list[float] = []
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["content-length"])))
                with server._lock:
                    server.arrivals.append(time.monotonic())
                    status, headers = server.script.pop(0) if server.script else (200, {})
                if status == 200:
                    text = body["messages"][-1]["content"]
                    payload: Any = {
                        "id": "c",
                        "object": "chat.completion",
                        "created": 0,
                        "model": body["model"],
                        "choices": [
                            {
                                "index": 0,
                                "finish_reason": "stop",
                                "message": {"role": "assistant", "content": f"echo: {text}"},
                            }
                        ],
                        "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3},
                    }
                else:
                    payload = {"error": {"message": "slow down", "type": "rate_limit"}}
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def header_server() -> Iterator[HeaderServer]:
    server = HeaderServer()
    yield server
    server.stop()


@pytest.fixture(params=["sync", "async"])
def via(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def client_for(base_url: str, tmp_path: Path, **config: Any) -> LLMClient:
    options: dict[str, Any] = dict(
        model="m", base_url=base_url, api_key="k", retry_base_delay=0.001, timeout=5.0
    )
    options.update(config)
    return LLMClient(ClientConfig(**options), ResponseCache(tmp_path, "off"), pools=Pools())


def run_calls(client: LLMClient, via: str, count: int) -> list[str]:
    """``count`` different calls at once: threads, or tasks on one loop."""
    prompts = [f"q{i}" for i in range(count)]
    if via == "async":

        async def calls() -> list[str]:
            return list(await asyncio.gather(*(client.aio.complete(p) for p in prompts)))

        return asyncio.run(calls())
    replies: dict[str, str] = {}
    threads = [
        threading.Thread(target=lambda p=p: replies.__setitem__(p, client.complete(p)))
        for p in prompts
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return [replies[p] for p in prompts]


def test_headers_of_an_answer_pace_the_next_sends(
    header_server: HeaderServer, tmp_path: Path, via: str
) -> None:
    """An answer saying nothing is left until the reset holds the next sends back until
    then: none of them spends a 429 to learn it."""
    header_server.script = [
        (200, {"x-ratelimit-remaining-requests": "0", "x-ratelimit-reset-requests": "400ms"})
    ]
    client = client_for(header_server.base_url, tmp_path)
    assert client.complete("first") == "echo: first"
    answered = time.monotonic()
    assert run_calls(client, via, 3) == ["echo: q0", "echo: q1", "echo: q2"]
    assert min(header_server.arrivals[1:]) - answered >= 0.35
    assert client._limiter is not None and client._limiter.stats.paced >= 1
    client.close()


def test_a_429_with_retry_after_pauses_every_request_to_the_endpoint(
    header_server: HeaderServer, tmp_path: Path, via: str
) -> None:
    header_server.script = [
        (429, {"retry-after-ms": "400", "x-ratelimit-remaining-requests": "0"}),
    ]
    client = client_for(header_server.base_url, tmp_path, max_retries=2)
    assert client.complete("first") == "echo: first"  # after one 429
    first, retried = header_server.arrivals
    assert retried - first >= 0.39
    stats = client._limiter.stats if client._limiter else None
    assert stats is not None and (stats.rate_limited, stats.pauses) == (1, 1)
    # Now four calls at once; the first is refused with a pause: the others wait it out.
    header_server.script = [(429, {"retry-after-ms": "400"})]
    header_server.arrivals.clear()
    assert len(run_calls(client, via, 4)) == 4
    refused = header_server.arrivals[0]
    late = [t for t in header_server.arrivals[1:] if t - refused > 0.05]
    early = [t for t in header_server.arrivals[1:] if t - refused <= 0.05]
    # Those sent with the refused one went; none was sent within the pause after it.
    assert all(t - refused >= 0.39 for t in late) and len(late) >= 1
    assert len(early) + len(late) == 4
    client.close()


def test_against_a_rate_limited_server_few_requests_are_refused(tmp_path: Path, via: str) -> None:
    """A server allowing 20 requests a second (a burst of 4) that says so in its headers:
    the client learns the budget from the first answers and keeps within it."""
    rate, burst = 20.0, 4.0
    lock = threading.Lock()
    bucket = {"level": burst, "stamp": time.monotonic(), "refused": 0}

    def headers() -> dict[str, str]:
        left = bucket["level"]
        return {
            "x-ratelimit-limit-requests": str(int(rate * 60)),
            "x-ratelimit-remaining-requests": str(max(0, int(left))),
            "x-ratelimit-reset-requests": f"{max(0.0, (burst - left) / rate):.3f}s",
        }

    server = HeaderServer()

    def admit() -> tuple[int, dict[str, str]]:
        with lock:
            now = time.monotonic()
            bucket["level"] = min(burst, bucket["level"] + (now - bucket["stamp"]) * rate)
            bucket["stamp"] = now
            if bucket["level"] < 1:
                bucket["refused"] += 1
                return 429, {**headers(), "retry-after-ms": str(int(1000 / rate))}
            bucket["level"] -= 1
            return 200, headers()

    class Script(list[tuple[int, dict[str, str]]]):
        def __bool__(self) -> bool:
            return True

        def pop(self, index: Any = -1) -> tuple[int, dict[str, str]]:
            return admit()

    server.script = Script()
    try:
        client = client_for(server.base_url, tmp_path, max_retries=6, max_concurrency=8)
        start = time.monotonic()
        replies = run_calls(client, via, 60)
        took = time.monotonic() - start
    finally:
        server.stop()
    assert replies == [f"echo: q{i}" for i in range(60)]
    refused = bucket["refused"]
    # The first wave (8 at once, 4 allowed) is refused in part; after it, nearly nothing.
    assert refused <= 8, refused
    assert took >= (60 - burst) / rate * 0.9  # it did not beat the bucket
    client.close()


def test_the_bound_holds_across_sync_and_async_callers_of_one_run(tmp_path: Path) -> None:
    with FakeOpenAIServer(latency=0.15) as server:
        pools = Pools()
        config: dict[str, Any] = dict(
            model="m", base_url=server.base_url, api_key="k", max_concurrency=3
        )
        app = LLMClient(ClientConfig(**config), ResponseCache(tmp_path, "off"), pools=pools)
        judge = LLMClient(
            ClientConfig(role="judge", **config), ResponseCache(tmp_path, "off"), pools=pools
        )
        threads = [threading.Thread(target=judge.complete, args=(f"judge {i}",)) for i in range(4)]
        for thread in threads:
            thread.start()

        async def calls() -> None:
            await asyncio.gather(*(app.aio.complete(f"app {i}") for i in range(4)))

        asyncio.run(calls())
        for thread in threads:
            thread.join(10)
        assert server.total_requests == 8 and server.peak_in_flight == 3
        (stats,) = pools.limits()
        assert stats.peak_in_flight == 3 and stats.limit == 3
        pools.close()


@pytest.mark.parametrize("value", ["inf", "3600"])
def test_a_retry_after_of_forever_or_an_hour_holds_the_endpoint_at_most_retry_max_delay(
    header_server: HeaderServer, tmp_path: Path, value: str
) -> None:
    header_server.script = [(429, {"retry-after": value})]
    client = client_for(header_server.base_url, tmp_path, retry_max_delay=0.3)
    replies: list[Any] = []

    def calls() -> None:
        try:
            replies.extend(client.complete(f"q{i}") for i in range(2))
        except BaseException as exc:  # a bug: an OverflowError out of a wait
            replies.append(exc)

    thread = threading.Thread(target=calls, daemon=True)
    thread.start()
    thread.join(10)
    assert replies == ["echo: q0", "echo: q1"]
    stats = client._limiter.stats if client._limiter else None
    assert stats is not None and stats.paused_s <= 0.31
    client.close()


def test_an_app_and_a_judge_on_one_endpoint_share_one_limiter_each_within_its_own_cap(
    tmp_path: Path,
) -> None:
    with FakeOpenAIServer(latency=0.2) as server:
        pools = Pools()
        config: dict[str, Any] = dict(model="m", base_url=server.base_url, api_key="k")
        app = LLMClient(
            ClientConfig(max_concurrency=4, **config), ResponseCache(tmp_path, "off"), pools=pools
        )
        judge = LLMClient(
            ClientConfig(role="judge", max_concurrency=2, **config),
            ResponseCache(tmp_path, "off"),
            pools=pools,
        )

        async def calls() -> None:
            await asyncio.gather(
                *(app.aio.complete(f"app {i}") for i in range(6)),
                *(judge.aio.complete(f"judge {i}") for i in range(4)),
            )

        asyncio.run(calls())
        (stats,) = pools.limits()  # one limiter: one mirror of the provider's budget
        assert stats.ceiling == 4 and server.total_requests == 10
        limiter = app._limiter
        assert limiter is not None and limiter is judge._limiter
        # Each within its own cap: 4 + 2 at most at once.
        assert stats.peak_in_flight <= 6 and server.peak_in_flight <= 6
        # The app's and the judge's latencies are compared each with its own.
        assert sorted(limiter._latency) == ["app chat.completions m", "judge chat.completions m"]
        pools.close()
