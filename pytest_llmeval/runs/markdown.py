"""The run as Markdown for a pull request (``--llmeval-markdown``, ``$GITHUB_STEP_SUMMARY``):
the verdicts, the partition table, the regression decision and its table, the examples
that changed since the baseline and the top failures, each with one line of reason.

It fits a pull-request comment whatever the run: every list is capped, what is left out is
counted and pointed to the HTML report, and the whole is under ``MAX_LINES`` lines. Every
text from a model or a dataset is escaped, so that it renders as the text it is (no
markup, no HTML, no math, no mentions)."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..files import write_text_atomic
from ..records import MetricEntry, Record, RecordJSON, case_of
from .draws import Flaky
from .render import budget_lines, flaky_lines, table_lines
from .report import ReportJSON, read_records
from .summary import BudgetVerdict, incomplete_line, labels

if TYPE_CHECKING:
    from ..stats import Comparison

MAX_LINES = 60  # the whole document has fewer lines than this
LINE_CHARS = 300  # a reason longer than this is cut
# The caps of each list: together, with every section at its longest, under MAX_LINES.
FAILURES = 8  # failures listed one per line
PARTITION_ROWS = 5
COMPARISON_ROWS = 4
GATE_LINES = 5  # the partition rules' lines (the failing ones first)
BUDGET_LINES = 2
FLAKY_LINES = 1


def write_markdown(
    document: ReportJSON,
    path: Path | None,
    *,
    html: Path | str | None,
    step_summary: str | None,
    baseline: Sequence[RecordJSON] | None = None,
) -> None:
    """Write the run's Markdown to ``path`` (when given) and append it to the file named
    by ``step_summary`` (GitHub Actions' ``$GITHUB_STEP_SUMMARY``, when set). With the
    baseline's records (given, as the plugin read them at start-up; else read from
    ``regression.baseline`` if it still can be), the examples that changed are listed."""
    if baseline is None:
        baseline = _baseline_records(document)
    text = markdown(document, html, baseline=baseline)
    if path is not None:
        write_text_atomic(path, text)
    if step_summary:
        # Appended: each step of a job adds its own part to the job's summary.
        with open(step_summary, "a", encoding="utf-8") as summary:
            summary.write(text + "\n")


def _baseline_records(document: ReportJSON) -> list[RecordJSON] | None:
    regression = document.get("regression") or {}
    where = regression.get("baseline")
    if not where or regression.get("error"):
        return None
    try:
        return read_records(Path(where))
    except ValueError:  # moved or rewritten since the run compared with it
        return None


def markdown(
    document: ReportJSON,
    html: Path | str | None = None,
    *,
    baseline: Sequence[RecordJSON] | None = None,
) -> str:
    """The run's Markdown, fewer than ``MAX_LINES`` lines for any run. ``html``: where
    the run's page is (linked for what the lists leave out); ``baseline``: the records
    of the run it was compared with, for the examples that changed since."""
    records = [Record.from_json(r) for r in document.get("records", [])]
    names = labels(records)
    more = f", see [the HTML report]({_link(html)})" if html is not None else ""
    sections = [
        _header(document, records, html),
        _verdicts(document, records, more),
        _partitions(document),
        _regression(document, more),
        _bar(document, more),
        _changes(baseline, records, names, more) if baseline is not None else [],
        _failures(records, names, more),
    ]
    lines: list[str] = []
    for section in sections:
        if section:
            lines += [*section, ""]
    while lines and not lines[-1]:
        lines.pop()
    if len(lines) >= MAX_LINES:  # the caps above keep clear of this; a guarantee all the same
        lines = [*lines[: MAX_LINES - 2], f"... cut to fit a pull-request comment{more}"]
    return "\n".join(lines) + "\n"


def _header(document: ReportJSON, records: Sequence[Record], html: Path | str | None) -> list[str]:
    run = document.get("run", {})
    passed = document.get("passed", False)
    lines = [f"## llmeval: {'PASS' if passed else 'FAIL'}"]
    failures = document.get("failures", [])
    if failures:
        lines.append(f"**Fails the run:** {_text('; '.join(failures))}")
    facts: list[str] = []
    if run.get("prompt_versions"):
        facts.append(f"prompt {', '.join(run['prompt_versions'])}")
    if run.get("models"):
        facts.append(", ".join(run["models"]))
    facts.append(f"{len(records)} eval test{'s' * (len(records) != 1)}")
    if run.get("git_commit"):
        facts.append(f"commit {str(run['git_commit'])[:10]}")
    if run.get("duration_s") is not None:
        facts.append(f"{run['duration_s']:.1f}s")
    line = _text(" · ".join(facts))
    if html is not None:
        line += f" · [the run's page]({_link(html)})"
    return [*lines, line]


def _verdicts(document: ReportJSON, records: Sequence[Record], more: str) -> list[str]:
    gates = document.get("gates", [])
    # The failing rules first: a run of many partitions still shows what failed it.
    ordered = [g for g in gates if not g["passed"]] + [g for g in gates if g["passed"]]
    lines = _capped(
        [f"- {_mark(g['passed'])} {_text(g['message'])}" for g in ordered],
        GATE_LINES,
        "partition rules",
        more,
    )
    budgets = [
        BudgetVerdict(b["partition"], b["wall_s"], b["budget_s"], b["strict"])
        for b in document.get("time_budgets", [])
    ]
    over = [
        f"- {_mark(not v.fails, warn=v.over)} {_text(text)}" for text, v in _budget_lines(budgets)
    ]
    lines += _capped(over, BUDGET_LINES, "time budgets overrun", more)
    flaky = [
        Flaky(f["case"], f["example_id"], f["partition"], f["passed"], f["draws"], f["mode"])
        for f in document.get("flaky", [])
    ]
    if flaky:
        head, *rest = flaky_lines(flaky, limit=FLAKY_LINES)
        fails = any(f.mode == "fail" for f in flaky)
        lines.append(f"- {_mark(not fails, warn=True)} {_text(head[0])}")
        lines += [f"  - {_text(text.strip())}" for text, _ in rest]
    incomplete = incomplete_line(records)
    if incomplete:
        lines.append(f"- {_mark(False)} {_text(incomplete)}")
    return ["### Verdicts", *lines] if lines else []


def _budget_lines(budgets: Sequence[BudgetVerdict]) -> list[tuple[str, BudgetVerdict]]:
    """Each line of render.budget_lines with the verdict it is about (the first for the
    one line saying every budget was met, which fails nothing)."""
    over = [v for v in budgets if v.over] or list(budgets[:1])
    return [
        (text, verdict) for (text, _), verdict in zip(budget_lines(budgets), over, strict=False)
    ]


def _partitions(document: ReportJSON) -> list[str]:
    partitions = document.get("partitions", {})
    if not partitions:
        return []
    drawn = any(p.get("draws", 1) > 1 for p in partitions.values())
    header = ["partition", "cases", "passed", "failed", "errors", "skipped", "pass rate"]
    if drawn:
        header += ["draws", "pass^k", "pass@k"]
    rows = [_row(header), _row(["---"] + ["--:"] * (len(header) - 1))]
    for name, p in list(partitions.items())[:PARTITION_ROWS]:
        cells = [
            _text(name),
            *(str(p[k]) for k in ("cases", "passed", "failed", "errors", "skipped")),
            f"{p['pass_rate']:.1%}",
        ]
        if drawn:
            cells += [str(p.get("draws", 1)), _rate(p.get("pass_hat_k")), _rate(p.get("pass_at_k"))]
        rows.append(_row(cells))
    heading = "### Partitions"
    if len(partitions) > PARTITION_ROWS:
        heading += f" (the first {PARTITION_ROWS} of {len(partitions)})"
    return [heading, *rows]


def _regression(document: ReportJSON, more: str) -> list[str]:
    regression = document.get("regression")
    if not regression:
        return []
    name = Path(str(regression.get("baseline", "the baseline"))).name
    lines = [f"### Regression against the baseline {_text(name)}"]
    if regression.get("error"):
        return [*lines, f"{_mark(False)} **{_text(regression['error'])}**"]
    found = regression.get("comparisons", [])
    comparisons = _comparisons(found)
    if comparisons is None:  # a report this version cannot read back: its verdict lines
        shown = [f"- {_text(c.get('line') or c.get('verdict', ''))}" for c in found]
        return [*lines, *_capped(shown, COMPARISON_ROWS, "comparisons", more)]
    from .compare import decision

    blocks, line = decision(comparisons, fails=bool(regression.get("fails_session", True)))
    lines.append(f"{_mark(not blocks, warn='would BLOCK' in line)} **{_text(line)}**")
    # The terminal's table as it is, in a code block: its columns stay aligned.
    table = table_lines(comparisons[:COMPARISON_ROWS])
    lines += ["```text", *(t[:LINE_CHARS] for t in table), "```"]
    left = len(comparisons) - COMPARISON_ROWS
    if left > 0:
        lines.append(f"and {left} more comparison{'s' * (left != 1)}{more}")
    return lines


def _comparisons(found: Sequence[Mapping[str, Any]]) -> list[Comparison] | None:
    """The report's comparisons as the statistics made them, to render them with the
    same code as the terminal; None when one is not what this version writes."""
    from ..stats import Comparison

    known = {f.name for f in fields(Comparison)} - {"variance_split"}
    tuples = {"dropped_baseline", "dropped_candidate", "mismatches", "warnings"}
    comparisons = []
    try:
        for c in found:
            values: dict[str, Any] = {
                k: tuple(v) if k in tuples else v for k, v in c.items() if k in known
            }
            comparisons.append(Comparison(**values))
    except (TypeError, ValueError):
        return None
    return comparisons


@dataclass
class Changes:
    """What changed per case (a test and example, its draws together) between two runs:
    cases that passed and now fail, that failed and now pass, and the largest drops of a
    metric's mean score."""

    to_failed: list[str] = field(default_factory=list)  # case node ids
    to_passed: list[str] = field(default_factory=list)
    drops: list[tuple[float, str, str, float, float]] = field(default_factory=list)


def changes(
    baseline: Sequence[Mapping[str, Any]], candidate: Sequence[Mapping[str, Any]]
) -> Changes:
    """The cases of both runs compared: a case passed if every draw with a verdict
    passed, failed if one failed (errors and skips give none); ``drops`` are (drop, case,
    metric, baseline mean, candidate mean), largest first."""
    before, after = _cases(baseline), _cases(candidate)
    found = Changes()
    for case, (status, scores) in after.items():
        if case not in before:
            continue
        was, old = before[case]
        if was == "passed" and status == "failed":
            found.to_failed.append(case)
        elif was == "failed" and status == "passed":
            found.to_passed.append(case)
        for metric, score in scores.items():
            if metric in old and old[metric] - score > 1e-9:
                found.drops.append((old[metric] - score, case, metric, old[metric], score))
    found.drops.sort(key=lambda d: -d[0])
    return found


def _cases(
    records: Sequence[Mapping[str, Any]],
) -> dict[str, tuple[str | None, dict[str, float]]]:
    statuses: dict[str, list[str]] = {}
    scores: dict[str, dict[str, list[float]]] = {}
    for r in records:
        case = case_of(str(r.get("nodeid") or r["example_id"]), r["example_id"], r.get("draw"))
        statuses.setdefault(case, []).append(r["status"])
        for m in r.get("metrics") or []:
            if isinstance(m.get("score"), int | float):
                scores.setdefault(case, {}).setdefault(m["name"], []).append(float(m["score"]))
    out: dict[str, tuple[str | None, dict[str, float]]] = {}
    for case, seen in statuses.items():
        status = "failed" if "failed" in seen else "passed" if "passed" in seen else None
        means = {k: sum(v) / len(v) for k, v in scores.get(case, {}).items()}
        out[case] = (status, means)
    return out


def _changes(
    baseline: Sequence[RecordJSON], records: Sequence[Record], names: dict[str, str], more: str
) -> list[str]:
    found = changes(baseline, [r.to_json() for r in records])
    example = {r.case: r.example_id for r in records}
    name = {r.case: names[r.nodeid] for r in records}
    lines = []
    for arrow, cases in (("pass → fail", found.to_failed), ("fail → pass", found.to_passed)):
        if not cases:
            continue
        # By example: an example's several tests flip together.
        tests: dict[str, int] = {}
        for case in cases:
            tests[example[case]] = tests.get(example[case], 0) + 1
        ids = [f"{_code(i)}{f' ({n} tests)' if n > 1 else ''}" for i, n in tests.items()]
        lines.append(
            f"- {arrow}: {len(tests)} example{'s' * (len(tests) != 1)} "
            f"({len(cases)} test{'s' * (len(cases) != 1)}): {_listed(ids, more)}"
        )
    if found.drops:
        worst = "; ".join(
            f"{_code(name[case])} {_text(metric)} {old:.2f} → {new:.2f}"
            for _, case, metric, old, new in found.drops[:3]
        )
        lines.append(f"- largest score drops: {worst}")
    if not lines:
        return []
    return ["### Changed since the baseline", *lines]


def _listed(items: Sequence[str], more: str, limit: int = 6) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f" and {len(items) - limit} more{more}" if len(items) > limit else "")


def _failures(records: Sequence[Record], names: dict[str, str], more: str) -> list[str]:
    failed = [r for r in records if r.status in ("failed", "error")]
    if not failed:
        return []
    lines = [f"### Failures ({len(failed)})"]
    shown = _top(failed)
    for r in shown[:FAILURES]:
        soft = ", soft" if r.soft else ""
        lines.append(
            f"- {_code(names[r.nodeid])} ({_text(r.partition)}{soft}): {_text(_reason(r))}"
        )
    left = len(failed) - FAILURES
    if left > 0:
        lines.append(f"- and {left} more{more}")
    return lines


def _top(failed: list[Record]) -> list[Record]:
    """The failures in the order to list them: first one test of each way of failing
    (partition and failure kind), errors first, then the failures that fail the run by
    themselves, then soft ones, and within each the commonest first, taking the
    partitions in turn; then each example's first failure; then the rest. So the first
    lines show as many different failures as they can."""
    tiers: dict[tuple[bool, bool], list[Record]] = {}
    for r in sorted(failed, key=lambda r: (r.status != "error", r.soft)):
        tiers.setdefault((r.status != "error", r.soft), []).append(r)
    out: list[Record] = []
    for tier in tiers.values():
        kinds: dict[tuple[str, str | None], list[Record]] = {}
        for r in tier:
            kinds.setdefault((r.partition, r.failure_kind), []).append(r)
        by_partition: dict[str, list[Record]] = {r.partition: [] for r in tier}  # in order
        for (partition, _), members in sorted(kinds.items(), key=lambda kv: -len(kv[1])):
            by_partition[partition].append(members[0])
        turns = list(by_partition.values())
        out += [t[i] for i in range(max(map(len, turns))) for t in turns if i < len(t)]
    chosen = {id(r) for r in out}
    ordered = [r for tier in tiers.values() for r in tier]
    firsts: dict[str, Record] = {}
    for r in ordered:
        if id(r) not in chosen:
            firsts.setdefault(r.example_id, r)
    out += firsts.values()
    chosen |= {id(r) for r in firsts.values()}
    return out + [r for r in ordered if id(r) not in chosen]


def _reason(record: Record) -> str:
    """The failure's first line, after the scores of any failed metric it does not name."""
    why = (record.failure_reason or "").strip().split("\n", 1)[0]
    unnamed = [m for m in record.metrics if not m.get("passed", True) and m["name"] not in why]
    return " - ".join(s for s in (scores_line(unnamed), why) if s) or (
        record.failure_kind or record.status
    )


def scores_line(metrics: Sequence[MetricEntry]) -> str:
    """Each failed metric's score against its threshold: ``token_f1 0.42 < 0.70; judge
    2.00 < 4.00`` (the JUnit failure message says the same)."""
    parts = []
    for m in metrics:
        if m.get("passed", True):
            continue
        score, threshold = m.get("score"), m.get("threshold")
        if score is None:
            parts.append(f"{m['name']} undefined")
        elif threshold is None:
            parts.append(f"{m['name']} {score:.2f}")
        else:
            sign = "<" if score < threshold else ">" if score > threshold else "="
            parts.append(f"{m['name']} {score:.2f} {sign} {threshold:.2f}")
    return "; ".join(parts)


def _capped(lines: list[str], limit: int, what: str, more: str) -> list[str]:
    if len(lines) <= limit:
        return lines
    return [*lines[: limit - 1], f"- and {len(lines) - limit + 1} more {what}{more}"]


def _bar(document: ReportJSON, more: str) -> list[str]:
    """Each way the bar is lower than the baseline's (the report's ``bar``)."""
    bar = document.get("bar")
    found = bar["lowered"] if bar else []
    if not bar or not found:
        return []
    blocking = bool(bar["blocks"])
    said = "BLOCK (llmeval_bar_locked)" if blocking else "said, not locked"
    lines = [f"{_mark(not blocking, warn=True)} **bar lowered against the baseline: {said}**"]
    shown = [
        f"- `{_text(low['key'], 80)}`: {_text(low['message'])}"
        + (" (accepted)" if low.get("accepted") else "")
        for low in found
    ]
    return [*lines, *_capped(shown, COMPARISON_ROWS, "lowerings", more)]


def _mark(ok: bool, *, warn: bool = False) -> str:
    """❌ fails the run, ⚠️ is said but fails nothing, ✅ passed."""
    return "❌" if not ok else "⚠️" if warn else "✅"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(cells) + " |"


# Whatever is markup in GitHub's Markdown inside a line: emphasis, code, links, tables,
# strikethrough, math ($), mentions (@), entities (&) and HTML (a "<" that opens a tag).
# An underscore inside a word emphasizes nothing (token_f1 stays as it is).
_MARKUP = re.compile(r"[\\`*\[\]|~$@&]|<(?=[A-Za-z/!?])|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])")


def _text(text: str, limit: int = LINE_CHARS) -> str:
    """Plain text as Markdown: on one line, cut at ``limit`` characters, every character
    that could be markup escaped."""
    flat = " ".join(str(text).split())
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    return _MARKUP.sub(lambda m: "\\" + m.group(), flat)


def _code(text: str, limit: int = 120) -> str:
    """A name as inline code (rendered as it is, markup and all), on one line."""
    flat = " ".join(str(text).split())
    if len(flat) > limit:
        flat = flat[: limit - 1] + "…"
    fence = "`" * (max((len(m) for m in re.findall(r"`+", flat)), default=0) + 1)
    pad = " " if flat.startswith("`") or flat.endswith("`") else ""
    return f"{fence}{pad}{flat}{pad}{fence}"


def _link(target: Path | str) -> str:
    """A link target: spaces and parentheses would end it."""
    return str(target).replace(" ", "%20").replace("(", "%28").replace(")", "%29")
