"""Repeated draws (``llmeval_repeat``): the draws of one test and example are one case,
reduced to one verdict by its partition's reducer; a case whose draws disagree is flaky.
The partition rules, the table and the report count cases, so an example drawn k times
counts once."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypedDict

from ..records import NOT_RUN, MetricEntry, Record
from .summary import PartitionStats, aggregate

if TYPE_CHECKING:
    from ..settings import Settings

FLAKY = "flaky"  # the failure kind of a case failed for disagreeing with itself


class FlakyJSON(TypedDict):
    """A flaky case in the JSON report."""

    case: str  # the node id of the test without its draw
    example_id: str
    partition: str
    passed: int  # draws that passed
    draws: int  # draws that gave a verdict (passed or failed)
    mode: str  # fail | warn | ignore: what it did to the gate


@dataclass(frozen=True)
class Flaky:
    """A case whose draws disagree: some passed, some failed."""

    case: str
    example_id: str
    partition: str
    passed: int
    draws: int
    mode: str

    def to_json(self) -> FlakyJSON:
        return {
            "case": self.case,
            "example_id": self.example_id,
            "partition": self.partition,
            "passed": self.passed,
            "draws": self.draws,
            "mode": self.mode,
        }


@dataclass(frozen=True)
class Reduced:
    """The run's cases (a record drawn once is its own case), its flaky cases, and per
    partition the most draws of a case and how many cases passed every draw (pass^k) and
    at least one (pass@k)."""

    cases: list[Record]
    flaky: list[Flaky]
    draws: dict[str, int]
    all_passed: dict[str, int]
    any_passed: dict[str, int]


def reduce_draws(records: Sequence[Record], settings: Settings) -> Reduced:
    """One record per case, in the order of each case's first draw (a record drawn
    once is its own case, unchanged)."""
    groups: dict[str, list[Record]] = {}
    cases: list[Record | str] = []
    for record in records:
        if record.draw is None:
            cases.append(record)
            continue
        key = record.case
        if key not in groups:
            groups[key] = []
            cases.append(key)
        groups[key].append(record)
    flaky: list[Flaky] = []
    draws: dict[str, int] = {}
    all_passed: dict[str, int] = {}
    any_passed: dict[str, int] = {}
    out: list[Record] = []
    for entry in cases:
        group = [entry] if isinstance(entry, Record) else groups[entry]
        partition = group[0].partition
        case = (
            entry
            if isinstance(entry, Record)
            else _case(entry, group, settings.reducer_of(partition))
        )
        judged = [r for r in group if r.status in ("passed", "failed")]
        passed = sum(r.status == "passed" for r in judged)
        draws[partition] = max(draws.get(partition, 1), len(group))
        # An example that errored, was skipped or did not run is in neither count: not
        # all of its draws are known.
        known = case.status in ("passed", "failed") and len(judged) == len(group)
        all_passed[partition] = all_passed.get(partition, 0) + (known and passed == len(group))
        any_passed[partition] = any_passed.get(partition, 0) + (known and passed > 0)
        if 0 < passed < len(judged):
            mode = settings.flaky_mode(partition)
            flaky.append(Flaky(case.nodeid, case.example_id, partition, passed, len(judged), mode))
            if mode == "fail" and case.status == "passed":
                case.fail("failed", FLAKY, f"flaky: {passed} of {len(judged)} draws passed")
        out.append(case)
    return Reduced(out, flaky, draws, all_passed, any_passed)


def aggregate_cases(reduced: Reduced) -> dict[str, PartitionStats]:
    """The partition stats of the run's cases, with their draws' pass^k and pass@k."""
    stats = aggregate(reduced.cases)
    for partition, part in stats.items():
        part.draws = reduced.draws.get(partition, 1)
        part.all_draws_passed = reduced.all_passed.get(partition, 0)
        part.any_draw_passed = reduced.any_passed.get(partition, 0)
    return stats


def _case(nodeid: str, group: list[Record], reducer: str) -> Record:
    """The case's record: the first draw's identity, each metric's mean score, and the
    status its reducer gives."""
    first = group[0]
    case = Record(
        first.example_id,
        first.partition,
        nodeid,
        first.dataset,
        first.dataset_hash,
        list(first.tags),
        first.cluster,
        None,
        model=first.model,
        prompt_version=first.prompt_version,
        metrics=_mean_metrics(group),
    )
    latencies = [x for r in group if (x := r.effective_latency_s) is not None]
    case.latency_s = sum(latencies) / len(latencies) if latencies else None
    starts = [r.started_at for r in group if r.started_at is not None]
    ends = [r.finished_at for r in group if r.finished_at is not None]
    case.started_at, case.finished_at = min(starts, default=None), max(ends, default=None)
    # A draw that never ran, errored or was skipped leaves the example undecided: the
    # draws that remain are not the k asked for (and a skipped golden example fails the
    # golden rule, drawn once or k times).
    undecided = (
        next((r for r in group if r.failure_kind == NOT_RUN), None)
        or next((r for r in group if r.status == "error"), None)
        or next((r for r in group if r.status == "skipped"), None)
    )
    if undecided is not None:
        case.status = undecided.status
        case.failure_kind, case.failure_reason = undecided.failure_kind, undecided.failure_reason
        return case
    passed = sum(r.status == "passed" for r in group)
    if reducer == "all":
        ok = passed == len(group)
    elif reducer == "majority":
        ok = passed * 2 > len(group)
    elif reducer == "any":
        ok = passed > 0
    else:
        ok = _mean_passes(case.metrics, group)
    if not ok:
        failed = next((r for r in group if r.status == "failed"), None)
        if failed is None:  # mean: every draw passed, a metric's mean did not
            missed = ", ".join(m["name"] for m in case.metrics if not m["passed"])
            case.fail("failed", "mean", f"the mean over {len(group)} draws misses: {missed}")
        else:
            case.fail(
                "failed",
                failed.failure_kind or "assertion",
                f"{passed} of {len(group)} draws passed ({reducer}); draw {failed.draw}: "
                f"{failed.failure_reason}",
            )
    return case


def _mean_metrics(group: list[Record]) -> list[MetricEntry]:
    """Each metric's mean score over the draws that scored it, against its threshold.
    Only a metric whose every draw passed exactly when its score reached the threshold
    is decided by the mean; another (grounding's, which counts unsupported claims, or a
    lower-is-better one) passes when most of its draws did."""
    by_name: dict[str, list[MetricEntry]] = {}
    for record in group:
        for metric in record.metrics:
            by_name.setdefault(metric["name"], []).append(metric)
    out: list[MetricEntry] = []
    for name, entries in by_name.items():
        scores = [s for m in entries if (s := m["score"]) is not None and math.isfinite(s)]
        mean = sum(scores) / len(scores) if scores else None
        threshold = entries[0]["threshold"]
        if (
            mean is not None
            and threshold is not None
            and all(_by_score(m, threshold) for m in entries)
        ):
            passed = mean >= threshold
        else:
            passed = sum(m["passed"] for m in entries) * 2 > len(entries)
        out.append(
            {"name": name, "score": mean, "threshold": threshold, "passed": passed, "details": {}}
        )
    return out


def _by_score(metric: MetricEntry, threshold: float) -> bool:
    """Whether the metric passed exactly when its score reached ``threshold``."""
    score = metric["score"]
    return (
        score is not None
        and metric["threshold"] == threshold
        and metric["passed"] == (score >= threshold)
    )


def _mean_passes(metrics: list[MetricEntry], judged: list[Record]) -> bool:
    """``mean``: every metric's mean meets its threshold, and no draw failed on anything
    else (an exception, an assertion that scores nothing); without scored metrics, most
    draws passed."""
    if not metrics:
        return sum(r.status == "passed" for r in judged) * 2 > len(judged)
    otherwise = any(r.status == "failed" and all(m["passed"] for m in r.metrics) for r in judged)
    return not otherwise and all(m["passed"] for m in metrics)
