"""The fake server's rate limits: token buckets per requests and tokens a minute, 429s
with OpenAI's headers, x-ratelimit-* headers on every answer, and the counters."""

from __future__ import annotations

import itertools
import json
import math
import re
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from pytest_llmeval.client import ClientConfig, LLMClient
from pytest_llmeval.client.cache import ResponseCache
from pytest_llmeval.client.limits import parse_duration
from pytest_llmeval.testing import FakeOpenAIServer, TokenBucket, duration

Answer = tuple[int, dict[str, str], dict[str, Any]]


def post(server: FakeOpenAIServer, body: dict[str, Any], path: str = "/chat/completions") -> Answer:
    request = urllib.request.Request(
        server.base_url + path,
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, dict(response.headers), json.load(response)
    except urllib.error.HTTPError as error:
        with error:
            return error.code, dict(error.headers), json.load(error)


def ask(server: FakeOpenAIServer, words: int = 3, **params: Any) -> Answer:
    content = " ".join(["word"] * words)
    return post(
        server, {"model": "m", "messages": [{"role": "user", "content": content}], **params}
    )


def seconds(text: str) -> float:
    """The inverse of duration(): Go's duration format, as OpenAI writes it."""
    match = re.fullmatch(r"(?:(\d+)h)?(?:(\d+)m(?!s))?(?:([\d.]+)s)?(?:(\d+)ms)?", text)
    assert match and text, f"not a duration: {text!r}"
    hours, minutes, secs, millis = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + secs + millis / 1000


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (0, "0s"),
        (0.0004, "1ms"),  # rounded up: a client waiting it finds the bucket refilled
        (0.02, "20ms"),
        (0.999, "999ms"),
        (1, "1s"),
        (1.5, "1.5s"),
        (8.64, "8.64s"),
        (60, "1m0s"),
        (360, "6m0s"),
        (90.001, "1m30.001s"),
        (3723.5, "1h2m3.5s"),
    ],
)
def test_durations_are_written_as_openai_writes_them(value: float, text: str) -> None:
    assert duration(value) == text
    assert seconds(text) == pytest.approx(value, abs=0.001)


def test_a_bucket_admits_its_burst_then_the_rate() -> None:
    bucket = TokenBucket.full(600, 1.0, now=0.0)  # 10 a second, holding one second's worth
    assert bucket.capacity == 10
    admitted_at: list[float] = []
    for step in range(5050):  # a greedy client, asking every millisecond for 5.05 s
        now = step / 1000
        bucket.refill(now)
        while bucket.wait(1) == 0:
            bucket.charge(1)
            admitted_at.append(now)
    assert admitted_at[:10] == [0.0] * 10  # the burst, at once
    assert len(admitted_at) == 10 + 50  # then 10 a second
    gaps = [b - a for a, b in itertools.pairwise(admitted_at[9:])]
    assert all(gap == pytest.approx(0.1, abs=0.0011) for gap in gaps)


def test_a_bucket_says_how_long_to_wait_and_to_refill() -> None:
    bucket = TokenBucket.full(60, 5.0, now=100.0)  # 1 a second, holding 5
    for _ in range(4):
        bucket.charge(1)
    assert (bucket.remaining(), bucket.wait(1), bucket.reset()) == (1, 0.0, 4.0)
    bucket.charge(1)
    assert (bucket.remaining(), bucket.wait(1), bucket.reset()) == (0, 1.0, 5.0)
    bucket.refill(102.5)
    assert (bucket.remaining(), bucket.wait(3), bucket.reset()) == (2, 0.5, 2.5)
    bucket.refill(200.0)
    assert bucket.level == bucket.capacity  # never above it
    assert TokenBucket.full(6, 1.0, now=0.0).capacity == 1  # always room for one request


def test_a_request_larger_than_the_bucket_passes_when_full_and_leaves_a_debt() -> None:
    bucket = TokenBucket.full(600, 1.0, now=0.0)  # 10 tokens
    assert bucket.wait(25) == 0  # due when full, else it could never pass
    bucket.charge(25)
    assert bucket.remaining() == 0
    assert bucket.wait(1) == pytest.approx(1.6)  # the debt of 15, then one token
    assert bucket.reset() == pytest.approx(2.5)


def test_requests_limit_answers_429_with_openai_headers_once_the_burst_is_spent() -> None:
    # 6 a minute holding 30 s: a burst of 3, then one request every 10 s, so the few
    # milliseconds the test takes refill almost nothing.
    with FakeOpenAIServer(rpm=6, burst=30) as server:
        answers = [ask(server) for _ in range(5)]
    statuses = [status for status, _, _ in answers]
    assert statuses == [200, 200, 200, 429, 429]
    for n, (_, headers, _) in enumerate(answers[:3]):
        assert headers["x-ratelimit-limit-requests"] == "6"
        assert headers["x-ratelimit-remaining-requests"] == str(2 - n)  # decreasing
        # The reset is the time to refill what was spent, at 10 s a request.
        spent = 3 - int(headers["x-ratelimit-remaining-requests"])
        assert spent * 10 - 2 < seconds(headers["x-ratelimit-reset-requests"]) <= spent * 10
        assert "retry-after" not in headers
        assert not any("tokens" in name for name in headers)  # no tokens limit set
    for _, headers, body in answers[3:]:
        assert headers["x-ratelimit-remaining-requests"] == "0"
        wait_ms = int(headers["retry-after-ms"])
        assert 8_000 < wait_ms <= 10_000  # the time to the next whole request
        assert headers["retry-after"] == str(math.ceil(wait_ms / 1000))  # whole seconds
        assert wait_ms / 1000 <= seconds(headers["x-ratelimit-reset-requests"])
        assert body["error"]["code"] == "rate_limit_exceeded"
        assert body["error"]["type"] == "requests"
        assert "Limit 6" in body["error"]["message"]
    # Refusals are counted apart from injected faults, and are requests all the same.
    assert (server.rate_limited, server.admitted, server.total_requests) == (2, 3, 5)
    assert sum(server.injected.values()) == 0


def test_tokens_limit_charges_the_prompt_and_the_completion_asked_for() -> None:
    # 6 tokens a minute holding 200 s: 20 tokens, refilling one every 10 s.
    with FakeOpenAIServer(tpm=6, burst=200) as server:
        first = ask(server, words=4, max_tokens=6)  # 10 tokens
        second = ask(server, words=2, max_completion_tokens=5)  # 7 tokens
        third = ask(server, words=4)  # 4 tokens: 3 left
        embedded = post(server, {"model": "e", "input": ["one two", "three"]}, "/embeddings")
    assert [a[0] for a in (first, second, third, embedded)] == [200, 200, 429, 200]
    assert first[1]["x-ratelimit-limit-tokens"] == "6"
    assert first[1]["x-ratelimit-remaining-tokens"] == "10"
    assert second[1]["x-ratelimit-remaining-tokens"] == "3"
    # 17 tokens to refill at one per 10 s: 2m50s less the moments between the requests
    # (rounded up to the millisecond, so exactly 2m50s when they are that close).
    reset = parse_duration(second[1]["x-ratelimit-reset-tokens"])
    assert reset is not None and 160 < reset <= 170
    assert second[1]["x-ratelimit-reset-tokens"].startswith("2m")
    assert 168 < seconds(second[1]["x-ratelimit-reset-tokens"]) <= 170
    _, headers, body = third
    assert body["error"]["type"] == "tokens"
    assert "Requested 4" in body["error"]["message"]
    wait_ms = int(headers["retry-after-ms"])
    assert 8_000 < wait_ms <= 10_000  # one token short
    assert headers["retry-after"] == str(math.ceil(wait_ms / 1000))
    assert not any("requests" in name for name in headers)  # no requests limit set
    assert embedded[1]["x-ratelimit-remaining-tokens"] == "0"  # three words
    assert server.rate_limited == 1


def test_both_limits_charge_together_or_not_at_all() -> None:
    with FakeOpenAIServer(rpm=6, tpm=60, burst=30) as server:  # 3 requests, 30 tokens
        big = ask(server, words=25)
        refused = ask(server, words=10)  # the tokens are short: no request is spent
        small = ask(server, words=2)
    assert [big[0], refused[0], small[0]] == [200, 429, 200]
    assert refused[1]["x-ratelimit-remaining-requests"] == "2"
    assert small[1]["x-ratelimit-remaining-requests"] == "1"
    assert refused[2]["error"]["type"] == "tokens"


def test_a_refusal_takes_no_slot_of_a_capped_server() -> None:
    with FakeOpenAIServer(rpm=6, capacity=1) as server:  # a burst of one request
        statuses = [ask(server)[0] for _ in range(3)]
        assert statuses == [200, 429, 429]
        server.rpm = None  # a limit is an attribute: lifted, the one slot still serves
        assert ask(server)[0] == 200
    assert (server.in_flight, server.admitted, server.rate_limited) == (0, 2, 2)


def test_a_server_without_limits_sends_no_rate_limit_headers() -> None:
    with FakeOpenAIServer() as server:
        status, headers, _ = ask(server)
    assert status == 200
    assert not any(name.startswith(("x-ratelimit", "retry-after")) for name in headers)
    assert (server.admitted, server.rate_limited) == (1, 0)


def test_concurrent_clients_never_get_more_than_the_burst_plus_the_rate() -> None:
    wanted = 25
    # 1,200 a minute (20 a second) holding a quarter second: a burst of 5.
    with FakeOpenAIServer(rpm=1200, burst=0.25) as server:
        lock = threading.Lock()
        done = 0
        start = time.monotonic()

        def client() -> None:
            nonlocal done
            while time.monotonic() - start < 30:
                with lock:
                    if done >= wanted:
                        return
                status, headers, _ = ask(server)
                if status == 200:
                    with lock:
                        done += 1
                else:
                    time.sleep(int(headers["retry-after-ms"]) / 1000)

        threads = [threading.Thread(target=client) for _ in range(6)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        elapsed = time.monotonic() - start
    assert server.admitted == done >= wanted  # none lost or double counted
    assert server.admitted + server.rate_limited == server.total_requests
    # An upper bound that a slow machine only loosens: the bucket's contents plus its refill.
    assert server.admitted <= 5 + 20 * elapsed + 1
    assert server.first_arrival is not None and server.last_admitted is not None
    assert (
        0
        < server.admitted_per_second()
        <= server.admitted / (server.last_admitted - server.first_arrival) + 1e-9
    )


def test_the_client_waits_out_the_limit_and_loses_no_call(tmp_path: Path) -> None:
    # 120 a minute holding a second: 2 at once, then one every half second.
    with FakeOpenAIServer(rpm=120) as server:
        config = ClientConfig(model="m", base_url=server.base_url, api_key="k", timeout=5.0)
        client = LLMClient(config, ResponseCache(tmp_path / "cache", "off"))
        try:
            replies = [client.complete(f"question {i}") for i in range(4)]
        finally:
            client.close()
    assert replies == [f"echo: question {i}" for i in range(4)]
    assert server.admitted == 4
    # Paced by the x-ratelimit headers, the client waits for the refill: it never
    # outruns the rate (its estimate starts when the answer arrives, after the charge).
    assert server.rate_limited == 0
    assert client.stats.errors == {}
