"""One machine against a CI matrix of shards, merged into one gate (issue 18): the batched
suite of bench/batched.py (an app call, then a judge call, per example, --latency per
request, 64 examples at once), of which 2% of examples expect a wrong answer, gated at a
99% minimum pass rate (so the run fails, and must fail the same way merged).

    python bench/shards.py                          # 5,000 examples, 4 shards: ~2 min
    python bench/shards.py --examples 1000 --shards 3

The whole run, then each shard (``--llmeval-shard I/N``, one after another: a matrix runs
them on machines of their own, so its wall time is the slowest shard's), then ``llmeval
merge`` and ``llmeval gate``. Printed: the wall times, the merge's and the gate's own,
and whether the gate's verdict lines and exit status are the whole run's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from batched import PYTEST, measure, write_suite

from pytest_llmeval.testing import FakeOpenAIServer

LLMEVAL = (sys.executable, "-m", "pytest_llmeval.cli")


def verdicts(output: str) -> list[str]:
    """The summary's verdict lines and last line (what the gate must say alike)."""
    lines = output.splitlines()
    return [
        line
        for line in lines
        if line.startswith(("golden rule", "distribution (soft)", "llmeval: FAIL", "llmeval: PASS"))
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--examples", type=int, default=5000)
    parser.add_argument("--shards", type=int, default=4)
    parser.add_argument("--latency", type=float, default=0.25)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, FakeOpenAIServer(latency=args.latency) as server:
        root = Path(tmp, "suite")
        write_suite(root, args.examples, server.base_url, batched=True)
        rows = [json.loads(line) for line in (root / "data.jsonl").read_text().splitlines()]
        for row in rows[::50]:  # 2% wrong
            row["expected_output"] = "a different answer"
        (root / "data.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        ini = (root / "pytest.ini").read_text()
        ini = ini.replace("distribution:0", "distribution:0.99")
        (root / "pytest.ini").write_text(ini)
        report = ["--llmeval-cache", "off", "--llmeval-report"]
        whole = measure([*PYTEST, *report, "whole.json"], root, server, check=False, memory=False)
        print(f"whole run: {whole.wall:.1f} s wall, exit {whole.code}, {whole.requests} requests")
        walls = []
        for index in range(1, args.shards + 1):
            shard = measure(
                [*PYTEST, *report, f"shard-{index}.json", f"--llmeval-shard={index}/{args.shards}"],
                root,
                server,
                check=False,
                memory=False,
            )
            walls.append(shard.wall)
            print(f"shard {index}/{args.shards}: {shard.wall:.1f} s wall, exit {shard.code}")
        files = [f"shard-{i}.json" for i in range(1, args.shards + 1)]
        merge = measure([*LLMEVAL, "merge", *files, "-o", "run.json"], root, server, memory=False)
        gate = measure([*LLMEVAL, "gate", "run.json"], root, server, check=False, memory=False)
        same = verdicts(gate.output) == verdicts(whole.output) and gate.code == whole.code
        print(
            f"matrix (slowest shard): {max(walls):.1f} s wall = {max(walls) / whole.wall:.2f}x "
            f"the whole run; merge {merge.wall:.2f} s, gate {gate.wall:.2f} s"
        )
        print(f"gate exit {gate.code}; verdicts as the whole run's: {'yes' if same else 'NO'}")
        for line in verdicts(gate.output):
            print("  " + line)
        if not same:
            print("whole run said:\n  " + "\n  ".join(verdicts(whole.output)))
            raise SystemExit(1)


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"({time.perf_counter() - start:.0f} s in all)")
