"""The paired tests of STATISTICS.md §2, on the per-example differences d: McNemar's
mid-p for binary pairs, sign flips below 30 pairs and the paired t from 30, the
clustered variants, the Wilcoxon-Pratt cross-check, and the variance split of k > 1."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence

import numpy as np
from numpy.typing import NDArray
from scipy import stats  # type: ignore[import-untyped, unused-ignore]

from .comparison import TestResult, VarianceSplit
from .intervals import flip, identical, invert, newcombe
from .permutation import T_TEST_MIN_N, quiet, sign_flip_p, sign_flip_p_replay, wilcoxon
from .power import mde, n_needed
from .samples import Array, Options, Pairs, mean
from .verdict import p_phrase

Groups = NDArray[np.intp]  # the cluster of each pair, numbered from 0
Shift = Callable[[float], Array]


def cluster_groups(
    clusters: Mapping[str, str] | None, ids: Sequence[str]
) -> tuple[Groups | None, int | None]:
    """(the cluster of each pair, or None when every pair is its own cluster: the plain
    paired test is then the same thing; the number of clusters, None without clusters).
    An id not in ``clusters`` is a cluster of its own."""
    if clusters is None:
        return None, None
    labels = [clusters.get(i, f"\0{i}") for i in ids]  # "\0": cannot clash with a name
    count = len(set(labels))
    if count == len(ids):
        return None, count
    groups: Groups = np.unique(labels, return_inverse=True)[1]
    return groups, count


def paired_test(pairs: Pairs, groups: Groups | None, o: Options) -> TestResult:
    """The table's test for these pairs: its p, CI for Δ, and power."""
    if not pairs.n:
        return TestResult("none")
    if not pairs.d.any():
        # scipy returns NaN for all-identical data; the spec fixes p and the CI instead.
        # MDE80 and n needed are left undefined (None: "—" in the table, null in JSON):
        # they scale with sd(d), here 0, and "0 examples suffice" would be false.
        ci = identical(pairs.n, o.alpha_prime, o.width)
        return TestResult("all_zero", 1.0, ci, 1.0 if pairs.binary_single else None)
    if groups is not None:
        return _clustered(pairs.d, groups, o)
    result = _independent(pairs, o)
    sd = pairs.sd
    if sd is not None and sd > 0:
        result.mde80 = mde(sd / math.sqrt(pairs.n), pairs.n - 1, o.alpha_prime)
        result.n_needed = n_needed(sd, o.delta, o.alpha_prime)
    return result


def _independent(pairs: Pairs, o: Options) -> TestResult:
    """The test of independent examples (d not all zero)."""
    d = pairs.d
    if pairs.binary_single:
        return _mcnemar(pairs, o)
    if d.size < 2:
        return TestResult("sign_flip")  # one difference: nothing to flip against
    if d.size < T_TEST_MIN_N:
        return _sign_flip("sign_flip", d, lambda theta: d - theta, d, o)
    if pairs.sd == 0:
        # Every difference is the same nonzero value: t is infinite and scipy warns.
        effect = float(np.mean(d))
        return TestResult("paired_t", 0.0, (effect, effect))
    with quiet():
        t = stats.ttest_rel(o.sign * pairs.x_cand, o.sign * pairs.x_base)
        ci = t.confidence_interval(confidence_level=1 - o.alpha_prime)
    return TestResult("paired_t", float(t.pvalue), (float(ci.low), float(ci.high)))


def _mcnemar(pairs: Pairs, o: Options) -> TestResult:
    """McNemar's mid-p, the exact binomial p, and Newcombe's paired CI."""
    losses, gains = int((pairs.d < 0).sum()), int((pairs.d > 0).sum())
    k0, discordant = min(losses, gains), losses + gains
    mid_p = 2 * stats.binom.cdf(k0, discordant, 0.5) - stats.binom.pmf(k0, discordant, 0.5)
    # The 2x2 table is counted on the raw 0/1 scores, before the direction sign.
    was, now = pairs.x_base.astype(bool), pairs.x_cand.astype(bool)
    table = (
        int((was & now).sum()),
        int((now & ~was).sum()),
        int((was & ~now).sum()),
        int((~was & ~now).sum()),
    )
    return TestResult(
        "mcnemar_midp",
        min(1.0, float(mid_p)),
        flip(newcombe(table, o.alpha_prime, paired=True), o.sign),
        float(stats.binomtest(gains, discordant, 0.5).pvalue),
    )


def _sign_flip(test: str, values: Array, shifted: Shift, d: Array, o: Options) -> TestResult:
    """The sign-flip test of mean(values) and its CI by inversion: ``shifted(theta)`` is
    ``values`` with the effect theta taken out."""
    return TestResult(
        test,
        sign_flip_p(values),
        invert(
            lambda theta: sign_flip_p_replay(shifted(theta)),
            float(np.mean(d)),
            (float(d.min()) - o.width, float(d.max()) + o.width),
            o.alpha_prime,
            o.width,
        ),
    )


def _clustered(d: Array, groups: Groups, o: Options) -> TestResult:
    """Cluster-robust SE with t on G - 1 df; below 30 clusters, whole clusters flip sign."""
    n = d.size
    effect = float(np.mean(d))
    sizes = np.bincount(groups).astype(float)
    sums = np.bincount(groups, weights=d).astype(float)
    n_groups = sizes.size
    if n_groups < 2:
        return TestResult("cluster_sign_flip")  # one cluster: no test, no CI
    residual = sums - sizes * effect
    se = math.sqrt(n_groups / (n_groups - 1) * float(np.sum(residual**2))) / n
    if n_groups < T_TEST_MIN_N:
        result = _sign_flip("cluster_sign_flip", sums, lambda t: sums - sizes * t, d, o)
    elif se == 0:
        result = TestResult("cluster_t", 0.0, (effect, effect))
    else:
        df = n_groups - 1
        half = float(stats.t.ppf(1 - o.alpha_prime / 2, df)) * se
        p = 2 * float(stats.t.sf(abs(effect / se), df))
        result = TestResult("cluster_t", p, (effect - half, effect + half))
    if se == 0:
        return result  # MDE80 and n needed undefined, as for independent pairs
    # MDE on G - 1 df with SE_cl, and n needed inflated by the design effect.
    sd = float(np.std(d, ddof=1))
    result.mde80 = mde(se, n_groups - 1, o.alpha_prime)
    design_effect = (se * math.sqrt(n) / sd) ** 2 if sd > 0 else 1.0
    result.n_needed = n_needed(sd, o.delta, o.alpha_prime, design_effect)
    return result


def wilcoxon_check(
    pairs: Pairs, result: TestResult, groups: Groups | None, o: Options
) -> tuple[float | None, list[str]]:
    """The secondary Wilcoxon-Pratt p (not for binary pairs or clusters), and a warning
    when it disagrees with the primary test."""
    if pairs.n < 2 or not pairs.d.any() or pairs.binary_single or groups is not None:
        return None, []
    p_w, direction = wilcoxon(pairs.d)
    if not math.isfinite(p_w):
        return None, []
    if result.p is None:
        return p_w, []
    primary, secondary = result.p < o.alpha_prime, p_w < o.alpha_prime
    if primary == secondary and (not primary or direction == np.sign(np.mean(pairs.d))):
        return p_w, []
    return p_w, [
        f"the Wilcoxon signed-rank test ({p_phrase(p_w)}) disagrees with the "
        f"{result.test} test ({p_phrase(result.p)}): the typical change and the mean "
        "change tell different stories; look at the per-example differences"
    ]


def variance_split(pairs: Pairs, *, k: int) -> VarianceSplit | None:
    """sd(d)² split into what more examples and what more samples per example reduce;
    None unless some example kept k > 1 valid samples on a side (with only lost samples
    beyond the first, nothing measured the noise within an example, and a split of
    within = 0 would wrongly say that only more examples help)."""
    if pairs.n < 2 or k < 2:
        return None

    def within(side: Mapping[str, list[float]]) -> list[float]:
        # s²_i/k_i of the examples with two or more valid samples (one has no variance).
        return [
            float(np.var(side[i], ddof=1)) / len(side[i]) for i in pairs.ids if len(side[i]) > 1
        ]

    base_terms, cand_terms = within(pairs.base), within(pairs.cand)
    if not base_terms and not cand_terms:
        return None
    total = float(np.var(pairs.d, ddof=1))
    w_base = mean(base_terms) if base_terms else 0.0
    w_cand = mean(cand_terms) if cand_terms else 0.0
    return VarianceSplit(total, max(0.0, total - w_base - w_cand), w_base, w_cand)


def split_advice(split: VarianceSplit | None) -> list[str]:
    """The warning that says where more samples would help."""
    return [] if split is None else [split.advice]
