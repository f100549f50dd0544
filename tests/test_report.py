"""The HTML report helpers: SVG charts that parse and place points where the data says."""

from __future__ import annotations

import xml.etree.ElementTree as ET

import pytest

from worldmodel.report import Report, _ticks, line_chart

SVG = "{http://www.w3.org/2000/svg}"


def test_line_chart_is_valid_svg_with_one_polyline_per_series():
    svg = line_chart(
        {"a": ([0, 1, 2], [1.0, 2.0, 3.0]), "b <&>": ([0, 2], [3.0, float("nan")])},
        title="t & u",
        xlabel="step",
        ylabel="loss",
    )
    root = ET.fromstring(svg)  # escaping keeps it well-formed
    lines = root.findall(f"{SVG}polyline")
    assert len(lines) == 1  # "b" has one finite point: a dot, no line
    pts = [tuple(map(float, p.split(","))) for p in lines[0].get("points").split()]
    xs, ys = zip(*pts, strict=True)
    assert xs[0] < xs[1] < xs[2] and ys[0] > ys[1] > ys[2]  # SVG y grows downwards
    assert xs[1] - xs[0] == pytest.approx(xs[2] - xs[1])  # linear x axis
    labels = [t.text for t in root.iter(f"{SVG}text")]
    assert "t & u" in labels and "b <&>" in labels


def test_log_axis_drops_non_positive_and_spaces_decades_evenly():
    svg = line_chart({"l": ([1, 2, 3, 4], [1.0, 10.0, 100.0, 0.0])}, log_y=True)
    pts = ET.fromstring(svg).find(f"{SVG}polyline").get("points").split()
    ys = [float(p.split(",")[1]) for p in pts]
    assert len(ys) == 3 and ys[0] - ys[1] == pytest.approx(ys[1] - ys[2], abs=0.2)


def test_ticks_are_round_and_cover_the_range():
    assert _ticks(0.0, 1.0) == pytest.approx([0.0, 0.25, 0.5, 0.75, 1.0])
    t = _ticks(3.2, 97.0)
    assert t == pytest.approx([25.0, 50.0, 75.0])  # steps of 1, 2, 2.5 or 5 times a power of 10


def test_bad_series_raise():
    with pytest.raises(ValueError, match="2 x values but 1"):
        line_chart({"a": ([0, 1], [1.0])})
    with pytest.raises(ValueError, match="no finite points"):
        line_chart({"a": ([0], [float("inf")])})
    with pytest.raises(ValueError):
        line_chart({})


def test_report_writes_escaped_html_atomically(tmp_path):
    rep = Report("demo <1>")
    rep.heading("h").paragraph("a < b").table(["x", "y"], [["r", 0.123456], ["s", None]])
    rep.image("media/x.gif", "cap").chart(line_chart({"a": ([0, 1], [0.0, 1.0])}))
    path = rep.write(tmp_path / "sub" / "report.html")
    text = path.read_text()
    assert "demo &lt;1&gt;" in text and "a &lt; b" in text and "0.123" in text and "–" in text
    assert 'src="media/x.gif"' in text and "<svg" in text
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]  # no temporary file left
