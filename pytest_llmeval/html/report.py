"""The run's page (``--llmeval-html``): one self-contained HTML file of a run's JSON
report that opens from ``file://`` with no network.

What decides the run comes first and is rendered here, escaped: the verdicts, the
regression table, the examples that changed since the baseline, the partition table.
The records follow as data (JSON inside ``<script type="application/json">``, which no
text can close) that the page's script turns into a table and drill-downs with DOM text
nodes only, never markup: a model's ``<script>`` is shown, not run. Long strings that
recur (the same output checked by several tests, the same retrieved passage) are stored
once, so that 1,000 records stay a few megabytes.

It reads the report's keys with ``.get``: a report written by an older version, or by a
run that was interrupted, may lack some.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..files import write_text_atomic
from ..records import case_of
from .kit import Raw, esc, json_data, page, table

MINUS = "\N{MINUS SIGN}"
NONE = "\N{EM DASH}"
CHANGED_SHOWN = 25  # examples listed per kind of change; the table filters the rest
_INTERN_MIN = 40  # strings at least this long are stored once when they recur
_MARK = "\x01"  # a string starting with it is a reference into the string table


def write_html(
    document: Mapping[str, Any],
    path: Path,
    *,
    baseline: Sequence[Mapping[str, Any]] | None = None,
) -> None:
    """Write the run's page to ``path`` atomically. With the baseline's records (given:
    the plugin read them at start-up, before this run may have saved over them; else
    read from ``regression.baseline``), the page also shows the examples that changed."""
    note = ""
    if baseline is None:
        baseline, note = baseline_records(document)
    write_text_atomic(path, render(document, baseline=baseline, baseline_note=note))


def baseline_records(document: Mapping[str, Any]) -> tuple[list[Mapping[str, Any]] | None, str]:
    """The baseline's records (None without a baseline, or when its report cannot be
    read), and a note saying why they are missing."""
    regression = document.get("regression") or {}
    where = regression.get("baseline")
    if not where:
        return None, ""
    try:
        data = json.loads(Path(where).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        return None, f"the baseline's examples are not shown: cannot read {where}: {exc}"
    records = data.get("records") if isinstance(data, dict) else None
    if not isinstance(records, list):
        return None, f"the baseline's examples are not shown: {where} has no records"
    return [r for r in records if isinstance(r, dict) and "example_id" in r], ""


def render(
    document: Mapping[str, Any],
    *,
    baseline: Sequence[Mapping[str, Any]] | None = None,
    baseline_note: str = "",
) -> str:
    """The page of a run's report, as text."""
    records: list[Mapping[str, Any]] = list(document.get("records") or [])
    run = document.get("run") or {}
    passed = bool(document.get("passed"))
    title = f"llmeval run: {'PASS' if passed else 'FAIL'}"
    if run.get("started_at"):
        title += f" ({run['started_at'][:19].replace('T', ' ')})"
    parts = [
        f'<h1><span class="{"ok" if passed else "bad"}">llmeval: '
        f"{'PASS' if passed else 'FAIL'}</span></h1>",
        _run_line(run, len(records)),
        '<section id="verdicts"><h2>Verdicts</h2>',
        _verdicts(document, records),
        "</section>",
    ]
    regression = document.get("regression")
    if regression:
        parts.append(_regression(regression))
        if baseline is not None:
            parts.append(_changes(records, baseline))
        elif baseline_note:
            parts.append(f'<p class="muted">{esc(baseline_note)}</p>')
    parts.append(_partitions(document.get("partitions") or {}))
    parts.append(_records_section(records))
    strings, encoded = intern_strings(records)
    parts.append(json_data("llmeval-strings", strings))
    parts.append(json_data("llmeval-records", encoded))
    return page(title, "".join(parts), css=CSS, script=SCRIPT)


# --- the verdicts ----------------------------------------------------------------------


def _run_line(run: Mapping[str, Any], count: int) -> str:
    bits = []
    if run.get("started_at"):
        bits.append(f"started {str(run['started_at'])[:19].replace('T', ' ')} UTC")
    if isinstance(run.get("duration_s"), int | float):
        bits.append(f"took {_seconds(run['duration_s'])}")
    bits.append(f"{count} record{'s' * (count != 1)}")
    if run.get("models"):
        bits.append("model " + ", ".join(map(str, run["models"])))
    if run.get("prompt_versions"):
        bits.append("prompt " + ", ".join(map(str, run["prompt_versions"])))
    if run.get("git_commit"):
        bits.append(f"commit {str(run['git_commit'])[:10]}")
    rows = [
        (key, value if isinstance(value, str) else json.dumps(value, ensure_ascii=False))
        for key, value in run.items()
        if value not in (None, "", [], {})
    ]
    meta = table(["run", ""], rows, cls="meta")
    return (
        f'<p class="runline">{esc(" · ".join(bits))}</p>'
        f"<details><summary>run metadata</summary>{meta}</details>"
    )


def _line(ok: bool | None, text: str) -> str:
    klass = "ok" if ok else ("warn" if ok is None else "bad")
    mark = "\u2714" if ok else ("!" if ok is None else "\u2718")
    return f'<li class="{klass}"><span class="mark">{mark}</span> {esc(text)}</li>'


def _verdicts(document: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> str:
    lines = []
    failures = document.get("failures") or []
    if document.get("passed"):
        lines.append(_line(True, "llmeval: PASS"))
    else:
        lines.append(_line(False, f"llmeval: FAIL ({'; '.join(map(str, failures))})"))
    for gate in document.get("gates") or []:
        lines.append(_line(bool(gate.get("passed")), str(gate.get("message", ""))))
    regression = document.get("regression")
    if regression:
        ok = not regression.get("blocks")
        lines.append(_line(ok, regression_line(regression)))
    lines += _budget_lines(document.get("time_budgets") or [])
    lines += _flaky_lines(document.get("flaky") or [])
    not_run = document.get("not_run") or []
    if not_run or document.get("complete") is False:
        lines.append(_line(False, incomplete_text(records, not_run)))
    errors = Counter(
        str(r.get("failure_kind") or "error") for r in records if r.get("status") == "error"
    )
    errors.pop("not run", None)
    if errors:
        listed = ", ".join(f"{kind} {n}" for kind, n in errors.most_common())
        lines.append(_line(False, f"errors (not quality failures): {listed}"))
    soft = sum(1 for r in records if r.get("soft"))
    if soft:
        lines.append(_line(None, f"soft failures: {soft} (shown in the table, status soft failed)"))
    return f'<ul class="verdicts">{"".join(lines)}</ul>'


def regression_line(regression: Mapping[str, Any]) -> str:
    """The regression decision as the terminal says it (runs.compare.decision), from the
    report's comparisons."""
    if regression.get("error"):
        return str(regression["error"])
    comparisons = regression.get("comparisons") or []
    blocking = [
        f"{c.get('metric')}[{c.get('partition')}] {c.get('verdict')}"
        for c in comparisons
        if c.get("blocks")
    ]
    if not blocking:
        n = len(comparisons)
        return f"regression: PROCEED, no blocking verdict ({n} comparison{'s' * (n != 1)})"
    listed = ", ".join(blocking)
    if not regression.get("fails_session", True):
        return f"regression: would BLOCK ({listed}); llmeval_regression_fails = no"
    return f"regression: BLOCK, {listed}"


def incomplete_text(records: Sequence[Mapping[str, Any]], not_run: Sequence[Any]) -> str:
    reasons = [r.get("failure_reason") for r in records if r.get("failure_kind") == "not run"]
    reason = str(reasons[0] or "").removeprefix("not run: ") if reasons else ""
    ids = [str(n.get("example_id")) for n in not_run if isinstance(n, Mapping)]
    shown = ", ".join(ids[:10]) + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
    head = f"run incomplete: {reason}; " if reason else "run incomplete: "
    return f"{head}{len(ids)} of {len(records)} selected eval tests never ran: {shown}"


def _budget_lines(budgets: Sequence[Mapping[str, Any]]) -> list[str]:
    lines = []
    for b in budgets:
        wall, budget = _seconds(b.get("wall_s")), b.get("budget_s")
        if b.get("over"):
            strict = " (strict: the session fails)" if b.get("strict") else ""
            text = f"time budget: {b.get('partition')} took {wall}, over its budget of {budget}s"
            lines.append(_line(False if b.get("strict") else None, text + strict))
        else:
            text = f"time budget: {b.get('partition')} {wall} of {budget}s"
            lines.append(_line(True, text))
    return lines


def _flaky_lines(flaky: Sequence[Mapping[str, Any]]) -> list[str]:
    if not flaky:
        return []
    effect = {"fail": "fails the gate", "warn": "a warning", "ignore": "ignored"}
    worst = any(f.get("mode") == "fail" for f in flaky)
    items = "".join(
        f"<li>{esc(f.get('example_id'))}: {esc(f.get('passed'))} of {esc(f.get('draws'))} "
        f"draws passed ({esc(f.get('partition'))}, {esc(effect.get(str(f.get('mode')), ''))})"
        "</li>"
        for f in flaky
    )
    head = _line(False if worst else None, f"flaky examples (their draws disagree): {len(flaky)}")
    return [head.replace("</li>", f"<ul>{items}</ul></li>")]


# --- the regression ----------------------------------------------------------------------

_COLUMNS = ("metric", "partition", "baseline", "candidate", "Δ", "CI", "p adj", "n", "MDE80")


def _regression(regression: Mapping[str, Any]) -> str:
    where = regression.get("baseline") or ""
    parts = [f'<section id="regression"><h2>Regression against {esc(where)}</h2>']
    comparisons = regression.get("comparisons") or []
    if regression.get("error"):
        parts.append(f'<p class="bad">{esc(regression["error"])}</p>')
    elif not comparisons:
        parts.append("<p>No gated metric to compare.</p>")
    else:
        first = comparisons[0]
        deltas = {c.get("metric"): c.get("delta") for c in comparisons}
        level = first.get("ci_level")
        parts.append(
            f"<p>alpha {esc(first.get('alpha'))} over {esc(first.get('m'))} gated comparisons "
            f"(Holm); CIs at {esc(_percent(level))}; δ "
            + esc(", ".join(f"{m} {d}" for m, d in deltas.items()))
            + "</p>"
        )
        rows = []
        for c in comparisons:
            low, high = c.get("ci_low"), c.get("ci_high")
            ci = NONE if low is None and high is None else f"[{_fixed(low)}, {_fixed(high)}]"
            verdict = str(c.get("verdict", ""))
            klass = "bad" if c.get("blocks") else ("ok" if verdict == "NO_CHANGE" else "")
            rows.append(
                [
                    c.get("metric"),
                    c.get("partition"),
                    _fixed(c.get("mean_baseline")),
                    _fixed(c.get("mean_candidate")),
                    _fixed(c.get("effect"), signed=True),
                    ci,
                    _p(c.get("p_adj")),
                    c.get("n"),
                    _fixed(c.get("mde80")),
                    Raw(f'<b class="{klass}">{esc(verdict)}</b>'),
                ]
            )
        parts.append(table([*_COLUMNS, "verdict"], rows, numeric=(2, 3, 4, 6, 7, 8)))
        said = [
            f"<li>{esc(c.get('metric'))}[{esc(c.get('partition'))}]: {esc(c.get('line', ''))}</li>"
            for c in comparisons
            if c.get("verdict") != "NO_CHANGE" and c.get("line")
        ]
        if said:
            parts.append(f"<ul>{''.join(said)}</ul>")
        warned = [
            f"<li>{esc(c.get('metric'))}[{esc(c.get('partition'))}]: {esc(w)}</li>"
            for c in comparisons
            for w in c.get("warnings") or []
        ]
        if warned:
            parts.append(
                f"<details><summary>warnings</summary><ul>{''.join(warned)}</ul></details>"
            )
    parts.append(f'<p class="decision">{esc(regression_line(regression))}</p></section>')
    return "".join(parts)


def _case(record: Mapping[str, Any]) -> tuple[str, str]:
    """The test and example a record is a draw of (its draws share it)."""
    example, draw = str(record.get("example_id")), record.get("draw")
    nodeid = str(record.get("nodeid") or "")
    return (case_of(nodeid, example, draw if isinstance(draw, int) else None), example)


def judge_score(record: Mapping[str, Any]) -> float | None:
    """The mean of a record's rubric verdicts' means (None without one)."""
    means = [
        v["mean"]
        for v in record.get("judge") or []
        if isinstance(v, Mapping) and v.get("kind") == "rubric" and _finite(v.get("mean"))
    ]
    return sum(means) / len(means) if means else None


def changes(
    records: Sequence[Mapping[str, Any]], baseline: Sequence[Mapping[str, Any]]
) -> dict[str, list[tuple[Mapping[str, Any], Mapping[str, Any]]]]:
    """The (baseline, run) record pairs of one test and example that changed: passed to
    failed (or error), failed to passed, and the judge scores that dropped, largest
    first."""
    before: dict[tuple[str, str], list[Mapping[str, Any]]] = {}
    for r in baseline:
        before.setdefault(_case(r), []).append(r)
    found: dict[str, list[tuple[Mapping[str, Any], Mapping[str, Any]]]] = {
        "pass_to_fail": [],
        "fail_to_pass": [],
        "judge_drops": [],
    }
    drops: list[tuple[float, Mapping[str, Any], Mapping[str, Any]]] = []
    for record in records:
        draws = before.get(_case(record))
        if not draws:
            continue
        # The same draw when the baseline has it; else its first (a run drawn once
        # against a baseline drawn twice), and for the judge the mean over its draws.
        old = next((r for r in draws if r.get("draw") == record.get("draw")), draws[0])
        was, now = old.get("status"), record.get("status")
        if was == "passed" and now in ("failed", "error"):
            found["pass_to_fail"].append((old, record))
        elif was in ("failed", "error") and now == "passed":
            found["fail_to_pass"].append((old, record))
        if old.get("draw") == record.get("draw"):
            a = judge_score(old)
        else:
            scores = [x for x in map(judge_score, draws) if x is not None]
            a = sum(scores) / len(scores) if scores else None
        b = judge_score(record)
        if a is not None and b is not None and b < a:
            drops.append((a - b, old, record))
    drops.sort(key=lambda d: -d[0])
    found["judge_drops"] = [(old, new) for _, old, new in drops]
    return found


_CHANGE_TITLES = {
    "pass_to_fail": "passed in the baseline, fail now",
    "fail_to_pass": "failed in the baseline, pass now",
    "judge_drops": "largest judge score drops",
}


def _changes(records: Sequence[Mapping[str, Any]], baseline: Sequence[Mapping[str, Any]]) -> str:
    found = changes(records, baseline)
    parts = ['<section id="changed"><h2>Changed since the baseline</h2>']
    counts = ", ".join(f"{_CHANGE_TITLES[k]}: {len(v)}" for k, v in found.items())
    parts.append(f"<p>{esc(counts)}</p>")
    for kind, pairs in found.items():
        if not pairs:
            continue
        parts.append(f"<h3>{esc(_CHANGE_TITLES[kind])} ({len(pairs)})</h3>")
        for old, new in pairs[:CHANGED_SHOWN]:
            parts.append(_change(old, new))
        if len(pairs) > CHANGED_SHOWN:
            parts.append(f'<p class="muted">and {len(pairs) - CHANGED_SHOWN} more</p>')
    parts.append("</section>")
    return "".join(parts)


def _change(old: Mapping[str, Any], new: Mapping[str, Any]) -> str:
    a, b = judge_score(old), judge_score(new)
    judged = f", judge {_fixed(a)} → {_fixed(b)}" if a is not None and b is not None else ""
    summary = (
        f"{new.get('example_id')} · {_test_name(new)} · {old.get('status')} → "
        f"{new.get('status')}{judged}"
    )
    sides = []
    for label, record in (("baseline", old), ("this run", new)):
        reason = record.get("failure_reason")
        sides.append(
            f"<div><h4>{esc(label)}: {esc(record.get('status'))}</h4>"
            f"<pre>{esc(output_text(record.get('output')))}</pre>"
            + (f'<pre class="bad">{esc(reason)}</pre>' if reason else "")
            + "</div>"
        )
    return (
        f'<details class="change"><summary>{esc(summary)}</summary>'
        f'<div class="sides">{"".join(sides)}</div></details>'
    )


# --- the partitions ----------------------------------------------------------------------


def _partitions(partitions: Mapping[str, Mapping[str, Any]]) -> str:
    if not partitions:
        return ""
    metrics: list[str] = []
    for part in partitions.values():
        metrics += [m for m in part.get("metric_means") or {} if m not in metrics]
    drawn = any((p.get("draws") or 1) > 1 for p in partitions.values())
    header = ["partition", "examples", "cases", "passed", "failed", "errors", "skipped"]
    header += ["pass rate", *(["draws", "pass^k", "pass@k"] if drawn else []), *metrics]
    header += ["p50 latency", "p95 latency", "wall"]
    rows = []
    for name, p in partitions.items():
        means = p.get("metric_means") or {}
        rows.append(
            [
                name,
                p.get("examples", ""),
                p.get("cases", ""),
                p.get("passed", ""),
                p.get("failed", ""),
                p.get("errors", ""),
                p.get("skipped", ""),
                _rate(p.get("pass_rate")),
                *(
                    [p.get("draws"), _rate(p.get("pass_hat_k")), _rate(p.get("pass_at_k"))]
                    if drawn
                    else []
                ),
                *(_fixed(means.get(m)) for m in metrics),
                _seconds(p.get("latency_p50_s")),
                _seconds(p.get("latency_p95_s")),
                _seconds(p.get("wall_s")),
            ]
        )
    numeric = range(1, len(header))
    return (
        '<section id="partitions"><h2>Partitions</h2>'
        + table(header, rows, numeric=numeric)
        + "</section>"
    )


def _records_section(records: Sequence[Mapping[str, Any]]) -> str:
    return (
        '<section id="records"><h2>Records</h2>'
        '<div class="controls">'
        '<input id="q" type="search" placeholder="search id, test, output, reason" size="34">'
        '<label>partition <select id="partition"><option value="">all</option></select></label>'
        '<label>status <select id="status"><option value="">all</option></select></label>'
        '<label>tag <select id="tag"><option value="">all</option></select></label>'
        '<label>metric <select id="metric"><option value="">all</option></select></label>'
        '<label>sort <select id="sort"><option value="">run order</option>'
        '<option value="asc">score, lowest first</option>'
        '<option value="desc">score, highest first</option></select></label>'
        '<span id="count" class="muted"></span></div>'
        '<table id="rows"><thead><tr><th class="num">#</th><th>partition</th><th>status</th>'
        "<th>example</th><th>test</th><th>scores (score / threshold)</th><th>output</th>"
        "</tr></thead><tbody></tbody></table>"
        '<p><button id="more" hidden>show more</button></p>'
        f"<noscript><p>{len(records)} records: the table needs JavaScript; the data is in "
        "this file as JSON (element llmeval-records).</p></noscript>"
        "</section>"
    )


# --- the records' data -----------------------------------------------------------------


def intern_strings(records: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[Any]]:
    """The records with each long string that occurs more than once replaced by a
    reference (``"\\x01" + index``) into the returned table; a string that starts with
    ``"\\x01"`` itself gets one more in front. The page's script undoes both."""
    counts: Counter[str] = Counter()

    def count(value: Any) -> None:
        if isinstance(value, str):
            if len(value) >= _INTERN_MIN:
                counts[value] += 1
        elif isinstance(value, Mapping):
            for item in value.values():
                count(item)
        elif isinstance(value, list | tuple):
            for item in value:
                count(item)

    for record in records:
        count(record)
    strings = [text for text, n in counts.items() if n > 1]
    index = {text: i for i, text in enumerate(strings)}

    def encode(value: Any) -> Any:
        if isinstance(value, str):
            found = index.get(value)
            if found is not None:
                return f"{_MARK}{found}"
            return _MARK + value if value.startswith(_MARK) else value
        if isinstance(value, Mapping):
            return {key: encode(item) for key, item in value.items()}
        if isinstance(value, list | tuple):
            return [encode(item) for item in value]
        if isinstance(value, float) and not math.isfinite(value):
            return None  # standard JSON (the controller's document has none already)
        return value

    return strings, [encode(r) for r in records]


# --- formatting ----------------------------------------------------------------------------


def output_text(output: Any) -> str:
    """An output as text: a string as it is, anything else as indented JSON."""
    if output is None:
        return ""
    if isinstance(output, str):
        return output
    return json.dumps(output, ensure_ascii=False, indent=2)


def _test_name(record: Mapping[str, Any]) -> str:
    return str(record.get("nodeid") or "").rpartition("::")[2].partition("[")[0]


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _fixed(value: Any, *, signed: bool = False) -> str:
    if not _finite(value):
        return NONE
    text = f"{value:.3f}"
    if float(text) == 0:
        return "0.000"
    if signed and value > 0:
        text = "+" + text
    return text.replace("-", MINUS)


def _p(value: Any) -> str:
    if not _finite(value):
        return NONE
    return "<0.001" if value < 0.001 else f"{value:.3f}"


def _rate(value: Any) -> str:
    return f"{value:.1%}" if _finite(value) else NONE


def _percent(level: Any) -> str:
    return f"{100 * level:.4g}%" if _finite(level) else NONE


def _seconds(value: Any) -> str:
    if not _finite(value):
        return NONE
    return f"{value * 1000:.0f}ms" if value < 1 else f"{value:.2f}s"


CSS = """
.runline{color:var(--muted);margin:.2em 0}
ul.verdicts{list-style:none;padding:0;margin:.4em 0;font-size:1.02em}
ul.verdicts>li{margin:.2em 0}ul.verdicts ul{font-size:.95em;color:#333}
.mark{display:inline-block;width:1.2em;font-weight:bold}
.decision{font-weight:600}
table.meta td:first-child{font-weight:600;white-space:nowrap}
.controls{display:flex;flex-wrap:wrap;gap:8px 14px;align-items:center;margin:.4em 0;
  position:sticky;top:0;background:#fff;padding:6px 0;z-index:1}
#rows{width:100%}
#rows tbody tr.rec{cursor:pointer}#rows tbody tr.rec:hover{background:#f3f7fc}
#rows tr.open{background:#eef4fb}
#rows td.out{max-width:300px;overflow:hidden;text-overflow:ellipsis;white-space:nowrap;color:#444}
.st-passed{color:var(--ok)}.st-failed,.st-error,.st-notrun{color:var(--bad);font-weight:600}
.st-soft{color:var(--warn);font-weight:600}.st-skipped{color:var(--muted)}
.chip{display:inline-block;border-radius:3px;padding:0 5px;margin:1px 3px 1px 0;font-size:.9em;
  background:#e8f4ec;color:#145c2b;white-space:nowrap}
.chip.fail{background:#fbe9e9;color:#8e1c1c}.chip.none{background:#eee;color:#555}
td.detail{background:#fcfcfc;padding:8px 12px}
.detail h4{margin:.8em 0 .2em;font-size:.95em}
.detail table{font-size:.9em}
.detail ol{padding-left:1.4em}.detail li{margin:.3em 0}
.kv{color:var(--muted)}
.sides{display:grid;grid-template-columns:1fr 1fr;gap:12px}
.sides h4{margin:.3em 0}
details.change{margin:.25em 0}details.change>summary{cursor:pointer}
.label-SUPPORTED{color:var(--ok)}.label-UNSUPPORTED{color:var(--bad);font-weight:600}
.records-only body>:not(#records){display:none}.records-only h2{margin-top:0}
.label-NOT_CHECKABLE,.label-REASONABLE_INFERENCE{color:var(--warn)}
"""

# The page's script: the records' table, its filters and sort, the drill-downs. Every text
# of a record reaches the page through textContent or a text node, never innerHTML. The
# state (filters, sort, the open record) is kept in the URL's #fragment, so that a view can
# be linked or reopened: #status=failed&partition=golden&open=12.
SCRIPT = r"""
(function () {
"use strict";
var MARK = 1, PAGE = 400, KEPT = ["input", "conversation", "expected_output"];
var strings = JSON.parse(document.getElementById("llmeval-strings").textContent);
var records = JSON.parse(document.getElementById("llmeval-records").textContent,
  function (key, value) {
    if (typeof value === "string" && value.charCodeAt(0) === MARK) {
      return value.charCodeAt(1) === MARK ? value.slice(1) : strings[+value.slice(1)];
    }
    return value;
  });
var $ = function (id) { return document.getElementById(id); };
var controls = ["q", "partition", "status", "tag", "metric", "sort"];
var shown = PAGE, opened = null, view = "";

function el(tag, cls, text) {
  var e = document.createElement(tag);
  if (cls) { e.className = cls; }
  if (text !== undefined && text !== null) { e.textContent = String(text); }
  return e;
}
function add(parent, child) { if (child) { parent.appendChild(child); } return parent; }
function num(x, d) {
  if (typeof x !== "number" || !isFinite(x)) { return "\u2014"; }
  return x.toFixed(d === undefined ? 3 : d).replace("-", "\u2212");
}
function json(x) { return typeof x === "string" ? x : JSON.stringify(x, null, 2); }
function flat(x) { return typeof x === "object" && x !== null ? JSON.stringify(x) : x; }
function pre(text, cls) { return el("pre", cls, text); }
function ms(s) { return typeof s === "number" ? num(s * 1000, 0) + "ms" : null; }
function usd(x) { return typeof x === "number" ? "$" + x.toFixed(6) : "no price"; }
function statusOf(r) {
  if (r.failure_kind === "not run") { return "not run"; }
  if (r.soft && r.status === "failed") { return "soft failed"; }
  return r.status || "";
}
function statusClass(s) {
  return "st-" + (s === "soft failed" ? "soft" : s === "not run" ? "notrun" : s);
}
function testName(r) { return String(r.nodeid || "").split("::").pop().split("[")[0]; }
function hasMetric(r, name) {
  return (r.metrics || []).some(function (m) { return m.name === name; });
}
function metricScore(r, name) {
  var list = r.metrics || [];
  for (var i = 0; i < list.length; i++) {
    if (!name || list[i].name === name) { return list[i].score; }
  }
  return null;
}
var haystacks = [];
function haystack(i) {
  if (haystacks[i] === undefined) {
    var r = records[i];
    haystacks[i] = [r.example_id, r.nodeid, json(r.output), r.failure_reason,
      (r.tags || []).join(" ")].join("\n").toLowerCase();
  }
  return haystacks[i];
}

// The filters' options, from the data.
(function options() {
  var sets = {partition: [], status: [], tag: [], metric: []};
  function put(list, v) {
    if (v !== undefined && v !== null && list.indexOf(v) < 0) { list.push(v); }
  }
  records.forEach(function (r) {
    put(sets.partition, r.partition);
    put(sets.status, statusOf(r));
    (r.tags || []).forEach(function (t) { put(sets.tag, t); });
    (r.metrics || []).forEach(function (m) { put(sets.metric, m.name); });
  });
  sets.tag.sort();
  Object.keys(sets).forEach(function (k) {
    sets[k].forEach(function (v) {
      var o = el("option", null, v);
      o.value = v;
      $(k).appendChild(o);
    });
  });
})();

function state() {
  var s = {};
  controls.forEach(function (k) { s[k] = $(k).value; });
  return s;
}
function readHash() {
  var found = {};
  location.hash.replace(/^#/, "").split("&").forEach(function (part) {
    var kv = part.split("=");
    // A part that is not valid percent-encoding (a typed "100%") is ignored, not fatal.
    try {
      if (kv[0]) { found[decodeURIComponent(kv[0])] = decodeURIComponent(kv.slice(1).join("=")); }
    } catch (e) { /* skip it */ }
  });
  controls.forEach(function (k) {
    var c = $(k), v = found[k];
    if (v === undefined) { return; }
    if (c.tagName === "SELECT" &&
        !Array.prototype.some.call(c.options, function (o) { return o.value === v; })) {
      return;
    }
    c.value = v;
  });
  // view=records: the records' table alone, at the top (a link to it, a screenshot).
  view = found.view === "records" ? "records" : "";
  document.documentElement.classList.toggle("records-only", view === "records");
  return found.open !== undefined && found.open !== "" ? +found.open : null;
}
function writeHash() {
  var s = state(), parts = [];
  controls.forEach(function (k) { if (s[k]) { parts.push(k + "=" + encodeURIComponent(s[k])); } });
  if (opened !== null) { parts.push("open=" + opened); }
  if (view) { parts.push("view=" + view); }
  var hash = parts.length ? "#" + parts.join("&") : location.pathname + location.search;
  try { history.replaceState(null, "", hash); } catch (e) { /* a file: URL some browsers refuse */ }
}

function selected() {
  var s = state(), q = s.q.trim().toLowerCase(), out = [];
  for (var i = 0; i < records.length; i++) {
    var r = records[i];
    if (s.partition && r.partition !== s.partition) { continue; }
    if (s.status && statusOf(r) !== s.status) { continue; }
    if (s.tag && (r.tags || []).indexOf(s.tag) < 0) { continue; }
    if (s.metric && !hasMetric(r, s.metric)) { continue; }
    if (q && haystack(i).indexOf(q) < 0) { continue; }
    out.push(i);
  }
  if (s.sort) {
    var sign = s.sort === "asc" ? 1 : -1;
    out.sort(function (a, b) {
      var x = metricScore(records[a], s.metric), y = metricScore(records[b], s.metric);
      var xn = typeof x !== "number", yn = typeof y !== "number";
      if (xn || yn) { return xn === yn ? a - b : (xn ? 1 : -1); }
      return (x - y) * sign || a - b;
    });
  }
  return out;
}

function chips(r) {
  var td = el("td");
  (r.metrics || []).forEach(function (m) {
    var text = m.name + " " + num(m.score);
    if (typeof m.threshold === "number") { text += " / " + num(m.threshold); }
    var cls = m.score === null ? " none" : m.passed ? "" : " fail";
    td.appendChild(el("span", "chip" + cls, text));
  });
  return td;
}
function row(i) {
  var r = records[i], tr = el("tr", "rec"), s = statusOf(r);
  tr.setAttribute("data-index", String(i));
  add(tr, el("td", "num", i));
  add(tr, el("td", null, r.partition));
  add(tr, el("td", statusClass(s), s));
  add(tr, el("td", null, r.example_id + (r.draw ? " (draw " + r.draw + ")" : "")));
  add(tr, el("td", null, testName(r)));
  add(tr, chips(r));
  var out = r.output === null || r.output === undefined ? "" : json(r.output);
  add(tr, el("td", "out", out.length > 160 ? out.slice(0, 160) + "\u2026" : out));
  return tr;
}
function render() {
  var list = selected(), body = document.querySelector("#rows tbody");
  var frag = document.createDocumentFragment();
  list.slice(0, shown).forEach(function (i) {
    var tr = row(i);
    frag.appendChild(tr);
    if (i === opened) {
      tr.classList.add("open");
      frag.appendChild(detailRow(i));
    }
  });
  body.textContent = "";
  body.appendChild(frag);
  $("count").textContent = "showing " + Math.min(shown, list.length) + " of " + list.length +
    " records (" + records.length + " in the run)";
  $("more").hidden = list.length <= shown;
  $("more").textContent = "show " + Math.min(PAGE, list.length - shown) + " more";
}

// --- the drill-down ----------------------------------------------------------------------
function section(parent, title) { parent.appendChild(el("h4", null, title)); return parent; }
function kvTable(rows) {
  var t = el("table");
  rows.forEach(function (kv) {
    if (kv[1] === undefined || kv[1] === null || kv[1] === "") { return; }
    var tr = el("tr");
    add(tr, el("th", null, kv[0]));
    add(tr, el("td", null, flat(kv[1])));
    t.appendChild(tr);
  });
  return t;
}
function grid(header, rows) {
  var t = el("table"), hr = el("tr");
  header.forEach(function (h) { hr.appendChild(el("th", null, h)); });
  t.appendChild(hr);
  rows.forEach(function (cells) {
    var tr = el("tr");
    cells.forEach(function (c) {
      var td = el("td");
      if (c instanceof Node) { td.appendChild(c); }
      else { td.textContent = c === null || c === undefined ? "" : flat(c); }
      tr.appendChild(td);
    });
    t.appendChild(tr);
  });
  return t;
}
function claims(list) {
  return grid(["claim", "status", "kind", "evidence"], (list || []).map(function (c) {
    return [c.text, el("span", "label-" + c.label, c.label), c.kind, c.evidence];
  }));
}
function metricDetails(m) {
  var d = m.details || {}, box = el("div");
  if (d.claims) { box.appendChild(claims(d.claims)); }
  if (d.checks) {
    var ul = el("ul");
    d.checks.forEach(function (c) {
      var text = (c.passed ? "ok   " : "FAIL ") + c.name + (c.detail ? ": " + c.detail : "");
      if (c.error) { text += " (raised " + c.error + ")"; }
      ul.appendChild(el("li", c.passed ? "ok" : "bad", text));
    });
    box.appendChild(ul);
  }
  var rest = Object.keys(d).filter(function (k) { return k !== "claims" && k !== "checks"; });
  if (rest.length) {
    var said = rest.map(function (k) { return k + ": " + flat(d[k]); });
    box.appendChild(el("div", "kv", said.join(" \u00b7 ")));
  }
  return box;
}
function samples(scores) {
  return (scores || []).map(function (s) { return s === null ? "no verdict" : s; }).join(", ");
}
function panel(box, list) {
  if (!list || !list.length) { return; }
  box.appendChild(el("div", "kv", "the panel's judges:"));
  var header = ["judge", "verdict", "samples", "stable", "reasoning", "failures"];
  box.appendChild(grid(header, list.map(function (j) {
    var pairwise = j.winner !== undefined;
    var said = pairwise ? j.winner : j.mean === null ? null : num(j.mean, 2);
    var reasoning = Array.isArray(j.reasoning) ? j.reasoning.join("\n") : j.reasoning;
    return [j.model, said === null ? "no verdict" : said,
      pairwise ? j.a_first + " / " + j.b_first : samples(j.scores),
      pairwise ? (j.position_bias ? "position bias" : "") : (j.stable ? "yes" : "no"),
      pre(reasoning || ""), (j.failures || []).join("; ")];
  })));
}
function verdict(v) {
  var box = el("div", "verdict"), line;
  if (v.kind === "rubric") {
    line = "rubric by " + v.model + ": mean " + num(v.mean, 2) + " on " +
      (v.scale || []).join("-") + " (samples " + samples(v.scores) + "; " +
      (v.stable ? "stable" : "unstable") + ", variance " + num(v.variance, 2) + ")";
    box.appendChild(el("div", null, line));
    if (v.reasoning) { box.appendChild(pre(v.reasoning)); }
    if (v.strengths && v.strengths.length) {
      box.appendChild(el("div", "ok", "strengths: " + v.strengths.join("; ")));
    }
    if (v.weaknesses && v.weaknesses.length) {
      box.appendChild(el("div", "bad", "weaknesses: " + v.weaknesses.join("; ")));
    }
  } else if (v.kind === "pairwise") {
    line = "pairwise by " + v.model + ": winner " + v.winner + " (candidate first: " +
      v.a_first + ", baseline first: " + v.b_first +
      (v.position_bias ? "; position bias, counted as a tie" : "") + ")";
    box.appendChild(el("div", null, line));
    (v.reasoning || []).forEach(function (t) { box.appendChild(pre(t)); });
  } else if (v.kind === "grounding") {
    line = "grounding (" + v.method + (v.model ? ", " + v.model : "") + "): faithfulness " +
      num(v.faithfulness, 2) + ", " + v.unsupported + " unsupported";
    box.appendChild(el("div", null, line));
    box.appendChild(claims(v.claims));
  } else {
    box.appendChild(pre(JSON.stringify(v, null, 2)));
  }
  if (v.failures && v.failures.length) {
    box.appendChild(el("div", "warn", "failures: " + v.failures.join("; ")));
  }
  panel(box, v.panel);
  if (v.prompt_sha256) { box.appendChild(el("div", "kv", "prompt sha256 " + v.prompt_sha256)); }
  return box;
}
function step(s) {
  var li = el("li"), head = [s.kind + " " + s.name];
  if (s.source) { head.push("(" + s.source + ")"); }
  if (typeof s.latency_s === "number") { head.push(ms(s.latency_s)); }
  if (s.prompt_tokens || s.completion_tokens) {
    head.push((s.prompt_tokens || 0) + "+" + (s.completion_tokens || 0) + " tokens");
  }
  if (typeof s.cost_usd === "number" && s.cost_usd) { head.push("$" + s.cost_usd.toPrecision(3)); }
  if (s.cached) { head.push("cache hit"); }
  li.appendChild(el("b", null, head.join(" ")));
  if (s.args !== undefined) {
    li.appendChild(el("div", "kv", "args"));
    li.appendChild(pre(json(s.args)));
  }
  if (s.content) { li.appendChild(pre(s.content)); }
  (s.tool_calls || []).forEach(function (c) {
    li.appendChild(el("div", null, "asks for tool " + c.name + " " + json(c.args)));
  });
  if (s.documents) {
    li.appendChild(grid(["rank", "document", "score", "text"], s.documents.map(function (d, k) {
      var t = "";
      if (d.text) {
        t = el("details");
        t.appendChild(el("summary", null, d.text.slice(0, 90)));
        t.appendChild(pre(d.text));
      }
      return [k + 1, d.id, num(d.score, 3), t];
    })));
  }
  if (s.result !== undefined) {
    li.appendChild(el("div", "kv", "result"));
    li.appendChild(pre(json(s.result)));
  }
  if (s.error) { li.appendChild(pre(s.error, "bad")); }
  return li;
}
function detail(r) {
  var box = el("div", "detail"), s = statusOf(r), extra = r.extra || {};
  box.appendChild(kvTable([["test", r.nodeid], ["example", r.example_id],
    ["partition", r.partition], ["status", s + (r.failure_kind ? " (" + r.failure_kind + ")" : "")],
    ["draw", r.draw], ["dataset", r.dataset], ["tags", (r.tags || []).join(", ")],
    ["cluster", r.cluster], ["model", r.model], ["prompt version", r.prompt_version]]));
  if (r.failure_reason) {
    var why = r.status === "error" ? "errored" : r.status === "skipped" ? "was skipped" : "failed";
    section(box, "Why it " + why);
    box.appendChild(pre(r.failure_reason, "bad"));
  }
  KEPT.forEach(function (k) {
    var value = r[k] !== undefined && r[k] !== null ? r[k] : extra[k];
    if (value !== undefined && value !== null) {
      section(box, k.replace("_", " "));
      box.appendChild(pre(json(value)));
    }
  });
  section(box, "Output");
  if (r.output === null || r.output === undefined) {
    box.appendChild(el("p", "muted", "no output recorded"));
  } else {
    box.appendChild(pre(json(r.output), "output"));
  }
  if (r.metrics && r.metrics.length) {
    section(box, "Metrics");
    var header = ["metric", "score", "threshold", "passed", "details"];
    box.appendChild(grid(header, r.metrics.map(function (m) {
      var passed = el("span", m.passed ? "ok" : "bad", m.passed ? "yes" : "no");
      return [m.name, num(m.score), num(m.threshold), passed, metricDetails(m)];
    })));
  }
  if (r.judge && r.judge.length) {
    section(box, "Judge");
    r.judge.forEach(function (v) { box.appendChild(verdict(v)); });
  }
  if (r.steps && r.steps.length) {
    section(box, "Trajectory (" + r.steps.length + " steps)");
    var ol = el("ol");
    r.steps.forEach(function (st) { ol.appendChild(step(st)); });
    box.appendChild(ol);
  }
  var others = Object.keys(extra).filter(function (k) { return KEPT.indexOf(k) < 0; });
  if (others.length) {
    section(box, "Values the test recorded");
    box.appendChild(kvTable(others.map(function (k) { return [k, extra[k]]; })));
  }
  if (r.human) {
    section(box, "Human labels");
    box.appendChild(pre(JSON.stringify(r.human, null, 2)));
  }
  section(box, "Cost and time");
  var tokens = r.tokens || {};
  box.appendChild(kvTable([
    ["tokens", (tokens.prompt || 0) + " prompt, " + (tokens.completion || 0) + " completion"],
    ["cost", usd(r.cost_usd)], ["model latency", ms(r.latency_s)], ["test time", ms(r.elapsed_s)],
    ["model calls", r.llm_calls], ["cache hits", r.cache_hits], ["requests sent", r.requests]]));
  var usage = r.usage || {};
  if (Object.keys(usage).length) {
    var columns = ["model", "calls", "cache hits", "requests", "prompt tokens",
      "completion tokens", "cost"];
    box.appendChild(grid(columns, Object.keys(usage).map(function (k) {
      var u = usage[k];
      return [k, u.calls, u.cache_hits, u.requests, u.prompt_tokens, u.completion_tokens,
        usd(u.cost_usd)];
    })));
  }
  var raw = el("details");
  raw.appendChild(el("summary", null, "the record as JSON"));
  raw.addEventListener("toggle", function () {
    if (raw.open && raw.childNodes.length < 2) { raw.appendChild(pre(JSON.stringify(r, null, 1))); }
  });
  box.appendChild(raw);
  return box;
}
function detailRow(i) {
  var tr = el("tr", "detail-row"), td = el("td", "detail");
  td.colSpan = 7;
  td.id = "record-" + i;
  td.appendChild(detail(records[i]));
  tr.appendChild(td);
  return tr;
}

document.querySelector("#rows tbody").addEventListener("click", function (ev) {
  if (ev.target.closest(".detail-row")) { return; }
  var tr = ev.target.closest("tr.rec");
  if (!tr) { return; }
  var i = +tr.getAttribute("data-index");
  opened = opened === i ? null : i;
  render();
  writeHash();
});
controls.forEach(function (k) {
  $(k).addEventListener(k === "q" ? "input" : "change", function () {
    shown = PAGE;
    render();
    writeHash();
  });
});
$("more").addEventListener("click", function () { shown += PAGE; render(); });

opened = readHash();
if (opened !== null && !(opened >= 0 && opened < records.length)) { opened = null; }
if (opened !== null) {
  var at = selected().indexOf(opened);
  if (at >= shown) { shown = at + 1; }
}
render();
if (opened !== null && !view) {
  var target = document.querySelector('tr[data-index="' + opened + '"]');
  if (target) { target.scrollIntoView(); }
}
document.documentElement.setAttribute("data-rendered-ms", String(Math.round(performance.now())));
})();
"""
