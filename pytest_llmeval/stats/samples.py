"""The input of a comparison (STATISTICS.md §1): per-example samples, the caller's
settings, the valid samples of each side, and the pairs they make with what is missing."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from .comparison import KINDS, Comparison, Kind
from .verdict import finish, minimum_n

Samples = Mapping[str, Sequence[float | None]]  # example id -> its k samples (None: lost)
Scores = Mapping[str, float | Sequence[float | None] | None] | Sequence[float | None]
Array = NDArray[np.float64]

MISSING_WARN = 0.05  # above, a warning; above verdict.MISSING_MAX, INSUFFICIENT_DATA


def samples_from_pairs(pairs: Iterable[tuple[str, float | None]]) -> dict[str, list[float | None]]:
    """Group ``(example id, score)`` rows into Samples: k rows per id are k samples."""
    grouped: dict[str, list[float | None]] = {}
    for example_id, value in pairs:
        grouped.setdefault(example_id, []).append(value)
    return grouped


def as_samples(scores: Mapping[str, float | Sequence[float | None] | None]) -> Samples:
    """Samples from id -> a score, None, or a list of k samples."""
    return {
        example_id: list(value) if isinstance(value, Sequence) else [value]
        for example_id, value in scores.items()
    }


def mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


@dataclass(frozen=True)
class Options:
    """The caller's settings shared by the paired and the unpaired paths, checked."""

    kind: Kind
    scale: tuple[float, float]
    delta: float
    metric: str = "score"
    partition: str = ""
    lower_is_better: bool = False
    alpha: float = 0.05
    m: int = 1
    strict: bool = False
    metadata: Mapping[str, Any] | None = None
    extra_warnings: Sequence[str] = ()

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}, not {self.kind!r}")
        lo, hi = self.scale
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"scale must be (min, max) with min < max, not {self.scale!r}")
        if self.kind == "binary" and (lo, hi) != (0, 1):
            raise ValueError(f"a binary metric has scale (0, 1), not {self.scale!r}")
        if not (math.isfinite(self.delta) and self.delta > 0):
            raise ValueError(f"delta (the practical threshold) must be > 0, not {self.delta!r}")
        if not 0 < self.alpha < 1:
            raise ValueError(f"alpha must be in (0, 1), not {self.alpha!r}")
        if self.m < 1:
            raise ValueError(f"m (gated comparisons in the run) must be >= 1, not {self.m!r}")

    @property
    def sign(self) -> int:
        return -1 if self.lower_is_better else 1

    @property
    def alpha_prime(self) -> float:
        return self.alpha / self.m

    @property
    def width(self) -> float:
        return self.scale[1] - self.scale[0]

    @property
    def label(self) -> str:
        return f"{self.metric}[{self.partition}]" if self.partition else self.metric

    def comparison(self, **values: Any) -> Comparison:
        """A Comparison with these settings, its verdict and line decided."""
        return finish(
            Comparison(
                metric=self.metric,
                partition=self.partition,
                kind=self.kind,
                n_min=minimum_n(self.alpha_prime),
                ci_level=1 - self.alpha_prime,
                delta=self.delta,
                alpha=self.alpha,
                m=self.m,
                lower_is_better=self.lower_is_better,
                strict=self.strict,
                metadata=dict(self.metadata or {}),
                **values,
            )
        )


@dataclass(frozen=True)
class Side:
    """One run's valid samples per example id (ids with none left out), and k, the most
    samples any example has."""

    valid: dict[str, list[float]]
    k: int


def valid_samples(samples: Samples, side: str, o: Options) -> Side:
    """None and NaN are missing samples (a lost judge call); a score off the scale raises."""
    valid: dict[str, list[float]] = {}
    k = 0
    for example_id, values in samples.items():
        where = f"{o.label}: {side} example {example_id!r}"
        if isinstance(values, str | bytes) or not isinstance(values, Sequence):
            raise ValueError(f"{where}: samples must be a list of numbers, not {values!r}")
        k = max(k, len(values))
        got = [_checked(value, where, o) for value in values]
        if kept := [x for x in got if not math.isnan(x)]:
            valid[example_id] = kept
    return Side(valid, k)


def _checked(value: float | None, where: str, o: Options) -> float:
    """The sample as a float (NaN when missing), or ValueError off the scale."""
    x = math.nan if value is None else float(value)
    if math.isnan(x):
        return x
    if not o.scale[0] <= x <= o.scale[1]:
        raise ValueError(
            f"{where}: score {value!r} is outside the declared scale "
            f"[{o.scale[0]:g}, {o.scale[1]:g}]"
        )
    if o.kind == "binary" and x not in (0.0, 1.0):
        raise ValueError(f"{where}: a binary score is 0 or 1, not {value!r}")
    return x


@dataclass(frozen=True)
class Pairs:
    """The examples valid on both sides, sorted by id (random sign flips must not depend
    on the order given), their per-example means and the signed differences d."""

    ids: list[str]
    base: dict[str, list[float]]
    cand: dict[str, list[float]]
    x_base: Array
    x_cand: Array
    d: Array

    binary_single: bool  # binary, one sample per side: McNemar's 2x2 table

    @property
    def n(self) -> int:
        return len(self.ids)

    @property
    def mean_baseline(self) -> float | None:
        return float(np.mean(self.x_base)) if self.n else None

    @property
    def mean_candidate(self) -> float | None:
        return float(np.mean(self.x_cand)) if self.n else None

    @property
    def effect(self) -> float | None:
        return float(np.mean(self.d)) if self.n else None

    @property
    def sd(self) -> float | None:
        return float(np.std(self.d, ddof=1)) if self.n > 1 else None


def pair(base: Side, cand: Side, o: Options) -> Pairs:
    ids = sorted(set(base.valid) & set(cand.valid))
    x_base = np.array([mean(base.valid[i]) for i in ids], dtype=float)
    x_cand = np.array([mean(cand.valid[i]) for i in ids], dtype=float)
    # Rounding makes equal k-sample averages differ by exactly 0, not by float noise.
    d = np.round(o.sign * (x_cand - x_base), 10)
    single = o.kind == "binary" and all(len(base.valid[i]) == len(cand.valid[i]) == 1 for i in ids)
    return Pairs(ids, base.valid, cand.valid, x_base, x_cand, d, single)


@dataclass(frozen=True)
class Missing:
    """What pairing lost: missing_frac = 1 - n / (ids on either side), the ids
    dropped on each side and, above 5%, the warning."""

    frac: float
    dropped_baseline: tuple[str, ...]
    dropped_candidate: tuple[str, ...]
    notes: list[str]


def missing(baseline: Samples, candidate: Samples, ids: Sequence[str]) -> Missing:
    union = set(baseline) | set(candidate)
    frac = 1 - len(ids) / len(union) if union else 1.0
    dropped_base = tuple(sorted(set(baseline) - set(ids)))
    dropped_cand = tuple(sorted(set(candidate) - set(ids)))
    notes = []
    if frac > MISSING_WARN:
        notes.append(
            f"{frac:.1%} of the examples are missing on one side or the other "
            f"(baseline drops {len(dropped_base)}, candidate drops {len(dropped_cand)})"
        )
    return Missing(frac, dropped_base, dropped_cand, notes)
