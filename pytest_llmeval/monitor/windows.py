"""Window aggregates and the drift test: pure functions of stored evaluations.

A window's judge scores are compared with the baseline's by the statistics module's
unpaired path (Welch from 30 a side, else a permutation test), twice: the window alone,
which catches a sharp drop at once, and pooled with the window before, which catches a
smaller one a window later. Both share ``alpha`` (Holm's m = 2), and a drift alert needs
a REGRESSION verdict: significant *and* a drop whose interval reaches past δ, so noise at
the baseline's level stays quiet (a false alarm about once in 1/alpha windows at most).
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import Any

from ..baseline import JUDGE_SCALE, judged_tests, read_records, samples


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


def judge_scores(results: Sequence[Mapping[str, Any]]) -> list[float]:
    """Every judge score of a window's samples."""
    return [
        float(r["score"])
        for sample in results
        for r in sample.values()
        if r.get("kind") == "judge" and r.get("score") is not None
    ]


def quantile(values: Sequence[float], q: float) -> float | None:
    """The q-quantile with linear interpolation (numpy's default), None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def _rate(outcomes: Sequence[bool], of: bool) -> float | None:
    return sum(o is of for o in outcomes) / len(outcomes) if outcomes else None


def aggregate(results: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """A window's aggregates from its samples' evaluations (evaluator name -> result)."""
    scores = judge_scores(results)

    def outcomes(kind: str) -> list[bool]:
        return [
            bool(r["passed"])
            for sample in results
            for r in sample.values()
            if r.get("kind") == kind and r.get("passed") is not None
        ]

    grounded, constrained = outcomes("grounding"), outcomes("constraints")
    return {
        "samples": len(results),
        "judge_n": len(scores),
        "judge_mean": sum(scores) / len(scores) if scores else None,
        "judge_p10": quantile(scores, 0.10),
        "hallucination_n": len(grounded),
        "hallucination_rate": _rate(grounded, False),
        "constraint_n": len(constrained),
        "constraint_pass_rate": _rate(constrained, True),
        "eval_errors": sum(1 for sample in results for r in sample.values() if r.get("error")),
    }


def drift(
    baseline: Sequence[float],
    window: Sequence[float],
    previous: Sequence[float] = (),
    *,
    delta: float,
    alpha: float,
) -> dict[str, Any] | None:
    """Is this window's judge score worse than the baseline's? None without data."""
    if len(baseline) < 2 or len(window) < 2:
        return None
    from ..regression import compare_unpaired

    tests = {"window": list(window)}
    if previous:
        tests["with the window before"] = [*previous, *window]
    comparisons = {
        label: compare_unpaired(
            baseline,
            scores,
            metric="judge",
            kind="ordinal",
            scale=JUDGE_SCALE,
            delta=delta,
            alpha=alpha,
            m=len(tests),
        )
        for label, scores in tests.items()
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
                "mean_baseline": c.mean_baseline,
                "mean_window": c.mean_candidate,
                "effect": c.effect,
                "ci": [c.ci_low, c.ci_high],
                "p_adj": c.p_adj,
            }
            for label, c in comparisons.items()
        },
    }
