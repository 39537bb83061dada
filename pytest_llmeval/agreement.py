"""Agreement between coders: Krippendorff's alpha over units coded by several coders,
any of whom may be missing on a unit. A judge panel's run is the use: each verdict is a
unit, each judge a coder; rubric scores are ordinal, pairwise winners nominal.

alpha = 1 - D_o / D_e, from the coincidence matrix of the pairable values (units with at
least two values), as in Krippendorff, "Computing Krippendorff's alpha-reliability"
(2011). 1 is perfect agreement, 0 agreement at chance, below 0 systematic disagreement.
Pure Python: a run's units are few and their values fewer.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Literal

Metric = Literal["nominal", "ordinal", "interval"]
Value = float | str  # a score (an int is a float here) or a category
Delta = Callable[[Value, Value], float]
METRICS: tuple[Metric, ...] = ("nominal", "ordinal", "interval")


def krippendorff_alpha(
    units: Iterable[Sequence[Value | None]], metric: Metric = "nominal"
) -> float:
    """Krippendorff's alpha of ``units`` (each the values its coders gave, None where a
    coder gave none). ``ordinal`` and ``interval`` values must be numbers (ordinal uses
    only their order). NaN when alpha is undefined: fewer than two pairable values, or
    no variation at all (every value the same, so no disagreement could be expected)."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
    # The coincidence matrix: each ordered pair of values of one unit, weighted 1/(m-1).
    coincidences: dict[tuple[Value, Value], float] = {}
    for unit in units:
        values = [v for v in unit if v is not None and not _nan(v)]
        m = len(values)
        if m < 2:
            continue  # an unpairable unit says nothing about agreement
        for i, c in enumerate(values):
            for j, k in enumerate(values):
                if i != j:
                    coincidences[c, k] = coincidences.get((c, k), 0.0) + 1 / (m - 1)
    totals: dict[Value, float] = {}
    for (c, _), weight in coincidences.items():
        totals[c] = totals.get(c, 0.0) + weight
    n = sum(totals.values())
    if n < 2 or len(totals) < 2:
        return math.nan
    distance = _distance(metric, totals)
    observed = sum(w * distance(c, k) for (c, k), w in coincidences.items())
    expected = sum(totals[c] * totals[k] * distance(c, k) for c in totals for k in totals if c != k)
    return 1 - (n - 1) * observed / expected


def _nan(value: Value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def _distance(metric: Metric, totals: dict[Value, float]) -> Delta:
    """The squared difference function δ² of ``metric``."""
    if metric == "nominal":
        return lambda c, k: 0.0 if c == k else 1.0
    if metric == "interval":
        return lambda c, k: (float(c) - float(k)) ** 2
    # Ordinal: the values between c and k, counted by how often they were given, less
    # half of c's and k's own counts.
    ranked = sorted(totals, key=float)
    position = {value: i for i, value in enumerate(ranked)}
    cumulative = [0.0]
    for value in ranked:
        cumulative.append(cumulative[-1] + totals[value])

    def ordinal(c: Value, k: Value) -> float:
        low, high = sorted((position[c], position[k]))
        between = cumulative[high + 1] - cumulative[low]
        return (between - (totals[c] + totals[k]) / 2) ** 2

    return ordinal
