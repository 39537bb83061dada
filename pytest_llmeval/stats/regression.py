"""Is a candidate worse than its baseline? The entry points: ``compare`` (per-example
samples, paired by id), ``compare_unpaired`` (two plain lists) and ``detect_regression``
(either, from the public API). Each returns one decided ``Comparison``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .comparison import Comparison, Kind
from .paired import cluster_groups, paired_test, split_advice, variance_split, wilcoxon_check
from .power import underpowered
from .samples import (
    Options,
    Samples,
    Scores,
    Side,
    as_samples,
    mean,
    missing,
    pair,
    valid_samples,
)
from .unpaired import unpaired_comparison


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
    o = Options(
        metric=metric,
        partition=partition,
        kind=kind,
        scale=scale,
        lower_is_better=lower_is_better,
        delta=delta,
        alpha=alpha,
        m=m,
        strict=strict,
        metadata=metadata,
        extra_warnings=extra_warnings,
    )
    base, cand = valid_samples(baseline, "baseline", o), valid_samples(candidate, "candidate", o)
    if baseline and candidate and not set(baseline) & set(candidate):
        return _unpaired(base, cand, len(baseline) + len(candidate), o)
    pairs = pair(base, cand, o)
    lost = missing(baseline, candidate, pairs.ids)
    groups, n_clusters = cluster_groups(clusters, pairs.ids)
    result = paired_test(pairs, groups, o)
    p_wilcoxon, disagreement = wilcoxon_check(pairs, result, groups, o)
    split = variance_split(pairs, k=max(base.k, cand.k))
    notes = [*extra_warnings, *lost.notes, *disagreement, *underpowered(result.mde80, delta)]
    return o.comparison(
        paired=True,
        n=pairs.n,
        n_baseline=len(base.valid),
        n_candidate=len(cand.valid),
        missing_frac=lost.frac,
        k_baseline=base.k,
        k_candidate=cand.k,
        mean_baseline=pairs.mean_baseline,
        mean_candidate=pairs.mean_candidate,
        effect=pairs.effect,
        p_wilcoxon=p_wilcoxon,
        down=int((pairs.d < 0).sum()),
        same=int((pairs.d == 0).sum()),
        up=int((pairs.d > 0).sum()),
        sd_d=pairs.sd,
        variance_split=split,
        clusters=n_clusters,
        dropped_baseline=lost.dropped_baseline,
        dropped_candidate=lost.dropped_candidate,
        warnings=(*notes, *split_advice(split)),
        **result.comparison_fields(m),
    )


def _unpaired(base: Side, cand: Side, given: int, o: Options) -> Comparison:
    """The fallback when no id is shared: per-example means as independent samples;
    ``given`` examples in all, valid or not."""
    values = (*base.valid.values(), *cand.valid.values())
    return unpaired_comparison(
        [mean(v) for v in base.valid.values()],
        [mean(v) for v in cand.valid.values()],
        o,
        missing=given - len(base.valid) - len(cand.valid),
        single=all(len(v) == 1 for v in values),
        k=(base.k, cand.k),
    )


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
    o = Options(
        metric=metric,
        partition=partition,
        kind=kind,
        scale=scale,
        lower_is_better=lower_is_better,
        delta=delta,
        alpha=alpha,
        m=m,
        strict=strict,
        metadata=metadata,
        extra_warnings=extra_warnings,
    )
    base = valid_samples({f"#{i}": [v] for i, v in enumerate(baseline)}, "baseline", o)
    cand = valid_samples({f"#{i}": [v] for i, v in enumerate(candidate)}, "candidate", o)
    return unpaired_comparison(
        [v[0] for v in base.valid.values()],
        [v[0] for v in cand.valid.values()],
        o,
        missing=len(baseline) - len(base.valid) + len(candidate) - len(cand.valid),
        single=True,
        k=(1, 1),
    )


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
    settings: dict[str, Any] = {
        "kind": kind,
        "scale": scale,
        "delta": delta,
        "alpha": alpha,
        "lower_is_better": lower_is_better,
        "strict": strict,
    }
    if isinstance(baseline_scores, Mapping) and isinstance(candidate_scores, Mapping):
        return compare(as_samples(baseline_scores), as_samples(candidate_scores), **settings)
    if isinstance(baseline_scores, Mapping) or isinstance(candidate_scores, Mapping):
        raise ValueError("pass two id-keyed mappings (paired) or two lists (unpaired)")
    return compare_unpaired(baseline_scores, candidate_scores, **settings)
