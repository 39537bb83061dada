"""The regression statistics of STATISTICS.md: the worked examples, every row of the test
table, every verdict, Holm, comparability, and an A/A false-positive check."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
from scipy import stats  # type: ignore[import-untyped, unused-ignore]

from pytest_llmeval.runs.compare import comparable, refused
from pytest_llmeval.stats import (
    VERDICTS,
    Comparison,
    apply_holm,
    compare,
    compare_unpaired,
    detect_regression,
    holm,
    permutation,
    samples_from_pairs,
)

MINUS = "\N{MINUS SIGN}"


def ids(values: Any, prefix: str = "e") -> dict[str, list[float | None]]:
    """One sample per example, ids in the given order."""
    return {f"{prefix}{i:03d}": [float(v)] for i, v in enumerate(values)}


def ordinal(baseline: Any, candidate: Any, **options: Any) -> Comparison:
    """compare() on 1-5 judge scores."""
    return compare(baseline, candidate, kind="ordinal", scale=(1, 5), **options)


def sig(x: float | None, digits: int = 4) -> float:
    """x to ``digits`` significant digits, as the spec prints its numbers."""
    assert x is not None
    return float(f"{x:.{digits - 1}e}")


def as_json(c: Comparison) -> dict[str, Any]:
    out = c.to_json()
    json.dumps(out, allow_nan=False)  # NaN or inf would raise
    return out


# -- §6 worked examples -------------------------------------------------------------------

BIN_BASE = [1] * 30 + [0] * 10
BIN_CAND = [1] * 21 + [0] * 9 + [1] + [0] * 9
ORD_BASE = [4, 3, 5, 2, 4, 3, 4, 5]
ORD_CAND = [3, 3, 4, 2, 2, 3, 4, 4]


def test_binary_worked_example() -> None:
    c = compare(ids(BIN_BASE), ids(BIN_CAND), kind="binary", scale=(0, 1), delta=0.05)
    assert (c.test, c.n, c.down, c.up) == ("mcnemar_midp", 40, 9, 1)
    assert sig(c.p_raw) == 0.01172
    assert sig(c.p_exact) == 0.02148
    assert (sig(c.ci_low), sig(c.ci_high)) == (-0.3326, -0.05566)
    assert sig(c.mde80) == 0.2109
    assert c.effect == pytest.approx(-0.2)
    assert (c.verdict, c.blocks) == ("REGRESSION", True)
    assert c.line == (
        f"Candidate is worse by 0.20 (95% CI {MINUS}0.33 to {MINUS}0.06); "
        "unlikely to be noise (p=0.012). Blocking."
    )
    out = as_json(c)
    assert (out["losses"], out["gains"]) == (9, 1)
    # What the spec contrasts it with: Welch on the same data.
    assert sig(stats.ttest_ind(BIN_CAND, BIN_BASE, equal_var=False).pvalue, 2) == 0.062


def test_ordinal_worked_example() -> None:
    c = ordinal(ids(ORD_BASE), ids(ORD_CAND), delta=0.3)
    assert (c.test, c.n) == ("sign_flip", 8)
    assert c.p_raw == 0.125
    assert (sig(c.ci_low), c.ci_high) == (-1.333, 0.0)
    assert sig(c.mde80) == 0.8577
    assert c.n_needed == 49
    assert (c.verdict, c.blocks) == ("INSUFFICIENT_DATA", False)
    assert c.line == (
        f"Can't tell: the data fit anything from {MINUS}1.33 to 0.00. With n=8 only "
        "changes ≥ 0.86 are reliably detectable; about 49 examples are needed."
    )
    assert any(w.startswith("underpowered") for w in c.warnings)
    # The paired t-test the spec warns about would have said significant.
    assert sig(stats.ttest_rel(ORD_CAND, ORD_BASE).pvalue, 2) == 0.049

    strict = ordinal(ids(ORD_BASE), ids(ORD_CAND), delta=0.3, strict=True)
    assert (strict.verdict, strict.blocks) == ("INSUFFICIENT_DATA", True)
    assert strict.line.endswith("are needed. Blocking (strict mode).")


# -- the table: paired tests ----------------------------------------------------------------


def test_paired_t_from_30_examples_with_its_ci_and_wilcoxon() -> None:
    rng = np.random.default_rng(1)
    base = rng.integers(2, 6, 40)
    cand = np.clip(base - rng.integers(0, 2, 40), 1, 5)
    c = ordinal(ids(base), ids(cand), delta=0.3)
    t = stats.ttest_rel(cand.astype(float), base.astype(float))
    ci = t.confidence_interval(confidence_level=0.95)
    assert c.test == "paired_t"
    assert c.p_raw == pytest.approx(t.pvalue, rel=1e-12)
    assert (c.ci_low, c.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-12)
    d = (cand - base).astype(float)
    w = stats.wilcoxon(d, zero_method="pratt", correction=False, method="asymptotic")
    assert c.p_wilcoxon == pytest.approx(w.pvalue, rel=1e-12)
    sd = float(np.std(d, ddof=1))
    mde = (stats.t.ppf(0.975, 39) + stats.t.ppf(0.8, 39)) * sd / math.sqrt(40)
    assert c.mde80 == pytest.approx(mde)
    assert c.n_needed == math.ceil(((stats.norm.ppf(0.975) + stats.norm.ppf(0.8)) * sd / 0.3) ** 2)
    assert c.verdict == "REGRESSION"


def test_sign_flip_above_16_uses_seeded_resamples_and_an_inverted_ci() -> None:
    """17 to 29 pairs: 2**16 random flips from default_rng(0); the CI is where the same
    test, called the spec's way, crosses alpha'."""
    rng = np.random.default_rng(1)
    base = rng.integers(2, 6, 17)
    cand = np.clip(base - rng.integers(0, 2, 17), 1, 5)
    c = ordinal(ids(base), ids(cand), delta=0.3)
    d = (cand - base).astype(float)

    def p(theta: float) -> float:
        return float(
            stats.permutation_test(
                (d - theta,),
                np.mean,
                permutation_type="samples",
                alternative="two-sided",
                n_resamples=2**16,
                rng=np.random.default_rng(0),
            ).pvalue
        )

    assert c.test == "sign_flip"
    assert c.p_raw == p(0.0)
    assert c.ci_low is not None and c.ci_high is not None
    assert c.ci_low < (c.effect or 0) < c.ci_high
    for bound, outward in ((c.ci_low, -1e-4), (c.ci_high, 1e-4)):
        assert p(bound - outward) >= 0.05 > p(bound + outward)


def test_the_fast_replays_give_scipys_p_values() -> None:
    """The CI inversion replays scipy's permutations instead of calling it ~50 times."""
    rng = np.random.default_rng(3)
    for n in (5, 9, 20):
        d = rng.integers(-3, 4, n).astype(float)
        for theta in (-1.5, -0.4, 0.7, 2.2):
            assert permutation.sign_flip_p_replay(d - theta) == permutation.sign_flip_p(d - theta)
    for n_cand, n_base in ((5, 6), (10, 9)):  # C(11, 5) splits enumerated; C(19, 10) drawn
        cand = rng.integers(1, 6, n_cand).astype(float)
        base = rng.integers(1, 6, n_base).astype(float)
        for theta in (-1.3, 0.45, 1.7):
            assert permutation.independent_p_replay(
                cand - theta, base
            ) == permutation.independent_p(cand - theta, base)
    for n in (4, 7, 10):
        d = rng.integers(-2, 3, n).astype(float)
        d[0] = 1.0
        spec = stats.wilcoxon(
            d,
            zero_method="pratt",
            correction=False,
            method=stats.PermutationMethod(n_resamples=np.inf),
        )
        assert permutation.wilcoxon(d)[0] == spec.pvalue


def test_wilcoxon_secondary_warns_when_it_disagrees() -> None:
    """Four +1s and six 5 -> 1 collapses: the mean says regression, the ranks do not."""
    d = [1] * 4 + [-4] * 6 + [0] * 20
    base = [5 if x == -4 else 3 for x in d]
    cand = [1 if x == -4 else 3 + x for x in d]
    c = ordinal(ids(base), ids(cand), delta=0.3)
    assert c.test == "paired_t"
    assert c.verdict == "REGRESSION"
    assert c.p_wilcoxon is not None and c.p_wilcoxon > 0.05
    assert any("Wilcoxon" in w and "disagrees" in w for w in c.warnings)

    agree = ordinal(ids(ORD_BASE), ids(ORD_CAND), delta=0.3)
    assert agree.p_wilcoxon == 0.125
    assert not any("Wilcoxon" in w for w in agree.warnings)


def test_binary_with_k_samples_is_tested_as_averages() -> None:
    base = {f"e{i}": [1, 1, 0] for i in range(10)}
    cand = {f"e{i}": [0, 1, 0] if i < 8 else [1, 1, 1] for i in range(10)}
    c = compare(base, cand, kind="binary", scale=(0, 1), delta=0.05)
    assert (c.test, c.k_baseline, c.k_candidate) == ("sign_flip", 3, 3)
    assert c.p_exact is None and c.p_wilcoxon is not None
    assert c.effect == pytest.approx((8 * -1 / 3 + 2 * 1 / 3) / 10)


# -- clustered ------------------------------------------------------------------------------


def test_clustered_t_with_30_or_more_clusters() -> None:
    rng = np.random.default_rng(5)
    n_clusters = 40
    shift = np.repeat(rng.normal(-0.1, 0.3, n_clusters), 2)  # two examples per document
    base = rng.uniform(0.3, 0.7, 2 * n_clusters)
    cand = np.clip(base + shift + rng.normal(0, 0.05, 2 * n_clusters), 0, 1)
    clusters = {f"e{i:03d}": f"doc{i // 2}" for i in range(2 * n_clusters)}
    c = compare(
        ids(base), ids(cand), kind="continuous", scale=(0, 1), delta=0.05, clusters=clusters
    )
    d = np.round(cand - base, 10)
    effect = d.mean()
    sums = d.reshape(n_clusters, 2).sum(axis=1) - 2 * effect
    se = math.sqrt(n_clusters / (n_clusters - 1) * float(np.sum(sums**2))) / d.size
    t_crit = stats.t.ppf(0.975, n_clusters - 1)
    assert (c.test, c.clusters) == ("cluster_t", 40)
    assert c.p_raw == pytest.approx(2 * stats.t.sf(abs(effect / se), n_clusters - 1))
    assert (c.ci_low, c.ci_high) == pytest.approx((effect - t_crit * se, effect + t_crit * se))
    assert c.p_wilcoxon is None  # the signed-rank test assumes independent pairs
    unclustered = compare(ids(base), ids(cand), kind="continuous", scale=(0, 1), delta=0.05)
    assert c.ci_low is not None and c.ci_high is not None
    assert unclustered.ci_low is not None and unclustered.ci_high is not None
    assert c.ci_high - c.ci_low > unclustered.ci_high - unclustered.ci_low


def test_below_30_clusters_whole_clusters_flip_sign() -> None:
    # Ten documents of four examples; every other document lost a point on all four.
    base = ids([3] * 40)
    cand = ids([2 if (i // 4) % 2 == 0 else 3 for i in range(40)])
    clusters = {f"e{i:03d}": f"doc{i // 4}" for i in range(40)}
    c = ordinal(base, cand, delta=0.3, clusters=clusters)
    sums = np.array([-4.0 if g % 2 == 0 else 0.0 for g in range(10)])
    spec = stats.permutation_test(
        (sums,),
        np.mean,
        permutation_type="samples",
        alternative="two-sided",
        n_resamples=np.inf,
        rng=np.random.default_rng(0),
    )
    assert (c.test, c.clusters) == ("cluster_sign_flip", 10)
    assert c.p_raw == spec.pvalue == 0.0625
    assert c.verdict == "INSUFFICIENT_DATA"
    # Treated as 40 independent pairs the same data look overwhelming.
    naive = ordinal(base, cand, delta=0.3)
    assert naive.p_raw is not None and naive.p_raw < 1e-6


def test_three_clusters_cannot_bound_the_change() -> None:
    base = ids([3] * 12)
    cand = ids([2] * 8 + [3] * 4)
    clusters = {f"e{i:03d}": f"doc{i // 4}" for i in range(12)}
    c = ordinal(base, cand, delta=0.3, clusters=clusters, strict=True)
    assert (c.ci_low, c.ci_high) == (-math.inf, math.inf)
    assert (c.verdict, c.blocks) == ("INSUFFICIENT_DATA", True)
    assert as_json(c)["ci_low"] is None


# -- unpaired fallback ----------------------------------------------------------------------


def test_unpaired_welch_when_both_sides_have_30() -> None:
    rng = np.random.default_rng(4)
    base = rng.integers(1, 6, 40).astype(float)
    cand = np.clip(base[:35] - 1, 1, 5)
    c = ordinal(ids(base, "b"), ids(cand, "c"), delta=0.3)
    t = stats.ttest_ind(cand, base, equal_var=False)
    ci = t.confidence_interval(confidence_level=0.95)
    assert (c.test, c.paired, c.n_baseline, c.n_candidate) == ("welch_t", False, 40, 35)
    assert c.p_raw == pytest.approx(t.pvalue, rel=1e-12)
    assert (c.ci_low, c.ci_high) == pytest.approx((ci.low, ci.high), rel=1e-12)
    assert "unpaired, lower power" in c.warnings[0]


def test_unpaired_permutation_below_30() -> None:
    base = [4, 5, 4, 3, 5, 4, 4, 5]
    cand = [3, 2, 3, 3, 4, 2, 3, 3]
    c = compare_unpaired(base, cand, kind="ordinal", scale=(1, 5), delta=0.3)
    spec = stats.permutation_test(
        (np.array(cand, float), np.array(base, float)),
        lambda x, y, axis: np.mean(x, axis=axis) - np.mean(y, axis=axis),
        permutation_type="independent",
        alternative="two-sided",
        n_resamples=2**16,
        rng=np.random.default_rng(0),
    )
    assert c.test == "permutation_unpaired"
    assert c.p_raw == spec.pvalue
    assert c.ci_low is not None and c.ci_high is not None
    assert c.ci_low < (c.effect or 0) < c.ci_high < 0
    assert c.verdict == "REGRESSION"
    assert "unpaired, lower power" in c.warnings[0]
    # Plain lists through the one-call helper take the same path.
    assert detect_regression(base, cand, kind="ordinal", scale=(1, 5), delta=0.3) == c


def test_unpaired_binary_is_boschloo() -> None:
    base = [1] * 30 + [0] * 10
    cand = [1] * 20 + [0] * 20
    c = compare_unpaired(base, cand, kind="binary", scale=(0, 1), delta=0.05)
    spec = stats.boschloo_exact([[20, 30], [20, 10]], alternative="two-sided")
    assert c.test == "boschloo"
    assert c.p_raw == pytest.approx(spec.pvalue)
    assert c.effect == pytest.approx(-0.25)
    assert c.ci_low is not None and c.ci_high is not None and c.ci_low < -0.25 < c.ci_high
    assert c.verdict == "REGRESSION"


def test_unpaired_identical_data_has_no_nan() -> None:
    c = compare_unpaired([3.0] * 40, [3.0] * 35, kind="ordinal", scale=(1, 5), delta=0.3)
    half = (1 - 0.025 ** (1 / 35)) * 4
    assert (c.test, c.p_raw) == ("all_identical", 1.0)
    assert [c.ci_low, c.ci_high] == pytest.approx([-half, half])


# -- verdicts -------------------------------------------------------------------------------


def test_every_verdict_is_in_the_vocabulary() -> None:
    assert set(VERDICTS) == {
        "REFUSED",
        "INSUFFICIENT_DATA",
        "SIGNIFICANT_BUT_TRIVIAL",
        "REGRESSION",
        "IMPROVEMENT",
        "NO_CHANGE",
    }


def test_refused_when_the_judge_changed() -> None:
    base_meta = {
        "judge_model": ["judge-1"],
        "judge_prompt_sha256": ["aaa"],
        "scale": [[1, 5]],
        "parser": ["v1"],
        "datasets": {"support": "h1"},
    }
    cand_meta = {
        **base_meta,
        "judge_model": ["judge-2"],
        "judge_prompt_sha256": ["bbb"],
        "scale": [(1.0, 5.0)],  # the same scale after a JSON round trip
        "datasets": {"support": "h2"},
    }
    mismatches, notes = comparable(base_meta, cand_meta)
    assert mismatches == ["judge_model", "judge_prompt_sha256"]
    assert len(notes) == 1 and "'support' changed" in notes[0]
    assert comparable(base_meta, dict(base_meta)) == ([], [])

    c = refused("judge", "golden", mismatches, metadata={"baseline": base_meta})
    assert (c.verdict, c.blocks) == ("REFUSED", True)
    assert c.line == (
        "Refused: the judge model and judge prompt differ from the baseline's; re-judge "
        "the stored baseline outputs with the current judge. Blocking."
    )
    assert as_json(c)["metadata"]["baseline"]["judge_model"] == ["judge-1"]
    with pytest.raises(ValueError, match="mismatching"):
        refused("judge", "golden", [])


def test_one_changed_judge_field_differs() -> None:
    c = refused("judge", "golden", ["judge_prompt_sha256"])
    assert c.line == (
        "Refused: the judge prompt differs from the baseline's; re-judge the stored baseline "
        "outputs with the current judge. Blocking."
    )
    assert c.warnings == ("not comparable: the judge prompt differs",)


def test_refused_for_a_reason_other_than_the_judge() -> None:
    reason = "the baseline shares 0 of 12 gated examples of golden with this run: save one"
    c = refused("judge", "golden", reason=reason, n_candidate=12, m=3)
    assert (c.verdict, c.blocks, c.n, c.n_candidate) == ("REFUSED", True, 0, 12)
    assert c.line == f"Refused: {reason}. Blocking."
    assert apply_holm([c, binary_partition(9, 1, "golden")])[0].verdict == "REFUSED"


def test_insufficient_data_below_n_min() -> None:
    c = ordinal(ids([5] * 5), ids([1] * 5), delta=0.3)
    assert (c.n, c.n_min) == (5, 6)
    assert c.verdict == "INSUFFICIENT_DATA"
    assert c.line == (
        "Can't tell: only n=5 examples; at least 6 are needed at this significance level."
    )
    # alpha' = 0.05 / 4 needs 1 + log2(80) -> 8 pairs.
    assert ordinal(ids([5] * 7), ids([1] * 7), delta=0.3, m=4).n_min == 8


def test_insufficient_data_when_more_than_a_fifth_is_missing() -> None:
    base = ids([5] * 40)
    cand: dict[str, list[float | None]] = {k: [1.0] for k in base}
    for key in list(cand)[:9]:
        cand[key] = [None]  # judge failures: missing, not scored
    c = ordinal(base, cand, delta=0.3)
    assert c.n == 31
    assert c.missing_frac == pytest.approx(9 / 40)
    assert c.dropped_baseline == c.dropped_candidate == tuple(list(base)[:9])
    assert c.verdict == "INSUFFICIENT_DATA"
    assert c.line.startswith("Can't tell: 22.5% of the examples are missing")

    for key in list(cand)[3:9]:
        cand[key] = [1.0]
    c = ordinal(base, cand, delta=0.3)
    assert c.verdict == "REGRESSION"
    assert any(w.startswith("7.5% of the examples are missing") for w in c.warnings)


@pytest.mark.parametrize("n", [8, 60])
def test_all_identical_data(n: int) -> None:
    c = ordinal(ids([4] * n), ids([4] * n), delta=0.3)
    half = (1 - (0.05 / 2) ** (1 / n)) * 4
    assert (c.test, c.p_raw, c.p_wilcoxon) == ("all_zero", 1.0, None)
    assert [c.ci_low, c.ci_high] == pytest.approx([-half, half])
    assert c.verdict == ("NO_CHANGE" if half < 0.3 else "INSUFFICIENT_DATA")
    binary = compare(ids([1] * n), ids([1] * n), kind="binary", scale=(0, 1), delta=0.05)
    assert (binary.p_raw, binary.p_exact) == (1.0, 1.0)
    assert binary.ci_high == pytest.approx(half / 4)
    # sd(d) = 0: the power formulas are undefined, not "0 examples detect anything".
    unpaired = compare_unpaired([4] * n, [4] * n, kind="ordinal", scale=(1, 5), delta=0.3)
    for result in (c, binary, unpaired):
        assert (result.mde80, result.n_needed) == (None, None)
        assert (as_json(result)["mde80"], as_json(result)["n_needed"]) == (None, None)
    assert not any("underpowered" in w for w in c.warnings)


def test_constant_nonzero_difference_with_30_pairs() -> None:
    c = ordinal(ids([4] * 30), ids([3] * 30), delta=0.3)
    assert (c.test, c.p_raw, c.ci_low, c.ci_high) == ("paired_t", 0.0, -1.0, -1.0)
    assert c.verdict == "REGRESSION"
    assert (c.mde80, c.n_needed) == (None, None)  # sd(d) = 0
    clustered = ordinal(
        ids([4] * 12),
        ids([3] * 12),
        delta=0.3,
        clusters={f"e{i:03d}": str(i // 3) for i in range(12)},
    )
    assert (clustered.test, clustered.mde80, clustered.n_needed) == (
        "cluster_sign_flip",
        None,
        None,
    )


def test_significant_but_trivial() -> None:
    rng = np.random.default_rng(6)
    base = rng.uniform(0.2, 0.8, 400)
    cand = np.clip(base + 0.01 + rng.normal(0, 0.02, 400), 0, 1)
    c = compare(ids(base), ids(cand), kind="continuous", scale=(0, 1), delta=0.05)
    assert c.p_raw is not None and c.p_raw < 1e-6
    assert (c.verdict, c.blocks) == ("SIGNIFICANT_BUT_TRIVIAL", False)
    assert c.line.startswith("Candidate is better by 0.01 (95% CI 0.01 to 0.01); real (p<0.001)")


def test_improvement_and_no_change() -> None:
    rng = np.random.default_rng(7)
    base = rng.integers(1, 5, 60)
    better = ordinal(ids(base), ids(base + 1), delta=0.3)
    assert (better.verdict, better.blocks) == ("IMPROVEMENT", False)
    assert better.line.startswith("Candidate is better by 1.00")

    noise = rng.choice([-1, 0, 0, 0, 0, 0, 0, 0, 0, 1], 200)
    base = rng.integers(2, 5, 200)
    same = ordinal(ids(base), ids(base + noise), delta=0.3)
    assert (same.verdict, same.blocks) == ("NO_CHANGE", False)
    assert same.line.startswith("No change that matters: the data fit anything from")


def test_strict_mode_blocks_only_when_a_regression_beyond_delta_is_possible() -> None:
    wide = ordinal(ids(ORD_BASE), ids(ORD_CAND), delta=0.3, strict=True)
    assert wide.ci_low is not None and wide.ci_low <= -0.3
    assert (wide.verdict, wide.blocks) == ("INSUFFICIENT_DATA", True)
    # One example up by a point: undecided, but a regression of 0.3 is already ruled out.
    base = [3, 4, 3, 4, 3, 4, 3, 4, 3, 3]
    cand = [3, 4, 3, 4, 3, 4, 3, 4, 3, 4]
    up = ordinal(ids(base), ids(cand), delta=0.3, strict=True)
    assert up.ci_low is not None and up.ci_low > -0.3
    assert (up.verdict, up.blocks) == ("INSUFFICIENT_DATA", False)


def test_k_samples_are_averaged_per_example_none_and_nan_missing() -> None:
    base = {
        "a": [4, None, 5],
        "b": [3, float("nan"), 3],
        "c": [None, None, None],  # no valid sample: missing on this side
        **{f"x{i}": [4, 4, 4] for i in range(7)},
    }
    cand = {
        "a": [3, 3, 3],
        "b": [2, 3, None],
        "c": [4, 4, 4],
        **{f"x{i}": [4, 4, 4] for i in range(7)},
    }
    c = ordinal(base, cand, delta=0.3)
    assert (c.n, c.k_baseline, c.k_candidate) == (9, 3, 3)
    assert c.missing_frac == pytest.approx(0.1)
    assert c.dropped_baseline == c.dropped_candidate == ("c",)
    # a: 4.5 -> 3, b: 3 -> 2.5, the rest equal.
    assert c.effect == pytest.approx((-1.5 - 0.5) / 9)
    assert c.mean_baseline == pytest.approx((4.5 + 3 + 7 * 4) / 9)
    assert (c.down, c.same, c.up) == (2, 7, 0)


def test_variance_split_for_k_samples() -> None:
    rng = np.random.default_rng(8)
    quality = rng.integers(2, 5, 20)
    base = {
        f"e{i}": [float(np.clip(q + rng.integers(-1, 2), 1, 5)) for _ in range(4)]
        for i, q in enumerate(quality)
    }
    cand = {
        f"e{i}": [float(np.clip(q + rng.integers(-1, 2), 1, 5)) for _ in range(4)]
        for i, q in enumerate(quality)
    }
    c = ordinal(base, cand, delta=0.3)
    split = c.variance_split
    assert split is not None
    d = np.array([np.mean(cand[k]) - np.mean(base[k]) for k in base])
    within_base = np.mean([np.var(v, ddof=1) / 4 for v in base.values()])
    within_cand = np.mean([np.var(v, ddof=1) / 4 for v in cand.values()])
    assert split.total == pytest.approx(np.var(d, ddof=1))
    assert split.within_baseline == pytest.approx(within_base)
    assert split.within_candidate == pytest.approx(within_cand)
    assert split.between == pytest.approx(max(0.0, split.total - within_base - within_cand))
    # The same quality on both sides: only the judge's noise separates them.
    assert split.within_dominates
    assert "more samples per example is the cheap fix" in c.warnings[-1]
    assert as_json(c)["variance_split"]["within_dominates"] is True
    assert ordinal(ids(ORD_BASE), ids(ORD_CAND), delta=0.3).variance_split is None


# -- Holm -----------------------------------------------------------------------------------


def test_holm_by_hand() -> None:
    # sorted: 0.01 x3 = 0.03; 0.03 x2 = 0.06; 0.04 x1 = 0.04 -> max(0.06, 0.04) = 0.06
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.2, 0.5], m=4) == pytest.approx([0.8, 1.0])
    with pytest.raises(ValueError):
        holm([float("nan")])


def binary_partition(losses: int, gains: int, partition: str) -> Comparison:
    rest = 40 - losses - gains
    base = [1] * losses + [0] * gains + [1] * (rest - 10) + [0] * 10
    cand = [0] * losses + [1] * gains + [1] * (rest - 10) + [0] * 10
    return compare(
        ids(base), ids(cand), partition=partition, kind="binary", scale=(0, 1), delta=0.05, m=3
    )


def test_holm_across_three_partitions() -> None:
    family = [
        binary_partition(9, 1, "golden"),
        binary_partition(8, 0, "regression"),
        binary_partition(10, 2, "distribution"),
    ]
    # McNemar mid-p by hand: 12/1024, 1/256, (2 * 79 - 66)/4096.
    assert [c.p_raw for c in family] == pytest.approx([12 / 1024, 1 / 256, 92 / 4096])
    assert all(c.ci_level == pytest.approx(1 - 0.05 / 3) for c in family)
    # Before Holm, p_adj is Bonferroni's: 3 * 92/4096 = 0.067 leaves the third undecided.
    assert family[2].verdict == "INSUFFICIENT_DATA"
    adjusted = apply_holm(family)
    # 1/256 x3 = 0.0117; 12/1024 x2 = 0.0234; 92/4096 x1 = 0.0225 -> 0.0234.
    assert [c.p_adj for c in adjusted] == pytest.approx([24 / 1024, 3 / 256, 24 / 1024])
    assert [c.verdict for c in adjusted] == ["REGRESSION"] * 3
    assert "adjusted p=0.023, m=3" in adjusted[2].line
    assert "98.3% CI" in adjusted[2].line
    with pytest.raises(ValueError, match="smaller m"):
        apply_holm([*family, binary_partition(9, 1, "adversarial")])


def test_a_refused_member_still_counts_in_the_holm_family() -> None:
    family = [
        binary_partition(9, 1, "golden"),
        binary_partition(8, 0, "regression"),
        refused("pass_rate", "distribution", ["parser"], m=3),
    ]
    adjusted = apply_holm(family)
    # As if its p were 1: 1/256 x3, 12/1024 x2.
    assert [c.p_adj for c in adjusted[:2]] == pytest.approx([24 / 1024, 3 / 256])
    assert (adjusted[2].p_adj, adjusted[2].verdict, adjusted[2].blocks) == (None, "REFUSED", True)


# -- input and direction ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "scale", "value"),
    [
        ("ordinal", (1, 5), 6),
        ("ordinal", (1, 5), 0),
        ("binary", (0, 1), 0.5),
        ("continuous", (0, 1), float("inf")),
    ],
)
def test_scores_outside_the_scale_raise(kind: Any, scale: Any, value: float) -> None:
    base = {"a": [scale[0]], "b": [value]}
    with pytest.raises(ValueError, match="example 'b'"):
        compare(base, {"a": [scale[0]], "b": [scale[0]]}, kind=kind, scale=scale, delta=0.1)
    with pytest.raises(ValueError, match="example '#1'"):
        compare_unpaired([scale[0], value], [scale[0]], kind=kind, scale=scale, delta=0.1)


def test_lower_is_better_flips_the_direction() -> None:
    rng = np.random.default_rng(9)
    base = rng.uniform(0.2, 0.4, 30)  # e.g. a hallucination rate: lower is better
    cand = base + 0.1 + rng.normal(0, 0.02, 30)
    c = compare(
        ids(base), ids(cand), kind="continuous", scale=(0, 1), delta=0.05, lower_is_better=True
    )
    assert c.mean_candidate is not None and c.mean_baseline is not None
    assert c.mean_candidate > c.mean_baseline  # the means stay raw
    assert c.effect == pytest.approx(-(np.mean(cand) - np.mean(base)))
    assert c.ci_high is not None and c.ci_high < 0
    assert (c.verdict, c.down) == ("REGRESSION", 30)
    flipped = compare(
        ids([0] * 6 + [1] * 4),
        ids([1] * 10),
        kind="binary",
        scale=(0, 1),
        delta=0.05,
        lower_is_better=True,
    )
    assert (flipped.down, flipped.up) == (6, 0)
    assert flipped.effect == pytest.approx(-0.6)
    assert flipped.ci_high is not None and flipped.ci_high < 0


def test_samples_from_pairs_and_detect_regression_inputs() -> None:
    rows = [("a", 4.0), ("b", 3.0), ("a", 5.0), ("c", None)]
    assert samples_from_pairs(rows) == {"a": [4.0, 5.0], "b": [3.0], "c": [None]}
    base = {f"e{i}": v for i, v in enumerate(ORD_BASE)}
    cand: dict[str, Any] = {f"e{i}": v for i, v in enumerate(ORD_CAND)}
    cand["e9"] = None
    cand["e0"] = [3, 3]
    c = detect_regression(base, cand, kind="ordinal", scale=(1, 5), delta=0.3)
    assert (c.paired, c.n, c.k_candidate) == (True, 8, 2)
    with pytest.raises(ValueError, match="two lists"):
        detect_regression(base, ORD_CAND, kind="ordinal", scale=(1, 5), delta=0.3)


def test_to_json_is_json_safe_and_complete() -> None:
    c = ordinal(
        ids([3] * 12),
        ids([2] * 8 + [3] * 4),
        delta=0.3,
        clusters={f"e{i:03d}": f"doc{i // 4}" for i in range(12)},
    )
    out = as_json(c)
    assert out["ci_low"] is None and out["ci_high"] is None
    for key in (
        "mean_baseline",
        "mean_candidate",
        "effect",
        "ci_level",
        "p_raw",
        "p_adj",
        "test",
        "n",
        "dropped_baseline",
        "k_baseline",
        "p_wilcoxon",
        "delta",
        "mde80",
        "n_needed",
        "warnings",
        "verdict",
        "blocks",
        "metadata",
        "line",
    ):
        assert key in out


# -- A/A ------------------------------------------------------------------------------------


def test_a_run_against_a_rerun_of_itself_rarely_regresses() -> None:
    """200 seeded A/A repetitions: 40 examples of fixed true quality, each run judged once
    with noise of -1, 0 or +1 clipped to 1-5. n = 40 takes the paired t-test (fast).

    REGRESSION needs significance in the worse direction, so its expected rate is at most
    alpha/2 = 2.5%; asserting <= alpha leaves 2.3 binomial sds (sd = 1.1% at 200 runs).
    Either direction is significant at rate ~alpha; allow 2 sds above it."""
    rng = np.random.default_rng(2024)
    quality = rng.integers(1, 6, 40)

    def run() -> dict[str, list[float | None]]:
        return ids(np.clip(quality + rng.integers(-1, 2, 40), 1, 5))

    results = [ordinal(run(), run(), delta=0.3) for _ in range(200)]
    regressions = sum(c.verdict == "REGRESSION" for c in results)
    significant = sum(c.p_raw is not None and c.p_raw < 0.05 for c in results)
    assert {c.test for c in results} == {"paired_t"}
    assert regressions / 200 <= 0.05
    assert significant / 200 <= 0.05 + 2 * math.sqrt(0.05 * 0.95 / 200)


def test_a_confidence_level_never_rounds_up_to_100_percent() -> None:
    from pytest_llmeval.stats import ci_percent

    assert [ci_percent(x) for x in (0.95, 0.975, 1 - 0.001 / 2, 1 - 0.05 / 3)] == [
        "95",
        "97.5",
        "99.95",
        "98.3",
    ]


def test_the_stats_package_and_the_verdict_import_no_numpy() -> None:
    """runs/ refuses incomparable runs with the verdict module alone; numpy and scipy
    arrive with the first test. Every public name of the package resolves."""
    code = (
        "import sys, pytest_llmeval.stats as s, pytest_llmeval.stats.verdict\n"
        "assert not {'numpy', 'scipy'} & set(sys.modules), sys.modules.keys()\n"
        "assert all(getattr(s, name) is not None for name in s.__all__)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
