"""Window aggregates and the drift test: pure functions of stored evaluations.

Samples are not drawn alike: the sampler takes every request of some kinds (a pattern,
an error, a slow reply: probability 1) and a base rate of the rest. Each sample carries
its inclusion probability, and every aggregate weights it by the inverse, so a window's
mean, p10 and rates estimate the traffic's (an always-sampled kind of request, a tenth
of the traffic, counts as a tenth, not as half of the samples).

A window's judge scores are compared with the baseline's (the CI suite's distribution)
twice: the window alone, which catches a sharp drop at once, and pooled with the window
before, which catches a smaller one a window later. Both share ``alpha`` (Holm's m = 2),
and a drift alert needs a REGRESSION verdict: significant *and* a drop whose interval
reaches past δ, so noise at the baseline's level stays quiet (a false alarm about once
in 1/alpha windows at most). When the samples' weights are equal the test is the
statistics module's unpaired path (Welch from 30 a side, else a permutation test). When
they differ it is a stratified Welch test (``compare_weighted``): like is compared with
like, each stratum of equal inclusion probability with its own variance.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..runs.compare import JUDGE_SCALE, judged_tests, samples
from ..runs.report import read_records

if TYPE_CHECKING:
    from ..stats import Comparison


def baseline_scores(report: str | Path, partitions: Collection[str] | None = None) -> list[float]:
    """The per-example judge scores of a CI run's report (``--llmeval-report``), the
    baseline that windows of live traffic are compared with. ValueError names the file."""
    records = read_records(Path(report))
    by_partition = samples(records, "judge", judged_tests(records))
    scores = [
        sum(valid) / len(valid)
        for partition, examples in by_partition.items()
        if partitions is None or partition in partitions
        for values in examples.values()
        if (valid := [v for v in values if v is not None])
    ]
    if not scores:
        raise ValueError(f"{report}: no judge scores in the selected partitions")
    return scores


def inverse_probability(probability: float | None, rate: float) -> float:
    """A sample's weight: 1 / its inclusion probability. None (a base-rate sample of a
    file written before probabilities were stored) is taken at ``rate``."""
    drawn = rate if probability is None else probability
    return 1.0 / drawn if drawn > 0 else 1.0


def judge_scores(
    results: Sequence[Mapping[str, Any]], weights: Sequence[float] | None = None
) -> tuple[list[float], list[float]]:
    """Every judge score of a window's samples, and the weight of its sample."""
    scores: list[float] = []
    of: list[float] = []
    for sample, weight in zip(results, _weights(results, weights), strict=True):
        for r in sample.values():
            if r.get("kind") == "judge" and r.get("score") is not None:
                scores.append(float(r["score"]))
                of.append(weight)
    return scores, of


def _weights(results: Sequence[Any], weights: Sequence[float] | None) -> Sequence[float]:
    if weights is None:
        return [1.0] * len(results)
    if len(weights) != len(results):
        raise ValueError(f"{len(weights)} weights for {len(results)} samples")
    return weights


def quantile(
    values: Sequence[float], q: float, weights: Sequence[float] | None = None
) -> float | None:
    """The q-quantile, None when empty: numpy's default (linear interpolation, "type 7")
    for equal weights, and its weighted form (Akinshin 2023, "Weighted quantile
    estimators") otherwise: with Kish's effective n, h = (n - 1) q + 1, the average of
    the weighted empirical quantile function over [(h - 1) / n, h / n]. For equal weights
    that interval spans the two order statistics type 7 interpolates, in its proportions;
    it does not depend on the weights' scale."""
    if not values:
        return None
    w = [1.0] * len(values) if weights is None else [float(x) for x in weights]
    n = kish(w)
    total = sum(w)
    h = (n - 1) * q + 1
    low, high = (h - 1) / n, h / n
    found, before = 0.0, 0.0
    for value, weight in sorted(zip(values, w, strict=True)):
        start, end = before / total, (before + weight) / total
        found += value * max(0.0, min(end, high) - max(start, low))
        before += weight
    return found / (high - low)


def _mean(values: Sequence[float], weights: Sequence[float]) -> float | None:
    total = sum(weights)
    return sum(v * w for v, w in zip(values, weights, strict=True)) / total if total else None


def kish(weights: Sequence[float]) -> float:
    """Kish's effective sample size of weighted samples, (sum w)^2 / sum w^2."""
    squares = sum(w * w for w in weights)
    return sum(weights) ** 2 / squares if squares else 0.0


def aggregate(
    results: Sequence[Mapping[str, Any]], weights: Sequence[float] | None = None
) -> dict[str, Any]:
    """A window's aggregates from its samples' evaluations (evaluator name -> result),
    each sample weighted by ``weights`` (1 / its inclusion probability; default equal).
    The ``_n`` counts are samples; ``judge_n_effective`` is Kish's effective n."""
    sample_weights = _weights(results, weights)
    scores, score_weights = judge_scores(results, sample_weights)

    def outcomes(kind: str, of: bool) -> tuple[list[float], list[float]]:
        """1.0 where the sample's result of ``kind`` is ``of``, else 0.0; and weights."""
        found = [
            (float(bool(r["passed"]) is of), weight)
            for sample, weight in zip(results, sample_weights, strict=True)
            for r in sample.values()
            if r.get("kind") == kind and r.get("passed") is not None
        ]
        return [f[0] for f in found], [f[1] for f in found]

    ungrounded, grounded_w = outcomes("grounding", False)
    constrained, constrained_w = outcomes("constraints", True)
    return {
        "samples": len(results),
        "judge_n": len(scores),
        "judge_n_effective": round(kish(score_weights), 1),
        "judge_mean": _mean(scores, score_weights),
        "judge_p10": quantile(scores, 0.10, score_weights),
        "hallucination_n": len(ungrounded),
        "hallucination_rate": _mean(ungrounded, grounded_w),
        "constraint_n": len(constrained),
        "constraint_pass_rate": _mean(constrained, constrained_w),
        "eval_errors": sum(1 for sample in results for r in sample.values() if r.get("error")),
    }


def drift(
    baseline: Sequence[float],
    window: Sequence[float],
    previous: Sequence[float] = (),
    *,
    delta: float,
    alpha: float,
    weights: Sequence[float] | None = None,
    previous_weights: Sequence[float] | None = None,
) -> dict[str, Any] | None:
    """Is this window's judge score worse than the baseline's? None without data.
    ``weights`` and ``previous_weights`` (1 / inclusion probability; default equal)
    are the scores' weights in the window and in the window before."""
    if len(baseline) < 2 or len(window) < 2:
        return None
    from ..stats import compare_unpaired

    window_weights = list(_weights(window, weights))
    tests = {"window": (list(window), window_weights)}
    if previous:
        tests["with the window before"] = (
            [*previous, *window],
            [*_weights(previous, previous_weights), *window_weights],
        )
    comparisons = {
        label: (
            compare_unpaired(
                baseline,
                scores,
                metric="judge",
                kind="ordinal",
                scale=JUDGE_SCALE,
                delta=delta,
                alpha=alpha,
                m=len(tests),
            )
            if len(set(of)) == 1
            else compare_weighted(baseline, scores, of, delta=delta, alpha=alpha, m=len(tests))
        )
        for label, (scores, of) in tests.items()
    }
    alerting = [label for label, c in comparisons.items() if c.verdict == "REGRESSION"]
    shown = comparisons[alerting[0] if alerting else "window"]
    return {
        "alert": bool(alerting),
        "verdict": shown.verdict,
        "line": shown.line,
        "tests": {
            label: {
                "verdict": c.verdict,
                "test": c.test,
                "n_baseline": c.n_baseline,
                "n_window": c.n_candidate,
                "n_effective": round(kish(tests[label][1]), 1),
                "mean_baseline": c.mean_baseline,
                "mean_window": c.mean_candidate,
                "effect": c.effect,
                "ci": [c.ci_low, c.ci_high],
                "p_adj": c.p_adj,
            }
            for label, c in comparisons.items()
        },
    }


def compare_weighted(
    baseline: Sequence[float],
    scores: Sequence[float],
    weights: Sequence[float],
    *,
    delta: float,
    alpha: float,
    m: int = 1,
) -> Comparison:
    """The baseline's judge scores against a window's weighted ones (weight: 1 / the
    inclusion probability), as the statistics module's Comparison and verdict.

    The samples of one inclusion probability form a stratum (in practice two: the
    forced samples, a census of their kind, and the base-rate sample of the rest). The
    window's mean is the strata's means weighted by their estimated share of the
    traffic (W_h / W, W_h the sum of the stratum's weights), and its variance
    sum_h (W_h / W)^2 s_h^2 / n_h: between-strata differences add nothing, which is what
    pooling unweighted got wrong. (A stratum of one sample borrows the window's
    variance.) The test is Welch's t against the baseline's mean, the degrees of freedom
    by Satterthwaite over the baseline and the strata, the CI at 1 - alpha/m. The n
    that n_min is checked against is Kish's effective n of the window, or the
    baseline's n if smaller."""
    from scipy import stats  # type: ignore[import-untyped, unused-ignore]

    from ..stats import Comparison, apply_holm, mde, minimum_n
    from ..stats.intervals import identical

    if len(scores) != len(weights) or not scores or min(weights) <= 0:
        raise ValueError("one positive weight per score is needed")
    alpha_prime = alpha / m
    width = JUDGE_SCALE[1] - JUDGE_SCALE[0]
    n_base, n_window = len(baseline), len(scores)
    mean_base = sum(baseline) / n_base
    var_base = _variance(baseline)
    pooled = _variance(scores)
    strata: dict[float, list[float]] = {}
    for score, weight in zip(scores, weights, strict=True):
        strata.setdefault(weight, []).append(score)
    total = sum(weights)
    mean_window = 0.0
    terms: list[tuple[float, int]] = []  # (variance term, its degrees of freedom)
    if var_base is not None:
        terms.append((var_base / n_base, n_base - 1))
    for weight, values in strata.items():
        share = weight * len(values) / total
        mean_window += share * sum(values) / len(values)
        own = _variance(values)
        variance, dof = (own, len(values) - 1) if own is not None else (pooled, n_window - 1)
        terms.append((share**2 * (variance or 0.0) / len(values), dof))
    effect = mean_window - mean_base
    se = math.sqrt(sum(t for t, _ in terms))
    n_effective = kish(weights)
    n = min(n_base, math.floor(n_effective + 1e-9))
    df_den = sum(t * t / dof for t, dof in terms if dof > 0)
    df = se**4 / df_den if df_den else float(n_base + n_window - 2)
    mde80: float | None = None
    if max(baseline) == min(baseline) == max(scores) == min(scores):
        # Everything identical: the statistics module's rule, on the smaller side's n.
        test, p, ci = "all_identical", 1.0, identical(max(1, n), alpha_prime, width)
    elif se == 0:
        test, p, ci = "weighted_welch_t", 0.0, (effect, effect)  # two constants
    else:
        crit = float(stats.t.ppf(1 - alpha_prime / 2, df))
        p = float(2 * stats.t.sf(abs(effect) / se, df))
        test, ci = "weighted_welch_t", (effect - crit * se, effect + crit * se)
        mde80 = mde(se, df, alpha_prime)
    note = (
        f"weighted by 1/inclusion probability: {n_window} samples in {len(strata)} "
        f"strata, Kish effective n {n_effective:.1f}"
    )
    comparison = Comparison(
        metric="judge",
        partition="",
        kind="ordinal",
        paired=False,
        test=test,
        n=n,
        n_baseline=n_base,
        n_candidate=n_window,
        n_min=minimum_n(alpha_prime),
        missing_frac=0.0,
        ci_level=1 - alpha_prime,
        delta=delta,
        alpha=alpha,
        m=m,
        k_baseline=1,
        k_candidate=1,
        mean_baseline=mean_base,
        mean_candidate=mean_window,
        effect=effect,
        ci_low=ci[0],
        ci_high=ci[1],
        p_raw=p,
        mde80=mde80,
        warnings=(note,),
    )
    # Holm over a family of m (p_adj = min(1, m p) for one member), verdict and line.
    return apply_holm([comparison])[0]


def _variance(values: Sequence[float]) -> float | None:
    """The sample variance (n - 1), None for fewer than two values."""
    if len(values) < 2:
        return None
    mean = sum(values) / len(values)
    return sum((v - mean) ** 2 for v in values) / (len(values) - 1)
