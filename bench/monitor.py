"""The monitor under load: how long ``push`` keeps the caller, the process's memory, and
whether every accepted sample is evaluated and stored after ``stop()``.

Producer threads push a support assistant's requests at a fixed total rate (default
10,000 a second for 10 s), each push timed on its own. The monitor samples 5% (plus the
slowest 5% and the errors) and evaluates them with the grounding check and the reply
constraints; with ``--judge``, also with the LLM judge on a local OpenAI-compatible
server in another process (50 ms a request), as it would be in production. Each
configuration runs in a fresh process, so its peak memory is its own.

    python bench/monitor.py                      # deterministic evaluators, then the judge
    python bench/monitor.py --rate 10000 --seconds 10 --only plain
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

CHILD = r"""
import json, random, resource, sys, threading, time
from pathlib import Path
from pytest_llmeval import forbidden_terms, max_length
from pytest_llmeval.monitor import (
    Monitor, Sampler, constraints_evaluator, grounding_evaluator, judge_evaluator)

options = json.loads(sys.argv[1])
KB = "The Team plan costs $29 per agent per month, or $23.20 billed annually."
ANSWERS = ["Team is $29 per agent per month. - Support", "Team is $27 per agent. - Support"]
evaluators = {
    "grounding": grounding_evaluator(KB),
    "constraints": constraints_evaluator([max_length(300), forbidden_terms(["guarantee"])]),
}
if options["judge_url"]:
    from pytest_llmeval import Judge
    from pytest_llmeval.client import ClientConfig, build_client
    config = ClientConfig(role="judge", model="judge-1", base_url=options["judge_url"],
                          api_key="k", max_concurrency=64)
    judge = Judge(build_client(config, Path(options["db"]).parent / "cache", "off"))
    evaluators["judge"] = judge_evaluator(judge, task="answer", criteria=["is correct"])
monitor = Monitor(options["db"], evaluators, sampler=Sampler(0.05, seed=1),
                  queue_size=options["queue_size"], concurrency=64, window=60).start()

threads, seconds, rate = options["threads"], options["seconds"], options["rate"]
per_thread = rate / threads
durations = [[] for _ in range(threads)]
outcomes = [[] for _ in range(threads)]
start_all = time.perf_counter() + 0.1

def produce(n):
    rng = random.Random(n)
    mine, seen = durations[n], outcomes[n]
    total = int(per_thread * seconds)
    for k in range(total):
        due = start_all + k / per_thread
        wait = due - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
        latency = rng.lognormvariate(-1, 0.5)
        t0 = time.perf_counter_ns()
        seen.append(monitor.push(f"{n}-{k}", {"question": "How much is Team?"},
                                 ANSWERS[k % 2], latency_s=latency,
                                 error="timeout" if rng.random() < 0.001 else None))
        mine.append(time.perf_counter_ns() - t0)

workers = [threading.Thread(target=produce, args=(n,)) for n in range(threads)]
for w in workers: w.start()
for w in workers: w.join()
pushing = time.perf_counter() - start_all
t0 = time.perf_counter()
stats = monitor.stop()
drain = time.perf_counter() - t0
from pytest_llmeval.monitor import Store
counts = Store(options["db"]).counts()
all_us = sorted(d / 1000 for ds in durations for d in ds)
def q(p): return all_us[min(len(all_us) - 1, int(p * len(all_us)))]
flat = [o for os_ in outcomes for o in os_]
print(json.dumps({
    "pushed": len(all_us), "pushing_s": pushing, "achieved_rate": len(all_us) / pushing,
    "p50_us": q(0.5), "p99_us": q(0.99), "p999_us": q(0.999), "max_us": all_us[-1],
    "accepted": flat.count("accepted"), "dropped": flat.count("dropped"),
    "skipped": flat.count("skipped"), "stats": stats.__dict__, "store": counts,
    "drain_s": drain, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
}))
"""

SERVER = r"""
import json, sys
from pytest_llmeval.testing import FakeOpenAIServer
reply = lambda request: json.dumps({"reasoning": "fine", "score": 4})
with FakeOpenAIServer(reply, latency=0.05) as server:
    print(server.base_url, flush=True)
    sys.stdin.read()
"""


def run(options: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, json.dumps(options)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode:
        raise SystemExit(done.stderr)
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


def check(result: dict[str, Any]) -> list[str]:
    """The acceptance checks: every accepted sample stored and evaluated, drops exact."""
    store, stats = result["store"], result["stats"]
    problems = []
    if not store["stored"] == store["evaluated"] == result["accepted"]:
        problems.append(f"accepted {result['accepted']} but stored {store['stored']}")
    if store["dropped"] != result["dropped"] or stats["dropped"] != result["dropped"]:
        problems.append("dropped counts disagree")
    if result["accepted"] + result["dropped"] + result["skipped"] != result["pushed"]:
        problems.append("pushes unaccounted for")
    return problems


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=10_000, help="pushes a second, in all")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--threads", type=int, default=4, help="producer threads")
    parser.add_argument("--queue-size", type=int, default=10_000)
    parser.add_argument("--only", choices=["plain", "judge"], action="append")
    args = parser.parse_args()
    configurations = args.only or ["plain", "judge"]
    print(
        f"{args.rate} pushes/s for {args.seconds:g} s from {args.threads} threads, "
        f"5% sampled, queue {args.queue_size}"
    )
    print(
        f"{'evaluators':<34}{'rate/s':>8}{'p50 µs':>8}{'p99 µs':>8}{'p99.9':>8}{'max µs':>9}"
        f"{'accepted':>9}{'dropped':>8}{'stored':>8}{'drain s':>8}{'MiB':>6}"
    )
    for name in configurations:
        with tempfile.TemporaryDirectory() as tmp:
            options = {
                "db": str(Path(tmp) / "monitor.db"),
                "rate": args.rate,
                "seconds": args.seconds,
                "threads": args.threads,
                "queue_size": args.queue_size,
                "judge_url": None,
            }
            if name == "judge":
                with subprocess.Popen(
                    [sys.executable, "-c", SERVER],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    text=True,
                ) as server:
                    assert server.stdout is not None and server.stdin is not None
                    options["judge_url"] = server.stdout.readline().strip()
                    result = run(options)
                    server.stdin.close()
            else:
                result = run(options)
        label = "grounding + constraints" + (" + judge" if name == "judge" else "")
        print(
            f"{label:<34}{result['achieved_rate']:>8.0f}{result['p50_us']:>8.1f}"
            f"{result['p99_us']:>8.1f}{result['p999_us']:>8.1f}{result['max_us']:>9.0f}"
            f"{result['accepted']:>9}{result['dropped']:>8}{result['store']['stored']:>8}"
            f"{result['drain_s']:>8.2f}{result['peak_rss_mib']:>6.0f}"
        )
        for problem in check(result):
            print(f"  PROBLEM: {problem}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
