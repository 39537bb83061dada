"""The verdict of a comparison (STATISTICS.md §3), its plain-language line (§4) and Holm
across the gated family (§5). Plain arithmetic: no numpy here."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from typing import Literal

from .comparison import Comparison, Verdict

MISSING_MAX = 0.20  # more missing than this: INSUFFICIENT_DATA
_MINUS = "\N{MINUS SIGN}"

Insufficient = Literal["no data", "missing", "n_min", "no p-value", "unbounded"]


def minimum_n(alpha_prime: float) -> int:
    """STATISTICS.md's n_min: the fewest examples that can reach significance at all."""
    return max(6, math.ceil(1 + math.log2(1 / alpha_prime)))


def insufficient_reason(c: Comparison) -> Insufficient | None:
    """Why the data cannot decide whatever the test says, or None."""
    if not c.n_baseline or not c.n_candidate or (c.paired and not c.n):
        return "no data"
    if c.missing_frac > MISSING_MAX:
        return "missing"
    if c.n < c.n_min:
        return "n_min"
    if c.p_adj is None or c.ci_low is None or c.ci_high is None:
        return "no p-value"
    if not (math.isfinite(c.ci_low) and math.isfinite(c.ci_high)):
        return "unbounded"
    return None


def decide(c: Comparison) -> tuple[Verdict, bool]:
    """(verdict, whether it blocks): the table of STATISTICS.md §3."""
    if c.mismatches or c.refusal:
        return "REFUSED", True
    verdict = None if insufficient_reason(c) else _from_the_test(c)
    if verdict is not None:
        return verdict, verdict == "REGRESSION"
    low = -math.inf if c.ci_low is None else c.ci_low
    return "INSUFFICIENT_DATA", c.strict and low <= -c.delta


def _from_the_test(c: Comparison) -> Verdict | None:
    """Significance from p_adj, magnitude from the CI against ±δ; None: can't tell."""
    assert c.p_adj is not None and c.ci_low is not None and c.ci_high is not None
    assert c.effect is not None
    sig = c.p_adj < c.alpha
    inside = -c.delta < c.ci_low and c.ci_high < c.delta
    if sig and inside:
        return "SIGNIFICANT_BUT_TRIVIAL"
    if sig and c.effect < 0:
        return "REGRESSION"
    if sig and c.effect > 0:
        return "IMPROVEMENT"
    return "NO_CHANGE" if inside else None


def finish(c: Comparison) -> Comparison:
    """``c`` with its verdict, whether it blocks, and its line. A REFUSED comparison keeps
    the line its caller wrote: why two runs are not comparable is no statistic."""
    verdict, blocks = decide(c)
    decided = replace(c, verdict=verdict, blocks=blocks)
    if verdict == "REFUSED":
        return decided
    return replace(decided, line=line(decided))


# -- the line -----------------------------------------------------------------------------


def fmt_number(x: float, decimals: int) -> str:
    """``x`` with a real minus sign, ∞ for infinities and no negative zero."""
    if math.isinf(x):
        return f"{_MINUS}∞" if x < 0 else "∞"
    text = f"{x:.{decimals}f}"
    if float(text) == 0:
        return f"{0.0:.{decimals}f}"  # no negative zero
    return text.replace("-", _MINUS)


def ci_percent(level: float) -> str:
    """A confidence level as a percentage, to three digits but never rounded up to 100
    (98.3, 97.5, 99.95)."""
    digits = 3
    while (text := f"{100 * level:.{digits}g}") == "100" and digits < 8:
        digits += 1
    return text


def p_phrase(p: float) -> str:
    """A p-value in a sentence, to two significant digits: p=0.012, p<0.001."""
    return "p<0.001" if p < 0.001 else f"p={p:.2g}"


def line(c: Comparison) -> str:
    """The plain-language line of a decided verdict other than REFUSED (§4)."""
    if c.verdict in ("REGRESSION", "IMPROVEMENT", "SIGNIFICANT_BUT_TRIVIAL"):
        return _significant(c)
    if c.verdict == "NO_CHANGE":
        assert c.ci_low is not None and c.ci_high is not None
        return (
            f"No change that matters: the data fit anything from {_num(c, c.ci_low)} to "
            f"{_num(c, c.ci_high)}, inside ±{c.delta:g} ({_p_text(c)})."
        )
    return _insufficient(c) + (" Blocking (strict mode)." if c.blocks else "")


def _num(c: Comparison, x: float) -> str:
    """Two decimals, more when δ needs them (δ = 0.005 on a 0-1 scale)."""
    return fmt_number(x, max(2, -math.floor(math.log10(c.delta))))


def _p_text(c: Comparison) -> str:
    if c.p_adj is None:
        return ""
    return p_phrase(c.p_adj) if c.m == 1 else f"adjusted {p_phrase(c.p_adj)}, m={c.m}"


def _significant(c: Comparison) -> str:
    assert c.effect is not None and c.ci_low is not None and c.ci_high is not None
    head = (
        f"Candidate is {'worse' if c.effect < 0 else 'better'} by {_num(c, abs(c.effect))} "
        f"({ci_percent(c.ci_level)}% CI {_num(c, c.ci_low)} to {_num(c, c.ci_high)})"
    )
    if c.verdict == "SIGNIFICANT_BUT_TRIVIAL":
        return f"{head}; real ({_p_text(c)}) but inside ±{c.delta:g}, too small to matter."
    return f"{head}; unlikely to be noise ({_p_text(c)}).{' Blocking.' if c.blocks else ''}"


def _insufficient(c: Comparison) -> str:
    """Why we can't tell, and (when the data can say) how many examples would tell."""
    reason = insufficient_reason(c)
    if reason == "no data":
        return "Can't tell: no example has a valid score on both sides."
    if reason == "missing":
        return (
            f"Can't tell: {c.missing_frac:.1%} of the examples are missing (more than "
            f"{MISSING_MAX:.0%}); fix the failed judge or infrastructure calls and rerun."
        )
    if reason == "n_min":
        return (
            f"Can't tell: only n={c.n} examples; at least {c.n_min} are needed at this "
            "significance level."
        )
    if c.ci_low is None or c.ci_high is None:
        return "Can't tell: the test gave no usable p-value."
    text = f"Can't tell: the data fit anything from {_num(c, c.ci_low)} to {_num(c, c.ci_high)}."
    if c.mde80 is not None and c.n_needed is not None and c.n_needed > c.n:
        sizes = f"n={c.n}" if c.paired else f"{c.n_baseline} and {c.n_candidate} examples"
        text += (
            f" With {sizes} only changes ≥ {_num(c, c.mde80)} are reliably detectable; "
            f"about {c.n_needed} examples{'' if c.paired else ' per side'} are needed."
        )
    return text


# -- the gated family ---------------------------------------------------------------------


def holm(p_values: Sequence[float], *, m: int | None = None) -> list[float]:
    """Holm-Bonferroni adjusted p-values, in the input order: sorted ascending,
    p_adj(j) = min(1, max over i <= j of (m - i + 1) p(i)). ``m`` (default: how many
    p-values) is the family size fixed before the run; absent members count as p = 1."""
    family = len(p_values) if m is None else m
    if family < len(p_values):
        raise ValueError(f"m={family} is smaller than the {len(p_values)} p-values given")
    for p in p_values:
        if not 0 <= p <= 1:  # also rejects NaN
            raise ValueError(f"a p-value is in [0, 1], not {p!r}")
    adjusted = [0.0] * len(p_values)
    running = 0.0
    for rank, j in enumerate(sorted(range(len(p_values)), key=lambda j: p_values[j])):
        running = max(running, min(1.0, (family - rank) * p_values[j]))
        adjusted[j] = running
    return adjusted


def apply_holm(comparisons: Sequence[Comparison]) -> list[Comparison]:
    """Set p_adj by Holm across the gated family and recompute the verdicts. The family
    size is the largest ``m`` given (members with no data count as p = 1)."""
    if not comparisons:
        return []
    if any(c.m < len(comparisons) for c in comparisons):
        raise ValueError(
            f"{len(comparisons)} gated comparisons, but some were computed with a smaller m "
            "(their CIs are too narrow): pass m = the number of gated comparisons to compare()"
        )
    family = max(c.m for c in comparisons)
    adjusted = holm([1.0 if c.p_raw is None else c.p_raw for c in comparisons], m=family)
    return [
        finish(replace(c, p_adj=None if c.p_raw is None else p))
        for c, p in zip(comparisons, adjusted, strict=True)
    ]
