"""Wall time of an eval suite whose tests each make two model calls (app + judge) against
a local server that takes 0.25 s per request: serially, with ``-n 8``, and fully cached.

    python bench/client_latency.py                 # 200 examples x 2 calls x 0.25 s
    python bench/client_latency.py -n 40 --latency 0.1

The physical limit of a run is calls x latency / parallelism (plus pytest's start-up);
a fully cached run makes no request at all.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pytest_llmeval.testing import FakeOpenAIServer

TEST = """
import pytest
from pytest_llmeval import assert_exact_match

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example, llm, judge_client):
    reply = llm.complete(example.input["question"])
    verdict = judge_client.complete(f"Is this a good answer? {reply}")
    assert_exact_match(reply, example.expected_output, normalize=False)
    assert verdict.startswith("echo:")
"""


def write_suite(root: Path, count: int, base_url: str) -> None:
    (root / "pytest.ini").write_text(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
        f"llmeval_base_url = {base_url}\nllmeval_model = app-model\n"
        "llmeval_judge_model = judge-model\nllmeval_min_pass_rate = distribution:0\n"
    )
    with (root / "data.jsonl").open("w") as out:
        for i in range(count):
            out.write(
                json.dumps(
                    {
                        "id": f"ex-{i:04d}",
                        "partition": "distribution",
                        "input": {"question": f"question {i}"},
                        "expected_output": f"echo: question {i}",
                    }
                )
                + "\n"
            )
    (root / "test_bench.py").write_text(TEST)


def run(root: Path, *args: str) -> float:
    env = {**os.environ, "OPENAI_API_KEY": "bench-key"}
    start = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=root,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        check=False,
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"pytest {' '.join(args)} failed:\n{done.stdout[-2000:]}")
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--examples", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.25)
    parser.add_argument("--workers", type=int, default=8)
    args = parser.parse_args()
    calls = 2 * args.examples
    rows = []
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAIServer(latency=args.latency) as server:
        root = Path(tmp)
        write_suite(root, args.examples, server.base_url)
        startup = run(root, "--collect-only")

        wall = run(root, "--llmeval-cache=off")
        rows.append(
            ("serial, no cache", wall, calls * args.latency + startup, server.total_requests)
        )
        server.reset_counters()

        wall = run(root, f"-n{args.workers}", "--llmeval-cache=use")  # also fills the cache
        limit = calls * args.latency / args.workers + startup
        rows.append((f"-n {args.workers}, cold cache", wall, limit, server.total_requests))
        server.reset_counters()

        wall = run(root, "--llmeval-cache=use")
        rows.append(("serial, fully cached", wall, startup, server.total_requests))

    print(
        f"{args.examples} examples x 2 calls x {args.latency} s per request; "
        f"pytest start-up and collection {startup:.2f} s"
    )
    print(f"{'run':<24} {'wall s':>8} {'limit s':>8} {'wall/limit':>11} {'requests':>9}")
    for name, wall, limit, requests in rows:
        print(f"{name:<24} {wall:>8.2f} {limit:>8.2f} {wall / limit:>10.2f}x {requests:>9}")


if __name__ == "__main__":
    main()
