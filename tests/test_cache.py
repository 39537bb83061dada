"""The response cache: keys, modes, replay misses, and safety under concurrent writers
and a kill -9 in the middle of a write."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from pytest_llmeval.client.cache import (
    CacheCorruptError,
    CacheMissError,
    InvalidResponse,
    ResponseCache,
    cache_key,
    keyed_request,
    parse_body,
)
from pytest_llmeval.errors import CacheCorruptWarning

MESSAGES = [{"role": "user", "content": "What does the Team plan cost?"}]


def completion(text: str = "$25 per seat", **extra: object) -> dict[str, object]:
    """A valid ChatCompletion body (extra fields are allowed, as servers add their own)."""
    message = {"role": "assistant", "content": text}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": "m",
        "choices": [{"index": 0, "message": message, "finish_reason": "stop"}],
        **extra,
    }


def request(content: str = "What does the Team plan cost?", **params: object) -> dict[str, object]:
    return keyed_request(
        "chat.completions",
        {"model": "m", "messages": [{"role": "user", "content": content}], **params},
    )


def test_key_covers_what_changes_the_output_and_nothing_else() -> None:
    base = cache_key(request(temperature=0.2))
    assert cache_key(request(temperature=0.2, timeout=5, extra_headers={"x": "y"})) == base
    assert cache_key(request(temperature=0.3)) != base
    assert cache_key(request("other question", temperature=0.2)) != base
    sampled = keyed_request("chat.completions", {"model": "m", "messages": MESSAGES}, sample=2)
    assert cache_key(sampled) != cache_key(request())
    assert "extra_headers" not in request(extra_headers={"Authorization": "Bearer sk"})


@pytest.mark.parametrize(
    ("mode", "reads", "writes"),
    [("use", True, True), ("replay", True, False), ("refresh", False, True), ("off", False, False)],
)
def test_modes(tmp_path: Path, mode: str, reads: bool, writes: bool) -> None:
    ResponseCache(tmp_path, "use").put(request(), completion("1"), 0.5)
    cache = ResponseCache(tmp_path, mode)
    entry = cache.get(request())
    assert (entry is not None) == reads
    if entry is not None:
        assert entry.response == completion("1") and entry.latency_s == 0.5
        assert entry.parsed.choices[0].message.content == "1"  # validated on the way in
    cache.put(request("new"), completion("2"), 0.1)
    assert (ResponseCache(tmp_path, "use").get(request("new")) is not None) == writes


def test_replay_miss_names_request_mode_and_nearest_entries(tmp_path: Path) -> None:
    empty = ResponseCache(tmp_path / "none", "replay")
    with pytest.raises(CacheMissError, match="holds no entries at all"):
        empty.get(request())
    writer = ResponseCache(tmp_path, "use")
    writer.put(request("What does the Team plan cost per month?"), completion(), 0.1)
    writer.put(request("How do I reset 2FA?"), completion("Settings > Security"), 0.1)
    with pytest.raises(CacheMissError) as info:
        ResponseCache(tmp_path, "replay").get(request())
    message = str(info.value)
    assert "cache mode 'replay', which never calls the API" in message
    assert "chat.completions model='m' 'What does the Team plan cost?'" in message
    nearest = message.split("Nearest recorded requests:")[1].strip().splitlines()
    assert "differs in messages" in nearest[0] and "per month" in nearest[0]


def _corrupt(document: dict[str, Any]) -> dict[str, str]:
    """Ways an entry file can be broken: (what, the file's text)."""
    no_choices = json.loads(json.dumps(document))
    del no_choices["response"]["choices"]
    other_key = dict(document, key="0" * 64)
    return {
        "torn": json.dumps(document)[:100],
        "no-response-field": json.dumps({k: v for k, v in document.items() if k != "response"}),
        "not-an-object": "[1, 2]",
        "invalid-response": json.dumps(no_choices),
        "nan": json.dumps(document).replace('"created": 1700000000', '"created": NaN'),
        "another-key": json.dumps(other_key),
    }


CORRUPTIONS = [
    "torn",
    "no-response-field",
    "not-an-object",
    "invalid-response",
    "nan",
    "another-key",
]


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_a_corrupt_entry_is_a_miss_with_a_warning_naming_the_file(tmp_path: Path, how: str) -> None:
    cache = ResponseCache(tmp_path, "use")
    cache.put(request(), completion(), 0.1)
    path = cache.path(cache_key(request()))
    path.write_text(_corrupt(json.loads(path.read_text()))[how])
    with pytest.warns(CacheCorruptWarning, match=f"corrupt entry, refetched: {path}"):
        assert cache.get(request()) is None
    with pytest.raises(CacheCorruptError) as info:
        ResponseCache(tmp_path, "replay").get(request())
    message = str(info.value)
    assert f"corrupt entry {path} (cache mode 'replay'" in message
    assert "no recorded response" not in message and "Delete the file" in message
    cache.put(request(), completion(), 0.1)  # a refetch rewrites it whole
    assert cache.get(request()) is not None


@pytest.mark.parametrize(
    "body",
    [{"error": {"message": "overloaded"}}, {"id": "x", "object": "chat.completion"}, [1], {}],
)
def test_nothing_invalid_is_ever_written(tmp_path: Path, body: Any) -> None:
    cache = ResponseCache(tmp_path, "use")
    with pytest.raises(InvalidResponse):
        cache.put(request(), body, 0.1)
    assert not list(tmp_path.rglob("*"))


def test_entries_are_standard_json(tmp_path: Path) -> None:
    """No NaN or Infinity, which json.dumps writes by default and other readers refuse."""
    cache = ResponseCache(tmp_path, "use")
    embedding = keyed_request("embeddings", {"model": "e", "input": ["a"]})
    vector = {"object": "embedding", "index": 0, "embedding": [0.5, float("nan")]}
    usage = {"prompt_tokens": 1, "total_tokens": 1}
    body = {"object": "list", "model": "e", "data": [vector], "usage": usage}
    with pytest.raises(ValueError, match="not JSON compliant"):
        cache.put(embedding, body, 0.1)
    assert not list(tmp_path.rglob("*.json"))


def test_a_body_with_nan_is_not_a_response() -> None:
    with pytest.raises(InvalidResponse, match="NaN is not a JSON value"):
        parse_body("chat.completions", json.dumps(completion(score=float("nan"))))
    # 1e999 is valid JSON, but no float holds it: Python would read it as infinity.
    overflowing = json.dumps(completion(score=1.5)).replace("1.5", "1e999")
    with pytest.raises(InvalidResponse, match="1e999 is out of a float's range"):
        parse_body("chat.completions", overflowing)
    data, parsed = parse_body("chat.completions", json.dumps(completion()))
    assert data == completion() and parsed.choices[0].message.content == "$25 per seat"


def _hammer(directory: str, worker: int, rounds: int) -> None:
    cache = ResponseCache(Path(directory), "use")
    for i in range(rounds):
        key_space = i % 10  # every writer writes the same ten keys
        response = completion(by=worker, i=i, pad="x" * 4000)
        cache.put(request(f"q{key_space}"), response, 0.01)
        cache.get(request(f"q{(i + 3) % 10}"))


def assert_all_entries_whole(directory: Path, expected: int) -> None:
    files = list(directory.glob("*/*.json"))
    assert len(files) == expected
    for path in files:
        document = json.loads(path.read_text())  # raises on a torn entry
        assert document["response"]["pad"] == "x" * 4000


def test_concurrent_threads_never_tear_an_entry(tmp_path: Path) -> None:
    threads = [threading.Thread(target=_hammer, args=(str(tmp_path), w, 200)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert_all_entries_whole(tmp_path, 10)


def test_concurrent_processes_never_tear_an_entry(tmp_path: Path) -> None:
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_hammer, args=(str(tmp_path), w, 150)) for w in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(timeout=120)
        assert worker.exitcode == 0
    assert_all_entries_whole(tmp_path, 10)


WRITER = """
import sys
from pathlib import Path
from pytest_llmeval.client.cache import ResponseCache, keyed_request
cache = ResponseCache(Path(sys.argv[1]), "use")
i = 0
while True:
    messages = [{"role": "user", "content": f"q{i % 50}"}]
    request = keyed_request("chat.completions", {"model": "m", "messages": messages})
    response = {"id": "c", "object": "chat.completion", "created": 0, "model": "m", "i": i,
                "choices": [{"index": 0, "finish_reason": "stop",
                             "message": {"role": "assistant", "content": "x" * 200_000}}]}
    cache.put(request, response, 0.01)
    if i == 0:
        print("ready", flush=True)  # the first entry is written (and openai imported)
    i += 1
"""


def test_kill_9_mid_write_leaves_no_torn_entry(tmp_path: Path) -> None:
    with subprocess.Popen(
        [sys.executable, "-c", WRITER, str(tmp_path)], stdout=subprocess.PIPE
    ) as process:
        assert process.stdout is not None and process.stdout.readline().strip() == b"ready"
        time.sleep(0.5)  # hundreds of large writes, one of them in flight
        os.kill(process.pid, signal.SIGKILL)
        process.wait(timeout=30)
    cache = ResponseCache(tmp_path, "use")
    entries = cache.entries()
    assert entries, "the writer wrote something before it was killed"
    for path in tmp_path.glob("*/*.json"):
        json.loads(path.read_text())  # every visible entry is whole
    # A new session reads and writes normally next to any leftover temporary file.
    cache.put(request("after"), completion(), 0.01)
    assert cache.get(request("after")) is not None
