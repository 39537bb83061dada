"""Batched fixtures versus plain tests and xdist: an eval suite of N examples whose tests
each make two model calls (the app's answer, then a judge's rating of it) against a local
server that takes --latency (0.25 s) per request.

    python bench/batched.py                        # 200 examples, uncapped and capacity 8
    python bench/batched.py --examples 50 --only batched reference

Each configuration runs in a fresh process: the plain suite serially, with ``-n 8`` and
``-n 16``; the same suite in the batched style (``@batched``, 64 examples at once, 64
requests in flight); and, as the reference, a bare ``asyncio.gather`` over
``openai.AsyncOpenAI`` under a semaphore of 64. Measured per configuration: wall time, CPU
time (user + sys of the process tree), peak memory (RSS summed over the process tree,
polled every 20 ms), the server's requests and its peak of requests in flight (queued
ones included). The response cache is off, so every run makes all its requests.

It runs once against an uncapped server and once against one serving at most
``--capacity`` requests at a time (the others queue), whose physical limit is
examples x 2 x latency / capacity, plus pytest's start-up (``pytest --collect-only``).

bench/gather.py measures issue 17's acceptance (batched against the reference at equal
concurrency and unbounded, the rate-limited server, CPU per request, the cached re-run)
with these suites.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pytest_llmeval.testing import FakeOpenAIServer

CONCURRENCY = 64
POLL_S = 0.02

PLAIN_TEST = """
import pytest
from pytest_llmeval import assert_exact_match

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example, llm, judge_client):
    reply = llm.complete(example.input["question"])
    verdict = judge_client.complete(f"Rate: {reply}")
    assert_exact_match(reply, example.expected_output, normalize=False)
    assert verdict.startswith("echo:")
"""

BATCHED_CONFTEST = """
from pytest_llmeval import batched

@batched
async def rated(example, llm, judge_client):
    reply = await llm.aio.complete(example.input["question"])
    verdict = await judge_client.aio.complete(f"Rate: {reply}")
    return reply, verdict
"""

BATCHED_TEST = """
import pytest
from pytest_llmeval import assert_exact_match

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example, rated):
    reply, verdict = rated
    assert_exact_match(reply, example.expected_output, normalize=False)
    assert verdict.startswith("echo:")
"""

REFERENCE = """
import asyncio, contextlib, sys
import openai

async def main(base_url, count, concurrency):
    client = openai.AsyncOpenAI(base_url=base_url, api_key="x", max_retries=0)
    # 0: unbounded, every example at once (what a hand-written script does)
    limit = asyncio.Semaphore(concurrency) if concurrency else contextlib.nullcontext()

    async def complete(model, prompt):
        messages = [{"role": "user", "content": prompt}]
        reply = await client.chat.completions.create(model=model, messages=messages)
        return reply.choices[0].message.content

    async def one(i):
        async with limit:
            reply = await complete("app-model", f"question {i}")
            verdict = await complete("judge-model", f"Rate: {reply}")
        assert reply == f"echo: question {i}" and verdict.startswith("echo:")

    await asyncio.gather(*(one(i) for i in range(count)))

asyncio.run(main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3])))
"""

PYTEST = (sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider")


@dataclass(frozen=True)
class Config:
    label: str
    suite: str  # "plain" or "batched"; "" for the reference
    args: tuple[str, ...] = ()


CONFIGS = {
    "serial": Config("plain serial", "plain"),
    "n8": Config("plain -n 8", "plain", ("-n", "8")),
    "n16": Config("plain -n 16", "plain", ("-n", "16")),
    "batched": Config(f"batched, concurrency {CONCURRENCY}", "batched"),
    "reference": Config("asyncio.gather reference", ""),
}


@dataclass(frozen=True)
class Result:
    wall: float
    cpu: float
    peak_mib: float
    requests: int
    peak_in_flight: int
    code: int = 0  # the exit status
    output: str = ""


def write_suite(
    root: Path, count: int, base_url: str, batched: bool, concurrency: int | None = CONCURRENCY
) -> None:
    """The suite of ``count`` examples in ``root``; a batched one at ``concurrency``
    examples and requests in flight, or (None) with llmeval_concurrency left to auto."""
    root.mkdir()
    ini = (
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
        f"llmeval_base_url = {base_url}\nllmeval_model = app-model\n"
        "llmeval_judge_model = judge-model\nllmeval_min_pass_rate = distribution:0\n"
    )
    if batched:
        # One limiter per endpoint and key: app and judge share its bound (the higher).
        if concurrency is not None:
            ini += "".join(
                f"llmeval_{key} = {concurrency}\n"
                for key in ("concurrency", "max_concurrency", "judge_max_concurrency")
            )
        (root / "conftest.py").write_text(BATCHED_CONFTEST)
    (root / "pytest.ini").write_text(ini)
    (root / "test_bench.py").write_text(BATCHED_TEST if batched else PLAIN_TEST)
    with (root / "data.jsonl").open("w") as out:
        for i in range(count):
            row = {
                "id": f"ex-{i:04d}",
                "partition": "distribution",
                "input": {"question": f"question {i}"},
                "expected_output": f"echo: question {i}",
            }
            out.write(json.dumps(row) + "\n")


def tree_rss_kib(root: int) -> int:
    """RSS of ``root`` and all its descendants, in KiB (0 for processes already gone)."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    tree, frontier = {root}, [root]
    while frontier:
        parent = frontier.pop()
        children = [pid for pid, ppid in parents.items() if ppid == parent]
        tree.update(children)
        frontier.extend(children)
    total = 0
    for pid in tree:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        total += next(
            (int(line.split()[1]) for line in status.splitlines() if line.startswith("VmRSS:")),
            0,
        )
    return total


def measure(
    command: list[str],
    cwd: Path,
    server: FakeOpenAIServer,
    *,
    check: bool = True,
    memory: bool = True,
) -> Result:
    """Run ``command`` to completion; exit with its output's tail unless it exits 0 (or
    ``check`` is false). Without ``memory``, no polling of the peak (whose scans of /proc
    take CPU from the run on a small machine)."""
    server.reset_counters()
    env = {**os.environ, "OPENAI_API_KEY": "bench-key"}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    process = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    peak = 0
    done = threading.Event()

    def poll() -> None:
        nonlocal peak
        while not done.wait(POLL_S):
            peak = max(peak, tree_rss_kib(process.pid))

    poller = threading.Thread(target=poll, daemon=True)
    if memory:
        poller.start()
    output, _ = process.communicate()
    wall = time.perf_counter() - start
    done.set()
    if memory:
        poller.join()
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if check and process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} exited {process.returncode}:\n{output[-3000:]}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Result(
        wall,
        cpu,
        peak / 1024,
        server.total_requests,
        server.peak_in_flight,
        process.returncode,
        output,
    )


def bench(args: argparse.Namespace, capacity: int | None) -> None:
    server = FakeOpenAIServer(latency=args.latency, capacity=capacity)
    with tempfile.TemporaryDirectory() as tmp, server:
        roots = {suite: Path(tmp, suite) for suite in ("plain", "batched")}
        for suite, root in roots.items():
            write_suite(root, args.examples, server.base_url, suite == "batched")
        startup = measure([*PYTEST, "--collect-only"], roots["batched"], server).wall
        results: dict[str, Result] = {}
        for key in args.only:
            config = CONFIGS[key]
            if config.suite:
                command = [*PYTEST, "--llmeval-cache=off", *config.args]
                results[key] = measure(command, roots[config.suite], server)
            else:
                reference = [sys.executable, "-c", REFERENCE, server.base_url]
                command = [*reference, str(args.examples), str(CONCURRENCY)]
                results[key] = measure(command, Path(tmp), server)

    cap = f"capacity {capacity}" if capacity else "uncapped"
    print(
        f"\n{cap} server: {args.examples} examples x 2 calls x {args.latency} s; "
        f"pytest start-up (--collect-only) {startup:.2f} s"
    )
    print(
        f"{'configuration':<28} {'wall s':>7} {'CPU s':>7} {'peak MiB':>9} "
        f"{'requests':>9} {'peak in flight':>15}"
    )
    for key, r in results.items():
        print(
            f"{CONFIGS[key].label:<28} {r.wall:>7.2f} {r.cpu:>7.2f} {r.peak_mib:>9.0f} "
            f"{r.requests:>9} {r.peak_in_flight:>15}"
        )

    batched = results.get("batched")
    if batched is None:
        return
    ratios: list[tuple[str, float, str]] = []
    if "reference" in results:
        reference_wall = results["reference"].wall
        ratios.append(("batched wall / reference wall", batched.wall / reference_wall, "<= 1.5"))
    if "n16" in results:
        n16 = results["n16"]
        ratios.append(("-n 16 wall / batched wall", n16.wall / batched.wall, ">= 4"))
        ratios.append(("batched memory / -n 16 memory", batched.peak_mib / n16.peak_mib, "<= 0.2"))
    if capacity:
        limit = args.examples * 2 * args.latency / capacity
        ratios.append(
            (f"batched wall / ({limit:g} s + start-up)", batched.wall / (limit + startup), "")
        )
        ratios.append((f"batched wall / {limit:g} s", batched.wall / limit, ""))
    for text, value, bound in ratios:
        acceptance = f"  (acceptance: {bound})" if bound else ""
        print(f"  {text:<44} {value:>6.2f}{acceptance}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.25)
    parser.add_argument("--capacity", type=int, default=8, help="of the capped server")
    parser.add_argument("--only", nargs="+", choices=list(CONFIGS), default=list(CONFIGS))
    args = parser.parse_args()
    for capacity in (None, args.capacity):
        bench(args, capacity)


if __name__ == "__main__":
    main()
