"""What the demo report's sections share: reading the stages' files (a missing or cut file is
"not run", never an error), a chart that degrades to a note, and the wording helpers."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from worldmodel.report import Report, line_chart


def read_json(path: Path) -> dict[str, Any] | None:
    """The JSON object in ``path``; ``None`` when it is missing, cut or not an object."""
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The rows of a JSON-lines file; a missing file is empty, a cut line (interrupted run) skipped."""
    try:
        lines = path.read_text().splitlines()
    except OSError:
        return []
    rows = []
    for line in lines:
        try:
            row = json.loads(line)
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def chart_or_note(rep: Report, series: dict, labels: dict[str, Any], caption: str) -> None:
    """A line chart, or a note when the series hold nothing finite (e.g. a diverged run)."""
    try:
        rep.chart(line_chart(series, **labels), caption)
    except ValueError as err:
        rep.paragraph(f"{labels.get('title', 'chart')}: nothing to plot ({err})")


def relative(out: Path, path: Path) -> str | None:
    """``path`` relative to the report's folder ``out`` (``None`` when it does not exist)."""
    return str(path.relative_to(out)) if path.exists() else None


def sentence(text: str) -> str:
    """``text`` with a capital first letter (``str.capitalize`` would lower "PSNR" too)."""
    return text[:1].upper() + text[1:]
