"""A self-contained HTML report: headings, text, tables, SVG line charts and images (GIF/PNG).

No plotting dependency: charts are written as inline SVG (``line_chart``), so a report opens in any
browser straight from disk, next to the GIFs it links to. ``Report.write`` writes to a temporary
name and renames, so an interrupted run never leaves half a report.
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

Series = Mapping[str, tuple[Sequence[float], Sequence[float]]]


def _ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """About ``n`` round tick values covering ``[lo, hi]``."""
    if not math.isfinite(lo) or not math.isfinite(hi) or hi <= lo:
        return [lo]
    raw = (hi - lo) / max(n - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=10 * mag)
    first = math.ceil(lo / step) * step
    return [first + k * step for k in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt(v: float) -> str:
    return f"{v:.3g}" if abs(v) < 1e4 else f"{v:.2e}"


def line_chart(
    series: Series,
    *,
    title: str = "",
    xlabel: str = "",
    ylabel: str = "",
    width: int = 520,
    height: int = 300,
    log_y: bool = False,
) -> str:
    """An SVG line chart of ``{name: (xs, ys)}``; non-finite points are left out.

    Returns the ``<svg>`` element as a string (inline it in HTML or save it as ``.svg``).
    ``log_y`` plots ``log10(y)`` of the positive values (axis labels show ``y``).
    """
    if not series:
        raise ValueError("line_chart needs at least one series")
    clean: dict[str, list[tuple[float, float]]] = {}
    for name, (xs, ys) in series.items():
        if len(xs) != len(ys):
            raise ValueError(f"series {name!r}: {len(xs)} x values but {len(ys)} y values")
        pts = [(float(x), float(y)) for x, y in zip(xs, ys, strict=True)]
        if log_y:
            pts = [(x, math.log10(y)) for x, y in pts if y > 0]
        clean[name] = [(x, y) for x, y in pts if math.isfinite(x) and math.isfinite(y)]
    allp = [p for pts in clean.values() for p in pts]
    if not allp:
        raise ValueError(f"line_chart {title!r}: no finite points")
    x0, x1 = min(p[0] for p in allp), max(p[0] for p in allp)
    y0, y1 = min(p[1] for p in allp), max(p[1] for p in allp)
    if x1 == x0:
        x0, x1 = x0 - 1, x1 + 1
    if y1 == y0:
        y0, y1 = y0 - 1, y1 + 1
    pad = 0.05 * (y1 - y0)
    y0, y1 = y0 - pad, y1 + pad
    left, right, top, bottom = 60, 130, 30, 45
    pw, ph = width - left - right, height - top - bottom

    def sx(x: float) -> float:
        return left + (x - x0) / (x1 - x0) * pw

    def sy(y: float) -> float:
        return top + (1 - (y - y0) / (y1 - y0)) * ph

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
        f'<rect x="{left}" y="{top}" width="{pw}" height="{ph}" fill="white" stroke="#888"/>',
        f'<text x="{left + pw / 2}" y="18" text-anchor="middle" font-size="13">{html.escape(title)}</text>',
        f'<text x="{left + pw / 2}" y="{height - 8}" text-anchor="middle">{html.escape(xlabel)}</text>',
        f'<text x="14" y="{top + ph / 2}" text-anchor="middle" '
        f'transform="rotate(-90 14 {top + ph / 2})">{html.escape(ylabel)}</text>',
    ]
    for t in _ticks(x0, x1):
        out.append(
            f'<line x1="{sx(t):.1f}" y1="{top + ph}" x2="{sx(t):.1f}" y2="{top + ph + 4}" stroke="#888"/>'
        )
        out.append(f'<text x="{sx(t):.1f}" y="{top + ph + 16}" text-anchor="middle">{_fmt(t)}</text>')
    for t in _ticks(y0, y1):
        label = _fmt(10**t) if log_y else _fmt(t)
        out.append(f'<line x1="{left}" y1="{sy(t):.1f}" x2="{left + pw}" y2="{sy(t):.1f}" stroke="#eee"/>')
        out.append(f'<text x="{left - 6}" y="{sy(t) + 4:.1f}" text-anchor="end">{label}</text>')
    for k, (name, pts) in enumerate(clean.items()):
        colour = PALETTE[k % len(PALETTE)]
        if len(pts) > 1:
            path = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
            out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.8"/>')
        for x, y in pts if len(pts) <= 40 else []:
            out.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="2.2" fill="{colour}"/>')
        ly = top + 14 + 16 * k
        out.append(
            f'<line x1="{left + pw + 10}" y1="{ly - 4}" x2="{left + pw + 28}" y2="{ly - 4}" '
            f'stroke="{colour}" stroke-width="2"/>'
        )
        out.append(f'<text x="{left + pw + 32}" y="{ly}">{html.escape(name)}</text>')
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

    def code(self, text: str) -> Report:
        self.parts.append(f"<pre>{html.escape(text)}</pre>")
        return self

    def table(self, header: Sequence[str], rows: Sequence[Sequence[object]]) -> Report:
        """A table; floats are shown with 3 significant digits, ``None`` as a dash."""

        def cell(v: object) -> str:
            if v is None:
                return "–"
            if isinstance(v, float):
                return "nan" if not math.isfinite(v) else f"{v:.3g}"
            return html.escape(str(v))

        head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
        body = "".join("<tr>" + "".join(f"<td>{cell(v)}</td>" for v in row) + "</tr>" for row in rows)
        self.parts.append(f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>")
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
            "body{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
            "table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 10px;"
            "text-align:right}th{background:#f4f4f4}figure{display:inline-block;margin:0.5em 1em 0.5em 0;"
            "vertical-align:top}figcaption{font-size:0.85em;color:#555;max-width:520px}"
            "pre{background:#f6f6f6;padding:0.6em;overflow-x:auto}"
        )
        body = "\n".join(self.parts)
        return (
            f"<!doctype html>\n<html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title>"
            f"<style>{style}</style></head>\n<body>\n<h1>{html.escape(self.title)}</h1>\n{body}\n</body></html>\n"
        )

    def write(self, path: str | os.PathLike) -> Path:
        """Write the page to ``path`` (temporary file, then rename); returns the path."""
        return write_text_atomic(path, self.html())
