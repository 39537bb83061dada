"""Regression statistics: is a candidate run worse than its baseline? (STATISTICS.md)

Scores are paired by example id and the per-example differences are tested: the test
for significance, its confidence interval for magnitude, both at level 1 - alpha/m. The
verdict weighs them against the practical threshold δ. Pure numpy/scipy; the caller
decides comparability (``comparable``) and applies Holm across the gated family
(``apply_holm``).
"""

from __future__ import annotations

import functools
import itertools
import math
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy import stats  # type: ignore[import-untyped, unused-ignore]

Kind = Literal["binary", "ordinal", "continuous"]
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
KINDS: tuple[Kind, ...] = ("binary", "ordinal", "continuous")
Samples = Mapping[str, Sequence[float | None]]
Array = NDArray[np.float64]

MISSING_WARN = 0.05
MISSING_MAX = 0.20
EXACT_MAX_N = 16  # up to 2**16 sign flips are enumerated; above, 2**16 random ones
T_TEST_MIN_N = 30
RESAMPLES = 2**16
POWER = 0.8
# Run metadata that must match for judge scores to be comparable (baseline.metadata()).
COMPARED_FIELDS = ("judge_model", "judge_prompt_sha256", "scale", "parser")
_FIELD_NAMES = {
    "judge_model": "judge model",
    "judge_prompt_sha256": "judge prompt",
    "scale": "score scale",
    "parser": "verdict parser",
}
_MINUS = "\N{MINUS SIGN}"


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
            return (
                "judge noise within examples dominates: more samples per example is the cheap fix"
            )
        return "variation between examples dominates: only more examples help"

    def to_json(self) -> dict[str, Any]:
        return {
            **{f.name: _json_safe(getattr(self, f.name)) for f in fields(self)},
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
    mismatches: tuple[str, ...] = ()
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
        out = {f.name: _json_safe(getattr(self, f.name)) for f in fields(self)}
        if self.kind == "binary" and self.paired:
            out["losses"], out["gains"] = self.down, self.up
        return out


def _json_safe(value: Any) -> Any:
    if isinstance(value, VarianceSplit):
        return value.to_json()
    if isinstance(value, bool | int | str) or value is None:
        return value
    if isinstance(value, float | np.floating):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, Sequence):
        return [_json_safe(v) for v in value]
    return str(value)


@contextmanager
def _quiet() -> Iterator[None]:
    """scipy warns on degenerate input (zero variance); every result is checked after."""
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        yield


# -- input --------------------------------------------------------------------------------


def samples_from_pairs(pairs: Iterable[tuple[str, float | None]]) -> dict[str, list[float | None]]:
    """Group ``(example id, score)`` rows into Samples: k rows per id are k samples."""
    grouped: dict[str, list[float | None]] = {}
    for example_id, value in pairs:
        grouped.setdefault(example_id, []).append(value)
    return grouped


@dataclass(frozen=True)
class _Options:
    """The caller's settings shared by the paired and the unpaired paths."""

    metric: str
    partition: str
    kind: Kind
    scale: tuple[float, float]
    lower_is_better: bool
    delta: float
    alpha: float
    m: int
    strict: bool
    metadata: Mapping[str, Any] | None
    extra_warnings: Sequence[str]

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
        return _finish(
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


def _side(samples: Samples, side: str, o: _Options) -> tuple[dict[str, list[float]], int]:
    """Valid samples per example id (ids with none left out) and k, the most samples seen.
    None and NaN are missing samples (a lost judge call); a score off the scale raises."""
    valid: dict[str, list[float]] = {}
    k = 0
    for example_id, values in samples.items():
        where = f"{o.label}: {side} example {example_id!r}"
        if isinstance(values, str | bytes) or not isinstance(values, Sequence):
            raise ValueError(f"{where}: samples must be a list of numbers, not {values!r}")
        k = max(k, len(values))
        got: list[float] = []
        for value in values:
            x = math.nan if value is None else float(value)
            if math.isnan(x):
                continue
            if not o.scale[0] <= x <= o.scale[1]:
                raise ValueError(
                    f"{where}: score {value!r} is outside the declared scale "
                    f"[{o.scale[0]:g}, {o.scale[1]:g}]"
                )
            if o.kind == "binary" and x not in (0.0, 1.0):
                raise ValueError(f"{where}: a binary score is 0 or 1, not {value!r}")
            got.append(x)
        if got:
            valid[example_id] = got
    return valid, k


def _mean(values: Sequence[float]) -> float:
    return math.fsum(values) / len(values)


# -- tests --------------------------------------------------------------------------------


def _sign_flip_p(values: Array) -> float:
    """The spec's sign-flip test of mean(values), its exact call."""
    result = stats.permutation_test(
        (values,),
        np.mean,
        permutation_type="samples",
        alternative="two-sided",
        n_resamples=np.inf if values.size <= EXACT_MAX_N else RESAMPLES,
        rng=np.random.default_rng(0),
    )
    return float(result.pvalue)


def _independent_p(cand: Array, base: Array) -> float:
    """The spec's unpaired permutation test of mean(cand) - mean(base), seeded like the
    paired one; scipy enumerates every split when there are at most 2**16."""
    result = stats.permutation_test(
        (cand, base),
        _mean_diff,
        permutation_type="independent",
        alternative="two-sided",
        n_resamples=RESAMPLES,
        rng=np.random.default_rng(0),
    )
    return float(result.pvalue)


def _mean_diff(x: Array, y: Array, axis: int = -1) -> Array:
    diff: Array = np.mean(x, axis=axis) - np.mean(y, axis=axis)
    return diff


# Inverting a permutation test takes ~50 p-values. scipy redraws (or, exact, re-enumerates
# in Python) its permutations on every call: 0.05-0.2 s each. The replays below draw the
# same permutations once, from the same seed, and apply scipy's comparison rule to them,
# so they return the same p (the tests check this against the calls above).


@functools.lru_cache(maxsize=4)
def _sign_flips(n: int) -> NDArray[np.int8]:
    """The sign vectors the spec's sign-flip call uses for n values."""
    if n <= EXACT_MAX_N:
        codes = np.arange(2**n)[:, None] >> np.arange(n)
        return (1 - 2 * (codes & 1)).astype(np.int8)
    # scipy flips value i when its random permutation of (v_i, -v_i) puts -v_i first.
    pairs = np.random.default_rng(0).permuted(np.tile(np.arange(2), (RESAMPLES, n, 1)), axis=-1)
    return (1 - 2 * pairs[..., 0]).astype(np.int8)


@functools.lru_cache(maxsize=2)
def _splits(n_cand: int, n_base: int) -> NDArray[np.intp]:
    """The orderings of the pooled values the spec's unpaired call uses: the first
    n_cand go to the candidate."""
    n = n_cand + n_base
    if math.comb(n, n_cand) <= RESAMPLES:
        rows = [
            [*chosen, *sorted(set(range(n)) - set(chosen))]
            for chosen in itertools.combinations(range(n), n_cand)
        ]
        return np.array(rows, dtype=np.intp)
    rng = np.random.default_rng(0)
    return np.array([rng.permutation(n) for _ in range(RESAMPLES)], dtype=np.intp)


def _sign_flip_p_replay(values: Array) -> float:
    null = np.mean(_sign_flips(values.size) * values, axis=-1)
    return _two_sided_p(null, float(np.mean(values)), exact=values.size <= EXACT_MAX_N)


def _independent_p_replay(cand: Array, base: Array) -> float:
    splits = _splits(cand.size, base.size)
    pooled = np.concatenate([cand, base])[splits]
    null = _mean_diff(pooled[:, : cand.size], pooled[:, cand.size :])
    exact = math.comb(cand.size + base.size, cand.size) <= RESAMPLES
    return _two_sided_p(null, float(_mean_diff(cand, base)), exact=exact)


def _two_sided_p(null: Array, observed: float, *, exact: bool) -> float:
    """scipy.stats.permutation_test's two-sided p: twice the smaller tail, counting values
    within its relative tolerance as ties, plus one for the observed when resampled."""
    gamma = abs(np.finfo(np.float64).eps * 100 * observed)
    plus = 0 if exact else 1
    less = (np.count_nonzero(null <= observed + gamma) + plus) / (null.size + plus)
    greater = (np.count_nonzero(null >= observed - gamma) + plus) / (null.size + plus)
    return float(np.clip(min(less, greater) * 2, 0.0, 1.0))


def _invert(
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


def _wilson(successes: int, n: int, z: float) -> tuple[float, float]:
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return max(0.0, centre - half), min(1.0, centre + half)


def _newcombe(
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
    l1, u1 = _wilson(x1, n1, z)
    l2, u2 = _wilson(x2, n2, z)
    below = (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2
    above = (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2
    return p1 - p2 - math.sqrt(max(0.0, below)), p1 - p2 + math.sqrt(max(0.0, above))


def _wilcoxon(d: Array) -> tuple[float, float]:
    """The spec's Wilcoxon-Pratt test: its p, and the sign of its signed-rank sum.

    Up to 16 differences the spec calls ``wilcoxon(d, zero_method="pratt",
    correction=False, method=PermutationMethod(n_resamples=np.inf))``, which scipy runs
    one flip at a time (16 s at n = 16); this enumerates the same flips at once. The
    statistic is a sum of half-integer ranks, exact in floating point, so p is the same."""
    ranks = stats.rankdata(np.abs(d))
    direction = float(np.sign(ranks[d > 0].sum() - ranks[d < 0].sum()))
    if d.size > EXACT_MAX_N:
        with _quiet():
            result = stats.wilcoxon(d, zero_method="pratt", correction=False, method="asymptotic")
        return float(result.pvalue), direction
    null = (_sign_flips(d.size) * d > 0) @ ranks
    return _two_sided_p(null, float(ranks[d > 0].sum()), exact=True), direction


def minimum_n(alpha_prime: float) -> int:
    """STATISTICS.md's n_min: the fewest examples that can reach significance at all."""
    return max(6, math.ceil(1 + math.log2(1 / alpha_prime)))


def mde(se: float, df: float, alpha_prime: float) -> float:
    """MDE80 of a t-based comparison: the effect detected 80% of the time."""
    return (float(stats.t.ppf(1 - alpha_prime / 2, df)) + float(stats.t.ppf(POWER, df))) * se


def _n_for(sd: float, delta: float, alpha_prime: float, design_effect: float = 1.0) -> int:
    z = float(stats.norm.ppf(1 - alpha_prime / 2)) + float(stats.norm.ppf(POWER))
    return math.ceil((z * sd / delta) ** 2 * design_effect)


def _finite(p: float) -> float | None:
    return p if math.isfinite(p) else None


@dataclass
class _Result:
    """What a test contributes to a Comparison."""

    test: str
    p: float | None = None
    ci: tuple[float, float] | None = None
    p_exact: float | None = None
    mde80: float | None = None
    n_needed: int | None = None


def _flip(ci: tuple[float, float], sign: int) -> tuple[float, float]:
    """A CI of cand - base turned into one of d = sign * (cand - base)."""
    return ci if sign > 0 else (-ci[1], -ci[0])


# -- paired -------------------------------------------------------------------------------


def compare(
    baseline: Samples,
    candidate: Samples,
    *,
    metric: str = "score",
    partition: str = "",
    kind: Kind,
    scale: tuple[float, float],
    lower_is_better: bool = False,
    delta: float,
    alpha: float = 0.05,
    m: int = 1,
    clusters: Mapping[str, str] | None = None,
    strict: bool = False,
    metadata: Mapping[str, Any] | None = None,
    extra_warnings: Sequence[str] = (),
) -> Comparison:
    """Compare per-example samples (id -> k samples) of a candidate against a baseline.

    Paired by id; with no shared id at all, falls back to the unpaired tests. ``m`` is
    the number of gated comparisons in the run (CIs at level 1 - alpha/m); ``clusters``
    maps ids to their cluster (an id not in it is a cluster of its own). ``metadata``
    (the runs' hashes) and ``extra_warnings`` are carried into the report. Raises
    ValueError on a score outside ``scale``."""
    o = _Options(
        metric,
        partition,
        kind,
        scale,
        lower_is_better,
        delta,
        alpha,
        m,
        strict,
        metadata,
        extra_warnings,
    )
    base, k_base = _side(baseline, "baseline", o)
    cand, k_cand = _side(candidate, "candidate", o)
    if baseline and candidate and not set(baseline) & set(candidate):
        return _unpaired(
            [_mean(v) for v in base.values()],
            [_mean(v) for v in cand.values()],
            o,
            missing=len(baseline) - len(base) + len(candidate) - len(cand),
            single=all(len(v) == 1 for v in (*base.values(), *cand.values())),
            k=(k_base, k_cand),
        )

    ids = sorted(set(base) & set(cand))  # sorted: random sign flips must not depend on order
    n = len(ids)
    union = set(baseline) | set(candidate)
    missing_frac = 1 - n / len(union) if union else 1.0
    dropped_base, dropped_cand = sorted(set(baseline) - set(ids)), sorted(set(candidate) - set(ids))
    notes = list(extra_warnings)
    if missing_frac > MISSING_WARN:
        notes.append(
            f"{missing_frac:.1%} of the examples are missing on one side or the other "
            f"(baseline drops {len(dropped_base)}, candidate drops {len(dropped_cand)})"
        )
    x_base = np.array([_mean(base[i]) for i in ids], dtype=float)
    x_cand = np.array([_mean(cand[i]) for i in ids], dtype=float)
    # Rounding makes equal k-sample averages differ by exactly 0, not by float noise.
    d = np.round(o.sign * (x_cand - x_base), 10)

    groups: NDArray[np.intp] | None = None
    if clusters is not None and n:
        labels = [clusters.get(i, f"\0{i}") for i in ids]  # "\0": cannot clash with a name
        if len(set(labels)) < n:  # all singletons: the plain paired test is the same thing
            groups = np.unique(labels, return_inverse=True)[1]
    binary_single = o.kind == "binary" and all(len(base[i]) == len(cand[i]) == 1 for i in ids)

    result = _Result("none")
    if n and not d.any():
        # scipy returns NaN for all-identical data; the spec fixes p and the CI instead.
        half = (1 - (o.alpha_prime / 2) ** (1 / n)) * o.width
        result = _Result("all_zero", 1.0, (-half, half), 1.0 if binary_single else None)
        # MDE80 and n needed are left undefined (None: "—" in the table, null in JSON):
        # they scale with sd(d), here 0, and "0 examples suffice" would be false.
    elif n and groups is not None:
        result = _clustered(d, groups, o)
    elif n:
        result = _paired(d, x_base, x_cand, binary_single, o)

    p_wilcoxon = None
    if n > 1 and d.any() and not binary_single and groups is None:
        p_w, direction = _wilcoxon(d)
        p_wilcoxon = _finite(p_w)
        if result.p is not None and p_wilcoxon is not None:
            primary, secondary = result.p < o.alpha_prime, p_wilcoxon < o.alpha_prime
            if primary != secondary or (primary and direction != np.sign(np.mean(d))):
                notes.append(
                    f"the Wilcoxon signed-rank test ({_p(p_wilcoxon)}) disagrees with the "
                    f"{result.test} test ({_p(result.p)}): the typical change and the mean "
                    "change tell different stories; look at the per-example differences"
                )
    if result.mde80 is not None and result.mde80 > delta:
        notes.append(f"underpowered: MDE80 {result.mde80:.3g} > δ {delta:g}")
    split = _variance_split(d, ids, base, cand) if n > 1 and max(k_base, k_cand) > 1 else None
    if split is not None:
        notes.append(split.advice)

    return o.comparison(
        paired=True,
        test=result.test,
        n=n,
        n_baseline=len(base),
        n_candidate=len(cand),
        missing_frac=missing_frac,
        k_baseline=k_base,
        k_candidate=k_cand,
        mean_baseline=float(np.mean(x_base)) if n else None,
        mean_candidate=float(np.mean(x_cand)) if n else None,
        effect=float(np.mean(d)) if n else None,
        ci_low=result.ci[0] if result.ci else None,
        ci_high=result.ci[1] if result.ci else None,
        p_raw=result.p,
        # Bonferroni until apply_holm() sees the family: Holm's p_adj is never larger.
        p_adj=None if result.p is None else min(1.0, m * result.p),
        p_exact=result.p_exact,
        p_wilcoxon=p_wilcoxon,
        down=int((d < 0).sum()),
        same=int((d == 0).sum()),
        up=int((d > 0).sum()),
        sd_d=float(np.std(d, ddof=1)) if n > 1 else None,
        mde80=result.mde80,
        n_needed=result.n_needed,
        variance_split=split,
        clusters=None if clusters is None else len({clusters.get(i, f"\0{i}") for i in ids}),
        dropped_baseline=tuple(dropped_base),
        dropped_candidate=tuple(dropped_cand),
        warnings=tuple(notes),
    )


def _paired(d: Array, x_base: Array, x_cand: Array, binary_single: bool, o: _Options) -> _Result:
    """The table's paired test for independent examples (d not all zero)."""
    n = d.size
    effect = float(np.mean(d))
    sd = float(np.std(d, ddof=1)) if n > 1 else math.nan
    if binary_single:
        losses, gains = int((d < 0).sum()), int((d > 0).sum())
        k0, discordant = min(losses, gains), losses + gains
        mid_p = 2 * stats.binom.cdf(k0, discordant, 0.5) - stats.binom.pmf(k0, discordant, 0.5)
        # The 2x2 table is counted on the raw 0/1 scores, before the direction sign.
        was, now = x_base.astype(bool), x_cand.astype(bool)
        table = (
            int((was & now).sum()),
            int((now & ~was).sum()),
            int((was & ~now).sum()),
            int((~was & ~now).sum()),
        )
        result = _Result(
            "mcnemar_midp",
            min(1.0, float(mid_p)),
            _flip(_newcombe(table, o.alpha_prime, paired=True), o.sign),
            float(stats.binomtest(gains, discordant, 0.5).pvalue),
        )
    elif n < 2:
        result = _Result("sign_flip")  # one difference: nothing to flip against
    elif n < T_TEST_MIN_N:
        result = _Result(
            "sign_flip",
            _sign_flip_p(d),
            _invert(
                lambda theta: _sign_flip_p_replay(d - theta),
                effect,
                (float(d.min()) - o.width, float(d.max()) + o.width),
                o.alpha_prime,
                o.width,
            ),
        )
    elif sd == 0:
        # Every difference is the same nonzero value: t is infinite and scipy warns.
        result = _Result("paired_t", 0.0, (effect, effect))
    else:
        with _quiet():
            t = stats.ttest_rel(o.sign * x_cand, o.sign * x_base)
            ci = t.confidence_interval(confidence_level=1 - o.alpha_prime)
        result = _Result("paired_t", _finite(float(t.pvalue)), (float(ci.low), float(ci.high)))
    if n > 1 and sd > 0:
        # With sd(d) = 0 the power formulas say "0 examples detect any change": undefined.
        result.mde80 = mde(sd / math.sqrt(n), n - 1, o.alpha_prime)
        result.n_needed = _n_for(sd, o.delta, o.alpha_prime)
    return result


def _clustered(d: Array, groups: NDArray[np.intp], o: _Options) -> _Result:
    """Cluster-robust SE with t on G - 1 df; below 30 clusters, whole clusters flip sign."""
    n = d.size
    effect = float(np.mean(d))
    sizes = np.bincount(groups).astype(float)
    sums = np.bincount(groups, weights=d).astype(float)
    n_groups = sizes.size
    if n_groups < 2:
        return _Result("cluster_sign_flip")  # one cluster: no test, no CI
    residual = sums - sizes * effect
    se = math.sqrt(n_groups / (n_groups - 1) * float(np.sum(residual**2))) / n
    if n_groups < T_TEST_MIN_N:
        result = _Result(
            "cluster_sign_flip",
            _sign_flip_p(sums),
            _invert(
                lambda theta: _sign_flip_p_replay(sums - sizes * theta),
                effect,
                (float(d.min()) - o.width, float(d.max()) + o.width),
                o.alpha_prime,
                o.width,
            ),
        )
    elif se == 0:
        result = _Result("cluster_t", 0.0, (effect, effect))
    else:
        df = n_groups - 1
        half = float(stats.t.ppf(1 - o.alpha_prime / 2, df)) * se
        p = 2 * float(stats.t.sf(abs(effect / se), df))
        result = _Result("cluster_t", p, (effect - half, effect + half))
    if se == 0:
        return result  # MDE80 and n needed undefined, as in _paired
    # MDE on G - 1 df with SE_cl, and n needed inflated by the design effect.
    sd = float(np.std(d, ddof=1))
    result.mde80 = mde(se, n_groups - 1, o.alpha_prime)
    design_effect = (se * math.sqrt(n) / sd) ** 2 if sd > 0 else 1.0
    result.n_needed = _n_for(sd, o.delta, o.alpha_prime, design_effect)
    return result


def _variance_split(
    d: Array, ids: Sequence[str], base: Mapping[str, list[float]], cand: Mapping[str, list[float]]
) -> VarianceSplit:
    def within(side: Mapping[str, list[float]]) -> float:
        # s²_i/k_i of the examples with two or more valid samples (one has no variance).
        terms = [float(np.var(side[i], ddof=1)) / len(side[i]) for i in ids if len(side[i]) > 1]
        return _mean(terms) if terms else 0.0

    total = float(np.var(d, ddof=1))
    w_base, w_cand = within(base), within(cand)
    return VarianceSplit(total, max(0.0, total - w_base - w_cand), w_base, w_cand)


# -- unpaired -----------------------------------------------------------------------------


def compare_unpaired(
    baseline: Sequence[float | None],
    candidate: Sequence[float | None],
    *,
    metric: str = "score",
    partition: str = "",
    kind: Kind,
    scale: tuple[float, float],
    lower_is_better: bool = False,
    delta: float,
    alpha: float = 0.05,
    m: int = 1,
    strict: bool = False,
    metadata: Mapping[str, Any] | None = None,
    extra_warnings: Sequence[str] = (),
) -> Comparison:
    """Compare two plain lists of per-example scores (None = missing) as independent
    samples: Welch when both sides have 30 or more, else a permutation test; binary:
    Boschloo's exact test."""
    o = _Options(
        metric,
        partition,
        kind,
        scale,
        lower_is_better,
        delta,
        alpha,
        m,
        strict,
        metadata,
        extra_warnings,
    )
    base, _ = _side({f"#{i}": [v] for i, v in enumerate(baseline)}, "baseline", o)
    cand, _ = _side({f"#{i}": [v] for i, v in enumerate(candidate)}, "candidate", o)
    return _unpaired(
        [v[0] for v in base.values()],
        [v[0] for v in cand.values()],
        o,
        missing=len(baseline) - len(base) + len(candidate) - len(cand),
        single=True,
        k=(1, 1),
    )


def _unpaired(
    base_values: Sequence[float],
    cand_values: Sequence[float],
    o: _Options,
    *,
    missing: int,
    single: bool,
    k: tuple[int, int],
) -> Comparison:
    base = o.sign * np.asarray(base_values, dtype=float)
    cand = o.sign * np.asarray(cand_values, dtype=float)
    n_base, n_cand = base.size, cand.size
    total = n_base + n_cand + missing
    missing_frac = missing / total if total else 1.0
    notes = ["unpaired, lower power: no example id is shared by baseline and candidate"]
    notes += o.extra_warnings
    if missing_frac > MISSING_WARN:
        notes.append(f"{missing_frac:.1%} of the examples have no valid score")

    effect = float(np.mean(cand) - np.mean(base)) if n_base and n_cand else None
    result = (
        _unpaired_test(cand, base, effect, single, o) if effect is not None else _Result("none")
    )
    v_base = float(np.var(base, ddof=1)) if n_base > 1 else 0.0
    v_cand = float(np.var(cand, ddof=1)) if n_cand > 1 else 0.0
    if n_base > 1 and n_cand > 1 and v_base + v_cand > 0:
        # The paired formulas' unpaired analogues: Welch SE and df; n per side. With no
        # variance on either side they are undefined, as in the paired case.
        se = math.sqrt(v_base / n_base + v_cand / n_cand)
        den = (v_base / n_base) ** 2 / (n_base - 1) + (v_cand / n_cand) ** 2 / (n_cand - 1)
        result.mde80 = mde(se, se**4 / den if den else n_base + n_cand - 2, o.alpha_prime)
        result.n_needed = _n_for(math.sqrt(v_base + v_cand), o.delta, o.alpha_prime)
        if result.mde80 > o.delta:
            notes.append(f"underpowered: MDE80 {result.mde80:.3g} > δ {o.delta:g}")

    return o.comparison(
        paired=False,
        test=result.test,
        n=min(n_base, n_cand),
        n_baseline=n_base,
        n_candidate=n_cand,
        missing_frac=missing_frac,
        k_baseline=k[0],
        k_candidate=k[1],
        mean_baseline=float(o.sign * np.mean(base)) if n_base else None,
        mean_candidate=float(o.sign * np.mean(cand)) if n_cand else None,
        effect=effect,
        ci_low=result.ci[0] if result.ci else None,
        ci_high=result.ci[1] if result.ci else None,
        p_raw=result.p,
        p_adj=None if result.p is None else min(1.0, o.m * result.p),
        mde80=result.mde80,
        n_needed=result.n_needed,
        warnings=tuple(notes),
    )


def _unpaired_test(cand: Array, base: Array, effect: float, single: bool, o: _Options) -> _Result:
    """The unpaired fallback's test and CI (values already signed by the direction)."""
    if o.kind == "binary" and single:
        pass_base, pass_cand = int(np.sum(o.sign * base)), int(np.sum(o.sign * cand))
        table = [[pass_cand, pass_base], [cand.size - pass_cand, base.size - pass_base]]
        with _quiet():
            p = float(stats.boschloo_exact(table, alternative="two-sided").pvalue)
        ci = _newcombe((pass_cand, cand.size, pass_base, base.size), o.alpha_prime, paired=False)
        return _Result("boschloo", _finite(p), _flip(ci, o.sign))
    if np.ptp(np.concatenate([cand, base])) == 0:
        # The paired all-identical rule, with the smaller side as n: scipy gives NaN, and
        # a permutation CI would collapse to [0, 0].
        half = (1 - (o.alpha_prime / 2) ** (1 / min(cand.size, base.size))) * o.width
        return _Result("all_identical", 1.0, (-half, half))
    if min(cand.size, base.size) >= T_TEST_MIN_N:
        if np.ptp(cand) == 0 and np.ptp(base) == 0:
            return _Result("welch_t", 0.0, (effect, effect))  # two constants: t is infinite
        with _quiet():
            t = stats.ttest_ind(cand, base, equal_var=False)
            ci = t.confidence_interval(confidence_level=1 - o.alpha_prime)
        return _Result("welch_t", _finite(float(t.pvalue)), (float(ci.low), float(ci.high)))
    if min(cand.size, base.size) < 2:
        return _Result("permutation_unpaired")
    return _Result(
        "permutation_unpaired",
        _independent_p(cand, base),
        _invert(
            lambda theta: _independent_p_replay(cand - theta, base),
            effect,
            (float(cand.min() - base.max()) - o.width, float(cand.max() - base.min()) + o.width),
            o.alpha_prime,
            o.width,
        ),
    )


Scores = Mapping[str, float | Sequence[float | None] | None] | Sequence[float | None]


def detect_regression(
    baseline_scores: Scores,
    candidate_scores: Scores,
    *,
    kind: Kind,
    scale: tuple[float, float],
    delta: float,
    alpha: float = 0.05,
    lower_is_better: bool = False,
    strict: bool = False,
) -> Comparison:
    """One comparison from plain lists (unpaired) or id-keyed mappings (paired; a value
    is a score, None, or a list of k samples)."""
    if isinstance(baseline_scores, Mapping) and isinstance(candidate_scores, Mapping):
        return compare(
            _as_samples(baseline_scores),
            _as_samples(candidate_scores),
            kind=kind,
            scale=scale,
            delta=delta,
            alpha=alpha,
            lower_is_better=lower_is_better,
            strict=strict,
        )
    if isinstance(baseline_scores, Mapping) or isinstance(candidate_scores, Mapping):
        raise ValueError("pass two id-keyed mappings (paired) or two lists (unpaired)")
    return compare_unpaired(
        baseline_scores,
        candidate_scores,
        kind=kind,
        scale=scale,
        delta=delta,
        alpha=alpha,
        lower_is_better=lower_is_better,
        strict=strict,
    )


def _as_samples(scores: Mapping[str, float | Sequence[float | None] | None]) -> Samples:
    return {
        example_id: list(value) if isinstance(value, Sequence) else [value]
        for example_id, value in scores.items()
    }


# -- verdict ------------------------------------------------------------------------------


def _insufficient_reason(c: Comparison) -> str | None:
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


def _decide(c: Comparison) -> tuple[Verdict, bool]:
    if c.mismatches or c.refusal:
        return "REFUSED", True
    if _insufficient_reason(c) is None:
        assert c.p_adj is not None and c.ci_low is not None and c.ci_high is not None
        assert c.effect is not None
        sig = c.p_adj < c.alpha
        inside = -c.delta < c.ci_low and c.ci_high < c.delta
        if sig and inside:
            return "SIGNIFICANT_BUT_TRIVIAL", False
        if sig and c.effect < 0:
            return "REGRESSION", True
        if sig and c.effect > 0:
            return "IMPROVEMENT", False
        if inside:
            return "NO_CHANGE", False
    low = -math.inf if c.ci_low is None else c.ci_low
    return "INSUFFICIENT_DATA", c.strict and low <= -c.delta


def _finish(c: Comparison) -> Comparison:
    verdict, blocks = _decide(c)
    decided = replace(c, verdict=verdict, blocks=blocks)
    return replace(decided, line=_line(decided))


def fmt_number(x: float, decimals: int) -> str:
    """``x`` with a real minus sign, ∞ for infinities and no negative zero."""
    if math.isinf(x):
        return f"{_MINUS}∞" if x < 0 else "∞"
    text = f"{x:.{decimals}f}"
    if float(text) == 0:
        return f"{0.0:.{decimals}f}"  # no negative zero
    return text.replace("-", _MINUS)


def _p(p: float) -> str:
    return "p<0.001" if p < 0.001 else f"p={p:.2g}"


def _line(c: Comparison) -> str:
    """The plain-language line of the verdict (STATISTICS.md §4)."""
    if c.verdict == "REFUSED":
        if not c.mismatches:
            return f"Refused: {c.refusal}. Blocking."
        return (
            f"Refused: {differing(c.mismatches)} from the baseline's; re-judge the stored "
            "baseline outputs with the current judge. Blocking."
        )
    # Two decimals, more when δ needs them (δ = 0.005 on a 0-1 scale).
    decimals = max(2, -math.floor(math.log10(c.delta)))

    def num(x: float) -> str:
        return fmt_number(x, decimals)

    p_text = ""
    if c.p_adj is not None:
        p_text = _p(c.p_adj) if c.m == 1 else f"adjusted {_p(c.p_adj)}, m={c.m}"
    if c.verdict in ("REGRESSION", "IMPROVEMENT", "SIGNIFICANT_BUT_TRIVIAL"):
        assert c.effect is not None and c.ci_low is not None and c.ci_high is not None
        head = (
            f"Candidate is {'worse' if c.effect < 0 else 'better'} by {num(abs(c.effect))} "
            f"({ci_percent(c.ci_level)}% CI {num(c.ci_low)} to {num(c.ci_high)})"
        )
        if c.verdict == "SIGNIFICANT_BUT_TRIVIAL":
            return f"{head}; real ({p_text}) but inside ±{c.delta:g}, too small to matter."
        return f"{head}; unlikely to be noise ({p_text}).{' Blocking.' if c.blocks else ''}"
    if c.verdict == "NO_CHANGE":
        assert c.ci_low is not None and c.ci_high is not None
        return (
            f"No change that matters: the data fit anything from {num(c.ci_low)} to "
            f"{num(c.ci_high)}, inside ±{c.delta:g} ({p_text})."
        )
    strict = " Blocking (strict mode)." if c.blocks else ""
    reason = _insufficient_reason(c)
    if reason == "no data":
        return f"Can't tell: no example has a valid score on both sides.{strict}"
    if reason == "missing":
        return (
            f"Can't tell: {c.missing_frac:.1%} of the examples are missing (more than "
            f"{MISSING_MAX:.0%}); fix the failed judge or infrastructure calls and rerun.{strict}"
        )
    if reason == "n_min":
        return (
            f"Can't tell: only n={c.n} examples; at least {c.n_min} are needed at this "
            f"significance level.{strict}"
        )
    if c.ci_low is None or c.ci_high is None:
        return f"Can't tell: the test gave no usable p-value.{strict}"
    text = f"Can't tell: the data fit anything from {num(c.ci_low)} to {num(c.ci_high)}."
    if c.mde80 is not None and c.n_needed is not None and c.n_needed > c.n:
        sizes = f"n={c.n}" if c.paired else f"{c.n_baseline} and {c.n_candidate} examples"
        text += (
            f" With {sizes} only changes ≥ {num(c.mde80)} are reliably detectable; "
            f"about {c.n_needed} examples{'' if c.paired else ' per side'} are needed."
        )
    return text + strict


def differing(mismatches: Sequence[str]) -> str:
    """What differs, as a clause: the judge prompt differs, the judge model and judge
    prompt differ."""
    names = " and ".join(_FIELD_NAMES.get(f, f) for f in mismatches)
    return f"the {names} {'differs' if len(mismatches) == 1 else 'differ'}"


# -- families and comparability -----------------------------------------------------------


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
        _finish(replace(c, p_adj=None if c.p_raw is None else p))
        for c, p in zip(comparisons, adjusted, strict=True)
    ]


def _normal(value: Any) -> Any:
    """JSON round trips turn tuples into lists and 5 into 5.0; compare what they mean."""
    if isinstance(value, Mapping):
        return {str(k): _normal(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normal(v) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return value


def comparable(
    baseline_meta: Mapping[str, Any], candidate_meta: Mapping[str, Any]
) -> tuple[list[str], list[str]]:
    """(mismatches, warnings): which of judge model, judge prompt sha256, scale and parser
    differ (any mismatch means REFUSED), and a warning per changed dataset hash (allowed:
    only the shared ids are compared). Keys as in ``baseline.metadata()``."""
    mismatches = [
        name
        for name in COMPARED_FIELDS
        if _normal(baseline_meta.get(name)) != _normal(candidate_meta.get(name))
    ]
    base_sets = dict(baseline_meta.get("datasets") or {})
    cand_sets = dict(candidate_meta.get("datasets") or {})
    if "dataset_hash" in baseline_meta or "dataset_hash" in candidate_meta:
        base_sets.setdefault("dataset", baseline_meta.get("dataset_hash"))
        cand_sets.setdefault("dataset", candidate_meta.get("dataset_hash"))
    notes = [
        f"dataset {name!r} changed (hash {base_sets.get(name)} -> {cand_sets.get(name)}): "
        "only the shared example ids are compared"
        for name in sorted(set(base_sets) | set(cand_sets))
        if base_sets.get(name) != cand_sets.get(name)
    ]
    return mismatches, notes


def refused(
    metric: str,
    partition: str,
    mismatches: Sequence[str] = (),
    *,
    reason: str = "",
    n: int = 0,
    n_baseline: int = 0,
    n_candidate: int = 0,
    kind: Kind | None = None,
    delta: float = math.nan,
    alpha: float = 0.05,
    m: int = 1,
    metadata: Mapping[str, Any] | None = None,
) -> Comparison:
    """The REFUSED comparison of two runs that are not comparable: it blocks. Either
    their judges differ (``comparable``'s mismatches: the line says to re-judge the
    baseline outputs) or for ``reason``: what is wrong, ": ", what to do (the summary's
    decision line quotes the first part). ``n``, ``n_baseline`` and ``n_candidate``
    say what each run has."""
    if not mismatches and not reason:
        raise ValueError("refused() needs at least one mismatching field, or a reason")
    note = f"not comparable: {differing(mismatches)}" if mismatches else reason
    return _finish(
        Comparison(
            metric=metric,
            partition=partition,
            kind=kind,
            paired=True,
            test="none",
            n=n,
            n_baseline=n_baseline,
            n_candidate=n_candidate,
            n_min=minimum_n(alpha / m),
            missing_frac=math.nan,
            ci_level=1 - alpha / m,
            delta=delta,
            alpha=alpha,
            m=m,
            mismatches=tuple(mismatches),
            refusal="" if mismatches else reason,
            metadata=dict(metadata or {}),
            warnings=(note,),
        )
    )


def ci_percent(level: float) -> str:
    """A confidence level as a percentage, to three digits but never rounded up to 100
    (98.3, 97.5, 99.95)."""
    digits = 3
    while (text := f"{100 * level:.{digits}g}") == "100" and digits < 8:
        digits += 1
    return text
