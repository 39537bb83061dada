"""Confidence intervals for Δ (STATISTICS.md §2-3): Wilson and Newcombe's method 10 for
proportions, a test inverted by bisection, and the fixed interval of identical data."""

from __future__ import annotations

import math
from collections.abc import Callable

from scipy import stats  # type: ignore[import-untyped, unused-ignore]


def identical(n: int, alpha_prime: float, width: float) -> tuple[float, float]:
    """All differences zero: ±(1 - (alpha'/2)^(1/n)) · (scale_max - scale_min), where scipy
    would give NaN and a permutation CI would collapse to [0, 0]."""
    half = (1 - (alpha_prime / 2) ** (1 / n)) * width
    return -half, half


def flip(ci: tuple[float, float], sign: int) -> tuple[float, float]:
    """A CI of cand - base turned into one of d = sign * (cand - base)."""
    return ci if sign > 0 else (-ci[1], -ci[0])


def invert(
    p_at: Callable[[float], float],
    estimate: float,
    far: tuple[float, float],
    alpha_prime: float,
    width: float,
) -> tuple[float, float]:
    """The CI {theta : p(theta) >= alpha'} of a test, by bisection from the estimate
    (where p = 1) outwards; a side is infinite when even a far theta is not rejected."""
    # p is a step function of theta: six digits of the scale locate a step well enough.
    digits = max(0, 6 - math.ceil(math.log10(max(width, 1.0))))
    tol = 10.0 ** -(digits + 1)

    def bound(far: float) -> float:
        if p_at(far) >= alpha_prime:
            return math.copysign(math.inf, far - estimate)
        inside, outside = estimate, far
        while abs(outside - inside) > tol:
            mid = (inside + outside) / 2
            if p_at(mid) >= alpha_prime:
                inside = mid
            else:
                outside = mid
        # Rounding snaps a bound that sits on a data point (often 0) onto it.
        return round((inside + outside) / 2, digits) + 0.0

    return bound(far[0]), bound(far[1])


def wilson(successes: int, n: int, z: float) -> tuple[float, float]:
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def newcombe(
    table: tuple[int, int, int, int], alpha_prime: float, *, paired: bool
) -> tuple[float, float]:
    """Newcombe (1998) method 10 for p_cand - p_base: Wilson intervals of the two
    proportions combined with the phi correlation of the pairs. Unpaired, phi = 0 gives
    the hybrid score interval (method 10 of his paper on independent proportions).

    Paired, ``table`` is (both pass, only candidate, only baseline, neither); unpaired,
    it is (candidate passes, candidate n, baseline passes, baseline n)."""
    z = float(stats.norm.ppf(1 - alpha_prime / 2))
    if paired:
        both, only_cand, only_base, neither = table
        n1 = n2 = both + only_cand + only_base + neither
        x1, x2 = both + only_cand, both + only_base
        margins = x1 * (only_base + neither) * x2 * (only_cand + neither)
        phi = (both * neither - only_cand * only_base) / math.sqrt(margins) if margins else 0.0
    else:
        x1, n1, x2, n2 = table
        phi = 0.0
    p1, p2 = x1 / n1, x2 / n2
    l1, u1 = wilson(x1, n1, z)
    l2, u2 = wilson(x2, n2, z)
    below = (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2
    above = (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2
    return p1 - p2 - math.sqrt(max(0.0, below)), p1 - p2 + math.sqrt(max(0.0, above))
