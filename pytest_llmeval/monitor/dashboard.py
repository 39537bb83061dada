"""``llmeval dashboard`` and ``llmeval history``: a monitor database, and CI runs'
reports, drawn as one HTML page.

The page is self-contained (charts are inline SVG from ``html/charts.py``; no script,
font, image or style is fetched), so it opens offline and can be kept as a CI artifact or
attached to a ticket. Every label is plain, escaped text: alert types, severities,
partition and file names are free text ("$27 vs $29" reads as written). The CI history
section is the same code for both commands (``history_section``).
"""

from __future__ import annotations

import os
import sqlite3
import statistics
import sys
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any
from urllib.parse import quote

from ..files import dumps, write_text_atomic
from ..html.charts import CSS as CHART_CSS
from ..html.charts import Series, XPoint, bar_chart, line_chart
from ..html.kit import Raw, cell, esc, page, table
from ..runs.compare import JUDGE_SCALE
from ..runs.history import (
    HistoryRun,
    history_json,
    metrics_of,
    partitions_of,
    read_history,
    read_runs,
)
from .evaluators import SEVERITIES
from .store import Store

RECENT_ALERTS = 20
_SEVERITY_COLORS = {"low": "#8fb3d9", "medium": "#f2c14e", "high": "#f08a3c", "critical": "#c62828"}
_OTHER_COLOR = "#9e9e9e"
_DRIFT_COLOR = "#c62828"
_NONE_YET = "no evaluations of this kind yet"
_METRIC_TITLES = {
    "judge": "judge score mean",
    "tool_calls": "tool-call match mean",
    "retrieval_recall": "retrieval recall mean",
}

_CSS = (
    """
td.msg{white-space:pre-wrap;max-width:680px}
.note{color:#666;font-style:italic}
.sev-high,.sev-critical{color:#b71c1c;font-weight:600}
"""
    + CHART_CSS
)


def write_dashboard(db: str | Path, out: str | Path, runs: Sequence[str | Path] = ()) -> Path:
    """Draw the monitor database ``db`` and the CI reports ``runs`` (in the order the
    runs started) as one self-contained HTML page at ``out``; returns its path.
    FileNotFoundError or ValueError names the file that cannot be read."""
    reports, _ = read_runs([Path(path) for path in runs], strict=True)
    db = Path(db)
    try:
        store = Store(db, readonly=True)
        try:
            windows, alerts = store.windows(), store.alerts()
            traffic, counts = store.traffic(), store.counts()
        finally:
            store.close()
    except sqlite3.Error as exc:
        raise ValueError(f"{db}: not a readable monitor database ({exc})") from None
    out = Path(out)
    write_text_atomic(out, _page(db, windows, alerts, traffic, counts, reports, out))
    return out


def write_history(
    directory: Path, runs: Sequence[HistoryRun], warnings: Sequence[str], out: Path
) -> Path:
    """``llmeval history DIR --html OUT``: the runs of a history folder as one page."""
    title = f"llmeval history: {directory.name or directory}"
    incomplete = sum(r.incomplete for r in runs)
    lines = [
        f"<h1>{esc(title)}</h1>",
        _table(
            ["folder", "runs", "incomplete", "baselines", "first start", "last start"],
            [
                [
                    str(directory.resolve()),
                    len(runs),
                    incomplete,
                    sum(r.baseline for r in runs),
                    _local(runs[0].started_at) if runs else "",
                    _local(runs[-1].started_at) if runs else "",
                ]
            ],
        ),
    ]
    if warnings:
        lines.append("<h3>Files left out</h3><ul>")
        lines += [f"<li>{esc(w)}</li>" for w in warnings]
        lines.append("</ul>")
    lines.append(history_section(runs, out) if runs else _note("runs in this folder"))
    write_text_atomic(out, _html(title, "\n".join(lines)))
    return out


def _html(title: str, body: str) -> str:
    return page(title, body, css=_CSS)


# --- reading --------------------------------------------------------------------------


def _window_seconds(windows: list[dict[str, Any]], traffic: dict[float, Any]) -> float:
    """The monitor's window length: from closed windows, else the traffic's spacing."""
    if windows:
        return float(statistics.median(w["end"] - w["start"] for w in windows))
    starts = sorted(traffic)
    gaps = [b - a for a, b in pairwise(starts)]
    return min(gaps) if gaps else 3600.0


def _drifted(windows: list[dict[str, Any]], alerts: list[dict[str, Any]]) -> set[float]:
    """Starts of the windows with a drift alert, by their drift test or the alerts."""
    flagged = {a["window_start"] for a in alerts if a["type"] == "drift"}
    return {w["start"] for w in windows if (w["drift"] or {}).get("alert") or w["start"] in flagged}


def _severities(alerts: Iterable[dict[str, Any]]) -> list[str]:
    present = {a["severity"] for a in alerts}
    return [s for s in SEVERITIES if s in present] + sorted(present - set(SEVERITIES))


# --- the page -------------------------------------------------------------------------


def _page(
    db: Path,
    windows: list[dict[str, Any]],
    alerts: list[dict[str, Any]],
    traffic: dict[float, dict[str, int]],
    counts: dict[str, int],
    runs: list[HistoryRun],
    out: Path,
) -> str:
    seconds = _window_seconds(windows, traffic)
    title = f"llmeval monitor: {db.name}"
    body = [
        f"<h1>{esc(title)}</h1>",
        _header(db, windows, traffic, seconds, counts),
        "<h2>Quality by window</h2>",
        _quality_figure(windows, _drifted(windows, alerts)) if windows else _note("windows"),
        "<h2>Traffic by window</h2>",
        _traffic_figure(traffic, seconds) if traffic else _note("traffic"),
        "<h2>Alerts</h2>",
        _alerts_section(alerts) if alerts else _note("alerts"),
        "<h2>CI runs</h2>",
        history_section(runs, out) if runs else _note("CI reports (give them with --runs)"),
    ]
    return _html(title, "\n".join(body))


def _header(
    db: Path,
    windows: list[dict[str, Any]],
    traffic: dict[float, Any],
    seconds: float,
    counts: dict[str, int],
) -> str:
    starts = [w["start"] for w in windows] + list(traffic)
    ends = [w["end"] for w in windows] + [start + seconds for start in traffic]
    span = f"{_when(min(starts))} to {_when(max(ends))}" if starts else "no data yet"
    rows: list[tuple[str, object]] = [
        ("database", db.resolve()),
        (f"time range ({_timezone()})", span),
        ("windows closed", len(windows)),
        *((name, counts[name]) for name in ("pushed", "accepted", "dropped", "evaluated")),
        ("alerts", counts["alerts"]),
        ("generated at", _when(datetime.now().timestamp())),
    ]
    body = "".join(f"<tr><th>{esc(name)}</th>{_cell(value)}</tr>" for name, value in rows)
    return f"<table>{body}</table>"


def _alerts_section(alerts: list[dict[str, Any]]) -> str:
    by_type = Counter(a["type"] for a in alerts)
    pairs = Counter((a["type"], a["severity"]) for a in alerts)
    severities = _severities(alerts)
    types = [t for t, _ in by_type.most_common()]
    shown = alerts[-RECENT_ALERTS:]
    return "\n".join(
        [
            _alerts_figure(types, severities, pairs),
            _table(
                ["type", *severities, "total"],
                ([t, *(pairs[t, s] for s in severities), by_type[t]] for t in types),
            ),
            f"<h3>Most recent alerts ({len(shown)} of {len(alerts)}, newest first)</h3>",
            _recent_alerts(reversed(shown)),
        ]
    )


def _recent_alerts(alerts: Iterable[dict[str, Any]]) -> str:
    rows = [
        "<tr>"
        f"<td>{_when(a['ts'])}</td><td>{esc(a['type'])}</td>"
        # A class only for the known severities: the others are free text.
        f'<td class="sev-{a["severity"] if a["severity"] in SEVERITIES else "other"}">'
        f"{esc(a['severity'])}</td>"
        f'<td>{esc(a["request_id"] or "")}</td><td class="msg">{esc(a["message"])}</td>'
        "</tr>"
        for a in alerts
    ]
    head = "".join(f"<th>{h}</th>" for h in ("time", "type", "severity", "request id", "message"))
    return "\n".join([f"<table><tr>{head}</tr>", *rows, "</table>"])


# --- CI runs: the dashboard's section and llmeval history's page ----------------------------


def history_section(runs: Sequence[HistoryRun], out: Path) -> str:
    """Charts over runs (in the order given: start order), then a table of them: pass
    rate per partition, the mean of each gated metric per partition, cost and p95
    latency. Each point links to its run's page (relative to ``out``, the page being
    written) when there is one; baselines and incomplete runs are marked."""
    xs = [_run_point(i, run, out) for i, run in enumerate(runs)]
    partitions = partitions_of(runs)
    everything = [v for run in runs for v in run.pass_rates.values() if v is not None]
    charts = [
        line_chart(
            "pass rate by partition",
            xs,
            [Series(p, [run.pass_rates.get(p) for run in runs]) for p in partitions],
            percent=True,
            low=_high_rate_limits(everything)[0],
            high=1.01,
        )
    ]
    for metric, where in metrics_of(runs).items():
        # The judge on its 1-5 scale; the other gated metrics are fractions.
        low, high = (JUDGE_SCALE[0] - 0.2, JUDGE_SCALE[1] + 0.2) if metric == "judge" else (0, 1.01)
        means = [run.metric_means.get(metric, {}) for run in runs]
        charts.append(
            line_chart(
                f"{_METRIC_TITLES.get(metric, metric)} by partition",
                xs,
                [Series(p, [m.get(p) for m in means]) for p in where],
                low=low,
                high=high,
            )
        )
    charts.append(
        line_chart(
            "cost (USD, all records)", xs, [Series("cost", [r.cost_usd for r in runs])], unit="$"
        )
    )
    charts.append(
        line_chart(
            "p95 latency (s, all records)",
            xs,
            [Series("p95 latency", [r.latency_p95_s for r in runs])],
            unit="s",
        )
    )
    head = [
        "run",
        "report",
        "started",
        "state",
        "baseline",
        *(f"{p} pass rate" for p in partitions),
    ]
    rows = []
    for i, run in enumerate(runs):
        rows.append(
            [
                f"#{i + 1}",
                _link(run, out),
                _local(run.started_at),
                run.state,
                "baseline" if run.baseline else "",
                *(_percent(run.pass_rates.get(p)) for p in partitions),
                "" if run.judge_mean is None else f"{run.judge_mean:.2f}",
                "" if run.cost_usd is None else f"${run.cost_usd:.4f}",
                "" if run.latency_p95_s is None else f"{run.latency_p95_s:.2f}s",
            ]
        )
    table = _table([*head, "judge mean", "cost", "p95 latency"], rows)
    return "\n".join([*charts, table])


def _run_point(index: int, run: HistoryRun, out: Path) -> XPoint:
    started = _local(run.started_at)
    return XPoint(
        label=f"#{index + 1} {run.name}",
        title=f"#{index + 1} {run.name}, started {started}, {run.state}",
        href=_href(run.page, out),
        incomplete=run.incomplete,
        baseline=run.baseline,
    )


def _href(page: Path | None, out: Path) -> str | None:
    """A local page as a link from ``out``: relative, so the two can move together."""
    if page is None:
        return None
    try:
        relative = os.path.relpath(page.resolve(), out.resolve().parent)
    except ValueError:  # another drive (Windows)
        return page.resolve().as_uri()
    return quote(Path(relative).as_posix())


def _link(run: HistoryRun, out: Path) -> Raw | str:
    href = _href(run.page, out)
    if href is None:
        return run.name
    return Raw(f'<a href="{esc(href)}">{esc(run.name)}</a>')


def _table(head: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """kit's table, its columns of counts right-aligned."""
    rows = [list(row) for row in rows]
    numeric = {i for row in rows for i, v in enumerate(row) if isinstance(v, int | float)}
    return str(table(head, rows, numeric=numeric))


def _cell(value: object) -> str:
    right = ' class="num"' if isinstance(value, int | float) else ""
    return f"<td{right}>{cell(value)}</td>"


def _note(what: str) -> str:
    return f'<p class="note">No {esc(what)}: no data yet.</p>'


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _local(when: datetime) -> str:
    return when.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _timezone() -> str:
    return datetime.now().astimezone().strftime("local time, UTC%z")


# --- monitor charts ----------------------------------------------------------------------


def _quality_figure(windows: list[dict[str, Any]], drifted: set[float]) -> str:
    xs = [
        XPoint(
            label=datetime.fromtimestamp(w["start"]).strftime("%m-%d %H:%M"),
            title=f"{_when(w['start'])} to {_when(w['end'])}",
            shaded=w["start"] in drifted,
        )
        for w in windows
    ]
    where = f"by window start ({_timezone()})"
    hallucination = _series(windows, "hallucination_rate")
    constraint = _series(windows, "constraint_pass_rate")
    finite = [v for v in hallucination if v is not None]
    return "\n".join(
        [
            line_chart(
                f"judge score {where}",
                xs,
                [
                    Series("mean", _series(windows, "judge_mean"), color="#1f77b4"),
                    Series(
                        "10th percentile",
                        _series(windows, "judge_p10"),
                        color="#5b8fbf",
                        dashed=True,
                    ),
                ],
                low=JUDGE_SCALE[0] - 0.2,
                high=JUDGE_SCALE[1] + 0.2,
                shade_label="drift alert",
                empty=_NONE_YET,
            ),
            # Rates near 0 and near 1 get a scale that shows their changes, not a flat line.
            line_chart(
                "hallucination rate (unsupported claims)",
                xs,
                [Series("hallucination rate", hallucination, color="#e07b39")],
                percent=True,
                low=0.0,
                high=max([0.1, *finite]) * 1.15,
                shade_label="drift alert",
                empty=_NONE_YET,
            ),
            line_chart(
                "constraint pass rate",
                xs,
                [Series("constraint pass rate", constraint, color="#2e7d32")],
                percent=True,
                low=_high_rate_limits([v for v in constraint if v is not None])[0],
                high=1.01,
                shade_label="drift alert",
                empty=_NONE_YET,
            ),
        ]
    )


def _traffic_figure(traffic: dict[float, dict[str, int]], seconds: float) -> str:
    starts = sorted(traffic)
    labels = [datetime.fromtimestamp(s).strftime("%m-%d %H:%M") for s in starts]
    accepted = [float(traffic[s]["accepted"]) for s in starts]
    dropped = [float(traffic[s]["dropped"]) for s in starts]
    pushed = [float(traffic[s]["pushed"]) for s in starts]
    span = f"windows of {seconds / 60:g} min ({_timezone()})"
    return "\n".join(
        [
            bar_chart(
                f"requests pushed, {span}",
                labels,
                [Series("pushed", pushed, color="#90a4ae")],
            ),
            bar_chart(
                "sampled requests: accepted for evaluation, dropped (queue full)",
                labels,
                [
                    Series("accepted", accepted, color="#1f77b4"),
                    Series("dropped", dropped, color=_DRIFT_COLOR),
                ],
            ),
        ]
    )


def _alerts_figure(types: list[str], severities: list[str], pairs: Counter[tuple[str, str]]) -> str:
    by_type = [Series(s, [float(pairs[t, s]) for t in types], color=_color(s)) for s in severities]
    totals = {s: sum(n for (_, sev), n in pairs.items() if sev == s) for s in severities}
    # One layer per severity, each with its own bar: each bar in its severity's colour.
    by_severity = [
        Series(
            s, [float(totals[s]) if s == other else 0.0 for other in severities], color=_color(s)
        )
        for s in severities
    ]
    return "\n".join(
        [
            bar_chart("alerts by type (stacked by severity)", types, by_type),
            bar_chart("alerts by severity", severities, by_severity),
        ]
    )


def _series(windows: list[dict[str, Any]], key: str) -> list[float | None]:
    return [None if w.get(key) is None else float(w[key]) for w in windows]


def _high_rate_limits(values: Sequence[float]) -> tuple[float, float]:
    return max(0.0, min([0.9, *values]) - 0.05), 1.01


def _color(severity: str) -> str:
    return _SEVERITY_COLORS.get(severity, _OTHER_COLOR)


# --- llmeval history ------------------------------------------------------------------------


def history_command(directory: Path, *, html: Path | None, as_json: bool) -> int:
    """``llmeval history DIR``: 0 drawn, 1 no run to draw, 2 DIR is not a folder or the
    page cannot be written. A file that is not a readable report is a one-line warning."""
    try:
        runs, warnings = read_history(directory)
    except OSError as exc:
        print(f"llmeval history: {exc}", file=sys.stderr)
        return 2
    for warning in warnings:
        print(f"llmeval history: {' '.join(warning.split())}", file=sys.stderr)
    if not runs:
        print(f"llmeval history: no run reports in {directory}", file=sys.stderr)
        return 1
    if as_json:
        print(dumps(history_json(runs), indent=2))
    else:
        print(f"{len(runs)} runs in {directory}, in start order:")
        print("\n".join(_run_line(i, run) for i, run in enumerate(runs)))
    if html is not None:
        try:
            write_history(directory, runs, warnings, html)
        except OSError as exc:
            print(f"llmeval history: cannot write {html}: {exc}", file=sys.stderr)
            return 2
        print(f"wrote {html}", file=sys.stderr if as_json else sys.stdout)
    return 0


def _run_line(index: int, run: HistoryRun) -> str:
    rates = " ".join(f"{p} {rate:.0%}" for p, rate in run.pass_rates.items() if rate is not None)
    marks = ", baseline" if run.baseline else ""
    return f"  #{index + 1} {_local(run.started_at)}  {run.name}  {run.state}{marks}  {rates}"
