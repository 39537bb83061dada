"""Draws in the regression statistics, simulated at more runs than the tests afford:
A/A false alarms of the per-example rule against per-draw pairs (each draw its own id),
with and without a part the run's draws of an example share, and the power to see a
drop of 0.5 points at n = 30 by draws per example. Through ``detect_regression``.

    python bench/draws.py               # 1,000 runs per line
    python bench/draws.py --runs 300

The judge model is tests/test_draws_statistics.py's: draw j of example i in one run scores
clip(round(q_i + u_i + e_ij), 1, 5); u_i (sd ``shared``) is what the run's draws share.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from numpy.typing import NDArray
from scipy import special  # type: ignore[import-untyped, unused-ignore]

from pytest_llmeval import detect_regression

Array = NDArray[np.float64]
N, ALPHA = 30, 0.05


def draws(rng: np.random.Generator, q: Array, k: int, shared: float, own: float) -> Array:
    noisy = q[:, None] + rng.normal(0, shared, (q.size, 1)) + rng.normal(0, own, (q.size, k))
    out: Array = np.clip(np.rint(noisy), 1, 5)
    return out


def expected(q: Array, sd: float) -> Array:
    out: Array = 1 + special.ndtr((q[:, None] - (np.arange(1, 5) + 0.5)) / sd).sum(axis=1)
    return out


def lowered(q: Array, drop: float, sd: float) -> Array:
    target, low, high = expected(q, sd) - drop, q - 4, q.copy()
    for _ in range(50):
        mid = (low + high) / 2
        below = expected(mid, sd) < target
        low, high = np.where(below, mid, low), np.where(below, high, mid)
    out: Array = (low + high) / 2
    return out


def verdict(base: Array, cand: Array, per_draw: bool) -> tuple[str, bool]:
    if per_draw:
        b = {f"e{i}-r{j}": [float(x)] for i, row in enumerate(base) for j, x in enumerate(row)}
        c = {f"e{i}-r{j}": [float(x)] for i, row in enumerate(cand) for j, x in enumerate(row)}
    else:
        b = {f"e{i}": [float(x) for x in row] for i, row in enumerate(base)}
        c = {f"e{i}": [float(x) for x in row] for i, row in enumerate(cand)}
    r = detect_regression(b, c, kind="ordinal", scale=(1, 5), delta=0.3)
    return r.verdict, r.p_adj is not None and r.p_adj < ALPHA


def a_a(runs: int, shared: float, own: float) -> None:
    rng = np.random.default_rng(1)
    counts = {(rule, what): 0 for rule in (False, True) for what in ("reg", "sig")}
    start = time.perf_counter()
    for _ in range(runs):
        q = rng.uniform(2.0, 4.5, N)
        base, cand = draws(rng, q, 3, shared, own), draws(rng, q, 3, shared, own)
        for rule in (False, True):
            v, sig = verdict(base, cand, rule)
            counts[rule, "reg"] += v == "REGRESSION"
            counts[rule, "sig"] += sig
    ms = 1000 * (time.perf_counter() - start) / (2 * runs)
    print(
        f"A/A k=3, shared sd {shared}, per-draw sd {own}: per-example REGRESSION "
        f"{counts[False, 'reg'] / runs:.1%}, significant {counts[False, 'sig'] / runs:.1%}; "
        f"per-draw pairs REGRESSION {counts[True, 'reg'] / runs:.1%}, significant "
        f"{counts[True, 'sig'] / runs:.1%} ({ms:.1f} ms a comparison)"
    )


def power(runs: int, shared: float, own: float, ks: tuple[int, ...] = (1, 2, 3, 5)) -> None:
    rng = np.random.default_rng(2)
    found = dict.fromkeys(ks, 0)
    sd = float(np.hypot(shared, own))
    for _ in range(runs):
        q = rng.uniform(2.0, 4.5, N)
        base = draws(rng, q, max(ks), shared, own)
        cand = draws(rng, lowered(q, 0.5, sd), max(ks), shared, own)
        for k in ks:
            found[k] += verdict(base[:, :k], cand[:, :k], False)[0] == "REGRESSION"
    rates = ", ".join(f"k={k} {found[k] / runs:.1%}" for k in ks)
    print(f"drop 0.5, n={N}, shared sd {shared}, per-draw sd {own}: REGRESSION {rates}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=1000)
    runs = parser.parse_args().runs
    a_a(runs, 0.5, 0.5)  # the tests' model
    a_a(runs, 0.0, 0.7)  # draws that share nothing
    power(runs, 0.5, 0.5)
    power(runs, 0.0, 0.7)


if __name__ == "__main__":
    main()
