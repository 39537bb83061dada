"""What a comparison reports (STATISTICS.md §4): ``Comparison``, its variance split, and
``TestResult``, what one test contributes to it. Plain data: no numpy here."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Literal

from ..files import nonfinite_as_null

Kind = Literal["binary", "ordinal", "continuous"]
KINDS: tuple[Kind, ...] = ("binary", "ordinal", "continuous")
Verdict = Literal[
    "REFUSED",
    "INSUFFICIENT_DATA",
    "SIGNIFICANT_BUT_TRIVIAL",
    "REGRESSION",
    "IMPROVEMENT",
    "NO_CHANGE",
]
VERDICTS: tuple[Verdict, ...] = (
    "REFUSED",
    "INSUFFICIENT_DATA",
    "SIGNIFICANT_BUT_TRIVIAL",
    "REGRESSION",
    "IMPROVEMENT",
    "NO_CHANGE",
)


@dataclass(frozen=True)
class VarianceSplit:
    """sd(d)² ≈ ω² + mean(s²_base,i/k) + mean(s²_cand,i/k), for k > 1 samples per example."""

    total: float
    between: float  # ω²: what more samples per example cannot remove
    within_baseline: float
    within_candidate: float

    @property
    def within_dominates(self) -> bool:
        return self.within_baseline + self.within_candidate > self.between

    @property
    def advice(self) -> str:
        if self.within_dominates:
            # Not "judge noise": with repeated draws (pass_rate has no judge) it is the
            # app disagreeing with itself as much as the judge.
            return (
                "noise within examples dominates (their draws or judge samples disagree): "
                "more samples per example is the cheap fix"
            )
        return "variation between examples dominates: only more examples help"

    def to_json(self) -> dict[str, Any]:
        return {
            **nonfinite_as_null({f.name: getattr(self, f.name) for f in fields(self)}),
            "within_dominates": self.within_dominates,
            "advice": self.advice,
        }


@dataclass(frozen=True)
class Comparison:
    """One (metric, partition) comparison of a candidate run against its baseline.

    ``effect`` (Δ̂) and the CI are in the metric's units, signed so that negative is worse
    (``lower_is_better`` flips them); the means are raw. ``n`` is the number of pairs, or
    the smaller side when unpaired. A CI bound is ±inf when the data cannot bound it.
    """

    metric: str
    partition: str
    kind: Kind | None
    paired: bool
    test: str
    n: int
    n_baseline: int  # examples with a valid score on each side
    n_candidate: int
    n_min: int
    missing_frac: float
    ci_level: float
    delta: float
    alpha: float
    m: int
    lower_is_better: bool = False
    strict: bool = False
    k_baseline: int = 0  # the most samples any example has
    k_candidate: int = 0
    mean_baseline: float | None = None
    mean_candidate: float | None = None
    effect: float | None = None
    ci_low: float | None = None
    ci_high: float | None = None
    p_raw: float | None = None
    p_adj: float | None = None
    p_exact: float | None = None  # binary: exact binomtest p, reported next to the mid-p
    p_wilcoxon: float | None = None
    down: int | None = None  # binary: losses
    same: int | None = None
    up: int | None = None  # binary: gains
    sd_d: float | None = None
    mde80: float | None = None
    n_needed: int | None = None  # per side when unpaired
    variance_split: VarianceSplit | None = None
    clusters: int | None = None
    dropped_baseline: tuple[str, ...] = ()
    dropped_candidate: tuple[str, ...] = ()
    mismatches: tuple[str, ...] = ()  # run metadata that differs (runs.compare.refused)
    refusal: str = ""  # why runs that are not comparable were refused, and what to do
    metadata: Mapping[str, Any] = field(default_factory=dict, hash=False)
    warnings: tuple[str, ...] = ()
    verdict: Verdict = "INSUFFICIENT_DATA"
    blocks: bool = False
    line: str = ""

    @property
    def alpha_prime(self) -> float:
        return self.alpha / self.m

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe dict: NaN and ±inf become None."""
        values = {f.name: getattr(self, f.name) for f in fields(self)}
        if self.variance_split is not None:
            values["variance_split"] = self.variance_split.to_json()
        out: dict[str, Any] = nonfinite_as_null(values)
        if self.kind == "binary" and self.paired:
            out["losses"], out["gains"] = self.down, self.up
        return out


@dataclass
class TestResult:
    """What a test contributes to a Comparison. A NaN p (scipy's answer to degenerate
    data) is no p: it must never reach the verdict."""

    __test__ = False  # not a pytest test class, whatever its name

    test: str
    p: float | None = None
    ci: tuple[float, float] | None = None
    p_exact: float | None = None
    mde80: float | None = None
    n_needed: int | None = None

    def __post_init__(self) -> None:
        if self.p is not None and not math.isfinite(self.p):
            self.p = None

    def comparison_fields(self, m: int) -> dict[str, Any]:
        """Its share of a Comparison of a family of m. p_adj is Bonferroni's until
        apply_holm() sees the family: Holm's is never larger."""
        return {
            "test": self.test,
            "ci_low": None if self.ci is None else self.ci[0],
            "ci_high": None if self.ci is None else self.ci[1],
            "p_raw": self.p,
            "p_adj": None if self.p is None else min(1.0, m * self.p),
            "p_exact": self.p_exact,
            "mde80": self.mde80,
            "n_needed": self.n_needed,
        }
