"""Aggregation of records, the gates (the 100%-golden rule, hard and soft partitions),
the time budgets, the terminal summary's lines and the JSON report. Plain Python: no
pytest import."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from ..partitions import PARTITIONS
from ..records import LLM_ERROR, NOT_RUN, Record

if TYPE_CHECKING:
    from ..settings import Settings

REPORT_FORMAT = "pytest-llmeval-report"
REPORT_VERSION = 1


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

    def metric_mean(self, name: str) -> float | None:
        scores = self.metric_scores.get(name)
        return sum(scores) / len(scores) if scores else None

    def latency_percentile(self, q: float) -> float | None:
        return percentile(self.latencies, q)

    def to_json(self) -> dict[str, Any]:
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


GateKind = Literal["golden", "hard", "soft"]


@dataclass(frozen=True)
class GateVerdict:
    """Whether one partition met its rule, and a line saying why."""

    partition: str
    kind: GateKind
    passed: bool
    pass_rate: float
    minimum: float
    not_passed: tuple[tuple[str, str], ...]  # (example id, status)
    message: str

    def to_json(self) -> dict[str, Any]:
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


def evaluate_gates(
    records: Sequence[Record], stats: dict[str, PartitionStats], settings: Settings
) -> list[GateVerdict]:
    """Apply the 100%-golden rule and each partition's hard or soft rule."""
    verdicts = []
    for partition, part in stats.items():
        not_passed = _not_passed_examples(r for r in records if r.partition == partition)
        minimum = settings.minimum(partition)
        if partition == "golden":
            kind: GateKind = "golden"
            ok = not not_passed
        elif settings.is_hard(partition):
            kind = "hard"
            not_passed = tuple(item for item in not_passed if item[1] != "skipped")
            ok = not not_passed
        else:
            kind = "soft"
            ok = part.pass_rate >= minimum - 1e-12
        message = _gate_message(partition, kind, ok, part, minimum, not_passed)
        verdicts.append(
            GateVerdict(partition, kind, ok, part.pass_rate, minimum, not_passed, message)
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


def _gate_message(
    partition: str,
    kind: GateKind,
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
    verdicts: Sequence[GateVerdict],
    *,
    regression_blocks: bool = False,
    budgets: Sequence[BudgetVerdict] = (),
    other_failures: int = 0,
) -> list[str]:
    """Everything that fails the run, as the summary's last line names it: the gates,
    errors, tests that never ran, a blocking regression, a strict time budget, and
    failed tests that are not eval tests."""
    reasons = [_gate_name(v) for v in verdicts if not v.passed]
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


def _gate_name(verdict: GateVerdict) -> str:
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

    def to_json(self) -> dict[str, Any]:
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


# --- terminal summary --------------------------------------------------------------

Line = tuple[str, dict[str, bool]]  # text and terminal markup (red=True, bold=True ...)


def summary_lines(
    records: Sequence[Record],
    stats: dict[str, PartitionStats],
    verdicts: Sequence[GateVerdict],
    *,
    budgets: Sequence[BudgetVerdict] = (),
    verbosity: int = 0,
    max_position_bias: float = 0.3,
) -> list[Line]:
    """The llmeval summary: the partition table, the verdicts and time budgets, usage,
    the slowest examples, failures grouped by reason (these three hidden with -q), and
    the soft failures, which pytest's own report does not show."""
    names = labels(records)  # how each test is named in the lists below, computed once
    lines: list[Line] = [(text, {}) for text in _table(stats)]
    lines.append(("", {}))
    for verdict in verdicts:
        markup = {"green": True} if verdict.passed else {"red": True, "bold": True}
        lines.append((verdict.message, markup))
    lines += budget_lines(budgets)
    lines += [(text, {"red": True, "bold": True}) for text in _error_lines(records, names)]
    judged = _judge_lines(records, max_position_bias)
    warnings = [text for text in judged if text.startswith("WARNING")]
    if verbosity >= 0:
        usage = _usage_lines(records) + [t for t in judged if t not in warnings]
        if usage:
            lines += [("", {}), *((text, {}) for text in usage)]
    # A judge whose verdicts cannot be trusted is said even with -q.
    lines += [(text, {"yellow": True, "bold": True}) for text in warnings]
    if verbosity >= 0:
        lines += _slowest(records, names, 10 if verbosity > 0 else 3)
        lines += _failures_by_reason(records, names, None if verbosity > 0 else 5)
    lines += _soft_failures(records, names, None if verbosity > 0 else 10)
    calibrated = calibration(records)
    if calibrated is not None:
        from ..calibration import summary_lines as calibration_lines

        lines += [("", {}), *((text, {}) for text in calibration_lines(calibrated))]
    return lines


def budget_lines(verdicts: Sequence[BudgetVerdict]) -> list[Line]:
    """A line per partition over its budget (yellow, or red when it fails the session),
    else one line saying every budget was met."""
    over = [v for v in verdicts if v.over]
    if not over:
        if not verdicts:
            return []
        met = ", ".join(f"{v.partition} {_seconds(v.wall_s)} of {v.budget_s:g}s" for v in verdicts)
        return [(f"time budgets: all partitions within budget ({met})", {"green": True})]
    return [
        (
            f"time budget: {v.partition} took {_seconds(v.wall_s)}, over its budget of "
            f"{v.budget_s:g}s" + (" (strict: the session fails)" if v.fails else ""),
            {"red": True, "bold": True} if v.fails else {"yellow": True},
        )
        for v in over
    ]


def calibration(records: Sequence[Record]) -> dict[str, Any] | None:
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


def _table(stats: dict[str, PartitionStats]) -> list[str]:
    metrics: list[str] = []
    for part in stats.values():
        metrics += [m for m in part.metric_scores if m not in metrics]
    header = [
        "partition",
        "cases",
        "passed",
        "failed",
        "errors",
        "skipped",
        "pass rate",
        *metrics,
        "p50 latency",
        "p95 latency",
        "wall",
    ]
    rows = [header]
    for part in stats.values():
        rows.append(
            [
                part.partition,
                str(part.cases),
                str(part.passed),
                str(part.failed),
                str(part.errors),
                str(part.skipped),
                f"{part.pass_rate:.1%}",
                *(_num(part.metric_mean(m)) for m in metrics),
                _seconds(part.latency_percentile(50)),
                _seconds(part.latency_percentile(95)),
                _seconds(part.wall_s),
            ]
        )
    return aligned(rows, left={0})


def aligned(rows: Sequence[Sequence[str]], *, left: set[int]) -> list[str]:
    """Rows as columns two spaces apart: the ``left`` columns left-aligned, the others
    (numbers) right-aligned."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(
            cell.ljust(w) if i in left else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        ).rstrip()
        for row in rows
    ]


def _num(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value * 1000:.0f}ms" if value < 1 else f"{value:.2f}s"


def _error_lines(records: Sequence[Record], names: dict[str, str]) -> list[str]:
    """Errors, which are not quality failures and fail the run whatever the partition:
    model calls lost after their retries, by class; broken tests and crashed workers,
    by kind and test."""
    calls: dict[str, int] = {}
    others: dict[str, list[str]] = {}
    for record in records:
        if record.status != "error":
            continue
        kind = record.failure_kind or "error"
        if kind.startswith(LLM_ERROR):
            calls[kind[len(LLM_ERROR) :]] = calls.get(kind[len(LLM_ERROR) :], 0) + 1
        else:
            others.setdefault(kind, []).append(names[record.nodeid])
    lines = []
    if calls:
        listed = ", ".join(f"{k} {n}" for k, n in sorted(calls.items(), key=lambda kv: -kv[1]))
        lines.append(f"model call errors (after retries, not quality failures): {listed}")
    if others:
        listed = "; ".join(
            f"{kind} {len(ids)} ({', '.join(ids[:5])}{' ...' if len(ids) > 5 else ''})"
            for kind, ids in sorted(others.items(), key=lambda kv: -len(kv[1]))
        )
        lines.append(f"errors (not quality failures): {listed}")
    return lines


def _usage_lines(records: Sequence[Record]) -> list[str]:
    lines = []
    prompt = sum(r.tokens.get("prompt", 0) for r in records)
    completion = sum(r.tokens.get("completion", 0) for r in records)
    costs = [r.cost_usd for r in records if r.cost_usd is not None]
    if prompt or completion or costs:
        line = f"tokens: {prompt + completion:,} ({prompt:,} prompt, {completion:,} completion)"
        lines.append(line + (f", cost ${sum(costs):.4f}" if costs else ""))
    calls = sum(r.llm_calls for r in records)
    sent = sum(r.requests for r in records)
    if calls or sent:
        hits = sum(r.cache_hits for r in records)
        # The requests, failed ones and retries included, are what the server counted.
        lines.append(
            f"model calls: {calls:,} ({hits:,} cache hits, free; {calls - hits:,} misses), "
            f"{sent:,} requests sent (retries and failures included)"
        )
    by_model: dict[str, dict[str, Any]] = {}
    for record in records:
        for model, usage in record.usage.items():
            total = by_model.setdefault(
                model, {"calls": 0, "requests": 0, "tokens": 0, "cost": None}
            )
            total["calls"] += usage["calls"]
            total["requests"] += usage.get("requests", 0)
            total["tokens"] += usage["prompt_tokens"] + usage["completion_tokens"]
            if usage["cost_usd"] is not None:
                total["cost"] = (total["cost"] or 0.0) + usage["cost_usd"]
    for model, total in sorted(by_model.items()):
        cost = "no price" if total["cost"] is None else f"${total['cost']:.4f}"
        lines.append(
            f"  {model}: {total['calls']:,} calls, {total['requests']:,} requests, "
            f"{total['tokens']:,} tokens, {cost}"
        )
    return lines


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


def _judge_lines(records: Sequence[Record], max_position_bias: float) -> list[str]:
    """Judge verdicts over the session, with the pairwise judge's position-bias rate."""
    verdicts = [v for r in records for v in r.judge]
    lines = []
    rubric = [v for v in verdicts if v["kind"] == "rubric" and v["mean"] is not None]
    if rubric:
        mean = sum(v["mean"] for v in rubric) / len(rubric)
        unstable = sum(not v["stable"] for v in rubric)
        lines.append(f"judge: {len(rubric)} rubric verdicts, mean {mean:.2f}, {unstable} unstable")
    pairwise = [v for v in verdicts if v["kind"] == "pairwise"]
    if pairwise:
        won = {w: sum(v["winner"] == w for v in pairwise) for w in ("a", "b", "tie")}
        biased = sum(v["position_bias"] for v in pairwise)
        lines.append(
            f"pairwise: {len(pairwise)} comparisons, candidate preferred {won['a']}, "
            f"baseline {won['b']}, tie {won['tie']}; position bias {biased} of "
            f"{len(pairwise)} ({biased / len(pairwise):.0%}), counted as ties"
        )
        unreliable = unreliable_judge(records, max_position_bias)
        if unreliable:
            lines.append(f"WARNING: {unreliable}")
    # Which response format each judge endpoint took (verdicts before format memory had
    # none recorded). The formats step down in one order, so what came before the one
    # used was rejected.
    order = ("json_schema", "json_object", "text")
    used: dict[tuple[str, str], dict[str, int]] = {}
    for v in verdicts:
        if v.get("response_format") in order:
            counts = used.setdefault((v.get("endpoint") or "?", v.get("model") or "?"), {})
            counts[v["response_format"]] = counts.get(v["response_format"], 0) + 1
    endpoints = []
    for (url, model), counts in sorted(used.items()):
        formats = sorted(counts, key=order.index)
        if len(formats) == 1:
            rejected = order[: order.index(formats[0])]
            note = f" ({' and '.join(rejected)} rejected)" if rejected else ""
            endpoints.append(f"{url} model {model}: {formats[0]}{note}")
        else:  # e.g. verdicts replayed from a cache recorded against another server
            mixed = ", ".join(f"{f} for {counts[f]} verdicts" for f in formats)
            endpoints.append(f"{url} model {model}: {mixed}")
    if endpoints:
        lines.append(f"judge formats: {'; '.join(endpoints)}")
    return lines


def _slowest(records: Sequence[Record], names: dict[str, str], count: int) -> list[Line]:
    """The tests that took longest: their own time (setup, call, teardown: the app's
    calls, the judge's, every retry), else the model's latency (an older report)."""

    def took(record: Record) -> float | None:
        return record.elapsed_s if record.elapsed_s is not None else record.effective_latency_s

    timed = [r for r in records if took(r) is not None]
    if not timed:
        return []
    timed.sort(key=lambda r: took(r) or 0.0, reverse=True)
    lines: list[Line] = [("", {}), ("slowest examples:", {})]
    lines += [(f"  {_seconds(took(r)):>8}  {names[r.nodeid]}", {}) for r in timed[:count]]
    return lines


def _failures_by_reason(
    records: Sequence[Record], names: dict[str, str], limit: int | None
) -> list[Line]:
    groups: dict[str, list[Record]] = {}
    for record in records:
        if record.status in ("failed", "error"):
            groups.setdefault(record.failure_kind or record.status, []).append(record)
    if not groups:
        return []
    lines: list[Line] = [("", {}), ("failures by reason:", {})]
    for kind, members in sorted(groups.items(), key=lambda kv: -len(kv[1])):
        ids = [f"{names[r.nodeid]}{' (soft)' if r.soft else ''}" for r in members]
        shown = ids if limit is None else ids[:limit]
        more = f" and {len(ids) - len(shown)} more" if len(ids) > len(shown) else ""
        lines.append((f"  {kind} ({len(members)}): {', '.join(shown)}{more}", {}))
    return lines


def _soft_failures(
    records: Sequence[Record], names: dict[str, str], limit: int | None
) -> list[Line]:
    soft = [r for r in records if r.soft]
    if not soft:
        return []
    lines: list[Line] = [("", {}), (f"soft failures ({len(soft)}):", {"yellow": True})]
    for record in soft[:limit]:
        reason = (record.failure_reason or record.failure_kind or "").splitlines()
        lines.append((f"  {names[record.nodeid]}: {reason[0] if reason else ''}", {}))
        # The why, without the output and reference shown in full elsewhere.
        why = [r for r in reason[1:] if r.strip().startswith(("FAIL", "precision", "raised"))]
        lines += [(f"      {r.strip()}", {}) for r in why[:3]]
    if limit is not None and len(soft) > limit:
        lines.append((f"  ... and {len(soft) - limit} more (-v shows all)", {}))
    return lines


# --- JSON report --------------------------------------------------------------------


def build_report(
    records: Sequence[Record],
    stats: dict[str, PartitionStats],
    verdicts: Sequence[GateVerdict],
    run: dict[str, Any],
    *,
    regression: dict[str, Any] | None = None,
    budgets: Sequence[BudgetVerdict] = (),
    failures: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The whole run as one JSON-safe document; also the baseline format. ``passed``:
    nothing failed the run (``failures``, the summary's reasons; by default every gate
    passed, no error, no regression blocks, no strict time budget was overrun), and
    ``complete``: every selected test ran (``not_run`` lists the others)."""
    not_run = [r for r in records if r.failure_kind == NOT_RUN]
    if failures is None:
        blocks = regression is not None and bool(regression["blocks"])
        failures = failure_reasons(records, verdicts, regression_blocks=blocks, budgets=budgets)
    datasets: dict[str, str | None] = {}
    for record in records:
        if record.dataset is not None:
            datasets.setdefault(record.dataset, record.dataset_hash)
    return {
        "format": REPORT_FORMAT,
        "version": REPORT_VERSION,
        "run": {
            **run,
            "models": sorted({r.model for r in records if r.model}),
            "prompt_versions": sorted({r.prompt_version for r in records if r.prompt_version}),
            "datasets": datasets,
        },
        "passed": not failures,
        "complete": not not_run,
        "failures": list(failures),
        "not_run": [
            {"example_id": r.example_id, "partition": r.partition, "nodeid": r.nodeid}
            for r in not_run
        ],
        "partitions": {p: s.to_json() for p, s in stats.items()},
        "gates": [v.to_json() for v in verdicts],
        "time_budgets": [b.to_json() for b in budgets],
        "regression": regression,
        "calibration": calibration(records),
        "records": [r.to_json() for r in records],
    }
