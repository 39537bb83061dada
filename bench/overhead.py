"""Plugin overhead: N examples with a trivial assertion, run through the plugin versus the
same tests written with plain ``pytest.mark.parametrize`` and the plugin disabled.

    python bench/overhead.py            # 10,000 examples, 3 repeats, median reported
    python bench/overhead.py -n 2000 --repeats 5

Each variant runs in its own process (pytest.main in a fresh interpreter); wall time is
measured around the process, peak memory is that process's own maximum RSS.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PLUGIN_TEST = """
import pytest

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example):
    assert example.expected_output
"""

HELPER_TEST = """
import pytest
from pytest_llmeval import assert_exact_match

@pytest.mark.llmeval(dataset="data.jsonl")
def test_answer(example):
    assert_exact_match(example.expected_output, example.expected_output)
"""

PLAIN_TEST = """
import json
import pathlib
import pytest

ROWS = [json.loads(line) for line in
        pathlib.Path(__file__).with_name("data.jsonl").read_text().splitlines()]

@pytest.mark.parametrize("example", ROWS, ids=[row["id"] for row in ROWS])
def test_answer(example):
    assert example["expected_output"]
"""

CHILD = """
import json, resource, sys
import pytest
code = pytest.main(sys.argv[2:])
peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
with open(sys.argv[1], "w") as out:
    json.dump({"code": int(code), "peak_mib": peak_mib}, out)
"""

PARTITIONS = ("golden", "regression", "adversarial", "distribution")

VARIANTS = {
    # name: (test file body, extra pytest args)
    "plain parametrize, plugin off": (PLAIN_TEST, ["-p", "no:llmeval"]),
    "plugin marker": (PLUGIN_TEST, []),
    "plugin marker + assert_exact_match": (HELPER_TEST, []),
}


def write_suite(root: Path, count: int) -> None:
    with (root / "data.jsonl").open("w") as out:
        for i in range(count):
            row = {
                "id": f"ex-{i:05d}",
                "partition": PARTITIONS[i % 4],
                "input": {"question": f"question {i}"},
                "expected_output": f"answer {i}",
                "tags": ["bench"],
            }
            out.write(json.dumps(row) + "\n")
    (root / "pytest.ini").write_text(
        "[pytest]\nasyncio_default_fixture_loop_scope = function\n"
        "llmeval_min_pass_rate = adversarial:0 distribution:0\n"
    )


def run_once(root: Path, name: str) -> tuple[float, float]:
    body, extra = VARIANTS[name]
    (root / "test_bench.py").write_text(body)
    result_file = root / "result.json"
    args = [sys.executable, "-c", CHILD, str(result_file), "-q", "-p", "no:cacheprovider", *extra]
    start = time.perf_counter()
    subprocess.run(args, cwd=root, stdout=subprocess.DEVNULL, check=True)
    wall = time.perf_counter() - start
    result = json.loads(result_file.read_text())
    if result["code"] != 0:
        raise SystemExit(f"{name}: pytest exited {result['code']}")
    return wall, result["peak_mib"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--examples", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_suite(root, args.examples)
        runs: dict[str, list[tuple[float, float]]] = {name: [] for name in VARIANTS}
        for _ in range(args.repeats):  # interleaved, so drift hits every variant alike
            for name in VARIANTS:
                runs[name].append(run_once(root, name))
    plain = runs["plain parametrize, plugin off"]
    baseline = statistics.median(w for w, _ in plain)
    best_baseline = min(w for w, _ in plain)
    print(
        f"{args.examples:,} examples, median of {args.repeats} runs, "
        f"Python {sys.version.split()[0]}"
    )
    # The best run is the least disturbed by other load on the machine; both are shown.
    print(
        f"{'variant':<38} {'median s':>9} {'ratio':>6} {'best s':>7} {'ratio':>6} {'peak MiB':>9}"
    )
    for name, samples in runs.items():
        wall = statistics.median(w for w, _ in samples)
        best = min(w for w, _ in samples)
        peak = max(p for _, p in samples)
        print(
            f"{name:<38} {wall:>9.2f} {wall / baseline:>5.2f}x {best:>7.2f} "
            f"{best / best_baseline:>5.2f}x {peak:>9.0f}"
        )


if __name__ == "__main__":
    main()
