"""Every line the terminal shows of a run: the llmeval summary (partition table,
verdicts, usage, judge, slowest examples, failures) and the regression table, which
``llmeval compare`` prints too."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ..records import LLM_ERROR, ModelUsage, Record, is_pairwise, is_rubric, merge_usage
from .draws import Flaky
from .panel import panel_lines
from .summary import (
    BudgetVerdict,
    PartitionStats,
    PartitionVerdict,
    calibration,
    labels,
    unreliable_judge,
)

if TYPE_CHECKING:
    from ..stats import Comparison


Line = tuple[str, dict[str, bool]]  # text and terminal markup (red=True, bold=True ...)


def summary_lines(
    records: Sequence[Record],
    stats: dict[str, PartitionStats],
    verdicts: Sequence[PartitionVerdict],
    *,
    budgets: Sequence[BudgetVerdict] = (),
    verbosity: int = 0,
    max_position_bias: float = 0.3,
    flaky: Sequence[Flaky] = (),
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
    lines += flaky_lines(flaky)
    lines += budget_lines(budgets)
    lines += [(text, {"red": True, "bold": True}) for text in _error_lines(records, names)]
    judged = _judge_lines(records, max_position_bias) + panel_lines(records)
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


_FLAKY_EFFECT = {"fail": "fails the gate", "warn": "a warning", "ignore": "ignored"}


def flaky_lines(flaky: Sequence[Flaky], limit: int = 10) -> list[Line]:
    """The examples whose draws disagree (the app's own noise, apart from the judge's
    unstable samples), with what llmeval_flaky makes of them."""
    if not flaky:
        return []
    worst = any(f.mode == "fail" for f in flaky)
    lines: list[Line] = [
        (
            f"flaky examples (their draws disagree): {len(flaky)}",
            {"red": True, "bold": True} if worst else {"yellow": True},
        )
    ]
    for f in flaky[:limit]:
        lines.append(
            (
                f"  {f.example_id}: {f.passed} of {f.draws} draws passed "
                f"({f.partition}, {_FLAKY_EFFECT[f.mode]})",
                {},
            )
        )
    if len(flaky) > limit:
        lines.append((f"  ... and {len(flaky) - limit} more", {}))
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


def _table(stats: dict[str, PartitionStats]) -> list[str]:
    metrics: list[str] = []
    for part in stats.values():
        metrics += [m for m in part.metric_scores if m not in metrics]
    drawn = any(part.draws > 1 for part in stats.values())
    header = [
        "partition",
        "cases",
        "passed",
        "failed",
        "errors",
        "skipped",
        "pass rate",
        *(["draws", "pass^k", "pass@k"] if drawn else []),
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
                *(
                    [str(part.draws), f"{part.pass_hat_k:.1%}", f"{part.pass_at_k:.1%}"]
                    if drawn
                    else []
                ),
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
    by_model: dict[str, ModelUsage] = {}
    for record in records:
        merge_usage(by_model, record.usage)
    for model, total in sorted(by_model.items()):
        cost = "no price" if total["cost_usd"] is None else f"${total['cost_usd']:.4f}"
        tokens = total["prompt_tokens"] + total["completion_tokens"]
        lines.append(
            f"  {model}: {total['calls']:,} calls, {total['requests']:,} requests, "
            f"{tokens:,} tokens, {cost}"
        )
    return lines


def _judge_lines(records: Sequence[Record], max_position_bias: float) -> list[str]:
    """Judge verdicts over the session, with the pairwise judge's position-bias rate."""
    verdicts = [v for r in records for v in r.judge]
    lines = []
    rubric = [(v["mean"], v["stable"]) for v in verdicts if is_rubric(v) and v["mean"] is not None]
    if rubric:
        mean = sum(m for m, _ in rubric) / len(rubric)
        unstable = sum(not stable for _, stable in rubric)
        lines.append(f"judge: {len(rubric)} rubric verdicts, mean {mean:.2f}, {unstable} unstable")
    pairwise = [v for v in verdicts if is_pairwise(v)]
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
        fmt = v.get("response_format")
        if fmt in order:
            counts = used.setdefault((v.get("endpoint") or "?", v.get("model") or "?"), {})
            counts[fmt] = counts.get(fmt, 0) + 1
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


_NONE = "\N{EM DASH}"  # an undefined value (None, null in JSON)


_COLUMNS = ("metric", "partition", "baseline", "candidate", "Δ", "CI", "p adj", "n", "MDE80")


def table_lines(comparisons: Sequence[Comparison], *, verbose: bool = False) -> list[str]:
    """One row per comparison, then the plain-language line of each verdict other than
    NO_CHANGE (and, verbose, every warning)."""
    if not comparisons:
        return ["no gated metric to compare (llmeval_gate, and the partitions of this run)"]
    first = comparisons[0]
    rows = [[*_COLUMNS, "verdict"]]
    for c in comparisons:
        rows.append(
            [
                c.metric,
                c.partition,
                _fixed(c.mean_baseline),
                _fixed(c.mean_candidate),
                _fixed(c.effect, signed=True),
                _NONE if c.ci_low is None else f"[{_fixed(c.ci_low)}, {_fixed(c.ci_high)}]",
                _p_cell(c.p_adj),
                str(c.n),
                _fixed(c.mde80),
                c.verdict,
            ]
        )
    from ..stats.verdict import ci_percent

    lines = [
        f"alpha {first.alpha:g} over {first.m} gated comparison{'s' if first.m != 1 else ''} "
        f"(Holm); CIs at {ci_percent(first.ci_level)}%; δ "
        + ", ".join(f"{m} {d:g}" for m, d in {c.metric: c.delta for c in comparisons}.items())
    ]
    lines += aligned(rows, left={0, 1, 5, len(rows[0]) - 1})  # names, CI and verdict
    for c in comparisons:
        if c.verdict != "NO_CHANGE":
            lines.append(f"  {c.metric}[{c.partition}]: {c.line}")
        if verbose:
            lines += [f"    warning: {w}" for w in c.warnings]
    return lines


def _fixed(value: float | None, *, signed: bool = False) -> str:
    from ..stats.verdict import fmt_number

    if value is None:
        return _NONE
    text = fmt_number(value, 3)
    return f"+{text}" if signed and value > 0 and float(text) else text


def _p_cell(p: float | None) -> str:
    """A p-value in the table, to three decimals (the line's is stats.verdict.p_phrase)."""
    if p is None:
        return _NONE
    return "<0.001" if p < 0.001 else f"{p:.3f}"
