"""Batched fixtures against a hand-written ``asyncio.gather``: issue 17's acceptance ratios,
measured in one run, configurations alternating, medians over --repeats.

    python bench/gather.py                                  # all of it: ~4 min a repeat
    python bench/gather.py --examples 200 1000 --repeats 1  # a check: ~4 min in all
    python bench/gather.py --only equal auto --json out.json

The suites and the reference are bench/batched.py's: every example makes two calls (the
app's answer, then a judge's rating of it) against a local server taking --latency per
request; each configuration runs in a fresh process, the response cache off unless said.
Within a repeat, the two sides of a comparison run back to back, in alternating order from
one repeat to the next; each ratio is the median of its per-repeat ratios.

- equal: batched (64 examples at once, fixed) / the gather under a semaphore of 64, wall
  time, at each --examples count with --latency (0.25 s), and at --fast-examples (1,000)
  with --fast-latency (0.1 s).
- auto: batched with ``llmeval_concurrency = auto`` (the default: no concurrency set, the
  endpoints' adaptive limits pace) / an unbounded gather (no semaphore), at --auto-examples.
- limited: batched auto against a server limited to --rpm requests a minute (a token
  bucket holding one second's worth): the requests it admitted as a share of what the limit
  allowed from the first request to the last admission (burst + rate x span), the share of
  requests answered 429, and the examples lost (tests that did not pass). At 600 a minute
  (10 requests a second), --limited-examples 200 make 400 requests: about 40 s.
- cpu: CPU time per request (user + sys of the process tree / the server's requests),
  batched / gather, from the equal runs at the largest --examples count.
- cached: a cached re-run of the largest --examples count (batched auto, cache on, filled
  by one run beforehand against the same server at no latency; it must make no request) /
  a plain ``@pytest.mark.parametrize`` over the same rows with ``-p no:llmeval``.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from batched import CONCURRENCY, PYTEST, REFERENCE, Result, measure, write_suite

from pytest_llmeval.testing import FakeOpenAIServer, TokenBucket

SCENARIOS = ("equal", "auto", "limited", "cpu", "cached")

PLAIN_TEST = """
import json
import pathlib
import pytest

ROWS = [json.loads(line) for line in
        pathlib.Path(__file__).with_name("data.jsonl").read_text().splitlines()]

@pytest.mark.parametrize("row", ROWS, ids=[row["id"] for row in ROWS])
def test_answer(row):
    assert row["expected_output"] == f"echo: {row['input']['question']}"
"""


@dataclass
class Run:
    """One process's figures."""

    wall: float
    cpu: float
    requests: int
    code: int
    outcomes: dict[str, int]  # pytest's summary counts; {} for the reference
    extra: dict[str, float] = field(default_factory=dict)


@dataclass
class Measure:
    """One line of the table: a figure per repeat, its median, and the issue's target."""

    name: str
    target: str  # e.g. "<= 1.10"
    values: list[float] = field(default_factory=list)
    runs: dict[str, list[Run]] = field(default_factory=dict)

    @property
    def value(self) -> float:
        return statistics.median(self.values)

    @property
    def passed(self) -> bool:
        op, bound = self.target.split()
        compare: dict[str, Callable[[float, float], bool]] = {
            "<=": lambda a, b: a <= b,
            "<": lambda a, b: a < b,
            ">=": lambda a, b: a >= b,
            "==": lambda a, b: a == b,
        }
        return compare[op](self.value, float(bound))

    def add(self, value: float, **runs: Run) -> None:
        self.values.append(value)
        for label, run in runs.items():
            self.runs.setdefault(label, []).append(run)

    def shown(self) -> str:
        value = self.value
        return f"{value:.0f}" if value == int(value) else f"{value:.3f}"

    def detail(self) -> str:
        """The median walls, and for the rate-limited run what the server counted."""
        parts = [
            f"{label} {statistics.median(r.wall for r in runs):.2f} s"
            for label, runs in self.runs.items()
        ]
        extras = [run.extra for runs in self.runs.values() for run in runs if run.extra]
        if extras:
            median = {key: statistics.median(e[key] for e in extras) for key in extras[0]}
            parts.append(
                f"admitted {median['admitted']:.0f} in {median['span_s']:.1f} s "
                f"({median['admitted_per_s']:.2f}/s), {median['rate_limited']:.0f} answered 429"
            )
        return ", ".join(parts)


def outcomes(output: str) -> dict[str, int]:
    """pytest's final counts ("3 passed, 1 error in 2.1s")."""
    for line in reversed(output.splitlines()):
        found = re.findall(r"(\d+) (passed|failed|errors?|skipped|xfailed|xpassed)", line)
        if found and re.search(r" in [\d.]+s", line):
            return {("error" if kind.startswith("error") else kind): int(n) for n, kind in found}
    return {}


class Bench:
    def __init__(self, args: argparse.Namespace, tmp: Path, server: FakeOpenAIServer) -> None:
        self.args = args
        self.tmp = tmp
        self.server = server
        self.largest = max(args.examples)

    def suite(self, kind: str, count: int) -> Path:
        """The folder of a suite ("fixed", "auto", "cached" or "plain"), written once."""
        root = self.tmp / f"{kind}-{count}"
        if not root.exists():
            if kind == "plain":
                write_suite(root, count, self.server.base_url, batched=False)
                ini = "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
                (root / "pytest.ini").write_text(ini)  # no llmeval keys
                (root / "test_bench.py").write_text(PLAIN_TEST)
            else:
                concurrency = CONCURRENCY if kind == "fixed" else None
                write_suite(root, count, self.server.base_url, True, concurrency)
        return root

    def pytest(self, kind: str, count: int, *, latency: float, rpm: float | None = None) -> Run:
        self.server.latency, self.server.rpm = latency, rpm
        plugin = {"cached": [], "plain": ["-p", "no:llmeval"]}.get(kind, ["--llmeval-cache=off"])
        command = [*PYTEST, *plugin]
        result = measure(
            command, self.suite(kind, count), self.server, check=rpm is None, memory=False
        )
        return self._run(result, outcomes(result.output))

    def gather(self, count: int, concurrency: int, *, latency: float) -> Run:
        self.server.latency, self.server.rpm = latency, None
        command = [sys.executable, "-c", REFERENCE, self.server.base_url, str(count)]
        result = measure([*command, str(concurrency)], self.tmp, self.server, memory=False)
        return self._run(result, {})

    def _run(self, result: Result, counts: dict[str, int]) -> Run:
        return Run(result.wall, result.cpu, result.requests, result.code, counts)

    def fill_cache(self) -> None:
        """One run of the cached suite, at no latency, so the next ones make no request."""
        self.server.latency, self.server.rpm = 0.0, None
        measure([*PYTEST, "--llmeval-cache=use"], self.suite("cached", self.largest), self.server)


def pair(repeat: int, first: Callable[[], Run], second: Callable[[], Run]) -> tuple[Run, Run]:
    """Both runs, the first one first on even repeats and second on odd ones."""
    if repeat % 2:
        b = second()
        return first(), b
    a = first()
    return a, second()


def measure_all(args: argparse.Namespace, bench: Bench) -> list[Measure]:
    only = set(args.only)
    equal = {
        (count, latency): Measure(
            f"batched / gather@{CONCURRENCY}, {count:,} ex, {latency:g} s",
            "<= 1.10" if latency == args.latency else "<= 1.15",
        )
        for count, latency in [
            *((n, args.latency) for n in args.examples),
            *((n, args.fast_latency) for n in args.fast_examples),
        ]
    }
    auto = Measure(f"batched auto / unbounded gather, {args.auto_examples:,} ex", "<= 1.2")
    share = Measure(f"throughput / limit, {args.rpm:g} rpm, {args.limited_examples} ex", ">= 0.90")
    refused = Measure("requests answered 429 / requests", "< 0.02")
    lost = Measure("examples lost", "== 0")
    cpu = Measure(f"CPU per request, batched / gather, {bench.largest:,} ex", "<= 1.1")
    cached = Measure(f"cached re-run / plain parametrize, {bench.largest:,} ex", "<= 1.5")
    cached_requests = Measure("requests of the cached re-run", "== 0")

    if "cached" in only:
        bench.fill_cache()
    for repeat in range(args.repeats):
        print(f"repeat {repeat + 1} of {args.repeats}", file=sys.stderr)
        if only & {"equal", "cpu"}:
            for (count, latency), line in equal.items():
                if "equal" not in only and (count, latency) != (bench.largest, args.latency):
                    continue  # only what the CPU measure needs
                batched, reference = pair(
                    repeat,
                    partial(bench.pytest, "fixed", count, latency=latency),
                    partial(bench.gather, count, CONCURRENCY, latency=latency),
                )
                check_passed(batched, count)
                line.add(batched.wall / reference.wall, batched=batched, gather=reference)
                if count == bench.largest and latency == args.latency:
                    cpu.add(
                        (batched.cpu / batched.requests) / (reference.cpu / reference.requests),
                        batched=batched,
                        gather=reference,
                    )
        if "auto" in only:
            count = args.auto_examples
            batched, reference = pair(
                repeat,
                partial(bench.pytest, "auto", count, latency=args.latency),
                partial(bench.gather, count, 0, latency=args.latency),
            )
            check_passed(batched, count)
            auto.add(batched.wall / reference.wall, batched=batched, gather=reference)
        if "limited" in only:
            count = args.limited_examples
            run = bench.pytest("auto", count, latency=args.latency, rpm=args.rpm)
            server = bench.server
            if server.first_arrival is None or server.last_admitted is None:
                raise SystemExit(f"the rate-limited run had no request admitted: {run.outcomes}")
            span = server.last_admitted - server.first_arrival
            burst = TokenBucket.holding(args.rpm, server.burst)
            allowed = burst + args.rpm / 60 * span
            run.extra = {
                "admitted": server.admitted,
                "rate_limited": server.rate_limited,
                "span_s": span,
                "admitted_per_s": server.admitted / span if span else 0.0,
            }
            share.add(server.admitted / allowed, batched=run)
            refused.add(server.rate_limited / max(1, server.total_requests), batched=run)
            lost.add(count - run.outcomes.get("passed", 0), batched=run)
        if "cached" in only:
            count = bench.largest
            rerun, plain = pair(
                repeat,
                partial(bench.pytest, "cached", count, latency=args.latency),
                partial(bench.pytest, "plain", count, latency=args.latency),
            )
            check_passed(rerun, count)
            check_passed(plain, count)
            cached.add(rerun.wall / plain.wall, cached=rerun, plain=plain)
            cached_requests.add(rerun.requests, cached=rerun)

    measures: list[Measure] = []
    if "equal" in only:
        measures.extend(equal.values())
    measures.extend((auto,) if "auto" in only else ())
    measures.extend((share, refused, lost) if "limited" in only else ())
    measures.extend((cpu,) if "cpu" in only else ())
    measures.extend((cached, cached_requests) if "cached" in only else ())
    return measures


def check_passed(run: Run, count: int) -> None:
    if run.code != 0 or run.outcomes.get("passed") != count:
        raise SystemExit(f"a run did not pass all {count} tests: {run.outcomes}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, nargs="+", default=[200, 1000, 5000])
    parser.add_argument("--latency", type=float, default=0.25)
    parser.add_argument("--fast-examples", type=int, nargs="*", default=[1000])
    parser.add_argument("--fast-latency", type=float, default=0.1)
    parser.add_argument("--auto-examples", type=int, default=200)
    parser.add_argument("--rpm", type=float, default=600)
    parser.add_argument("--limited-examples", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--only", nargs="+", choices=SCENARIOS, default=list(SCENARIOS))
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp, FakeOpenAIServer() as server:
        measures = measure_all(args, Bench(args, Path(tmp), server))

    print(f"\n{args.repeats} repeat(s), medians; two calls per example")
    print(f"{'measure':<50} {'value':>8} {'target':>8}  {'':4}  detail (median walls)")
    for line in measures:
        verdict = "pass" if line.passed else "FAIL"
        print(f"{line.name:<50} {line.shown():>8} {line.target:>8}  {verdict:4}  {line.detail()}")
    if args.json:
        document: dict[str, Any] = {
            "options": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "measures": [
                {
                    "name": line.name,
                    "value": line.value,
                    "target": line.target,
                    "passed": line.passed,
                    "values": line.values,
                    "runs": {
                        label: [asdict(run) for run in runs] for label, runs in line.runs.items()
                    },
                }
                for line in measures
            ],
        }
        args.json.write_text(json.dumps(document, indent=2) + "\n")


if __name__ == "__main__":
    main()
