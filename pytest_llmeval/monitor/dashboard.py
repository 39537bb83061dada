"""``llmeval dashboard``: a monitor database, and CI runs' reports, drawn as one HTML page.

The page is self-contained (plots inlined as PNG ``data:`` URIs; no scripts, fonts or
styles fetched), so it opens offline and can be kept as a CI artifact or attached to a
ticket. matplotlib (the ``monitor`` extra) is imported only when a page is drawn, and
without pyplot, whose global state and backend belong to the caller.

Every label is drawn as plain text: alert types, severities, partition and file names
are free text, and matplotlib would read "$27 vs $29" as mathtext (mangled, or an
error), or hand it to LaTeX if the caller's rcParams say ``text.usetex``.
"""

from __future__ import annotations

import base64
import html
import importlib.util
import io
import math
import sqlite3
import statistics
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..files import write_text_atomic
from ..partitions import PARTITIONS
from ..records import is_rubric
from ..runs.compare import JUDGE_SCALE
from ..runs.report import read_report
from .evaluators import SEVERITIES
from .store import Store

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

RECENT_ALERTS = 20
_SEVERITY_COLORS = {"low": "#8fb3d9", "medium": "#f2c14e", "high": "#f08a3c", "critical": "#c62828"}
_OTHER_COLOR = "#9e9e9e"
_DRIFT_COLOR = "#c62828"
_DAY = 86400.0
_DPI = 100
_WIDTH_IN = 12.0
# A legend right of its axes, off the data; constrained layout makes room for it.
_LEGEND_RIGHT: dict[str, Any] = {"loc": "upper left", "bbox_to_anchor": (1.01, 1.0)}

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#222;
  max-width:1240px;margin:24px auto;padding:0 16px}
h1{font-size:1.5em;margin:0 0 .4em}
h2{font-size:1.2em;margin:1.6em 0 .4em;border-bottom:1px solid #ddd;padding-bottom:.2em}
h3{font-size:1em;margin:1.2em 0 .3em}
table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
th,td{border:1px solid #ddd;padding:3px 8px;text-align:left;vertical-align:top}
th{background:#f4f4f4}
td.n{text-align:right;font-variant-numeric:tabular-nums}
td.msg{white-space:pre-wrap;max-width:680px}
img{max-width:100%;height:auto;display:block}
.note{color:#666;font-style:italic}
.sev-high,.sev-critical{color:#b71c1c;font-weight:600}
"""


@dataclass(frozen=True)
class _Run:
    """What the page shows of one CI run's report."""

    name: str
    started: str  # local time, or "" when the report has none
    passed: bool | None
    pass_rates: dict[str, float | None]
    judge_mean: float | None

    def label(self, index: int) -> str:
        return f"#{index + 1} {self.name}" + (f"\n{self.started}" if self.started else "")


def write_dashboard(db: str | Path, out: str | Path, runs: Sequence[str | Path] = ()) -> Path:
    """Draw the monitor database ``db`` and the CI reports ``runs`` (in the order given)
    as one self-contained HTML page at ``out``; returns its path. FileNotFoundError or
    ValueError names the file that cannot be read."""
    if importlib.util.find_spec("matplotlib") is None:
        raise ModuleNotFoundError(
            'llmeval dashboard needs matplotlib: pip install "pytest-llmeval[monitor]"'
        )
    reports = [_read_run(Path(path)) for path in runs]
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
    with _plain_text():
        page = _page(db, windows, alerts, traffic, counts, reports)
    write_text_atomic(out, page)
    return out


@contextmanager
def _plain_text() -> Iterator[None]:
    """No mathtext and no LaTeX for any text drawn inside, tick labels included (they
    are made when a figure is saved): matplotlib reads both settings when it creates a
    text artist."""
    import matplotlib

    with matplotlib.rc_context({"text.parse_math": False, "text.usetex": False}):
        yield


# --- reading --------------------------------------------------------------------------


def _read_run(path: Path) -> _Run:
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such report")
    document = read_report(path)
    records = document["records"]
    partitions = document.get("partitions")
    if not isinstance(partitions, dict) or not all(
        isinstance(v, dict) for v in partitions.values()
    ):
        raise ValueError(f"{path} is not a pytest-llmeval report (no partitions)")
    # The judge mean of a run: of its rubric verdicts' means (each the mean of k scores).
    means = [
        mean
        for record in records
        if isinstance(record, dict)
        for verdict in record.get("judge") or []
        if isinstance(verdict, dict)
        and is_rubric(verdict)
        and (mean := _number(verdict.get("mean"))) is not None
    ]
    run, passed = document.get("run"), document.get("passed")
    return _Run(
        name=path.stem,
        started=_started(run.get("started_at") if isinstance(run, dict) else None),
        passed=passed if isinstance(passed, bool) else None,
        pass_rates={name: _number(stats.get("pass_rate")) for name, stats in partitions.items()},
        judge_mean=statistics.fmean(means) if means else None,
    )


def _number(value: object) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    return None


def _started(value: Any) -> str:
    """An ISO timestamp in local time; "" when absent or unparsable (it only labels)."""
    try:
        return datetime.fromisoformat(value).astimezone().strftime("%Y-%m-%d %H:%M")
    except (TypeError, ValueError):
        return ""


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


def _partitions(runs: Sequence[_Run]) -> list[str]:
    present = {p for run in runs for p in run.pass_rates}
    return [p for p in PARTITIONS if p in present] + sorted(present - set(PARTITIONS))


# --- the page -------------------------------------------------------------------------


def _page(
    db: Path,
    windows: list[dict[str, Any]],
    alerts: list[dict[str, Any]],
    traffic: dict[float, dict[str, int]],
    counts: dict[str, int],
    runs: list[_Run],
) -> str:
    seconds = _window_seconds(windows, traffic)
    title = _esc(f"llmeval monitor: {db.name}")
    return "\n".join(
        [
            "<!DOCTYPE html>",
            '<html lang="en"><head><meta charset="utf-8">',
            f"<title>{title}</title><style>{_CSS}</style></head><body>",
            f"<h1>{title}</h1>",
            _header(db, windows, traffic, seconds, counts),
            "<h2>Quality by window</h2>",
            _quality_figure(windows, _drifted(windows, alerts)) if windows else _note("windows"),
            "<h2>Traffic by window</h2>",
            _traffic_figure(traffic, seconds) if traffic else _note("traffic"),
            "<h2>Alerts</h2>",
            _alerts_section(alerts) if alerts else _note("alerts"),
            "<h2>CI runs</h2>",
            _runs_section(runs) if runs else _note("CI reports (give them with --runs)"),
            "</body></html>\n",
        ]
    )


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
    body = "".join(f"<tr><th>{_esc(name)}</th>{_cell(value)}</tr>" for name, value in rows)
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
        f"<td>{_when(a['ts'])}</td><td>{_esc(a['type'])}</td>"
        # A class only for the known severities: the others are free text.
        f'<td class="sev-{a["severity"] if a["severity"] in SEVERITIES else "other"}">'
        f"{_esc(a['severity'])}</td>"
        f'<td>{_esc(a["request_id"] or "")}</td><td class="msg">{_esc(a["message"])}</td>'
        "</tr>"
        for a in alerts
    ]
    head = "".join(f"<th>{h}</th>" for h in ("time", "type", "severity", "request id", "message"))
    return "\n".join([f"<table><tr>{head}</tr>", *rows, "</table>"])


def _runs_section(runs: list[_Run]) -> str:
    partitions = _partitions(runs)
    rows = (
        [
            f"#{i + 1}",
            run.name,
            run.started,
            {True: "yes", False: "no", None: ""}[run.passed],
            *(_percent(run.pass_rates.get(p)) for p in partitions),
            "" if run.judge_mean is None else f"{run.judge_mean:.2f}",
        ]
        for i, run in enumerate(runs)
    )
    head = ["run", "report", "started", "passed", *(f"{p} pass rate" for p in partitions)]
    return "\n".join([_runs_figure(runs, partitions), _table([*head, "judge mean"], rows)])


def _table(head: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    lines = ["<table><tr>" + "".join(f"<th>{_esc(h)}</th>" for h in head) + "</tr>"]
    lines += ["<tr>" + "".join(_cell(value) for value in row) + "</tr>" for row in rows]
    return "\n".join([*lines, "</table>"])


def _cell(value: object) -> str:
    if isinstance(value, int | float):
        return f'<td class="n">{value}</td>'
    return f"<td>{_esc(str(value))}</td>"


def _note(what: str) -> str:
    return f'<p class="note">No {_esc(what)}: no data yet.</p>'


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _percent(value: float | None) -> str:
    return "" if value is None else f"{value:.1%}"


def _when(ts: float) -> str:
    return datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _timezone() -> str:
    return datetime.now().astimezone().strftime("local time, UTC%z")


# --- figures --------------------------------------------------------------------------


def _quality_figure(windows: list[dict[str, Any]], drifted: set[float]) -> str:
    fig = _figure(8.5)
    judge, hallucination, constraint = fig.subplots(3, 1, sharex=True)
    x = [_day(w["start"]) for w in windows]
    _judge_panel(judge, x, windows)
    rate = _series(windows, "hallucination_rate")
    hallucination.plot(x, rate, marker="o", markersize=4, color="#e07b39")
    # Rates near 0 and near 1 get a scale that shows their changes, not a flat line.
    hallucination.set_ylim(0.0, max([0.1, *_finite(rate)]) * 1.15)
    _panel(hallucination, "hallucination rate (unsupported claims)", rate, percent=True)
    rate = _series(windows, "constraint_pass_rate")
    constraint.plot(x, rate, marker="o", markersize=4, color="#2e7d32")
    constraint.set_ylim(*_high_rate_limits(rate))
    _panel(constraint, "constraint pass rate", rate, percent=True)
    for ax in (judge, hallucination, constraint):
        for w in windows:
            if w["start"] in drifted:
                ax.axvspan(
                    _day(w["start"]), _day(w["end"]), color=_DRIFT_COLOR, alpha=0.2, linewidth=0
                )
    _time_axis(constraint, x[0], _day(windows[-1]["end"]))
    return _png(fig, "judge score, hallucination rate and constraint pass rate by window")


def _judge_panel(ax: Axes, x: list[float], windows: list[dict[str, Any]]) -> None:
    from matplotlib.patches import Patch

    mean, p10 = _series(windows, "judge_mean"), _series(windows, "judge_p10")
    ax.fill_between(x, p10, mean, color="#1f77b4", alpha=0.12, linewidth=0)
    ax.plot(x, mean, marker="o", markersize=4, color="#1f77b4", label="mean")
    ax.plot(x, p10, marker=".", linestyle="--", color="#5b8fbf", label="10th percentile")
    ax.set_ylim(JUDGE_SCALE[0] - 0.2, JUDGE_SCALE[1] + 0.2)
    handles, _ = ax.get_legend_handles_labels()
    handles.append(Patch(color=_DRIFT_COLOR, alpha=0.2, label="drift alert"))
    ax.legend(handles=handles, **_LEGEND_RIGHT)
    _panel(ax, "judge score", mean)


def _traffic_figure(traffic: dict[float, dict[str, int]], seconds: float) -> str:
    fig = _figure(5.0)
    pushed, sampled = fig.subplots(2, 1, sharex=True)
    starts = sorted(traffic)
    x = [_day(s) for s in starts]
    bar: dict[str, Any] = {"width": seconds / _DAY * 0.8, "align": "edge"}
    accepted = [traffic[s]["accepted"] for s in starts]
    pushed.bar(x, [traffic[s]["pushed"] for s in starts], color="#90a4ae", label="pushed", **bar)
    sampled.bar(x, accepted, color="#1f77b4", label="accepted", **bar)
    dropped = [traffic[s]["dropped"] for s in starts]
    sampled.bar(x, dropped, bottom=accepted, color=_DRIFT_COLOR, label="dropped", **bar)
    _panel(pushed, "requests pushed", None)
    _panel(sampled, "sampled requests: accepted for evaluation, dropped (queue full)", None)
    for ax in (pushed, sampled):
        ax.legend(**_LEGEND_RIGHT)
        _integer_axis(ax, "y")
    _time_axis(sampled, x[0], _day(starts[-1] + seconds))
    return _png(fig, "requests pushed, accepted and dropped by window")


def _alerts_figure(types: list[str], severities: list[str], pairs: Counter[tuple[str, str]]) -> str:
    fig = _figure(max(2.8, 0.4 * len(types) + 1.4))
    by_type, by_severity = fig.subplots(1, 2, width_ratios=[2, 1])
    rows, left = range(len(types)), [0] * len(types)
    for severity in severities:
        counts = [pairs[t, severity] for t in types]
        bars = by_type.barh(rows, counts, left=left, color=_color(severity), label=severity)
        left = [a + b for a, b in zip(left, counts, strict=True)]
    by_type.bar_label(bars, labels=[str(n) for n in left], padding=3)
    by_type.set_yticks(list(rows), types)
    by_type.invert_yaxis()  # the most frequent type on top
    by_type.legend(title="severity", **_LEGEND_RIGHT)
    totals = [sum(n for (_, s), n in pairs.items() if s == severity) for severity in severities]
    columns = range(len(severities))
    bars = by_severity.bar(columns, totals, color=[_color(s) for s in severities])
    by_severity.bar_label(bars, padding=3)
    by_severity.set_xticks(list(columns), severities)
    _panel(by_type, "alerts by type", None)
    _panel(by_severity, "alerts by severity", None)
    by_type.margins(x=0.12)
    by_severity.margins(y=0.15)
    _integer_axis(by_type, "x")
    _integer_axis(by_severity, "y")
    return _png(fig, "alert counts by type and by severity")


def _runs_figure(runs: list[_Run], partitions: list[str]) -> str:
    fig = _figure(4.4)
    rates, judge = fig.subplots(1, 2)
    x = list(range(len(runs)))
    everything: list[float] = []
    for i, partition in enumerate(partitions):
        values = [_nan(run.pass_rates.get(partition)) for run in runs]
        # Shrinking markers: partitions at the same rate (often 100%) stay visible, nested.
        rates.plot(x, values, marker="o", markersize=max(4, 12 - 2.5 * i), label=partition)
        everything += values
    rates.set_ylim(*_high_rate_limits(everything))
    rates.legend(title="partition", **_LEGEND_RIGHT)
    _panel(rates, "pass rate by partition", everything, percent=True)
    means = [_nan(run.judge_mean) for run in runs]
    judge.plot(x, means, marker="o", color="#1f77b4")
    judge.set_ylim(JUDGE_SCALE[0] - 0.2, JUDGE_SCALE[1] + 0.2)
    _panel(judge, "judge mean (all rubric verdicts)", means)
    labels = [run.label(i) for i, run in enumerate(runs)]
    for ax in (rates, judge):
        tilted = len(runs) > 4  # long labels would run into each other
        ax.set_xticks(x, labels, rotation=30 if tilted else 0, ha="right" if tilted else "center")
        ax.set_xlim(-0.5, len(runs) - 0.5)
    return _png(fig, "pass rate by partition and judge mean across CI runs")


def _figure(height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(_WIDTH_IN, height), dpi=_DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure, alt: str) -> str:
    buffer = io.BytesIO()
    # No Software tag: the page should name nothing but the data it shows.
    fig.savefig(buffer, format="png", metadata={"Software": None})
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img alt="{_esc(alt)}" src="data:image/png;base64,{data}">'


def _panel(ax: Axes, title: str, values: Sequence[float] | None, *, percent: bool = False) -> None:
    """Title and grid; a note in place of the lines when ``values`` has none to draw."""
    from matplotlib.ticker import PercentFormatter

    ax.set_title(title, loc="left", fontsize=11)
    ax.grid(alpha=0.3)
    if percent:
        ax.yaxis.set_major_formatter(PercentFormatter(xmax=1.0))
    if values is not None and not _finite(values):
        ax.text(
            0.5,
            0.5,
            "no evaluations of this kind yet",
            transform=ax.transAxes,
            ha="center",
            va="center",
            color="#777",
        )


def _time_axis(ax: Axes, low: float, high: float) -> None:
    # matplotlib.dates has no type hints, hence the ignores.
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    locator = AutoDateLocator()  # type: ignore[no-untyped-call, unused-ignore]
    ax.xaxis.set_major_locator(locator)
    formatter = ConciseDateFormatter(locator)  # type: ignore[no-untyped-call, unused-ignore]
    ax.xaxis.set_major_formatter(formatter)
    ax.set_xlim(low, high)
    ax.set_xlabel(f"window start ({_timezone()})")


def _integer_axis(ax: Axes, which: str) -> None:
    from matplotlib.ticker import MaxNLocator

    axis = ax.xaxis if which == "x" else ax.yaxis
    axis.set_major_locator(MaxNLocator(integer=True))


def _day(ts: float) -> float:
    """Epoch seconds as a matplotlib date number of the local wall-clock time (drawn as
    is: matplotlib reads a naive datetime as UTC and shows it unchanged)."""
    from matplotlib.dates import date2num

    return float(date2num(datetime.fromtimestamp(ts)))  # type: ignore[no-untyped-call, unused-ignore]


def _series(windows: list[dict[str, Any]], key: str) -> list[float]:
    return [_nan(w.get(key)) for w in windows]


def _nan(value: float | None) -> float:
    """None as NaN: a gap in the line, not a zero."""
    return math.nan if value is None else float(value)


def _finite(values: Iterable[float]) -> list[float]:
    return [v for v in values if not math.isnan(v)]


def _high_rate_limits(values: Sequence[float]) -> tuple[float, float]:
    return max(0.0, min([0.9, *_finite(values)]) - 0.05), 1.01


def _color(severity: str) -> str:
    return _SEVERITY_COLORS.get(severity, _OTHER_COLOR)
