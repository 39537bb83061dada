"""A run's verdict from its records and settings: the partition rules over cases, the time
budgets, the regression statistics against a baseline, everything that fails the run,
and the summary's lines. The pytest session and ``llmeval gate`` (on a report, such as
merged shards) both judge a run with it, so the two cannot disagree."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..partitions import PARTITIONS
from ..records import Record, RecordJSON
from ..settings import Settings
from .bar import Lowering, bar_json, bar_lines, blocks, lowered
from .compare import compare_runs, decision
from .draws import Flaky, aggregate_cases, reduce_draws
from .render import Line, summary_lines, table_lines
from .report import ReportJSON, build_report
from .summary import (
    BudgetVerdict,
    PartitionStats,
    PartitionVerdict,
    check_partitions,
    check_time_budgets,
    distrust_biased_ties,
    failure_reasons,
    incomplete_line,
)

if TYPE_CHECKING:
    from ..stats import Comparison


@dataclass(frozen=True)
class Verdict:
    """A judged run. ``comparisons``: the gated comparisons with the baseline (None
    without one), or the hard error that prevented them. ``reasons``: everything that
    fails the run, as the summary's last line names it (none: it passes)."""

    records: list[Record]  # in a stable order, the same serially and under xdist
    stats: dict[str, PartitionStats]  # over cases: an example's draws count once
    verdicts: list[PartitionVerdict]
    flaky: list[Flaky]
    comparisons: list[Comparison] | str | None
    regression_blocks: bool
    budgets: list[BudgetVerdict]
    lowered: list[Lowering]  # the bar against the baseline's (runs.bar)
    reasons: list[str]

    @property
    def passed(self) -> bool:
        return not self.reasons


def judge_run(
    records: Sequence[Record],
    settings: Settings,
    baseline: Sequence[RecordJSON] | None,
    *,
    baseline_settings: Settings | None = None,
    filtered: bool = False,
    other_failures: int = 0,
) -> Verdict:
    """The verdict on ``records`` (``other_failures``: failed tests that are not eval
    tests; they fail the run too; ``baseline_settings``: the options the baseline's
    session read, and ``filtered``: whether the run selected with -k, -m or tags, for
    its bar)."""
    order = {p: i for i, p in enumerate(PARTITIONS)}
    everything = list(records)
    distrust_biased_ties(everything, settings.max_position_bias)
    ordered = sorted(everything, key=lambda r: (order.get(r.partition, 99), r.nodeid))
    reduced = reduce_draws(ordered, settings)  # repeated draws: one case each
    stats = aggregate_cases(reduced)
    verdicts = check_partitions(reduced.cases, stats, settings)
    comparisons = None if baseline is None else _compare(baseline, ordered, settings)
    fails = settings.regression.fails
    if isinstance(comparisons, str):
        regression_blocks = fails
    else:
        regression_blocks = comparisons is not None and decision(comparisons, fails=fails)[0]
    budgets = check_time_budgets(stats, settings.time_budget, strict=settings.time_budget_strict)
    reasons = failure_reasons(
        ordered,
        verdicts,
        regression_blocks=regression_blocks,
        budgets=budgets,
        other_failures=other_failures,
    )
    lowerings = (
        []
        if baseline is None
        else lowered(baseline, baseline_settings, ordered, settings, filtered=filtered)
    )
    if blocks(lowerings, settings):
        reasons.append(f"bar lowered ({sum(not low.accepted for low in lowerings)})")
    return Verdict(
        ordered,
        stats,
        verdicts,
        reduced.flaky,
        comparisons,
        regression_blocks,
        budgets,
        lowerings,
        reasons,
    )


def _compare(
    baseline: Sequence[RecordJSON], ordered: Sequence[Record], settings: Settings
) -> list[Comparison] | str:
    try:
        return compare_runs(baseline, [r.to_json() for r in ordered], settings.regression)
    except ValueError as exc:
        return f"regression: ERROR, cannot compare with the baseline: {exc}"
    except (KeyError, TypeError) as exc:  # a record of another shape (edited?)
        return (
            "regression: ERROR, cannot compare with the baseline: a record lacks or "
            f"mistypes a field ({type(exc).__name__}: {exc})"
        )


def report_of(verdict: Verdict, settings: Settings, run: dict[str, Any]) -> ReportJSON:
    """The report of a judged run (``run``: its metadata)."""
    return build_report(
        verdict.records,
        verdict.stats,
        verdict.verdicts,
        run,
        flaky=verdict.flaky,
        regression=regression_json(verdict, settings),
        budgets=verdict.budgets,
        failures=verdict.reasons,
        bar=None if verdict.comparisons is None else bar_json(verdict.lowered, settings),
    )


def regression_json(verdict: Verdict, settings: Settings) -> dict[str, Any] | None:
    """The report's ``regression``: the comparisons with the baseline, or None."""
    result = verdict.comparisons
    if result is None:
        return None
    return {
        "baseline": str(settings.regression.baseline),
        "blocks": verdict.regression_blocks,
        "fails_session": settings.regression.fails,
        "error": result if isinstance(result, str) else None,
        "comparisons": [] if isinstance(result, str) else [c.to_json() for c in result],
    }


def verdict_lines(
    verdict: Verdict,
    settings: Settings,
    *,
    baseline_name: str = "",
    verbosity: int = 0,
    notes: Sequence[str] = (),
) -> list[Line]:
    """The summary: the partition table and rules, the regression section, ``notes``
    (what could not be written), an incomplete run said so, and the last line, which
    names everything that fails the run."""
    lines = summary_lines(
        verdict.records,
        verdict.stats,
        verdict.verdicts,
        budgets=verdict.budgets,
        verbosity=verbosity,
        max_position_bias=settings.max_position_bias,
        flaky=verdict.flaky,
    )
    result = verdict.comparisons
    if result is not None:
        lines += [("", {}), (f"regression against the baseline {baseline_name}:", {})]
        if isinstance(result, str):
            lines.append((result, {"red": True, "bold": True}))
        else:
            blocks = verdict.regression_blocks
            lines += [(text, {}) for text in table_lines(result, verbose=verbosity > 0)]
            line = decision(result, fails=settings.regression.fails)[1]
            lines.append((line, {"red": blocks, "bold": blocks, "green": not blocks}))
    bar = bar_lines(verdict.lowered, settings)
    if bar:
        markup = (
            {"red": True, "bold": True} if bar[-1].startswith("bar: BLOCK") else {"yellow": True}
        )
        lines += [("", {}), *((text, markup) for text in bar)]
    lines.append(("", {}))
    lines += [(note, {"yellow": True}) for note in notes]
    incomplete = incomplete_line(verdict.records)
    if incomplete:
        lines.append((incomplete, {"red": True, "bold": True}))
    if verdict.reasons:
        lines.append((f"llmeval: FAIL ({'; '.join(verdict.reasons)})", {"red": True, "bold": True}))
    else:
        lines.append(("llmeval: PASS", {"green": True, "bold": True}))
    return lines
