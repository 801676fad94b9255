"""Server-side SVG plots for metric evidence: no JavaScript, no chart library.

The plot contract
=================

A metric row may carry a plot in ``Metric.details``, either one under ``"plot"`` or several
under ``"plots"`` (a list). The gallery renders every plot it understands and silently skips
anything malformed (a bad plot never breaks a page). Only the keys below are read; nothing
else in ``details`` is ever shown on a public page. Numbers must be finite (``NaN``,
``Infinity`` and ``null`` entries are skipped); every list is capped at ``MAX_POINTS``.

Common optional keys, for every kind::

    "title":   str   # caption above the plot (defaults to the metric's label)
    "x_label": str   # axis labels
    "y_label": str

``histogram`` — overlaid distributions on shared bin edges (e.g. real vs synthetic)::

    {"kind": "histogram",
     "edges":  [e0, e1, ..., en],                 # n + 1 increasing numbers
     "series": {"real": [c1, ..., cn],            # n counts or densities per series
                "synthetic": [c1, ..., cn]}}

    Each series is drawn as a translucent filled step outline, in series order.

``bars`` — one bar per label, with optional symmetric error bars (e.g. mean ± std)::

    {"kind": "bars",
     "labels": ["real", "synthetic"],
     "values": [0.8988, 0.8877],
     "errors": [0.004, 0.006]}                     # optional; same length; >= 0

``scatter`` — points, one colour per series (e.g. per-image vessel fraction vs width)::

    {"kind": "scatter",
     "series": {"real": {"x": [...], "y": [...]},
                "synthetic": {"x": [...], "y": [...]}}}

``distribution`` — one box-and-whisker row per series, from summary numbers::

    {"kind": "distribution",
     "series": {"real": {"min": 0.0, "q1": 0.1, "median": 0.2, "q3": 0.3, "max": 0.5},
                "synthetic": {...}}}             # "mean" optional, drawn as a diamond

Series (and bar labels) named ``real`` are blue and ``synthetic`` orange, also when the word
appears inside a longer label ("trained on synthetic"); other names take the next colour of
the palette.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from html import escape
from itertools import count
from typing import Any

from markupsafe import Markup

MAX_POINTS = 4096
WIDTH, HEIGHT = 520, 280
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 56, 16, 30, 46
PALETTE = ("#1f5fbf", "#c25e00", "#2a8a4a", "#8a3ab9", "#a0522d", "#4d4d4d")
NAMED = {"real": PALETTE[0], "synthetic": PALETTE[1]}
ROW_LABEL_CHARS = 64  # a distribution row's label, about the plot area's width
_ids = count(1)


def metric_plots(details: dict[str, Any] | None, *, label: str) -> list[Markup]:
    """Every plot of a metric's details, rendered; malformed ones are left out."""
    if not isinstance(details, dict):
        return []
    specs: list[Any] = []
    if "plot" in details:
        specs.append(details["plot"])
    if isinstance(details.get("plots"), list):
        specs.extend(details["plots"])
    rendered = (render_plot(spec, title=label) for spec in specs)
    return [svg for svg in rendered if svg is not None]


def render_plot(spec: Any, *, title: str = "") -> Markup | None:
    if not isinstance(spec, dict):
        return None
    renderers = {
        "histogram": histogram_svg,
        "bars": bars_svg,
        "scatter": scatter_svg,
        "distribution": distribution_svg,
    }
    renderer = renderers.get(spec.get("kind"))  # type: ignore[arg-type]
    if renderer is None:
        return None
    caption = _text(spec.get("title")) or title
    try:
        return renderer(spec, title=caption)
    except (TypeError, ValueError, KeyError):
        return None


# --------------------------------------------------------------------------- the kinds


def histogram_svg(spec: dict[str, Any], *, title: str) -> Markup | None:
    edges = _numbers(spec.get("edges"), allow_none=False)
    series = spec.get("series")
    if edges is None or len(edges) < 2 or not isinstance(series, dict) or not series:
        return None
    if any(b <= a for a, b in zip(edges, edges[1:], strict=False)):
        return None
    bins = len(edges) - 1
    curves: list[tuple[str, list[float]]] = []
    for name, raw in list(series.items())[: len(PALETTE)]:
        values = _numbers(raw, allow_none=True)
        if values is None or len(values) != bins:
            return None
        curves.append((str(name), [0.0 if v is None else v for v in values]))
    top = max((max(v) for _, v in curves), default=0.0)
    frame = _Frame(x=(edges[0], edges[-1]), y=(min(0.0, *(min(v) for _, v in curves)), top))
    parts = frame.axes(spec)
    for colour, (_name, values) in zip(_colours(n for n, _ in curves), curves, strict=True):
        points = [(frame.px(edges[0]), frame.py(0.0))]
        for i, value in enumerate(values):
            points += [
                (frame.px(edges[i]), frame.py(value)),
                (frame.px(edges[i + 1]), frame.py(value)),
            ]
        points.append((frame.px(edges[-1]), frame.py(0.0)))
        path = "M" + " L".join(f"{x:.1f},{y:.1f}" for x, y in points)
        parts.append(
            f'<path d="{path}" fill="{colour}" fill-opacity="0.28" stroke="{colour}" '
            'stroke-width="1.5" stroke-linejoin="round"/>'
        )
    return _svg(title, parts, _legend(n for n, _ in curves), kind="histogram")


def bars_svg(spec: dict[str, Any], *, title: str) -> Markup | None:
    labels = spec.get("labels")
    values = _numbers(spec.get("values"), allow_none=True)
    if not isinstance(labels, list) or values is None or len(labels) != len(values) or not labels:
        return None
    errors_raw = spec.get("errors")
    errors = (
        _numbers(errors_raw, allow_none=True) if errors_raw is not None else [None] * len(values)
    )
    if errors is None or len(errors) != len(values):
        return None
    highs = [(v or 0.0) + abs(e or 0.0) for v, e in zip(values, errors, strict=True)]
    lows = [min(0.0, (v or 0.0) - abs(e or 0.0)) for v, e in zip(values, errors, strict=True)]
    frame = _Frame(x=(0.0, float(len(values))), y=(min(lows), max(highs)), x_ticks=False)
    parts = frame.axes(spec)
    slot = frame.inner_w / len(values)
    bar_w = min(slot * 0.6, 90.0)
    colours = _colours(str(label) for label in labels)
    for i, (label, value, error) in enumerate(zip(labels, values, errors, strict=True)):
        cx = frame.px(i + 0.5)
        parts.append(
            f'<text x="{cx:.1f}" y="{frame.bottom + 16}" text-anchor="middle" class="tick">'
            f"{escape(_clip(str(label), max(8, int(slot / 7))))}</text>"
        )
        if value is None:
            parts.append(
                f'<text x="{cx:.1f}" y="{frame.py(0) - 6:.1f}" text-anchor="middle" '
                'class="tick">n/a</text>'
            )
            continue
        y0, y1 = sorted((frame.py(0.0), frame.py(value)))
        parts.append(
            f'<rect x="{cx - bar_w / 2:.1f}" y="{y0:.1f}" width="{bar_w:.1f}" '
            f'height="{max(y1 - y0, 0.5):.1f}" fill="{colours[i]}" fill-opacity="0.85">'
            f"<title>{escape(str(label))}: {_fmt(value)}"
            f"{'' if error is None else ' ± ' + _fmt(abs(error))}</title></rect>"
        )
        if error:
            lo, hi = frame.py(value - abs(error)), frame.py(value + abs(error))
            cap = bar_w / 4
            parts.append(
                f'<path class="error" d="M{cx:.1f},{lo:.1f} V{hi:.1f} M{cx - cap:.1f},{lo:.1f} '
                f'H{cx + cap:.1f} M{cx - cap:.1f},{hi:.1f} H{cx + cap:.1f}" stroke="#1a1a1a" '
                'stroke-width="1.5" fill="none"/>'
            )
    return _svg(title, parts, "", kind="bars")


def scatter_svg(spec: dict[str, Any], *, title: str) -> Markup | None:
    series = spec.get("series")
    if not isinstance(series, dict) or not series:
        return None
    clouds: list[tuple[str, list[tuple[float, float]]]] = []
    for name, raw in list(series.items())[: len(PALETTE)]:
        if not isinstance(raw, dict):
            return None
        xs, ys = _numbers(raw.get("x"), allow_none=True), _numbers(raw.get("y"), allow_none=True)
        if xs is None or ys is None or len(xs) != len(ys):
            return None
        clouds.append(
            (
                str(name),
                [(x, y) for x, y in zip(xs, ys, strict=True) if x is not None and y is not None],
            )
        )
    every = [p for _, pts in clouds for p in pts]
    if not every:
        return None
    frame = _Frame(
        x=(min(x for x, _ in every), max(x for x, _ in every)),
        y=(min(y for _, y in every), max(y for _, y in every)),
    )
    parts = frame.axes(spec)
    for colour, (_name, pts) in zip(_colours(n for n, _ in clouds), clouds, strict=True):
        parts.extend(
            f'<circle cx="{frame.px(x):.1f}" cy="{frame.py(y):.1f}" r="3" fill="{colour}" '
            'fill-opacity="0.7"/>'
            for x, y in pts
        )
    return _svg(title, parts, _legend(n for n, _ in clouds), kind="scatter")


def distribution_svg(spec: dict[str, Any], *, title: str) -> Markup | None:
    series = spec.get("series")
    if not isinstance(series, dict) or not series:
        return None
    boxes: list[tuple[str, dict[str, float]]] = []
    for name, raw in list(series.items())[: len(PALETTE)]:
        if not isinstance(raw, dict):
            return None
        box: dict[str, float] = {}
        for key in ("min", "q1", "median", "q3", "max", "mean"):
            value = raw.get(key)
            if value is None and key == "mean":
                continue
            number = _number(value)
            if number is None:
                return None
            box[key] = number
        if not box["min"] <= box["q1"] <= box["median"] <= box["q3"] <= box["max"]:
            return None
        boxes.append((str(name), box))
    low = min(b["min"] for _, b in boxes)
    high = max(b["max"] for _, b in boxes)
    frame = _Frame(x=(low, high), y=(0.0, float(len(boxes))), y_ticks=False)
    parts = frame.axes(spec)
    row_h = frame.inner_h / len(boxes)
    for i, (colour, (name, b)) in enumerate(zip(_colours(n for n, _ in boxes), boxes, strict=True)):
        cy = frame.top + row_h * (i + 0.5)
        half = min(row_h * 0.3, 22.0)
        # Above its box, not in the left margin: series names are phrases, and a margin
        # wide enough for them would squeeze the boxes.
        parts.append(
            f'<text x="{frame.left + 4}" y="{cy - half - 4:.1f}" class="tick">'
            f"{escape(_clip(name, ROW_LABEL_CHARS))}</text>"
            f'<path d="M{frame.px(b["min"]):.1f},{cy:.1f} H{frame.px(b["q1"]):.1f} '
            f"M{frame.px(b['q3']):.1f},{cy:.1f} H{frame.px(b['max']):.1f} "
            f"M{frame.px(b['min']):.1f},{cy - half / 2:.1f} v{half:.1f} "
            f'M{frame.px(b["max"]):.1f},{cy - half / 2:.1f} v{half:.1f}" '
            f'stroke="{colour}" stroke-width="1.5" fill="none"/>'
            f'<rect x="{frame.px(b["q1"]):.1f}" y="{cy - half:.1f}" '
            f'width="{max(frame.px(b["q3"]) - frame.px(b["q1"]), 1):.1f}" height="{2 * half:.1f}" '
            f'fill="{colour}" fill-opacity="0.25" stroke="{colour}" stroke-width="1.5">'
            f"<title>{escape(name)}: median {_fmt(b['median'])}, IQR {_fmt(b['q1'])}–"
            f"{_fmt(b['q3'])}, range {_fmt(b['min'])}–{_fmt(b['max'])}</title></rect>"
            f'<path d="M{frame.px(b["median"]):.1f},{cy - half:.1f} v{2 * half:.1f}" '
            f'stroke="{colour}" stroke-width="3"/>'
        )
        if "mean" in b:
            mx = frame.px(b["mean"])
            parts.append(f'<path d="M{mx:.1f},{cy - 5:.1f} l5,5 l-5,5 l-5,-5 z" fill="#1a1a1a"/>')
    return _svg(title, parts, "", kind="distribution")


# --------------------------------------------------------------------------- helpers


class _Frame:
    """Maps data coordinates into the plot area and draws the axes."""

    def __init__(
        self,
        *,
        x: tuple[float, float],
        y: tuple[float, float],
        x_ticks: bool = True,
        y_ticks: bool = True,
    ) -> None:
        self.left, self.top = MARGIN_LEFT, MARGIN_TOP
        self.right, self.bottom = WIDTH - MARGIN_RIGHT, HEIGHT - MARGIN_BOTTOM
        self.inner_w, self.inner_h = self.right - self.left, self.bottom - self.top
        self.x_ticks_on, self.y_ticks_on = x_ticks, y_ticks
        self.x0, self.x1 = _span(*x)
        self.y0, self.y1 = _span(*y)
        if y_ticks:
            ticks = nice_ticks(self.y0, self.y1)
            self.y0, self.y1 = min(self.y0, ticks[0]), max(self.y1, ticks[-1])

    def px(self, x: float) -> float:
        return self.left + (x - self.x0) / (self.x1 - self.x0) * self.inner_w

    def py(self, y: float) -> float:
        return self.bottom - (y - self.y0) / (self.y1 - self.y0) * self.inner_h

    def axes(self, spec: dict[str, Any]) -> list[str]:
        parts = [
            f'<path class="axis" d="M{self.left},{self.top} V{self.bottom} H{self.right}" '
            'stroke="#5b6570" fill="none"/>'
        ]
        if self.y_ticks_on:
            for t in nice_ticks(self.y0, self.y1):
                y = self.py(t)
                parts.append(
                    f'<path d="M{self.left},{y:.1f} H{self.right}" stroke="#e3e7ec"/>'
                    f'<text x="{self.left - 6}" y="{y + 4:.1f}" text-anchor="end" '
                    f'class="tick">{_fmt(t)}</text>'
                )
        if self.x_ticks_on:
            # The x range is the data's own (a histogram ends at its last edge), so ticks
            # that nice_ticks rounds outside it are dropped rather than drawn off the axis.
            tolerance = (self.x1 - self.x0) * 1e-9
            for t in nice_ticks(self.x0, self.x1):
                if not self.x0 - tolerance <= t <= self.x1 + tolerance:
                    continue
                x = self.px(t)
                parts.append(
                    f'<path d="M{x:.1f},{self.bottom} v4" stroke="#5b6570"/>'
                    f'<text x="{x:.1f}" y="{self.bottom + 16}" text-anchor="middle" '
                    f'class="tick">{_fmt(t)}</text>'
                )
        x_label, y_label = _text(spec.get("x_label")), _text(spec.get("y_label"))
        if x_label:
            parts.append(
                f'<text x="{(self.left + self.right) / 2:.1f}" y="{HEIGHT - 8}" '
                f'text-anchor="middle" class="label">{escape(x_label)}</text>'
            )
        if y_label:
            parts.append(
                f'<text transform="translate(14 {(self.top + self.bottom) / 2:.1f}) rotate(-90)" '
                f'text-anchor="middle" class="label">{escape(y_label)}</text>'
            )
        return parts


def nice_ticks(low: float, high: float, *, target: int = 5) -> list[float]:
    """Round tick values (1, 2, 2.5 or 5 × 10^k steps) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)):
        return [0.0]
    if high <= low:
        return [low]
    raw = (high - low) / target
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    start = math.floor(low / step + 1e-9) * step
    ticks = []
    value = start
    while value <= high + step * 1e-9 and len(ticks) < 20:
        ticks.append(round(value, 12))
        value += step
    if ticks[-1] < high - step * 1e-9:
        ticks.append(round(value, 12))
    return ticks


def _span(low: float, high: float) -> tuple[float, float]:
    if high > low:
        return low, high
    pad = abs(low) * 0.1 or 1.0
    return low - pad, high + pad


def _svg(title: str, parts: list[str], legend: str, *, kind: str) -> Markup:
    uid = next(_ids)
    caption = escape(title or "Plot")
    return Markup(
        f'<svg class="plot plot-{kind}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
        f'aria-labelledby="plot-title-{uid}" xmlns="http://www.w3.org/2000/svg" '
        f'preserveAspectRatio="xMidYMid meet">'
        f'<title id="plot-title-{uid}">{caption}</title>'
        f'<text x="{MARGIN_LEFT}" y="18" class="caption">{caption}</text>'
        + "".join(parts)
        + legend
        + "</svg>"
    )


def _legend(names: Iterable[str]) -> str:
    names = list(names)
    out = []
    x = WIDTH - MARGIN_RIGHT
    for colour, name in reversed(list(zip(_colours(names), names, strict=True))):
        label = escape(_clip(name, 14))
        width = 16 + 7 * len(_clip(name, 14))
        x -= width
        out.append(
            f'<rect x="{x}" y="8" width="10" height="10" fill="{colour}" fill-opacity="0.6" '
            f'stroke="{colour}"/><text x="{x + 14}" y="17" class="legend">{label}</text>'
        )
        x -= 10
    return "".join(out)


def _colours(names: Iterable[str]) -> list[str]:
    """Real is blue and synthetic orange (also inside a longer label); others take turns."""
    spare = iter(p for p in PALETTE if p not in NAMED.values())
    out = []
    for name in names:
        lowered = name.lower()
        known = next((c for key, c in NAMED.items() if key == lowered), None)
        if known is None:
            known = NAMED["synthetic"] if "synthetic" in lowered else None
        if known is None and "real" in lowered.split():
            known = NAMED["real"]
        out.append(known or next(spare, PALETTE[-1]))
    return out


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    number = float(value)
    return number if math.isfinite(number) else None


def _numbers(raw: Any, *, allow_none: bool) -> list[Any] | None:
    """The list as floats (None where an entry is not a finite number), or None if unusable."""
    if not isinstance(raw, Sequence) or isinstance(raw, str) or len(raw) > MAX_POINTS:
        return None
    values = [_number(v) for v in raw]
    if not allow_none and any(v is None for v in values):
        return None
    return values


def _text(value: Any) -> str:
    return _clip(value, 80) if isinstance(value, str) else ""


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _fmt(value: float) -> str:
    if value == 0:
        return "0"
    if abs(value) >= 1e4 or abs(value) < 1e-3:
        return f"{value:.2g}"
    return f"{value:.4g}"
