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

import pytest

from pytest_llmeval.cache import CacheMissError, ResponseCache, cache_key, keyed_request

MESSAGES = [{"role": "user", "content": "What does the Team plan cost?"}]


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
    ResponseCache(tmp_path, "use").put(request(), {"answer": 1}, 0.5)
    cache = ResponseCache(tmp_path, mode)
    entry = cache.get(request())
    assert (entry is not None) == reads
    if entry is not None:
        assert entry.response == {"answer": 1} and entry.latency_s == 0.5
    cache.put(request("new"), {"answer": 2}, 0.1)
    assert (ResponseCache(tmp_path, "use").get(request("new")) is not None) == writes


def test_replay_miss_names_request_mode_and_nearest_entries(tmp_path: Path) -> None:
    empty = ResponseCache(tmp_path / "none", "replay")
    with pytest.raises(CacheMissError, match="holds no entries at all"):
        empty.get(request())
    writer = ResponseCache(tmp_path, "use")
    writer.put(request("What does the Team plan cost per month?"), {"a": 1}, 0.1)
    writer.put(request("How do I reset 2FA?"), {"a": 2}, 0.1)
    with pytest.raises(CacheMissError) as info:
        ResponseCache(tmp_path, "replay").get(request())
    message = str(info.value)
    assert "cache mode 'replay', which never calls the API" in message
    assert "chat.completions model='m' 'What does the Team plan cost?'" in message
    nearest = message.split("Nearest recorded requests:")[1].strip().splitlines()
    assert "differs in messages" in nearest[0] and "per month" in nearest[0]


def test_unreadable_entry_is_a_miss(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path, "use")
    cache.put(request(), {"a": 1}, 0.1)
    cache.path(cache_key(request())).write_text("{ half an entr")
    assert cache.get(request()) is None


def _hammer(directory: str, worker: int, rounds: int) -> None:
    cache = ResponseCache(Path(directory), "use")
    for i in range(rounds):
        key_space = i % 10  # every writer writes the same ten keys
        cache.put(request(f"q{key_space}"), {"by": worker, "i": i, "pad": "x" * 4000}, 0.01)
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
from pytest_llmeval.cache import ResponseCache, keyed_request
cache = ResponseCache(Path(sys.argv[1]), "use")
print("ready", flush=True)
i = 0
while True:
    messages = [{"role": "user", "content": f"q{i % 50}"}]
    request = keyed_request("chat.completions", {"model": "m", "messages": messages})
    cache.put(request, {"i": i, "pad": "x" * 200_000}, 0.01)
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
    cache.put(request("after"), {"ok": True}, 0.01)
    assert cache.get(request("after")) is not None
