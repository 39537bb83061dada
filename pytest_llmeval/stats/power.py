"""Power (STATISTICS.md §4): MDE80, the effect detected 80% of the time at the n we
have, and the n needed to detect δ. Both are undefined (None) when sd(d) is 0: "0
examples detect any change" would be false."""

from __future__ import annotations

import math

from scipy import stats  # type: ignore[import-untyped, unused-ignore]

POWER = 0.8


def mde(se: float, df: float, alpha_prime: float) -> float:
    """MDE80 of a t-based comparison: the effect detected 80% of the time."""
    return (float(stats.t.ppf(1 - alpha_prime / 2, df)) + float(stats.t.ppf(POWER, df))) * se


def n_needed(sd: float, delta: float, alpha_prime: float, design_effect: float = 1.0) -> int:
    """ceil(((z_{1-alpha'/2} + z_0.8) · sd / δ)²), times the design effect of clustering."""
    z = float(stats.norm.ppf(1 - alpha_prime / 2)) + float(stats.norm.ppf(POWER))
    return math.ceil((z * sd / delta) ** 2 * design_effect)


def underpowered(mde80: float | None, delta: float) -> list[str]:
    """The warning when MDE80 > δ: a change of δ would likely go unseen."""
    if mde80 is None or mde80 <= delta:
        return []
    return [f"underpowered: MDE80 {mde80:.3g} > δ {delta:g}"]
