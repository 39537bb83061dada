"""Inline SVG charts (standard library only): line charts over runs or windows, and
stacked bar charts.

A chart is markup to put in a page as it is: no script, no font, no image is fetched,
so a page of them opens from ``file://``. Every text (titles, series names, labels, run
names) is escaped and drawn as plain text. The x axis is categorical (runs, windows, alert
types), one slot per point, in the order given.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from .kit import esc

WIDTH = 760
HEIGHT = 250
_LEFT, _RIGHT, _TOP, _BOTTOM = 56, 16, 46, 50
_MAX_LABELS = 12  # x labels drawn at most; the others are in the points' tooltips
_LABEL_CHARS = 20
PALETTE = (
    "#1f77b4",
    "#ff7f0e",
    "#2ca02c",
    "#d62728",
    "#9467bd",
    "#8c564b",
    "#e377c2",
    "#7f7f7f",
    "#bcbd22",
    "#17becf",
)
INCOMPLETE = "#c62828"
BASELINE = "#5b8fbf"
SHADE = "#c62828"

CSS = """
figure.chart{margin:.6em 0}
figure.chart svg{max-width:100%;height:auto;font:12px system-ui,sans-serif}
figure.chart .axis{stroke:#999}
figure.chart .grid{stroke:#e4e4e4}
figure.chart a circle:hover,figure.chart a rect:hover{stroke-width:3}
"""


@dataclass(frozen=True)
class XPoint:
    """One slot of the x axis: a run, a window or a category."""

    label: str
    title: str = ""  # the tooltip (default: the label)
    href: str | None = None  # where its points link to (a relative path to a local page)
    incomplete: bool = False  # drawn hollow, labelled "incomplete"
    baseline: bool = False  # drawn as a square, labelled "baseline"
    shaded: bool = False  # its slot shaded (a window with a drift alert)


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[float | None]  # one per x slot; None is a gap in the line
    color: str | None = None  # default: the palette, in order
    dashed: bool = False


def line_chart(
    title: str,
    xs: Sequence[XPoint],
    series: Sequence[Series],
    *,
    percent: bool = False,
    low: float | None = None,
    high: float | None = None,
    unit: str = "",
    shade_label: str = "",
    empty: str = "no data yet",
) -> str:
    """A line chart, one line per series, one point per x slot. ``low``/``high`` fix the
    y range (else it fits the data); ``percent`` formats the axis as percentages."""
    values = [v for s in series for v in s.values if _finite(v)]
    lo, hi = _range([float(v) for v in values if v is not None], low, high)
    plot = _Plot(len(xs), lo, hi)
    parts = [_open(title), _legend(series, xs, shade_label)]
    parts += _shading(plot, xs)
    parts += _y_axis(plot, percent=percent, unit=unit)
    parts += _x_axis(plot, xs)
    if not values:
        parts.append(_note(empty))
    for index, one in enumerate(series):
        color = one.color or PALETTE[index % len(PALETTE)]
        parts += _line(plot, one, color, xs, percent=percent, unit=unit)
    return _close(parts)


def bar_chart(
    title: str,
    labels: Sequence[str],
    stacks: Sequence[Series],
    *,
    totals: bool = True,
    empty: str = "no data yet",
) -> str:
    """Stacked bars, one per label, one layer per series (in order, from the bottom);
    counts on an integer axis, each bar's total above it."""
    xs = [XPoint(label) for label in labels]
    sums = [
        sum(v or 0.0 for v in column) for column in zip(*(s.values for s in stacks), strict=True)
    ]
    if not stacks:
        sums = [0.0] * len(labels)
    top = max([1.0, *sums])
    top = float(math.ceil(top * 1.12))
    plot = _Plot(len(xs), 0.0, top)
    parts = [_open(title), _legend(stacks, [], "")]
    parts += _y_axis(plot, percent=False, unit="", integer=True)
    parts += _x_axis(plot, xs)
    if not any(sums):
        parts.append(_note(empty))
    width = min(48.0, plot.slot * 0.7)
    bottoms = [0.0] * len(labels)
    for index, stack in enumerate(stacks):
        color = stack.color or PALETTE[index % len(PALETTE)]
        for i, value in enumerate(stack.values):
            if not value:
                continue
            y0, y1 = plot.y(bottoms[i]), plot.y(bottoms[i] + value)
            parts.append(
                f'<rect x="{plot.x(i) - width / 2:.1f}" y="{y1:.1f}" width="{width:.1f}" '
                f'height="{max(0.0, y0 - y1):.1f}" fill="{esc(color)}">'
                f"<title>{esc(labels[i])}: {esc(stack.name)} {_count(value)}</title></rect>"
            )
            bottoms[i] += value
    if totals:
        for i, total in enumerate(sums):
            if total:
                parts.append(
                    f'<text x="{plot.x(i):.1f}" y="{plot.y(total) - 4:.1f}" '
                    f'text-anchor="middle">{_count(total)}</text>'
                )
    return _close(parts)


# --- pieces ---------------------------------------------------------------------------


class _Plot:
    """Maps slots and values to the SVG's coordinates."""

    def __init__(self, slots: int, low: float, high: float) -> None:
        self.slots = max(1, slots)
        self.low, self.high = low, high
        self.left, self.right = float(_LEFT), float(WIDTH - _RIGHT)
        self.top, self.bottom = float(_TOP), float(HEIGHT - _BOTTOM)
        self.slot = (self.right - self.left) / self.slots

    def x(self, index: int) -> float:
        return self.left + (index + 0.5) * self.slot

    def y(self, value: float) -> float:
        span = self.high - self.low or 1.0
        return self.bottom - (value - self.low) / span * (self.bottom - self.top)


def _open(title: str) -> str:
    return (
        # No xmlns: inline in HTML, the parser puts it in SVG's namespace (and the
        # page names no URL).
        f'<figure class="chart"><svg viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" '
        f'height="{HEIGHT}" role="img" '
        f'aria-label="{esc(title)}"><title>{esc(title)}</title>'
        f'<text x="4" y="16" font-weight="600" font-size="13">{esc(title)}</text>'
    )


def _close(parts: list[str]) -> str:
    return "".join(parts) + "</svg></figure>"


def _legend(series: Sequence[Series], xs: Sequence[XPoint], shade_label: str) -> str:
    """Keys in one row under the title: the series, then the marks used."""
    keys: list[tuple[str, str]] = []  # (swatch markup at x=0, text)
    for index, one in enumerate(series):
        color = esc(one.color or PALETTE[index % len(PALETTE)])
        dash = ' stroke-dasharray="4 3"' if one.dashed else ""
        swatch = f'<line x1="0" y1="-4" x2="14" y2="-4" stroke="{color}" stroke-width="2"{dash}/>'
        keys.append((swatch, one.name))
    if any(x.baseline for x in xs):
        keys.append((f'<rect x="3" y="-8" width="8" height="8" fill="{BASELINE}"/>', "baseline"))
    if any(x.incomplete for x in xs):
        swatch = (
            f'<circle cx="7" cy="-4" r="4" fill="#fff" stroke="{INCOMPLETE}" stroke-width="2"/>'
        )
        keys.append((swatch, "incomplete run"))
    if shade_label and any(x.shaded for x in xs):
        swatch = f'<rect x="0" y="-9" width="14" height="10" fill="{SHADE}" fill-opacity=".2"/>'
        keys.append((swatch, shade_label))
    out, x = [], 4.0
    for swatch, text in keys:
        out.append(
            f'<g class="key" transform="translate({x:.0f},34)">{swatch}'
            f'<text x="18" y="0">{esc(text)}</text></g>'
        )
        x += 34 + 7.5 * len(text)
    return "".join(out)


def _shading(plot: _Plot, xs: Sequence[XPoint]) -> list[str]:
    return [
        f'<rect class="shaded" x="{plot.x(i) - plot.slot / 2:.1f}" y="{plot.top:.1f}" '
        f'width="{plot.slot:.1f}" height="{plot.bottom - plot.top:.1f}" fill="{SHADE}" '
        'fill-opacity=".15"/>'
        for i, x in enumerate(xs)
        if x.shaded
    ]


def _y_axis(plot: _Plot, *, percent: bool, unit: str, integer: bool = False) -> list[str]:
    parts = []
    for tick in _ticks(plot.low, plot.high, integer=integer):
        y = plot.y(tick)
        parts.append(
            f'<line class="grid" x1="{plot.left:.1f}" y1="{y:.1f}" x2="{plot.right:.1f}" '
            f'y2="{y:.1f}"/><text x="{plot.left - 6:.1f}" y="{y + 4:.1f}" '
            f'text-anchor="end">{esc(_format(tick, percent=percent, unit=unit, axis=True))}</text>'
        )
    parts.append(
        f'<line class="axis" x1="{plot.left:.1f}" y1="{plot.bottom:.1f}" '
        f'x2="{plot.right:.1f}" y2="{plot.bottom:.1f}"/>'
    )
    return parts


def _x_axis(plot: _Plot, xs: Sequence[XPoint]) -> list[str]:
    step = max(1, math.ceil(len(xs) / _MAX_LABELS))
    parts = []
    for i, point in enumerate(xs):
        x = plot.x(i)
        if point.baseline:
            parts.append(
                f'<line x1="{x:.1f}" y1="{plot.top:.1f}" x2="{x:.1f}" y2="{plot.bottom:.1f}" '
                f'stroke="{BASELINE}" stroke-dasharray="2 3"/>'
            )
        marks = [
            m for m, on in (("baseline", point.baseline), ("incomplete", point.incomplete)) if on
        ]
        if i % step and not marks:
            continue
        label = (
            point.label
            if len(point.label) <= _LABEL_CHARS
            else point.label[: _LABEL_CHARS - 1] + "…"
        )
        parts.append(
            f'<text x="{x:.1f}" y="{plot.bottom + 15:.1f}" text-anchor="middle">'
            f"<title>{esc(point.title or point.label)}</title>{esc(label)}</text>"
        )
        for row, mark in enumerate(marks):
            color = INCOMPLETE if mark == "incomplete" else BASELINE
            parts.append(
                f'<text class="mark-{mark}" x="{x:.1f}" y="{plot.bottom + 29 + 12 * row:.1f}" '
                f'text-anchor="middle" fill="{color}" font-size="11">{mark}</text>'
            )
    return parts


def _line(
    plot: _Plot,
    series: Series,
    color: str,
    xs: Sequence[XPoint],
    *,
    percent: bool,
    unit: str,
) -> list[str]:
    color = esc(color)
    dash = ' stroke-dasharray="5 4"' if series.dashed else ""
    parts, run = [], []  # run: the points of the current unbroken stretch
    for i, value in enumerate([*series.values, None]):
        if _finite(value) and i < len(xs):
            assert value is not None
            run.append(f"{plot.x(i):.1f},{plot.y(float(value)):.1f}")
        elif run:
            if len(run) > 1:
                parts.append(
                    f'<polyline points="{" ".join(run)}" fill="none" stroke="{color}" '
                    f'stroke-width="2"{dash}/>'
                )
            run = []
    for i, (value, point) in enumerate(zip(series.values, xs, strict=False)):
        if not _finite(value):
            continue
        assert value is not None
        x, y = plot.x(i), plot.y(float(value))
        shown = _format(value, percent=percent, unit=unit)
        tip = f"{series.name}, {point.title or point.label}: {shown}"
        marks = [
            m for m, on in (("baseline", point.baseline), ("incomplete", point.incomplete)) if on
        ]
        tip += "".join(f" ({m})" for m in marks)
        stroke = ' stroke-width="2" stroke-dasharray="2 1.5"' if point.incomplete else ""
        if point.baseline:
            shape = (
                f'<rect x="{x - 5:.1f}" y="{y - 5:.1f}" width="10" height="10" '
                f'fill="{"#fff" if point.incomplete else color}" stroke="{color}"{stroke}>'
                f"<title>{esc(tip)}</title></rect>"
            )
        else:
            shape = (
                f'<circle cx="{x:.1f}" cy="{y:.1f}" r="4.5" '
                f'fill="{"#fff" if point.incomplete else color}" stroke="{color}"{stroke}>'
                f"<title>{esc(tip)}</title></circle>"
            )
        marker = f'<g class="{" ".join(["point", *marks])}">{shape}</g>'
        if point.href:
            marker = f'<a href="{esc(point.href)}">{marker}</a>'
        parts.append(marker)
    return parts


def _note(text: str) -> str:
    return (
        f'<text x="{(_LEFT + WIDTH - _RIGHT) / 2:.0f}" y="{(_TOP + HEIGHT - _BOTTOM) / 2:.0f}" '
        f'text-anchor="middle" fill="#777">{esc(text)}</text>'
    )


# --- numbers --------------------------------------------------------------------------


def _finite(value: float | None) -> bool:
    return value is not None and math.isfinite(value)


def _range(values: Sequence[float], low: float | None, high: float | None) -> tuple[float, float]:
    lo = min(values) if values else 0.0
    hi = max(values) if values else 1.0
    pad = (hi - lo) * 0.1 or abs(hi) * 0.1 or 1.0
    lo = low if low is not None else (0.0 if lo >= 0.0 and lo - pad < 0 else lo - pad)
    hi = high if high is not None else hi + pad
    if hi <= lo:
        hi = lo + 1.0
    return lo, hi


def _ticks(low: float, high: float, *, integer: bool = False) -> list[float]:
    """About five round values from low to high."""
    raw = (high - low) / 4
    if integer:
        raw = max(1.0, raw)
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    if integer:
        step = max(1.0, round(step))
    first = math.ceil(low / step - 1e-9) * step
    count = int((high - first) / step + 1e-9) + 1
    return [round(first + k * step, 10) for k in range(count)]


def _format(value: float, *, percent: bool, unit: str, axis: bool = False) -> str:
    if percent:
        return f"{value:.0%}" if axis else f"{value:.1%}"
    if unit == "$":
        return f"${value:.4g}" if not axis else f"${value:.3g}"
    text = f"{value:.3g}" if axis else f"{value:.4g}"
    return text + unit


def _count(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"
