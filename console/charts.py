"""Charts as server-rendered SVG: no JavaScript, no library, nothing fetched, so they draw offline.

A `Chart` is a title, one label per time bucket and a few series; `render()` returns a <figure> with the
SVG (role="img", a <title> and a <desc> that says what it shows), a legend, and a <details> holding the
same numbers as a table for screen readers and keyboard users. Colours are CSS classes
(`console-tone-<name>`) that console.css maps to the admin's variables, so the charts follow its light and
dark themes. This module is pure: data in, markup out.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape  # Django's escape does the same, with lazy-string handling the charts do not need
from typing import Literal

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

Number = float | int
Formatter = Callable[[Number], str]

WIDTH = 600
HEIGHT = 220
MARGIN_LEFT = 60
MARGIN_RIGHT = 12
MARGIN_TOP = 12
MARGIN_BOTTOM = 30
X_LABELS = 6


def plain(value: Number) -> str:
    """1234 → "1,234"; 12.345 → "12.3"."""
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.1f}"


def compact(value: Number) -> str:
    """Axis labels: 950, 1.2k, 3.4M."""
    magnitude = abs(value)
    for limit, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if magnitude >= limit:
            return f"{value / limit:.3g}{suffix}"
    return f"{value:.3g}" if not float(value).is_integer() else str(int(value))


@dataclass(frozen=True)
class Series:
    name: str
    values: Sequence[Number | None]  # one per label; None: nothing to draw (a line has a gap there)
    tone: str  # the CSS class suffix that colours it: console-tone-<tone>


@dataclass(frozen=True)
class Chart:
    slug: str  # unique on the page: the ids of its title and description
    title: str
    labels: Sequence[str]  # one per bucket, oldest first
    series: Sequence[Series]
    kind: Literal["bars", "lines"] = "bars"  # bars are stacked
    unit: str = ""  # words after the numbers in the description ("requests", "ms")
    integer: bool = True  # axis steps are whole numbers
    additive: bool = True  # the table gets a total row
    value_format: Formatter = plain  # the table, the tooltips and the description
    tick_format: Formatter = compact  # the y axis
    empty_text: str = "No data in this window"

    def is_empty(self) -> bool:
        return not any(value for series in self.series for value in series.values if value)

    def peak(self) -> float:
        """The highest point drawn: a stack's total for bars, the highest value for lines."""
        if self.kind == "bars":
            stacks = [sum(s.values[i] or 0 for s in self.series) for i in range(len(self.labels))]
            return float(max(stacks, default=0))
        return float(max((v for s in self.series for v in s.values if v is not None), default=0))


def nice_ticks(peak: float, *, count: int = 4, integer: bool = False) -> list[float]:
    """Evenly spaced axis values from 0 to at least `peak` in steps of 1, 2, 2.5 or 5 times a power of ten."""
    if peak <= 0 or not math.isfinite(peak):
        return [0.0, 1.0]
    raw = peak / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = 10 * magnitude
    for multiple in (1, 2, 2.5, 5, 10):
        if multiple * magnitude >= raw:
            step = multiple * magnitude
            break
    if integer and step < 1:
        step = 1.0
    if integer and not float(step).is_integer():  # 2.5 does not suit counts
        step = math.ceil(step)
    steps = math.ceil(peak / step - 1e-9)
    return [round(i * step, 12) for i in range(steps + 1)]


def label_positions(count: int, wanted: int = X_LABELS) -> list[int]:
    """Which of `count` buckets get a label under the x axis: the first, the last and evenly between."""
    if count <= 0:
        return []
    if count <= wanted:
        return list(range(count))
    return sorted({round(i * (count - 1) / (wanted - 1)) for i in range(wanted)})


def _n(value: float) -> str:
    text = f"{value:.1f}"
    return text[:-2] if text.endswith(".0") else text


class _Frame:
    """Where the plot area is, and how values and buckets map onto it."""

    def __init__(self, chart: Chart, top: float) -> None:
        self.left = MARGIN_LEFT
        self.right = WIDTH - MARGIN_RIGHT
        self.top_y = MARGIN_TOP
        self.bottom = HEIGHT - MARGIN_BOTTOM
        self.top_value = top
        self.count = max(1, len(chart.labels))
        self.slot = (self.right - self.left) / self.count

    def y(self, value: float) -> float:
        return self.bottom - (self.bottom - self.top_y) * (value / self.top_value)

    def x_center(self, index: int) -> float:
        return self.left + self.slot * (index + 0.5)


def _grid(chart: Chart, frame: _Frame, ticks: list[float]) -> str:
    parts = []
    for tick in ticks:
        y = _n(frame.y(tick))
        parts.append(f'<line class="console-grid" x1="{frame.left}" x2="{frame.right}" y1="{y}" y2="{y}"/>')
        parts.append(f'<text class="console-tick" x="{frame.left - 6}" y="{y}" text-anchor="end" '
                     f'dominant-baseline="middle">{escape(chart.tick_format(tick))}</text>')
    for index in label_positions(len(chart.labels)):
        x = _n(frame.x_center(index))
        anchor = "start" if index == 0 and len(chart.labels) > 1 else (
            "end" if index == len(chart.labels) - 1 and len(chart.labels) > 1 else "middle")
        parts.append(f'<text class="console-tick" x="{x}" y="{HEIGHT - 8}" text-anchor="{anchor}">'
                     f'{escape(chart.labels[index])}</text>')
    parts.append(f'<line class="console-axis" x1="{frame.left}" x2="{frame.right}" '
                 f'y1="{frame.bottom}" y2="{frame.bottom}"/>')
    return "".join(parts)


def _bars(chart: Chart, frame: _Frame) -> str:
    gap = min(2.0, frame.slot * 0.2)
    width = _n(max(0.5, frame.slot - gap))
    # Stacks are built bucket by bucket; each series keeps its own group (one colour, one legend entry).
    groups: list[list[str]] = [[] for _ in chart.series]
    for index, label in enumerate(chart.labels):
        base = 0.0
        for position, series in enumerate(chart.series):
            value = series.values[index] or 0
            if value <= 0:
                continue
            y_top, y_bottom = frame.y(base + value), frame.y(base)
            base += value
            x = frame.left + frame.slot * index + gap / 2
            groups[position].append(
                f'<rect class="console-bar" x="{_n(x)}" y="{_n(y_top)}" width="{width}" '
                f'height="{_n(max(0.5, y_bottom - y_top))}" data-value="{value}">'
                f"<title>{escape(label)}: {escape(series.name)} {escape(chart.value_format(value))}</title></rect>")
    return "".join(f'<g class="console-tone-{escape(series.tone)}" data-series="{escape(series.name)}">'
                   f'{"".join(rects)}</g>' for series, rects in zip(chart.series, groups, strict=True))


def _lines(chart: Chart, frame: _Frame) -> str:
    parts = []
    for series in chart.series:
        segments: list[list[tuple[float, float]]] = [[]]
        for index, value in enumerate(series.values):
            if value is None:
                if segments[-1]:
                    segments.append([])
                continue
            segments[-1].append((frame.x_center(index), frame.y(value)))
        shapes = []
        for points in segments:
            if len(points) == 1:
                (x, y), = points
                shapes.append(f'<circle class="console-dot" cx="{_n(x)}" cy="{_n(y)}" r="2.5"/>')
            elif points:
                path = " ".join(f"{'M' if i == 0 else 'L'}{_n(x)} {_n(y)}" for i, (x, y) in enumerate(points))
                shapes.append(f'<path class="console-line" d="{path}"/>')
        parts.append(f'<g class="console-tone-{escape(series.tone)}" data-series="{escape(series.name)}">'
                     f'{"".join(shapes)}</g>')
    return "".join(parts)


def describe(chart: Chart) -> str:
    """The chart in one or two sentences, for its <desc> (what a screen reader announces)."""
    if not chart.labels:
        return f"{chart.title}: {chart.empty_text}."
    span = f"{len(chart.labels)} buckets from {chart.labels[0]} to {chart.labels[-1]}"
    if chart.is_empty():
        return f"{chart.title}, {span}: {chart.empty_text.lower()}."
    unit = f" {chart.unit}" if chart.unit else ""
    sentences = []
    for series in chart.series:
        values = [v for v in series.values if v is not None]
        if not values:
            continue
        if chart.additive:
            peak_index = max(range(len(series.values)), key=lambda i: series.values[i] or 0)
            sentences.append(f"{series.name}: {chart.value_format(sum(values))}{unit} in total, at most "
                             f"{chart.value_format(max(values))} ({chart.labels[peak_index]})")
        else:
            sentences.append(f"{series.name}: from {chart.value_format(min(values))} to "
                             f"{chart.value_format(max(values))}{unit}")
    return f"{chart.title}, {span}. " + "; ".join(sentences) + "."


def svg(chart: Chart) -> SafeString:
    frame = _Frame(chart, 1.0)
    ticks = nice_ticks(chart.peak(), integer=chart.integer)
    frame.top_value = ticks[-1]
    title_id, desc_id = f"{chart.slug}-title", f"{chart.slug}-desc"
    body = _grid(chart, frame, ticks)
    if chart.is_empty():
        body += (f'<text class="console-empty" x="{_n((frame.left + frame.right) / 2)}" '
                 f'y="{_n((frame.top_y + frame.bottom) / 2)}" text-anchor="middle">{escape(chart.empty_text)}</text>')
    else:
        body += _bars(chart, frame) if chart.kind == "bars" else _lines(chart, frame)
    return mark_safe(  # every value above is escaped or a number
        f'<svg class="console-svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="{escape(title_id)} {escape(desc_id)}" xmlns="http://www.w3.org/2000/svg">'
        f'<title id="{escape(title_id)}">{escape(chart.title)}</title>'
        f'<desc id="{escape(desc_id)}">{escape(describe(chart))}</desc>{body}</svg>')


def legend(chart: Chart) -> SafeString:
    return format_html('<ul class="console-legend" aria-hidden="true">{}</ul>', format_html_join(
        "", '<li class="console-tone-{}"><span class="console-swatch"></span>{}</li>',
        ((series.tone, series.name) for series in chart.series)))


def table(chart: Chart) -> SafeString:
    """The numbers of the chart: one row per bucket, one column per series (and a total row if additive)."""
    head = "".join(f'<th scope="col">{escape(series.name)}</th>' for series in chart.series)
    rows = "".join(
        f'<tr><th scope="row">{escape(label)}</th>'
        + "".join(f"<td>{escape(_cell(chart, series.values[index]))}</td>" for series in chart.series) + "</tr>"
        for index, label in enumerate(chart.labels))
    foot = ""
    if chart.additive:
        totals = "".join(f"<td>{escape(chart.value_format(sum(v for v in series.values if v is not None)))}</td>"
                         for series in chart.series)
        foot = f'<tfoot><tr><th scope="row">Total</th>{totals}</tr></tfoot>'
    return mark_safe(  # every value above is escaped
        f'<details class="console-numbers"><summary>The numbers: {escape(chart.title)}</summary>'
        f'<table data-chart="{escape(chart.slug)}"><caption>{escape(chart.title)}</caption>'
        f'<thead><tr><th scope="col">Time (UTC)</th>{head}</tr></thead><tbody>{rows}</tbody>{foot}</table></details>')


def _cell(chart: Chart, value: Number | None) -> str:
    return "—" if value is None else chart.value_format(value)


def render(chart: Chart) -> SafeString:
    """The whole figure: heading, SVG, legend and the table of numbers."""
    return format_html(
        '<figure class="console-chart" id="{}" data-kind="{}"><figcaption>{}</figcaption>{}{}{}</figure>',
        chart.slug, chart.kind, chart.title, svg(chart), legend(chart), table(chart))
