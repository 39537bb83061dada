"""A power plan before the run: for each gated (metric, partition), the MDE80 a run
against this baseline can expect, and how many draws per example bring it to δ.

The model (STATISTICS.md §4's variance split, written for one baseline run):

- The replicate is the **draw**: a draw of example i yields y_ij, the mean of its samples
  (one 0/1 for ``pass_rate``, the judge's scores for ``judge``). Grouping the samples by
  draw first keeps the judge's samples of one answer, which share that answer's noise,
  from passing for independent draws.
- s²_i, the variance of y_ij over the baseline's k_i draws of example i (examples with 2
  or more draws), estimates how much the app (and its judge) disagree with themselves on
  that example; σ² is their mean, the within-example variance of a draw.
- The comparison tests d_i = x̄_cand,i - x̄_base,i, per-example means, so

      sd(d)² = ω² + mean_i(σ²/k_i) + σ²/r

  for a candidate with r draws per example, where ω² is the variance of the true
  per-example changes. The baseline's own term keeps its k_i: it is already run, and
  only the candidate's term shrinks with r, so draws stop helping once the baseline's
  noise dominates (then only more examples, or a baseline with more draws, help).
- **ω² is taken as 0**: a change that moves every example alike. One baseline run says
  nothing about how a future change will spread over the examples, and any spread adds
  to sd(d). The planned MDE80 is therefore the noise floor, the A/A run's: the smallest
  change the run can detect, reached only by a uniform change. A change that hits a few
  examples hard needs more data than the plan says; the comparison after the run
  reports the MDE80 of the differences it saw.
- σ² is itself an estimate, on sum(k_i - 1) degrees of freedom (``within_df``): from 30
  examples of 4 draws (90) its sd is about 15%, and a drop of the planned MDE80 is
  detected between about 65% and 90% of the time rather than exactly 80%. More draws in
  the baseline make the plan sharper.
- The between-example variance of the means (their variance minus mean(σ²/k_i), floored
  at 0) cancels out of paired differences. It is reported (``between_examples``), not used: it
  is what pairing saves.

MDE80 = (t_{1-alpha'/2,n-1} + t_{0.8,n-1}) · sd(d)/√n with alpha' = alpha/m, m the gated family's
size (``stats.power.mde``, as the comparison computes it). A partition gets the smallest
r ≤ ``repeat_max`` whose MDE80 ≤ δ for every one of its comparisons; ``repeat_max`` when
none does; 1 when draws cannot help: the within-example variance is unknown (every
example drawn once in the baseline), is 0 (its draws always agree), or the partition has
fewer examples than any verdict needs (n_min). r is fixed before any candidate data is
seen, so alpha holds.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal, TypedDict

from ..client.pricing import cost_usd
from ..partitions import PARTITIONS
from ..records import RecordJSON
from .compare import METRICS, judged_tests, measured_tests, samples

if TYPE_CHECKING:
    from ..settings import RegressionSettings

REPEAT_MAX = 5

# ok: MDE80 <= δ at the planned draws; underpowered: not; unknown: the baseline drew each
# example once; no_noise: its draws never disagree; too_few: n < n_min.
Status = Literal["ok", "underpowered", "unknown", "no_noise", "too_few"]


class PlannedJSON(TypedDict):
    """One gated comparison's plan (``PlanJSON["comparisons"]``)."""

    metric: str
    partition: str
    status: Status
    n: int  # the examples the comparison pairs
    draws: int  # this run's draws per example (its partition's)
    baseline_draws: int  # the baseline's draws per example (the median)
    within: float | None  # σ², the variance of a draw within an example; None: unknown
    within_df: int  # the degrees of freedom of that estimate: sum(k_i - 1)
    # The variance of the example means beyond within/k: pairing cancels it (not used).
    between_examples: float | None
    sd_d: float | None  # the expected sd(d) at ``draws``
    mde80: float | None  # at ``draws``; None when sd(d) is unknown or 0
    delta: float
    needed: int | None  # the fewest draws reaching δ, None when none up to repeat_max
    n_needed: int | None  # the examples δ needs at ``draws`` (when not reached)


class PlanJSON(TypedDict):
    """The plan (``Plan.to_json()``)."""

    alpha: float
    m: int
    repeat_max: int
    draws: dict[str, int]
    comparisons: list[PlannedJSON]
    calls: int | None  # expected model calls of the run; None: no baseline for them
    cost_usd: float | None
    cost_source: Literal["prices", "recorded"] | None
    cost_note: str


@dataclass(frozen=True)
class Planned:
    """One gated comparison's plan; fields as in :class:`PlannedJSON`."""

    metric: str
    partition: str
    status: Status
    n: int
    draws: int
    baseline_draws: int
    within: float | None
    within_df: int
    between_examples: float | None
    sd_d: float | None
    mde80: float | None
    delta: float
    needed: int | None
    n_needed: int | None
    n_min: int
    repeat_max: int

    def line(self) -> str:
        head = (
            f"{self.partition} {self.metric}: {self.n} examples x {_draws(self.draws)}: "
            if self.status != "too_few"
            else f"{self.partition} {self.metric}: {self.n} example{'s' * (self.n != 1)}: "
        )
        if self.status == "too_few":
            return head + (
                f"fewer than the {self.n_min} examples any verdict needs at this alpha: "
                "draws would not help"
            )
        if self.status == "unknown":
            return head + (
                f"within-example variance unknown ({_draws(self.baseline_draws)} per example "
                "in the baseline): run the baseline with --llmeval-repeat 2 or more to plan "
                "draws"
            )
        if self.status == "no_noise":
            return head + (
                f"the baseline's {self.baseline_draws} draws of each example always agree: "
                "more draws would not help"
            )
        assert self.mde80 is not None
        mde, delta = _number(self.mde80), f"{self.delta:g}"
        if self.status == "ok":
            return head + f"MDE80 {mde} <= delta {delta}, ok"
        if self.needed is not None:
            advice = f"{_draws(self.needed)} per example would reach {delta}"
        else:
            advice = f"no number of draws up to {self.repeat_max} reaches {delta}"
            if self.n_needed is not None:
                advice += f": about {self.n_needed} examples are needed"
        return head + f"MDE80 {mde} > delta {delta}, underpowered: {advice}"

    def to_json(self) -> PlannedJSON:
        return {
            "metric": self.metric,
            "partition": self.partition,
            "status": self.status,
            "n": self.n,
            "draws": self.draws,
            "baseline_draws": self.baseline_draws,
            "within": self.within,
            "within_df": self.within_df,
            "between_examples": self.between_examples,
            "sd_d": self.sd_d,
            "mde80": self.mde80,
            "delta": self.delta,
            "needed": self.needed,
            "n_needed": self.n_needed,
        }


@dataclass(frozen=True)
class Plan:
    """The plan of a run against a baseline: each gated comparison's, the draws per
    partition (``draws``: every partition the run evaluates), and the expected calls and
    cost."""

    comparisons: tuple[Planned, ...]
    draws: dict[str, int]
    alpha: float
    m: int
    repeat_max: int
    calls: int | None = None
    cost_usd: float | None = None
    cost_source: Literal["prices", "recorded"] | None = None
    cost_note: str = ""

    def to_json(self) -> PlanJSON:
        return {
            "alpha": self.alpha,
            "m": self.m,
            "repeat_max": self.repeat_max,
            "draws": dict(self.draws),
            "comparisons": [c.to_json() for c in self.comparisons],
            "calls": self.calls,
            "cost_usd": self.cost_usd,
            "cost_source": self.cost_source,
            "cost_note": self.cost_note,
        }


def plan(
    baseline: Sequence[RecordJSON],
    settings: RegressionSettings,
    *,
    draws: Mapping[str, int] | None = None,
    repeat_max: int = REPEAT_MAX,
    selected: Mapping[str, int] | None = None,
    prices: Mapping[str, tuple[float, float]] | None = None,
) -> Plan:
    """The plan of a run against ``baseline`` (its records in JSON form).

    ``draws``: partition -> the draws per example this run is set to make (a partition
    not in it, or ``draws`` None, is planned: ``llmeval_repeat = auto``). ``selected``:
    partition -> the number of examples this run will evaluate and pair with the
    baseline's (default: the baseline's partitions and examples). ``prices``: USD per
    million tokens per model, for the expected cost (else the baseline's recorded cost).
    The gated family is compare_runs': ``settings.gated(metric, partition)`` for the
    partitions the run evaluates and the baseline holds the metric for; m is its size.
    ValueError on a δ that is not a positive number or a ``repeat_max`` below 1."""
    from ..stats.power import mde, n_needed
    from ..stats.verdict import minimum_n
    from .compare import check_deltas

    check_deltas(settings.delta)
    if repeat_max < 1:
        raise ValueError(f"repeat_max {repeat_max} is not a number of draws >= 1")
    if draws is not None:
        for partition, count in draws.items():
            if count < 1:
                raise ValueError(f"draws {partition}:{count} is not a number of draws >= 1")
    by_draw: dict[int, list[RecordJSON]] = {}
    for record in baseline:
        by_draw.setdefault(record.get("draw") or 1, []).append(record)
    held = [p for p in PARTITIONS if any(r["partition"] == p for r in baseline)]
    run = [p for p in PARTITIONS if p in selected] if selected is not None else held
    means = {
        metric: _draw_means(
            by_draw,
            metric,
            judged_tests(baseline) if metric == "judge" else measured_tests(metric, baseline),
        )
        for metric in METRICS
    }
    family = [
        (metric, partition)
        for metric in METRICS
        for partition in PARTITIONS
        if settings.gated(metric, partition) and partition in run and means[metric].get(partition)
    ]
    m = len(family)
    alpha_prime = settings.alpha / max(m, 1)
    n_min = minimum_n(alpha_prime)

    estimates = {
        key: _estimate(means[key[0]][key[1]], None if selected is None else selected.get(key[1], 0))
        for key in family
    }

    def sd_at(e: _Estimate, r: int) -> float | None:
        if e.within is None:
            return None
        return math.sqrt(e.within * (e.baseline_inverse_k + 1 / r))

    def mde_at(e: _Estimate, r: int) -> float | None:
        sd = sd_at(e, r)
        return None if not sd or e.n < 2 else mde(sd / math.sqrt(e.n), e.n - 1, alpha_prime)

    def status(e: _Estimate) -> Status | None:
        """Why draws cannot help, or None when they can."""
        if e.n < n_min:
            return "too_few"
        if e.within is None:
            return "unknown"
        return "no_noise" if e.within == 0 else None

    def fewest(metric: str, e: _Estimate) -> int | None:
        delta = settings.delta[metric]
        return next(
            (r for r in range(1, repeat_max + 1) if (x := mde_at(e, r)) is not None and x <= delta),
            None,
        )

    planned_draws: dict[str, int] = {}
    for partition in run:
        if draws is not None and partition in draws:
            planned_draws[partition] = draws[partition]
            continue
        wanted = [
            fewest(metric, e) or repeat_max
            for (metric, p), e in estimates.items()
            if p == partition and status(e) is None
        ]
        planned_draws[partition] = max(wanted, default=1)

    comparisons = []
    for (metric, partition), e in estimates.items():
        r = planned_draws[partition]
        delta = settings.delta[metric]
        why = status(e)
        sd, mde80 = (None, None) if why in ("unknown", "too_few") else (sd_at(e, r), mde_at(e, r))
        needed = fewest(metric, e) if why is None else None
        short = why is None and mde80 is not None and mde80 > delta
        comparisons.append(
            Planned(
                metric=metric,
                partition=partition,
                status=why or ("underpowered" if short else "ok"),
                n=e.n,
                draws=r,
                baseline_draws=e.baseline_draws,
                within=e.within,
                within_df=e.within_df,
                between_examples=e.between_examples,
                sd_d=sd,
                mde80=mde80,
                delta=delta,
                needed=needed,
                n_needed=n_needed(sd, delta, alpha_prime) if short and sd else None,
                n_min=n_min,
                repeat_max=repeat_max,
            )
        )
    examples = {
        p: selected[p] if selected is not None else len(_examples(baseline, p)) for p in run
    }
    calls, cost, source, note = _expected(baseline, examples, planned_draws, prices)
    return Plan(
        comparisons=tuple(comparisons),
        draws=planned_draws,
        alpha=settings.alpha,
        m=m,
        repeat_max=repeat_max,
        calls=calls,
        cost_usd=cost,
        cost_source=source,
        cost_note=note,
    )


def plan_lines(plan: Plan) -> list[str]:
    """The plan as the summary and ``llmeval plan`` print it: the family, a line per
    gated comparison, the draws per partition, the expected calls and cost."""
    if not plan.comparisons:
        lines = [
            "no gated comparison to plan (llmeval_gate, and the partitions the baseline holds)"
        ]
    else:
        n = plan.m
        lines = [
            f"alpha {plan.alpha:g} over {n} gated comparison{'s' * (n != 1)} (Holm); MDE80 of a "
            "change that moves every example alike, from the baseline's draw-to-draw variance"
        ]
        lines += [f"  {c.line()}" for c in plan.comparisons]
    if plan.draws:
        lines.append("draws per example: " + ", ".join(f"{p} {r}" for p, r in plan.draws.items()))
    lines.append(expected_line(plan))
    return lines


def expected_line(plan: Plan) -> str:
    """``expected: 612 model calls, $0.84 at the price table's rates``."""
    if plan.calls is None:
        return "expected: model calls unknown (the baseline holds none of this run's partitions)"
    calls = f"expected: {plan.calls} model call{'s' * (plan.calls != 1)}"
    if plan.cost_usd is None:
        text = f"{calls}, cost unknown"
    else:
        where = (
            "the price table's rates"
            if plan.cost_source == "prices"
            else "the baseline's recorded cost"
        )
        text = f"{calls}, {_dollars(plan.cost_usd)} at {where}"
    return f"{text} ({plan.cost_note})" if plan.cost_note else text


# -- the estimates ---------------------------------------------------------------------


@dataclass(frozen=True)
class _Estimate:
    n: int  # the examples the comparison will pair
    baseline_draws: int  # the median of the baseline's draws per example
    baseline_inverse_k: float  # mean(1/k_i) over the baseline's examples
    within: float | None  # σ²: mean of s²_i over examples with 2+ draws
    within_df: int
    between_examples: float | None


def _draw_means(
    by_draw: Mapping[int, Sequence[RecordJSON]], metric: str, judged: Collection[str]
) -> dict[str, dict[str, list[float]]]:
    """partition -> example id -> the mean of each of its draws' valid samples
    (``compare.samples`` of each draw's records, so that its rules decide a sample)."""
    found: dict[str, dict[str, list[float]]] = {}
    for draw in sorted(by_draw):
        for partition, examples in samples(by_draw[draw], metric, judged).items():
            for example, values in examples.items():
                valid = [v for v in values if v is not None]
                if valid:
                    found.setdefault(partition, {}).setdefault(example, []).append(
                        math.fsum(valid) / len(valid)
                    )
    return found


def _estimate(draw_means: Mapping[str, Sequence[float]], selected: int | None) -> _Estimate:
    counts = sorted(len(v) for v in draw_means.values())
    inverse_k = math.fsum(1 / k for k in counts) / len(counts)
    spread = [statistics.variance(v) for v in draw_means.values() if len(v) > 1]
    within = math.fsum(spread) / len(spread) if spread else None
    between = None
    if within is not None and len(draw_means) > 1:
        example_means = [math.fsum(v) / len(v) for v in draw_means.values()]
        between = max(0.0, statistics.variance(example_means) - within * inverse_k)
    return _Estimate(
        n=len(draw_means) if selected is None else selected,
        baseline_draws=round(statistics.median(counts)),
        baseline_inverse_k=inverse_k,
        within=within,
        within_df=sum(k - 1 for k in counts),
        between_examples=between,
    )


def _examples(records: Sequence[RecordJSON], partition: str) -> set[str]:
    return {r["example_id"] for r in records if r["partition"] == partition}


def _expected(
    baseline: Sequence[RecordJSON],
    examples: Mapping[str, int],
    draws: Mapping[str, int],
    prices: Mapping[str, tuple[float, float]] | None,
) -> tuple[int | None, float | None, Literal["prices", "recorded"] | None, str]:
    """(calls, cost, where the cost comes from, a note on what it leaves out): each
    partition's mean calls and cost per example and draw in the baseline, times this
    run's examples and draws."""
    per_example: dict[tuple[str, str], list[RecordJSON]] = {}
    for record in baseline:
        per_example.setdefault((record["partition"], record["example_id"]), []).append(record)
    calls = cost = 0.0
    known = False
    all_calls = uncounted = hits = 0
    for partition, n in examples.items():
        rows = [(key, records) for key, records in per_example.items() if key[0] == partition]
        if not rows:
            continue
        known = True
        part_calls = part_cost = 0.0
        for _, records in rows:
            k = len({r.get("draw") or 1 for r in records})
            for record in records:
                all_calls += record.get("llm_calls", 0)
                hits += record.get("cache_hits", 0)
                part_calls += record.get("llm_calls", 0) / k
                if prices is None:
                    part_cost += (record.get("cost_usd") or 0.0) / k
                    continue
                priced = 0
                for model, usage in record.get("usage", {}).items():
                    tokens = usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0)
                    price = cost_usd(prices, model, *tokens) if any(tokens) else None
                    if price is not None:
                        priced += usage.get("calls", 0)
                        part_cost += price / k
                uncounted += max(0, record.get("llm_calls", 0) - priced)
        scale = n * draws.get(partition, 1) / len(rows)
        calls += part_calls * scale
        cost += part_cost * scale
    if not known:
        return None, None, None, ""
    if prices is not None:
        if uncounted >= all_calls:
            note = "the baseline's calls carry no token counts or prices"
            return round(calls), None, None, note
        note = (
            f"{uncounted} of the baseline's {all_calls} calls carry no token counts or price: "
            "not counted"
            if uncounted
            else ""
        )
        return round(calls), cost, "prices", note
    if not any(r.get("cost_usd") for r in baseline):
        return round(calls), None, None, "no price table, and the baseline recorded no cost"
    note = f"{hits} of its {all_calls} calls were cache hits, recorded at $0" if hits else ""
    return round(calls), cost, "recorded", note


def _draws(count: int) -> str:
    return f"{count} draw{'s' * (count != 1)}"


def _number(value: float) -> str:
    from ..stats.verdict import fmt_number

    return fmt_number(value, 3)


def _dollars(value: float) -> str:
    return f"${value:.2f}" if value >= 0.01 or value == 0 else f"${value:.2g}"
