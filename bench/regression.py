"""What the regression statistics cost: importing them, one comparison per row of the
test table (the sign-flip test and its inverted interval are the expensive ones), and a
whole run's gated family from records.

    python bench/regression.py              # median of 5
    python bench/regression.py --repeats 9
"""

from __future__ import annotations

import argparse
import functools
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

IMPORT = "import time; s = time.perf_counter(); import pytest_llmeval.stats.regression; "
IMPORT += "print(time.perf_counter() - s)"


def scores(n: int, seed: int, k: int = 1) -> dict[str, list[float | None]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return {f"e{i:05d}": [float(rng.integers(1, 6)) for _ in range(k)] for i in range(n)}


def passes(n: int, seed: int) -> dict[str, list[float | None]]:
    import numpy as np

    rng = np.random.default_rng(seed)
    return {f"e{i:05d}": [float(rng.random() < 0.8)] for i in range(n)}


def records(n: int, seed: int) -> list[dict[str, Any]]:
    """n examples per partition, each with one passed test and one judge verdict."""
    import numpy as np

    rng = np.random.default_rng(seed)
    verdict = {"kind": "rubric", "model": "j", "prompt_sha256": "s", "parser": "p"}
    return [
        {
            "example_id": f"{p}-{i}",
            "partition": p,
            "nodeid": f"t::{p}-{i}",
            "status": "passed" if rng.random() < 0.9 else "failed",
            "judge": [{**verdict, "scores": [int(rng.integers(1, 6))], "scale": [1, 5]}],
        }
        for p in ("golden", "regression", "adversarial", "distribution")
        for i in range(n)
    ]


def timed(work: Callable[[], object], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    imports = [
        float(subprocess.run([sys.executable, "-c", IMPORT], capture_output=True, text=True,
                             check=True).stdout)
        for _ in range(args.repeats)
    ]  # fmt: skip
    print(f"import numpy, scipy and the module (fresh process): {statistics.median(imports):.2f} s")

    from pytest_llmeval.runs.compare import compare_runs
    from pytest_llmeval.settings import RegressionSettings
    from pytest_llmeval.stats.regression import compare

    ordinal: dict[str, Any] = {"kind": "ordinal", "scale": (1, 5), "delta": 0.3}
    binary: dict[str, Any] = {"kind": "binary", "scale": (0, 1), "delta": 0.05}
    unpaired = {f"x{i}": v for i, v in scores(20, 2).items()}
    # (name, the function, its arguments): inputs are built before the clock starts
    cases: list[tuple[str, Callable[..., object], tuple[Any, ...], dict[str, Any]]] = [
        ("binary n=1000, McNemar mid-p + Newcombe", compare,
         (passes(1000, 1), passes(1000, 2)), binary),
        ("ordinal n=8, exact sign flips (2^8) + inverted CI", compare,
         (scores(8, 1), scores(8, 2)), ordinal),
        ("ordinal n=16, exact sign flips (2^16) + inverted CI", compare,
         (scores(16, 1), scores(16, 2)), ordinal),
        ("ordinal n=29, 2^16 random sign flips + inverted CI", compare,
         (scores(29, 1), scores(29, 2)), ordinal),
        ("ordinal n=10000, paired t + Wilcoxon", compare,
         (scores(10_000, 1), scores(10_000, 2)), ordinal),
        ("ordinal n=500, k=5 samples, variance split", compare,
         (scores(500, 1, k=5), scores(500, 2, k=5)), ordinal),
        ("unpaired 20 vs 20, permutation + inverted CI", compare,
         (scores(20, 1), unpaired), ordinal),
        ("a run: 4 partitions x 2,500 examples, 8 comparisons", compare_runs,
         (records(2500, 1), records(2500, 2), RegressionSettings()), {}),
    ]  # fmt: skip
    for name, function, positional, keywords in cases:
        work = functools.partial(function, *positional, **keywords)
        work()  # warm up
        print(f"{name}: {timed(work, args.repeats) * 1000:.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
