"""The unpaired fallback of STATISTICS.md §2, when no example id is shared: Boschloo's
exact test for binary scores, Welch's t when both sides have 30 or more, else a
permutation test of the difference in means inverted into its CI."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats  # type: ignore[import-untyped, unused-ignore]

from .comparison import Comparison, TestResult
from .intervals import flip, identical, invert, newcombe
from .permutation import T_TEST_MIN_N, independent_p, independent_p_replay, quiet
from .power import mde, n_needed, underpowered
from .samples import MISSING_WARN, Array, Options

UNPAIRED = "unpaired, lower power: no example id is shared by baseline and candidate"


def unpaired_comparison(
    base_values: Sequence[float],
    cand_values: Sequence[float],
    o: Options,
    *,
    missing: int,
    single: bool,
    k: tuple[int, int],
) -> Comparison:
    """The comparison of two independent samples of per-example scores; ``missing``
    examples had no valid score, ``single``: one sample each, ``k``: the most per side."""
    base = o.sign * np.asarray(base_values, dtype=float)
    cand = o.sign * np.asarray(cand_values, dtype=float)
    total = base.size + cand.size + missing
    missing_frac = missing / total if total else 1.0
    notes = [UNPAIRED, *o.extra_warnings]
    if missing_frac > MISSING_WARN:
        notes.append(f"{missing_frac:.1%} of the examples have no valid score")
    effect = float(np.mean(cand) - np.mean(base)) if base.size and cand.size else None
    result = TestResult("none") if effect is None else _test(cand, base, effect, single, o)
    _power(result, base, cand, o)
    notes += underpowered(result.mde80, o.delta)
    return o.comparison(
        paired=False,
        n=min(base.size, cand.size),
        n_baseline=base.size,
        n_candidate=cand.size,
        missing_frac=missing_frac,
        k_baseline=k[0],
        k_candidate=k[1],
        mean_baseline=float(o.sign * np.mean(base)) if base.size else None,
        mean_candidate=float(o.sign * np.mean(cand)) if cand.size else None,
        effect=effect,
        warnings=tuple(notes),
        **result.comparison_fields(o.m),
    )


def _power(result: TestResult, base: Array, cand: Array, o: Options) -> None:
    """MDE80 and n needed per side: the paired formulas' analogues with Welch's SE and
    df. With no variance on either side they are undefined, as in the paired case."""
    if base.size < 2 or cand.size < 2:
        return
    v_base, v_cand = float(np.var(base, ddof=1)), float(np.var(cand, ddof=1))
    if v_base + v_cand == 0:
        return
    n_base, n_cand = base.size, cand.size
    se = math.sqrt(v_base / n_base + v_cand / n_cand)
    den = (v_base / n_base) ** 2 / (n_base - 1) + (v_cand / n_cand) ** 2 / (n_cand - 1)
    result.mde80 = mde(se, se**4 / den if den else n_base + n_cand - 2, o.alpha_prime)
    result.n_needed = n_needed(math.sqrt(v_base + v_cand), o.delta, o.alpha_prime)


def _test(cand: Array, base: Array, effect: float, single: bool, o: Options) -> TestResult:
    """The unpaired test and CI (values already signed by the direction)."""
    smaller = min(cand.size, base.size)
    if o.kind == "binary" and single:
        return _boschloo(cand, base, o)
    if np.ptp(np.concatenate([cand, base])) == 0:
        # The paired all-identical rule, with the smaller side as n.
        return TestResult("all_identical", 1.0, identical(smaller, o.alpha_prime, o.width))
    if smaller >= T_TEST_MIN_N:
        return _welch(cand, base, effect, o)
    if smaller < 2:
        return TestResult("permutation_unpaired")
    return TestResult(
        "permutation_unpaired",
        independent_p(cand, base),
        invert(
            lambda theta: independent_p_replay(cand - theta, base),
            effect,
            (float(cand.min() - base.max()) - o.width, float(cand.max() - base.min()) + o.width),
            o.alpha_prime,
            o.width,
        ),
    )


def _boschloo(cand: Array, base: Array, o: Options) -> TestResult:
    """Boschloo's exact test of the 2x2 table, and Newcombe's unpaired CI."""
    pass_base, pass_cand = int(np.sum(o.sign * base)), int(np.sum(o.sign * cand))
    table = [[pass_cand, pass_base], [cand.size - pass_cand, base.size - pass_base]]
    with quiet():
        p = float(stats.boschloo_exact(table, alternative="two-sided").pvalue)
    ci = newcombe((pass_cand, cand.size, pass_base, base.size), o.alpha_prime, paired=False)
    return TestResult("boschloo", p, flip(ci, o.sign))


def _welch(cand: Array, base: Array, effect: float, o: Options) -> TestResult:
    if np.ptp(cand) == 0 and np.ptp(base) == 0:
        return TestResult("welch_t", 0.0, (effect, effect))  # two constants: t is infinite
    with quiet():
        t = stats.ttest_ind(cand, base, equal_var=False)
        ci = t.confidence_interval(confidence_level=1 - o.alpha_prime)
    return TestResult("welch_t", float(t.pvalue), (float(ci.low), float(ci.high)))
