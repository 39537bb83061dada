"""The permutation tests of STATISTICS.md §2 (sign flips of paired differences, splits
of two independent samples, Wilcoxon-Pratt's signed ranks), as the spec calls scipy and
as fast replays of those calls for inverting a test into its CI."""

from __future__ import annotations

import functools
import itertools
import math
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
from numpy.typing import NDArray
from scipy import stats  # type: ignore[import-untyped, unused-ignore]

from .samples import Array

EXACT_MAX_N = 16  # up to 2**16 sign flips are enumerated; above, 2**16 random ones
RESAMPLES = 2**16
T_TEST_MIN_N = 30  # from 30 pairs (clusters, examples per side) t-tests replace these


@contextmanager
def quiet() -> Iterator[None]:
    """scipy warns on degenerate input (zero variance); every result is checked after."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


def sign_flip_p(values: Array) -> float:
    """The spec's sign-flip test of mean(values), its exact call."""
    result = stats.permutation_test(
        (values,),
        np.mean,
        permutation_type="samples",
        alternative="two-sided",
        n_resamples=np.inf if values.size <= EXACT_MAX_N else RESAMPLES,
        rng=np.random.default_rng(0),
    )
    return float(result.pvalue)


def independent_p(cand: Array, base: Array) -> float:
    """The spec's unpaired permutation test of mean(cand) - mean(base), seeded like the
    paired one; scipy enumerates every split when there are at most 2**16."""
    result = stats.permutation_test(
        (cand, base),
        _mean_diff,
        permutation_type="independent",
        alternative="two-sided",
        n_resamples=RESAMPLES,
        rng=np.random.default_rng(0),
    )
    return float(result.pvalue)


def _mean_diff(x: Array, y: Array, axis: int = -1) -> Array:
    diff: Array = np.mean(x, axis=axis) - np.mean(y, axis=axis)
    return diff


# Inverting a permutation test takes ~50 p-values. scipy redraws (or, exact, re-enumerates
# in Python) its permutations on every call: 0.05-0.2 s each. The replays below draw the
# same permutations once, from the same seed, and apply scipy's comparison rule to them,
# so they return the same p (the tests check this against the calls above).


@functools.lru_cache(maxsize=4)
def _sign_flips(n: int) -> NDArray[np.int8]:
    """The sign vectors the spec's sign-flip call uses for n values."""
    if n <= EXACT_MAX_N:
        codes = np.arange(2**n)[:, None] >> np.arange(n)
        return (1 - 2 * (codes & 1)).astype(np.int8)
    # scipy flips value i when its random permutation of (v_i, -v_i) puts -v_i first.
    pairs = np.random.default_rng(0).permuted(np.tile(np.arange(2), (RESAMPLES, n, 1)), axis=-1)
    return (1 - 2 * pairs[..., 0]).astype(np.int8)


@functools.lru_cache(maxsize=2)
def _splits(n_cand: int, n_base: int) -> NDArray[np.intp]:
    """The orderings of the pooled values the spec's unpaired call uses: the first
    n_cand go to the candidate."""
    n = n_cand + n_base
    if math.comb(n, n_cand) <= RESAMPLES:
        rows = [
            [*chosen, *sorted(set(range(n)) - set(chosen))]
            for chosen in itertools.combinations(range(n), n_cand)
        ]
        return np.array(rows, dtype=np.intp)
    rng = np.random.default_rng(0)
    return np.array([rng.permutation(n) for _ in range(RESAMPLES)], dtype=np.intp)


def sign_flip_p_replay(values: Array) -> float:
    """``sign_flip_p(values)``, fast."""
    null = np.mean(_sign_flips(values.size) * values, axis=-1)
    return _two_sided_p(null, float(np.mean(values)), exact=values.size <= EXACT_MAX_N)


def independent_p_replay(cand: Array, base: Array) -> float:
    """``independent_p(cand, base)``, fast."""
    splits = _splits(cand.size, base.size)
    pooled = np.concatenate([cand, base])[splits]
    null = _mean_diff(pooled[:, : cand.size], pooled[:, cand.size :])
    exact = math.comb(cand.size + base.size, cand.size) <= RESAMPLES
    return _two_sided_p(null, float(_mean_diff(cand, base)), exact=exact)


def _two_sided_p(null: Array, observed: float, *, exact: bool) -> float:
    """scipy.stats.permutation_test's two-sided p: twice the smaller tail, counting values
    within its relative tolerance as ties, plus one for the observed when resampled."""
    gamma = abs(np.finfo(np.float64).eps * 100 * observed)
    plus = 0 if exact else 1
    less = (np.count_nonzero(null <= observed + gamma) + plus) / (null.size + plus)
    greater = (np.count_nonzero(null >= observed - gamma) + plus) / (null.size + plus)
    return float(np.clip(min(less, greater) * 2, 0.0, 1.0))


def wilcoxon(d: Array) -> tuple[float, float]:
    """The spec's Wilcoxon-Pratt test: its p, and the sign of its signed-rank sum.

    Up to 16 differences the spec calls ``wilcoxon(d, zero_method="pratt",
    correction=False, method=PermutationMethod(n_resamples=np.inf))``, which scipy runs
    one flip at a time (16 s at n = 16); this enumerates the same flips at once. The
    statistic is a sum of half-integer ranks, exact in floating point, so p is the same."""
    ranks = stats.rankdata(np.abs(d))
    direction = float(np.sign(ranks[d > 0].sum() - ranks[d < 0].sum()))
    if d.size > EXACT_MAX_N:
        with quiet():
            result = stats.wilcoxon(d, zero_method="pratt", correction=False, method="asymptotic")
        return float(result.pvalue), direction
    null = (_sign_flips(d.size) * d > 0) @ ranks
    return _two_sided_p(null, float(ranks[d > 0].sum()), exact=True), direction
