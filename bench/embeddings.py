"""The local embedding backend's cost: loading all-MiniLM-L6-v2 in a fresh process, then
embedding N short texts, then the same texts again (answered from memory).

    python bench/embeddings.py            # 100 texts, 3 fresh processes
    python bench/embeddings.py -n 1000 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys

PROBE = """
import json, sys, time
start = time.perf_counter()
from pytest_llmeval.embeddings import LocalEmbedder
embedder = LocalEmbedder()
embedder.embed(["warm up"])
loaded = time.perf_counter()
texts = [f"Question {i}: how do I change the billing contact for invoice {i}?"
         for i in range(int(sys.argv[1]))]
embedder.embed(texts)
embedded = time.perf_counter()
embedder.embed(texts)
cached = time.perf_counter()
print(json.dumps({"load": loaded - start, "embed": embedded - loaded, "cached": cached - embedded}))
"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=100, help="texts to embed")
    parser.add_argument("--repeats", type=int, default=3, help="fresh processes")
    args = parser.parse_args()
    runs = [
        json.loads(
            subprocess.run(
                [sys.executable, "-c", PROBE, str(args.n)],
                capture_output=True,
                text=True,
                check=True,
            ).stdout
        )
        for _ in range(args.repeats)
    ]
    for key, label in (
        ("load", "import and load the model"),
        ("embed", f"embed {args.n} texts"),
        ("cached", f"the same {args.n} again"),
    ):
        values = [run[key] for run in runs]
        print(
            f"{label:<28} median {statistics.median(values) * 1000:9.1f} ms  "
            f"(min {min(values) * 1000:.1f}, max {max(values) * 1000:.1f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
