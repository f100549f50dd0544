"""A self-contained HTML report: headings, text, verdicts, tables, SVG charts and images (GIF/PNG).

No plotting dependency: charts are written as inline SVG (``line_chart`` for curves with optional
interval bands, ``interval_chart`` for rates with their confidence intervals), so a report opens
in any browser straight from disk, next to the GIFs it links to. ``Report.write`` writes to a
temporary name and renames, so an interrupted run never leaves half a report.
"""

from __future__ import annotations

import html
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from worldmodel.files import write_text_atomic

# Colour-blind-safe palette (Okabe–Ito), in the order series are drawn.
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#000000")
# Each series also gets its own dash pattern, so a line drawn over another stays visible.
DASHES = ("", "7 4", "2 3", "10 3 2 3")

Series = Mapping[str, tuple[Sequence[float], Sequence[float]]]
Bands = Mapping[str, tuple[Sequence[float], Sequence[float]]]


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering ``[lo, hi]``."""
    if not math.isfinite(lo) or not math.isfinite(hi) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    first = math.ceil(lo / step - 1e-9) * step
    return [first + k * step for k in range(int((hi - first) / step + 1e-9) + 1)]


def _log_ticks(lo: float, hi: float) -> list[float]:
    """Ticks of a log10 axis spanning ``[lo, hi]`` (log10 units): decades, with 2 and 5 between
    them when fewer than three decades show."""
    decades = list(range(math.ceil(lo - 1e-9), math.floor(hi + 1e-9) + 1))
    if len(decades) >= 3:
        return [float(d) for d in decades]
    fine = [d + math.log10(m) for d in range(math.floor(lo), math.ceil(hi) + 1) for m in (1, 2, 5)]
    ticks = [t for t in fine if lo - 1e-9 <= t <= hi + 1e-9]
    return ticks if len(ticks) >= 2 else _ticks(lo, hi)


def _fmt(v: float) -> str:
    """A tick label: 4 significant digits, ``k`` / ``M`` for thousands and millions."""
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.3g}M"
    if a >= 1e4:
        return f"{v / 1e3:.3g}k"
    return f"{v:.4g}"


def _finite_pairs(xs: Sequence[float], ys: Sequence[float], log_y: bool) -> list[tuple[float, float]]:
    pts = [(float(x), float(y)) for x, y in zip(xs, ys, strict=True)]
    if log_y:
        pts = [(x, math.log10(y)) for x, y in pts if y > 0]
    return [(x, y) for x, y in pts if math.isfinite(x) and math.isfinite(y)]


def _clean_series(series: Series, log_y: bool) -> dict[str, list[tuple[float, float]]]:
    clean = {}
    for name, (xs, ys) in series.items():
        if len(xs) != len(ys):
            raise ValueError(f"series {name!r}: {len(xs)} x values but {len(ys)} y values")
        clean[name] = _finite_pairs(xs, ys, log_y)
    return clean


def _clean_bands(bands: Bands, series: Series, log_y: bool) -> dict[str, list[tuple[float, float, float]]]:
    """``{name: [(x, low, high)]}`` of the finite bounds, at the x values of series ``name``."""
    shades = {}
    for name, (lows, highs) in bands.items():
        if name not in series:
            raise ValueError(f"band {name!r} has no series of that name")
        xs = series[name][0]
        if not len(lows) == len(highs) == len(xs):
            raise ValueError(f"band {name!r}: {len(lows)}/{len(highs)} bounds for {len(xs)} x values")
        his = dict(_finite_pairs(xs, highs, log_y))
        shades[name] = [(x, lo, his[x]) for x, lo in _finite_pairs(xs, lows, log_y) if x in his]
    return shades


def _y_limits(ys: list[float], y_range: tuple[float, float] | None, log_y: bool) -> tuple[float, float]:
    if y_range is not None:
        y0, y1 = (math.log10(v) if v > 0 else -math.inf for v in y_range) if log_y else map(float, y_range)
        if not (math.isfinite(y0) and math.isfinite(y1) and y1 > y0):
            raise ValueError(f"y_range {y_range}: needs finite low < high (positive on a log axis)")
        return y0, y1
    y0, y1 = min(ys), max(ys)
    if y1 == y0:
        y0, y1 = y0 - 1, y1 + 1
    pad = 0.05 * (y1 - y0)
    return y0 - pad, y1 + pad


def _same_pixels(clean: dict[str, list[tuple[float, float]]], sy) -> list[tuple[str, list[str], str]]:
    """``[(drawn series, the series it stands for, legend text)]``: a series whose every point lies
    within half a pixel of an earlier one's (same x values) joins it, as ``a = b`` (equal values)
    or ``a ≈ b``."""
    groups: dict[str, tuple[list[str], bool]] = {}  # drawn series -> (names it stands for, all equal)
    for name, pts in clean.items():
        for kept, (names, exact) in groups.items():
            other = clean[kept]
            if pts and [x for x, _ in pts] == [x for x, _ in other]:
                if max(abs(sy(a[1]) - sy(b[1])) for a, b in zip(pts, other, strict=True)) < 0.5:
                    groups[kept] = ([*names, name], exact and pts == other)
                    break
        else:
            groups[name] = ([name], True)
    return [(kept, names, (" = " if exact else " ≈ ").join(names)) for kept, (names, exact) in groups.items()]


def _band_marks(shades: dict[str, list[tuple[float, float, float]]], colours: dict[str, str], sx, sy):
    """A shaded polygon per band (an error bar where it has one point)."""
    out = []
    for name, shade in shades.items():
        tag = f'data-band="{html.escape(name)}"'
        if len(shade) > 1:
            ring = [(x, hi) for x, _, hi in shade] + [(x, lo) for x, lo, _ in reversed(shade)]
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in ring)
            fill = f'fill="{colours[name]}" fill-opacity="0.15" stroke="none"'
            out.append(f'<polygon points="{path}" {fill} {tag}/>')
        for x, lo, hi in shade if len(shade) == 1 else []:
            out.append(
                f'<line x1="{sx(x):.1f}" y1="{sy(lo):.1f}" x2="{sx(x):.1f}" y2="{sy(hi):.1f}" '
                f'stroke="{colours[name]}" stroke-opacity="0.5" stroke-width="3" {tag}/>'
            )
    return out


def line_chart(
    series: Series,
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    width: int = 520,
    height: int = 300,
    log_y: bool = False,
    y_range: tuple[float, float] | None = None,
    bands: Bands | None = None,
) -> str:
    """An SVG line chart of ``{name: (xs, ys)}``; non-finite points are left out.

    Returns the ``<svg>`` element as a string (inline it in HTML or save it as ``.svg``).

    - ``log_y`` plots ``log10(y)`` of the positive values (axis labels show ``y``).
    - ``y_range=(lo, hi)`` fixes the y axis (e.g. ``(0, 1)`` for rates) instead of fitting the data.
    - ``bands={name: (lows, highs)}`` shades an interval around series ``name`` (same x values).
    - Series that would be drawn on the same pixels (every y within half a pixel of an earlier
      series' at the same x values) are drawn once, under a joint legend entry ``a = b`` when the
      values are equal and ``a ≈ b`` otherwise, so no line hides under another unsaid. The others
      get their own colour and dash pattern, so lines that cross or touch stay told apart.

    Every line is a ``<polyline>`` with a ``data-series`` attribute holding its legend text.
    """
    if not series:
        raise ValueError("line_chart needs at least one series")
    clean = _clean_series(series, log_y)
    shades = _clean_bands(bands or {}, series, log_y)
    allp = [p for pts in clean.values() for p in pts]
    if not allp:
        raise ValueError(f"line_chart {title!r}: no finite points")
    x0, x1 = min(p[0] for p in allp), max(p[0] for p in allp)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    band_ys = [v for s in shades.values() for _, lo, hi in s for v in (lo, hi)]
    y0, y1 = _y_limits([p[1] for p in allp] + band_ys, y_range, log_y)
    left, right, top = 62, 16, 30
    pw, ph = width - left - right, height - top - 45

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:  # clipped to the axis (a fixed y_range may cut a band)
        return top + (1 - (min(max(y, y0), y1) - y0) / (y1 - y0)) * ph

    legend = _same_pixels(clean, sy)
    per_row = max(1, int(pw // 170))
    full_h = height + 16 * math.ceil(len(legend) / per_row)
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{full_h}" '
        f'viewBox="0 0 {width} {full_h}" font-family="sans-serif" font-size="11">',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="white" stroke="#888"/>',
        f'<text x="{left + pw / 2}" y="18" text-anchor="middle" font-size="13">{html.escape(title)}</text>',
        f'<text x="{left + pw / 2}" y="{top + ph + 32}" text-anchor="middle">{html.escape(xlabel)}</text>',
        f'<text x="14" y="{top + ph / 2}" text-anchor="middle" '
        f'transform="rotate(-90 14 {top + ph / 2})">{html.escape(ylabel)}</text>',
    ]
    for t in _ticks(x0, x1):
        out.append(
            f'<line x1="{sx(t):.1f}" y1="{top + ph}" x2="{sx(t):.1f}" y2="{top + ph + 4}" stroke="#888"/>'
        )
        out.append(f'<text x="{sx(t):.1f}" y="{top + ph + 16}" text-anchor="middle">{_fmt(t)}</text>')
    for t in _log_ticks(y0, y1) if log_y else _ticks(y0, y1, 6):
        label = _fmt(10**t) if log_y else _fmt(t)
        out.append(f'<line x1="{left}" y1="{sy(t):.1f}" x2="{left + pw}" y2="{sy(t):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 6}" y="{sy(t) + 4:.1f}" text-anchor="end">{label}</text>')
    # Colours follow the legend, so a series drawn under another's line does not use up a colour.
    colours = {n: PALETTE[k % len(PALETTE)] for k, (_, names, _) in enumerate(legend) for n in names}
    out += _band_marks(shades, colours, sx, sy)
    for k, (kept, _, label) in enumerate(legend):
        colour, dash = colours[kept], DASHES[k % len(DASHES)]
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        pts = clean[kept]
        if len(pts) > 1:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
            out.append(
                f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.8"{dash_attr} '
                f'data-series="{html.escape(label)}"/>'
            )
        for x, y in pts if len(pts) <= 40 else []:
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.2" fill="{colour}"/>')
        lx, ly = left + (k % per_row) * (pw / per_row), height + 16 * (k // per_row) + 4
        out.append(
            f'<line x1="{lx:.1f}" y1="{ly - 4}" x2="{lx + 24:.1f}" y2="{ly - 4}" '
            f'stroke="{colour}" stroke-width="2"{dash_attr}/>'
        )
        out.append(f'<text x="{lx + 28:.1f}" y="{ly}">{html.escape(label)}</text>')
    out.append("</svg>")
    return "\n".join(out)


def interval_chart(
    rows: Sequence[tuple[str, str, float, float, float]],
    *,
    title: str = "",
    xlabel: str = "",
    x_range: tuple[float, float] = (0.0, 1.0),
    width: int = 600,
) -> str:
    """Dots with interval whiskers, one row per ``(group, label, value, low, high)``.

    Rows are listed in order under a heading per group; a label keeps its colour in every group.
    Rates go on the default ``x_range`` of ``[0, 1]``. Each dot is a ``<circle>`` with
    ``data-row="group: label"``; its whisker a ``<line>`` with the same ``data-row``.
    """
    if not rows:
        raise ValueError("interval_chart needs at least one row")
    x0, x1 = map(float, x_range)
    if not x1 > x0:
        raise ValueError(f"x_range {x_range}: needs low < high")
    labels = list(dict.fromkeys(r[1] for r in rows))
    colours = {name: PALETTE[k % len(PALETTE)] for k, name in enumerate(labels)}
    label_w = int(6.2 * max(len(r[1]) for r in rows)) + 24
    left, right, top, row_h = label_w, 120, 30, 18
    pw = width - left - right
    lines: list[tuple[str, tuple[str, str, float, float, float] | None]] = []  # None: a group heading
    for r in rows:
        if r[0] and (not lines or lines[-1][0] != r[0]):
            lines.append((r[0], None))
        lines.append((r[0], r))
    ph = row_h * len(lines) + 6
    height = top + ph + 40

    def sx(x: float) -> float:
        return left + (min(max(x, x0), x1) - x0) / (x1 - x0) * pw

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<text x="{left + pw / 2}" y="18" text-anchor="middle" font-size="13">{html.escape(title)}</text>',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="white" stroke="#888"/>',
        f'<text x="{left + pw / 2}" y="{top + ph + 32}" text-anchor="middle">{html.escape(xlabel)}</text>',
    ]
    for t in _ticks(x0, x1):
        out.append(f'<line x1="{sx(t):.1f}" y1="{top}" x2="{sx(t):.1f}" y2="{top + ph}" stroke="#eee"/>')
        out.append(f'<text x="{sx(t):.1f}" y="{top + ph + 16}" text-anchor="middle">{_fmt(t)}</text>')
    for i, (group, row) in enumerate(lines):
        y = top + 6 + row_h * i + row_h / 2
        if row is None:
            out.append(f'<text x="6" y="{y + 4:.1f}" font-weight="bold">{html.escape(group)}</text>')
            continue
        _, label, value, lo, hi = row
        colour, tag = colours[label], html.escape(f"{group}: {label}")
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{html.escape(label)}</text>')
        if math.isfinite(lo) and math.isfinite(hi):
            out.append(
                f'<line x1="{sx(lo):.1f}" y1="{y:.1f}" x2="{sx(hi):.1f}" y2="{y:.1f}" stroke="{colour}" '
                f'stroke-width="2" data-row="{tag}"/>'
            )
            for end in (lo, hi):
                out.append(
                    f'<line x1="{sx(end):.1f}" y1="{y - 4:.1f}" x2="{sx(end):.1f}" y2="{y + 4:.1f}" '
                    f'stroke="{colour}" stroke-width="1.5"/>'
                )
        if math.isfinite(value):
            out.append(f'<circle cx="{sx(value):.1f}" cy="{y:.1f}" r="4" fill="{colour}" data-row="{tag}"/>')
        span = f" ({lo:.2f}–{hi:.2f})" if math.isfinite(lo) and math.isfinite(hi) else ""
        out.append(f'<text x="{left + pw + 8}" y="{y + 4:.1f}">{value:.2f}{span}</text>')
    out.append("</svg>")
    return "\n".join(out)


class Report:
    """Builds one HTML page section by section; ``write(path)`` saves it atomically.

    Image paths are written as given: pass paths relative to the report's folder so the report
    and its media can be moved together.
    """

    def __init__(self, title: str) -> None:
        self.title = title
        self.parts: list[str] = []

    def heading(self, text: str, level: int = 2) -> Report:
        self.parts.append(f"<h{level}>{html.escape(text)}</h{level}>")
        return self

    def paragraph(self, text: str) -> Report:
        self.parts.append(f"<p>{html.escape(text)}</p>")
        return self

    def verdict(self, *lines: str) -> Report:
        """The section's conclusion in plain sentences (one per line), set off from the text around it."""
        body = "<br>".join(html.escape(line) for line in lines)
        self.parts.append(f'<p class="verdict"><strong>Verdict:</strong> {body}</p>')
        return self

    def code(self, text: str) -> Report:
        self.parts.append(f"<pre>{html.escape(text)}</pre>")
        return self

    def table(self, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Report:
        """A table; floats are shown with 3 significant digits, ``None`` as a dash; numbers are
        aligned right, text left; a header of empty strings is left out."""

        def cell(v: object) -> str:
            if v is None:
                return "<td>–</td>"
            if isinstance(v, float):
                return f"<td>{'nan' if not math.isfinite(v) else f'{v:.3g}'}</td>"
            if isinstance(v, int):
                return f"<td>{v}</td>"
            return f'<td class="text">{html.escape(str(v))}</td>'

        def is_text(col: int) -> bool:  # a column of text only: its header aligns left with it
            values = [row[col] for row in rows if col < len(row) and row[col] is not None]
            return bool(values) and all(not isinstance(v, (int, float)) for v in values)

        head = "".join(
            f'<th class="text">{html.escape(h)}</th>' if is_text(i) else f"<th>{html.escape(h)}</th>"
            for i, h in enumerate(header)
        )
        thead = f"<thead><tr>{head}</tr></thead>" if any(header) else ""
        body = "".join("<tr>" + "".join(cell(v) for v in row) + "</tr>" for row in rows)
        self.parts.append(f"<table>{thead}<tbody>{body}</tbody></table>")
        return self

    def chart(self, svg: str, caption: str = "") -> Report:
        self.parts.append(f"<figure>{svg}<figcaption>{html.escape(caption)}</figcaption></figure>")
        return self

    def image(self, src: str, caption: str = "", width: int | None = None) -> Report:
        size = f' width="{width}"' if width else ""
        self.parts.append(
            f'<figure><img src="{html.escape(src)}"{size} style="image-rendering: pixelated">'
            f"<figcaption>{html.escape(caption)}</figcaption></figure>"
        )
        return self

    def html(self) -> str:
        style = (
            "body{font-family:sans-serif;max-width:1150px;margin:2em auto;padding:0 1em;color:#222}"
            "h2{margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:0.2em}"
            "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;"
            "text-align:right}th{background:#f4f4f4}.text{text-align:left}"
            "figure{display:inline-block;margin:0.5em 1em 0.5em 0;vertical-align:top}"
            "figcaption{font-size:0.85em;color:#555;max-width:520px}"
            "p.verdict{background:#f3f7fb;border-left:4px solid #0072B2;padding:0.4em 0.8em}"
            "pre{background:#f6f6f6;padding:0.6em;overflow-x:auto;white-space:pre-wrap}"
        )
        body = "\n".join(self.parts)
        return (
            f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
            f"<style>{style}</style></head>\n<body>\n<h1>{html.escape(self.title)}</h1>\n{body}\n</body></html>\n"
        )

    def write(self, path: str | os.PathLike) -> Path:
        """Write the page to ``path`` (temporary file, then rename); returns the path."""
        return write_text_atomic(path, self.html())


# Two-sided 95 % quantiles of Student's t for 1..30 degrees of freedom (beyond: an expansion).
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)  # fmt: skip


def t975(dof: int) -> float:
    """The 97.5 % quantile of Student's t with ``dof`` degrees of freedom (3 decimals)."""
    if dof < 1:
        raise ValueError(f"t975: needs dof >= 1, got {dof}")
    if dof <= len(_T975):
        return _T975[dof - 1]
    z = 1.959964  # Cornish-Fisher terms: off by < 1e-3 from dof 30 on
    return z + (z**3 + z) / (4 * dof) + (5 * z**5 + 16 * z**3 + 3 * z) / (96 * dof**2)


def mean_interval(values: Sequence[float]) -> tuple[float, float, float]:
    """``(mean, low, high)``: the mean of the finite ``values`` and its 95 % Student-t interval
    (``nan`` bounds below two values; all ``nan`` for none)."""
    v = [float(x) for x in values if math.isfinite(float(x))]
    if not v:
        return math.nan, math.nan, math.nan
    m = sum(v) / len(v)
    if len(v) < 2:
        return m, math.nan, math.nan
    half = t975(len(v) - 1) * math.sqrt(sum((x - m) ** 2 for x in v) / (len(v) - 1) / len(v))
    return m, m - half, m + half
