"""What a finished run amounts to: records aggregated per partition, the partition rules
(the 100%-golden rule, hard and soft partitions), the time budgets, the judge's
reliability, and every reason the run fails."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, TypedDict

from ..partitions import PARTITIONS
from ..records import LLM_ERROR, NOT_RUN, Record

if TYPE_CHECKING:
    from ..calibration import CalibrationJSON
    from ..settings import Settings


class PartitionJSON(TypedDict):
    """A partition's aggregates in the JSON report (``PartitionStats.to_json``)."""

    examples: int
    cases: int
    passed: int
    failed: int
    errors: int
    skipped: int
    pass_rate: float
    metric_means: dict[str, float | None]
    latency_p50_s: float | None
    latency_p95_s: float | None
    wall_s: float | None
    draws: int  # the most draws of one case (llmeval_repeat)
    pass_hat_k: float  # cases that passed every draw (pass^k), over all cases
    pass_at_k: float  # cases that passed at least one draw (pass@k)


@dataclass
class PartitionStats:
    """Counts, pass rate, metric means, latency percentiles and wall time of one
    partition."""

    partition: str
    cases: int = 0
    passed: int = 0
    failed: int = 0
    errors: int = 0
    skipped: int = 0
    metric_scores: dict[str, list[float]] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    example_ids: set[str] = field(default_factory=set)
    started_at: float | None = None  # the earliest start of its tests (epoch seconds)
    finished_at: float | None = None  # the latest end
    # Repeated draws (runs/draws.py): the most draws of a case, and the cases that passed
    # every draw and at least one.
    draws: int = 1
    all_draws_passed: int = 0
    any_draw_passed: int = 0

    def add(self, record: Record) -> None:
        self.cases += 1
        self.example_ids.add(record.example_id)
        start, end = record.started_at, record.finished_at
        if start is not None:
            self.started_at = start if self.started_at is None else min(self.started_at, start)
        if end is not None:
            self.finished_at = end if self.finished_at is None else max(self.finished_at, end)
        if record.status == "passed":
            self.passed += 1
        elif record.status == "failed":
            self.failed += 1
        elif record.status == "error":
            self.errors += 1
        else:
            self.skipped += 1
        for metric in record.metrics:
            score = metric.get("score")
            if isinstance(score, int | float) and math.isfinite(score):
                self.metric_scores.setdefault(metric["name"], []).append(float(score))
        latency = record.effective_latency_s
        if latency is not None:
            self.latencies.append(latency)

    @property
    def pass_rate(self) -> float:
        """Passed over all selected cases: a skipped or errored example is not a pass."""
        return self.passed / self.cases if self.cases else 0.0

    @property
    def wall_s(self) -> float | None:
        """From the start of the first test's setup to the end of the last test's
        teardown, over every xdist worker (one machine, one clock)."""
        if self.started_at is None or self.finished_at is None:
            return None
        return self.finished_at - self.started_at

    @property
    def pass_hat_k(self) -> float:
        return self.all_draws_passed / self.cases if self.cases else 0.0

    @property
    def pass_at_k(self) -> float:
        return self.any_draw_passed / self.cases if self.cases else 0.0

    def metric_mean(self, name: str) -> float | None:
        scores = self.metric_scores.get(name)
        return sum(scores) / len(scores) if scores else None

    def latency_percentile(self, q: float) -> float | None:
        return percentile(self.latencies, q)

    def to_json(self) -> PartitionJSON:
        return {
            "examples": len(self.example_ids),
            "cases": self.cases,
            "passed": self.passed,
            "failed": self.failed,
            "errors": self.errors,
            "skipped": self.skipped,
            "pass_rate": self.pass_rate,
            "metric_means": {name: self.metric_mean(name) for name in self.metric_scores},
            "latency_p50_s": self.latency_percentile(50),
            "latency_p95_s": self.latency_percentile(95),
            "wall_s": self.wall_s,
            "draws": self.draws,
            "pass_hat_k": self.pass_hat_k,
            "pass_at_k": self.pass_at_k,
        }


def percentile(values: Sequence[float], q: float) -> float | None:
    """Linear-interpolation percentile (numpy's default), without importing numpy."""
    if not values:
        return None
    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    low = math.floor(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def aggregate(records: Iterable[Record]) -> dict[str, PartitionStats]:
    """Stats per partition that has records, in partition order."""
    stats = {p: PartitionStats(p) for p in PARTITIONS}
    for record in records:
        stats.setdefault(record.partition, PartitionStats(record.partition)).add(record)
    return {p: s for p, s in stats.items() if s.cases}


RuleKind = Literal["golden", "hard", "soft"]


class NotPassedEntry(TypedDict):
    id: str
    status: str


class PartitionVerdictJSON(TypedDict):
    """A partition rule's verdict in the JSON report (``PartitionVerdict.to_json``)."""

    partition: str
    kind: RuleKind
    passed: bool
    pass_rate: float
    minimum: float
    not_passed: list[NotPassedEntry]
    message: str


@dataclass(frozen=True)
class PartitionVerdict:
    """Whether one partition met its rule, and a line saying why."""

    partition: str
    kind: RuleKind
    passed: bool
    pass_rate: float
    minimum: float
    not_passed: tuple[tuple[str, str], ...]  # (example id, status)
    message: str

    def to_json(self) -> PartitionVerdictJSON:
        return {
            "partition": self.partition,
            "kind": self.kind,
            "passed": self.passed,
            "pass_rate": self.pass_rate,
            "minimum": self.minimum,
            "not_passed": [{"id": i, "status": s} for i, s in self.not_passed],
            "message": self.message,
        }


def labels(records: Sequence[Record]) -> dict[str, str]:
    """How to name each record's test: its example id, or, where several tests evaluate
    the same example, the test's name with the id (``test_f1[golden-01]``)."""
    seen: dict[str, int] = {}
    for record in records:
        seen[record.example_id] = seen.get(record.example_id, 0) + 1
    return {
        r.nodeid: r.nodeid.rpartition("::")[2]
        if seen[r.example_id] > 1 and r.nodeid
        else r.example_id
        for r in records
    }


def check_partitions(
    records: Sequence[Record], stats: dict[str, PartitionStats], settings: Settings
) -> list[PartitionVerdict]:
    """Apply the 100%-golden rule and each partition's hard or soft rule."""
    verdicts = []
    for partition, part in stats.items():
        not_passed = _not_passed_examples(r for r in records if r.partition == partition)
        minimum = settings.minimum(partition)
        if partition == "golden":
            kind: RuleKind = "golden"
            ok = not not_passed
        elif settings.is_hard(partition):
            kind = "hard"
            not_passed = tuple(item for item in not_passed if item[1] != "skipped")
            ok = not not_passed
        else:
            kind = "soft"
            ok = part.pass_rate >= minimum - 1e-12
        message = _rule_message(partition, kind, ok, part, minimum, not_passed)
        verdicts.append(
            PartitionVerdict(partition, kind, ok, part.pass_rate, minimum, not_passed, message)
        )
    return verdicts


_SEVERITY = {"skipped": 0, "not run": 0, "failed": 1, "error": 2}


def _not_passed_examples(records: Iterable[Record]) -> tuple[tuple[str, str], ...]:
    """(example id, worst status over its tests) for each example with a test not passed."""
    worst: dict[str, str] = {}
    for record in records:
        if record.status == "passed":
            continue
        status = "not run" if record.failure_kind == NOT_RUN else record.status
        seen = worst.get(record.example_id)
        if seen is None or _SEVERITY[status] > _SEVERITY[seen]:
            worst[record.example_id] = status
    return tuple(worst.items())


def _rule_message(
    partition: str,
    kind: RuleKind,
    ok: bool,
    part: PartitionStats,
    minimum: float,
    not_passed: tuple[tuple[str, str], ...],
) -> str:
    examples = len(part.example_ids)
    # Several tests may evaluate one example: count examples, and tests where they differ.
    tests = f" ({part.cases} tests)" if part.cases != examples else ""
    if kind == "golden":
        if ok:
            return f"golden rule: PASS, all {examples} golden examples passed{tests}"
        return (
            f"golden rule: FAIL, {len(not_passed)} of {examples} golden examples did not "
            f"pass{tests}: {_id_list(not_passed)}"
        )
    if kind == "hard":
        if ok:
            return f"{partition} (hard): PASS, no failures among {examples} examples{tests}"
        return (
            f"{partition} (hard): FAIL, {len(not_passed)} of {examples} examples did not "
            f"pass{tests}: {_id_list(not_passed)}"
        )
    unit = "tests" if tests else "examples"
    rate = f"pass rate {part.pass_rate:.1%} ({part.passed}/{part.cases} {unit})"
    if ok:
        return f"{partition} (soft): PASS, {rate} >= minimum {minimum:.1%}"
    needed = math.ceil(minimum * part.cases - 1e-9) - part.passed
    return (
        f"{partition} (soft): FAIL, {rate} < minimum {minimum:.1%}, short by "
        f"{(minimum - part.pass_rate) * 100:.1f} points ({needed} more passing "
        f"{unit if needed != 1 else unit[:-1]} needed)"
    )


def failure_reasons(
    records: Sequence[Record],
    verdicts: Sequence[PartitionVerdict],
    *,
    regression_blocks: bool = False,
    budgets: Sequence[BudgetVerdict] = (),
    other_failures: int = 0,
) -> list[str]:
    """Everything that fails the run, as the summary's last line names it: the partition rules,
    errors, tests that never ran, a blocking regression, a strict time budget, and
    failed tests that are not eval tests."""
    reasons = [_rule_name(v) for v in verdicts if not v.passed]
    errors = sum(r.status == "error" for r in records)
    if errors:
        reasons.append(f"{errors} error{'s' if errors != 1 else ''}")
    not_run = sum(r.failure_kind == NOT_RUN for r in records)
    if not_run:
        reasons.append(f"run incomplete ({not_run} not run)")
    if regression_blocks:
        reasons.append("regression BLOCK")
    reasons += [f"time budget of {b.partition}" for b in budgets if b.fails]
    if other_failures:
        reasons.append(f"{other_failures} other test{'s' if other_failures != 1 else ''} failed")
    return reasons


def _rule_name(verdict: PartitionVerdict) -> str:
    return "golden rule" if verdict.kind == "golden" else f"{verdict.partition} ({verdict.kind})"


def incomplete_line(records: Sequence[Record]) -> str | None:
    """The one line saying that the run ended before every selected test ran, or None."""
    not_run = [r for r in records if r.failure_kind == NOT_RUN]
    if not not_run:
        return None
    names = labels(records)
    reason = (not_run[0].failure_reason or "").removeprefix("not run: ")
    ids = _id_list([(names[r.nodeid], "failed") for r in not_run], limit=5)  # listed bare
    selected = len(records)
    return (
        f"run incomplete: {reason}; {len(not_run)} of {selected} selected eval tests never "
        f"ran: {ids}"
    )


def _id_list(items: Sequence[tuple[str, str]], limit: int = 10) -> str:
    shown = [f"{i} ({s})" if s != "failed" else i for i, s in items[:limit]]
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(shown) + more


class BudgetJSON(TypedDict):
    """A time budget's verdict in the JSON report (``BudgetVerdict.to_json``)."""

    partition: str
    wall_s: float
    budget_s: float
    over: bool
    strict: bool


@dataclass(frozen=True)
class BudgetVerdict:
    """One partition's wall time against its time budget."""

    partition: str
    wall_s: float
    budget_s: float
    strict: bool  # an overrun fails the session

    @property
    def over(self) -> bool:
        return self.wall_s > self.budget_s

    @property
    def fails(self) -> bool:
        return self.over and self.strict

    def to_json(self) -> BudgetJSON:
        return {
            "partition": self.partition,
            "wall_s": self.wall_s,
            "budget_s": self.budget_s,
            "over": self.over,
            "strict": self.strict,
        }


def check_time_budgets(
    stats: dict[str, PartitionStats], budgets: dict[str, float], *, strict: bool = False
) -> list[BudgetVerdict]:
    """A verdict for each partition of the run that has a budget and a known wall time."""
    return [
        BudgetVerdict(partition, wall, budgets[partition], strict)
        for partition, part in stats.items()
        if partition in budgets and (wall := part.wall_s) is not None
    ]


def calibration(records: Sequence[Record]) -> CalibrationJSON | None:
    """Judge, similarity and grounding against the human labels of the run, if any (the
    statistics import numpy and scipy, so only then)."""
    labelled = [r.to_json() for r in records if r.human]
    if not labelled:
        return None
    try:
        from ..calibration import from_records

        return from_records(labelled)
    except Exception as exc:  # a bad label must not cost the summary or the report
        examples = len({r["example_id"] for r in labelled})
        return {"examples": examples, "error": f"{type(exc).__name__}: {exc}"}


def unreliable_judge(records: Sequence[Record], maximum: float) -> str | None:
    """Why the run's pairwise judge is unreliable: position-biased (its two orders
    disagree) in more of the run's comparisons than ``maximum``; else None."""
    pairwise = [v for r in records for v in r.judge if v["kind"] == "pairwise"]
    biased = sum(v["position_bias"] for v in pairwise)
    if not pairwise or biased / len(pairwise) <= maximum:
        return None
    return (
        f"the pairwise judge is position-biased in {biased} of {len(pairwise)} comparisons "
        f"({biased / len(pairwise):.0%}), above llmeval_max_position_bias={maximum:g}: "
        "its preferences are unreliable"
    )


def distrust_biased_ties(records: Sequence[Record], maximum: float) -> None:
    """On golden and regression examples, make a preference check whose two orders
    disagreed an error of class ``judge`` when the run's judge is unreliable: its tie
    proves nothing. Decided from every comparison of the run, so the same serially and
    under xdist."""
    unreliable = unreliable_judge(records, maximum)
    if unreliable is None:
        return
    for record in records:
        if record.partition in ("golden", "regression") and any(
            v["kind"] == "pairwise" and v["position_bias"] for v in record.judge
        ):
            record.fail(
                "error",
                f"{LLM_ERROR}judge",
                f"{unreliable}; its two orders disagreed on this example, so the tie "
                "proves nothing: use a judge model that position does not sway "
                "(--llmeval-judge-model)",
            )
