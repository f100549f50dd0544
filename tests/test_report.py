"""The HTML report: SVG charts that place points where the data says, merge lines that would hide
one another, fix rate axes to [0, 1], shade intervals; the demo report's verdicts, captions and
intervals from constructed stage files; the run facts the demo command records; the screenshot
script in a real headless Chromium when one is installed."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from worldmodel.cli.demo_report import build_report, ci95, quality_verdict, trend, verdict
from worldmodel.envs.task import wilson_interval
from worldmodel.report import Report, _ticks, interval_chart, line_chart, mean_interval, t975

SVG = "{http://www.w3.org/2000/svg}"
ROOT = Path(__file__).resolve().parents[1]


def _lines(svg: str) -> dict[str, list[tuple[float, float]]]:
    """``{data-series: points}`` of a chart's polylines."""
    root = ET.fromstring(svg)
    return {
        p.get("data-series"): [tuple(map(float, xy.split(","))) for xy in p.get("points").split()]
        for p in root.iter(f"{SVG}polyline")
    }


def _texts(svg: str) -> list[str]:
    return [t.text for t in ET.fromstring(svg).iter(f"{SVG}text")]


# --- charts ---------------------------------------------------------------------------------------
def test_line_chart_is_valid_svg_with_one_polyline_per_series():
    svg = line_chart(
        {"a": ([0, 1, 2], [1.0, 2.0, 3.0]), "b <&>": ([0, 2], [3.0, float("nan")])},
        title="t & u",
        xlabel="step",
        ylabel="loss",
    )
    lines = _lines(svg)  # escaping keeps it well-formed
    assert list(lines) == ["a"]  # "b" has one finite point: a dot, no line
    xs, ys = zip(*lines["a"], strict=True)
    assert xs[0] < xs[1] < xs[2] and ys[0] > ys[1] > ys[2]  # SVG y grows downwards
    assert xs[1] - xs[0] == pytest.approx(xs[2] - xs[1])  # linear x axis
    labels = _texts(svg)
    assert "t & u" in labels and "b <&>" in labels


def test_identical_series_are_drawn_once_and_named_together():
    same = [0.5, 0.4, 0.3]
    svg = line_chart(
        {"loss": ([1, 2, 3], same), "metrics/loss": ([1, 2, 3], list(same)), "mse": ([1, 2, 3], [0.1] * 3)}
    )
    assert sorted(_lines(svg)) == ["loss = metrics/loss", "mse"]
    assert "loss = metrics/loss" in _texts(svg)  # the legend says so
    # Nearly equal (far under a pixel apart): one line, "≈".
    svg = line_chart({"best": ([1, 2], [17.0, 15.0]), "mean": ([1, 2], [16.999, 14.999])})
    assert list(_lines(svg)) == ["best ≈ mean"]
    # Apart by more than a pixel: two lines, each its own dash pattern, so neither hides the other.
    svg = line_chart({"real": ([1, 2], [0.0, 0.1]), "dream": ([1, 2], [0.0, 0.5])}, y_range=(0, 1))
    lines = ET.fromstring(svg).findall(f"{SVG}polyline")
    assert [p.get("data-series") for p in lines] == ["real", "dream"]
    assert lines[0].get("stroke-dasharray") != lines[1].get("stroke-dasharray")
    assert lines[0].get("stroke") != lines[1].get("stroke")


def test_rate_axis_is_fixed_to_0_1_even_when_every_rate_is_zero():
    # Fitted to the data, constant zeros gave an axis from -1 to 1.
    svg = line_chart({"real sim": ([1, 2, 3], [0.0, 0.0, 0.0])}, y_range=(0.0, 1.0), height=300)
    ticks = [t for t in _texts(svg) if re.fullmatch(r"-?[\d.]+", t or "")]
    y_ticks = sorted({float(t) for t in ticks} - {1.5, 2.0, 2.5, 3.0})
    assert y_ticks == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    pts = _lines(svg)["real sim"]
    top, ph = 30, 300 - 30 - 45  # the plot area
    assert {y for _, y in pts} == {top + ph}  # 0 sits on the bottom edge


def test_band_spans_its_bounds():
    svg = line_chart(
        {"m": ([0, 1, 2], [5.0, 5.0, 5.0])}, y_range=(0, 10), bands={"m": ([2.0] * 3, [8.0] * 3)}, height=300
    )
    poly = ET.fromstring(svg).find(f"{SVG}polygon")
    assert poly.get("data-band") == "m"
    ys = {float(xy.split(",")[1]) for xy in poly.get("points").split()}
    assert ys == {30 + 0.2 * 225, 30 + 0.8 * 225}  # 8 and 2 on a 0..10 axis of 225 px
    with pytest.raises(ValueError, match="no series"):
        line_chart({"m": ([0], [1.0])}, bands={"x": ([0.0], [1.0])})


def test_log_axis_drops_non_positive_and_spaces_decades_evenly():
    svg = line_chart({"l": ([1, 2, 3, 4], [1.0, 10.0, 100.0, 0.0])}, log_y=True)
    ys = [y for _, y in _lines(svg)["l"]]
    assert len(ys) == 3 and ys[0] - ys[1] == pytest.approx(ys[1] - ys[2], abs=0.2)
    assert {"1", "10", "100"} <= set(_texts(svg))  # decade ticks


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
    with pytest.raises(ValueError, match="y_range"):
        line_chart({"a": ([0], [1.0])}, y_range=(1, 1))


def test_interval_chart_places_dots_and_whiskers_on_0_1():
    lo, hi = wilson_interval(3, 20)
    svg = interval_chart([("push", "model", 0.15, lo, hi), ("push", "random", 0.0, 0.0, 0.16)], width=600)
    root = ET.fromstring(svg)
    dots = {c.get("data-row"): float(c.get("cx")) for c in root.iter(f"{SVG}circle")}
    whisker = next(e for e in root.iter(f"{SVG}line") if e.get("data-row") == "push: model")
    x0 = dots["push: random"]  # 0.0 is the left edge
    x1 = float(next(t.get("x") for t in root.iter(f"{SVG}text") if t.text == "1"))
    assert dots["push: model"] == pytest.approx(x0 + 0.15 * (x1 - x0), abs=0.06)
    assert float(whisker.get("x1")) == pytest.approx(x0 + lo * (x1 - x0), abs=0.06)
    assert float(whisker.get("x2")) == pytest.approx(x0 + hi * (x1 - x0), abs=0.06)
    assert f"0.15 ({lo:.2f}–{hi:.2f})" in _texts(svg) and "push" in _texts(svg)
    with pytest.raises(ValueError):
        interval_chart([])


def test_mean_interval_is_the_student_t_interval():
    m, lo, hi = mean_interval([1.0, 2.0, 3.0])  # sd 1, n 3, t(2) = 4.303
    assert m == 2.0 and (lo, hi) == pytest.approx((2 - 4.303 / math.sqrt(3), 2 + 4.303 / math.sqrt(3)))
    assert math.isnan(mean_interval([4.0])[1]) and mean_interval([4.0])[0] == 4.0
    assert t975(30) == 2.042 and t975(40) == pytest.approx(2.021, abs=1e-3)  # table and expansion
    assert t975(1000) == pytest.approx(1.962, abs=1e-3)


def test_report_writes_escaped_html_atomically(tmp_path):
    rep = Report("demo <1>")
    rep.heading("h").paragraph("a < b").table(["x", "y"], [["r", 0.123456], ["s", None]])
    rep.verdict("x beats <y>", "second line")
    rep.table(["", ""], [["k", "v"]])
    rep.image("media/x.gif", "cap").chart(line_chart({"a": ([0, 1], [0.0, 1.0])}))
    path = rep.write(tmp_path / "sub" / "report.html")
    text = path.read_text()
    assert "demo &lt;1&gt;" in text and "a &lt; b" in text and "0.123" in text and "–" in text
    assert "<strong>Verdict:</strong> x beats &lt;y&gt;<br>second line" in text
    assert text.count("<thead>") == 1  # the header of empty strings is left out
    assert '<th class="text">x</th><th>y</th>' in text  # a text column's header aligns with it
    assert 'src="media/x.gif"' in text and "<svg" in text
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]  # no temporary file left


# --- the demo report's verdicts --------------------------------------------------------------------
def test_quality_verdict_uses_paired_intervals():
    # 4 sequences × 3 steps: the model is 1 above copy-last at step 1 (± 0.1), level at step 2
    # (differences straddle 0), 1 below at step 3.
    copy = [[10.0, 10.0, 10.0]] * 4
    model = [[11.1, 11.0, 9.0], [10.9, 9.0, 9.1], [11.0, 10.5, 8.9], [11.0, 9.5, 9.0]]
    text = quality_verdict("psnr", model, copy)
    assert text == (
        "the model beats copy-last on PSNR at step 1 of 3, below it at step 3, level at step 2 "
        "(paired 95 % intervals)"
    )
    assert quality_verdict("ssim", copy, [[r + 2 for r in row] for row in model]).startswith(
        "the model does not beat copy-last on SSIM: below it at all 3 steps"
    )
    better = [[v + 1 for v in row] for row in copy]
    assert "beats copy-last on PSNR at all 3 predicted steps" in quality_verdict("psnr", better, copy)
    # Means only (an older eval.json): the means decide, and it says no interval was available.
    text = quality_verdict("ssim", [0.5, 0.7], [0.6, 0.6])
    assert text.startswith("the model beats copy-last on SSIM at step 2 of 2, below it at step 1")
    assert "means only, no interval" in text


def test_plan_verdict_and_intervals_are_wilson():
    def result(successes, n=20, with_ci=True):
        r = {"success_rate": successes / n, "successes": successes, "episodes": n, "final_distance": 0.1}
        if with_ci:
            r["ci95"] = list(wilson_interval(successes, n))
        return r

    assert verdict(result(15), result(0)).startswith("beats random (0.75 vs random 0.00 over 20 episodes")
    assert verdict(result(2), result(0)).startswith("is better than random but not clearly")
    assert verdict(result(0), result(0)).startswith("does not beat random")
    assert verdict(result(3), None) == "not measured"
    assert ci95(result(7, with_ci=False)) == wilson_interval(7, 20)  # recomputed when missing
    assert verdict(result(15, with_ci=False), result(0, with_ci=False)).startswith("beats random")


def test_trend_reads_first_and_last_tenth():
    xs = list(range(20))
    assert trend(xs, [1.0] * 2 + [0.5] * 16 + [0.2] * 2) == "fell from 1 to 0.2"
    assert trend(xs, [2.5] * 20) == "stayed near 2.5"
    assert trend(xs, [1.0] * 19 + [math.nan]).startswith("became non-finite at step 19")


def _demo_folder(out: Path) -> dict:
    """The files of a finished demo, made up so every verdict has a known answer."""
    (out / "model" / "samples").mkdir(parents=True)
    (out / "agent").mkdir()
    rows = [
        {
            "step": s,
            "loss": 1.0 / s,
            "metrics/loss": 1.0 / s,
            "metrics/mse": 0.5 / s,
            "metrics/state_ee_cm": 3.0,
        }
        for s in range(1, 11)
    ]
    (out / "model" / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    # 3 sequences, 2 steps: the model beats copy-last on PSNR by 2 dB (± 0.1), loses on SSIM.
    model_p, copy_p = [[20.0, 19.9], [20.1, 20.0], [19.9, 20.1]], [[18.0, 18.0]] * 3
    model_s, copy_s = [[0.6, 0.6], [0.61, 0.59], [0.59, 0.6]], [[0.8, 0.8]] * 3

    def block(p, s):
        cols = lambda rows: [sum(c) / len(c) for c in zip(*rows, strict=True)]  # noqa: E731
        return {"psnr": cols(p), "ssim": cols(s), "psnr_mean": 20.0, "ssim_mean": sum(cols(s)) / 2}

    ev = {
        **block(model_p, model_s),
        "mean_of_n": block(model_p, model_s),
        "baseline": block(copy_p, copy_s),
        "sequences": 3,
        "samples": 4,
        "n_past": 2,
        "per_sequence": {
            "best": {"psnr": model_p, "ssim": model_s},
            "mean_of_n": {"psnr": model_p, "ssim": model_s},
            "baseline": {"psnr": copy_p, "ssim": copy_s},
        },
    }
    (out / "eval.json").write_text(json.dumps(ev))
    for name, model, random in (("plan.json", 15, 0), ("plan_reach.json", 2, 0)):
        plan = {
            "model": {"success_rate": model / 20, "successes": model, "episodes": 20, "final_distance": 0.05},
            "random": {
                "success_rate": random / 20,
                "successes": random,
                "episodes": 20,
                "final_distance": 0.2,
            },
        }
        plan["model"]["ci95"] = list(wilson_interval(model, 20))  # random's is recomputed
        if name == "plan.json":  # the push plans' prediction check (reach reads no object)
            check = dict(anchor_error=0.046, predicted_move=0.001, real_move=0.0096, error=0.051)
            plan["model"]["prediction_check"] = {**check, "stays_put": 0.0097, "pairs": 260, "moved": 92}
        (out / name).write_text(json.dumps(plan))
    (out / "plan_reach.gif").write_bytes(b"GIF89a")
    agent = [
        {
            "timesteps": t,
            "real_success_rate": 0.0,
            "episodes": 10,
            "dream_success_rate": 0.0,
            "dream_episodes": 10,
        }
        for t in (100, 200)
    ]
    (out / "agent" / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in agent))
    return {"model": "svg-lp", "preset": "tiny", "eval_sequences": 5}


def test_demo_report_states_real_counts_verdicts_and_intervals(tmp_path):
    config = _demo_folder(tmp_path)
    html = build_report(tmp_path, config, {"collect": 1.5}).html()
    # Training: identical curves once, named together; cm curves on their own chart.
    svgs = re.findall(r"<svg.*?</svg>", html, flags=re.S)
    assert sorted(_lines(svgs[0])) == ["loss = metrics/loss", "metrics/mse"]
    assert list(_lines(svgs[1])) == ["metrics/state_ee_cm"]
    assert "The training loss fell from 1 to 0.1 over 10 steps" in html
    assert "arm (end effector) error stayed near 3 cm" in html
    # Prediction: the counts as scored and as asked, and the paired verdicts.
    assert "3 test sequences (5 asked: the test split holds only 3), 4 samples each" in html
    assert "beats copy-last on PSNR at all 2 predicted steps" in html
    assert "it does not beat copy-last on SSIM: below it at all 2 steps" in html
    assert "best of 4 = mean of 4" in svgs[2]  # equal blocks: one line, said so
    _, lo, hi = mean_interval([sum(r) / 2 for r in [[20.0, 19.9], [20.1, 20.0], [19.9, 20.1]]])
    assert f"{lo:.3g}–{hi:.3g}" in html  # the table's interval over sequences
    # Control: Wilson intervals, plain verdicts, the three panels named.
    lo, hi = wilson_interval(15, 20)
    assert f"{lo:.2f}–{hi:.2f}" in html and f"{0:.2f}–{wilson_interval(0, 20)[1]:.2f}" in html
    assert "Push: the learned planner beats random (0.75 vs random 0.00 over 20 episodes" in html
    assert "<br>Reach: the learned planner is better than random but not clearly" in html  # a line each
    assert "reach: real episode | imagined plan | goal image" in html
    # The model on its own plans: one row (push), in cm; reach has no check.
    checks = html[html.index("The model on its own plans") :]
    row = re.search(r"<tr>(<td[^>]*>push</td>.*?)</tr>", checks).group(1)
    assert re.findall(r">([^<]*)</td>", row) == ["push", "4.6", "0.1", "0.96", "5.1", "0.97", "260"]
    assert ">reach</td><td>4.6" not in checks
    # Agent curve: rates on [0, 1] and, both being 0, one line named for both.
    agent_svg = next(s for s in svgs if "agent success" in s)
    assert list(_lines(agent_svg)) == ["real sim = dream"]
    assert not any(t.startswith("-") for t in _texts(agent_svg) if t)
    assert "No run.json in this folder" in html


def test_demo_report_run_section_shows_the_run_facts(tmp_path):
    config = _demo_folder(tmp_path)
    run = {
        "command": "worldmodel demo --quick --set 'train_steps=3'",
        "cwd": "/somewhere",
        "version": "9.9.9",
        "commit": "abc123",
        "hardware": {
            "device": "cuda",
            "gpu": "Some GPU",
            "cpu": "Some CPU (8 logical cores)",
            "torch": "2.x",
        },
    }
    (tmp_path / "run.json").write_text(json.dumps(run))
    html = build_report(tmp_path, config, {}).html()
    for text in (
        "worldmodel demo --quick --set &#x27;train_steps=3&#x27;",
        "9.9.9",
        "abc123",
        "Some GPU",
        "Some CPU",
    ):
        assert text in html
    assert "Command (in /somewhere)" in html


# --- what the demo command records -----------------------------------------------------------------
def test_command_line_and_git_commit(tmp_path):
    import argparse

    from worldmodel.cli.demo import add_arguments, command_line, git_commit, hardware

    p = argparse.ArgumentParser()
    add_arguments(p)
    args = p.parse_args(["--quick", "--out", "x y", "--set", "a=1", "--set", "b=2"])
    line = command_line(args)
    assert line.startswith("worldmodel demo ") and "--quick" in line and "'x y'" in line
    assert "--set a=1 --set b=2" in line and "--full" not in line and "--model" not in line
    assert git_commit(tmp_path) is None  # not a checkout
    commit = git_commit(ROOT)
    if commit is not None:  # a checkout with git installed
        assert re.fullmatch(r"[0-9a-f]{40}( \+ uncommitted changes)?", commit)
    hw = hardware("cpu")
    assert hw["device"] == "cpu" and hw["torch"] and hw["cpu"]


def test_eval_keeps_per_sequence_scores_that_average_to_its_curves():
    import torch
    from train_stubs import TinyConfig, TinyPredictor

    from worldmodel.data.synthetic import SyntheticDataset
    from worldmodel.training.evaluate import score_predictions

    torch.manual_seed(0)
    model = TinyPredictor(TinyConfig(noise=0.5)).eval()
    data = SyntheticDataset.moving_square(3, 6, image_size=16)
    res = score_predictions(model, data, n_past=2, n_future=4, samples=3, max_rollouts=6)  # 2 batches
    per = res.per_sequence
    for block, means in (("best", res), ("mean_of_n", res.mean_of_n), ("baseline", res.baseline)):
        for metric in ("psnr", "ssim"):
            rows = per[block][metric]
            assert len(rows) == 3 and all(len(r) == 4 for r in rows)
            cols = [sum(c) / 3 for c in zip(*rows, strict=True)]
            got = means[metric] if isinstance(means, dict) else getattr(means, metric)
            assert cols == pytest.approx(got, abs=1e-9)
    stored = res.to_json()["per_sequence"]
    assert stored["best"]["psnr"][0][0] == round(per["best"]["psnr"][0][0], 4)


# --- in a real browser ------------------------------------------------------------------------------
def _chromium() -> str | None:
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from report_screenshot import find_chromium
    finally:
        sys.path.pop(0)
    return find_chromium()


@pytest.mark.skipif(
    _chromium() is None,
    reason="no Chromium to render the page (a system package: apt-get install chromium); the "
    "report's content is checked by the tests above without it",
)
def test_screenshot_script_renders_the_report_in_chromium(tmp_path):
    from PIL import Image

    config = _demo_folder(tmp_path)
    report = build_report(tmp_path, config, {}).write(tmp_path / "report.html")
    png = tmp_path / "shot.png"
    cmd = [sys.executable, str(ROOT / "scripts" / "report_screenshot.py"), str(report), str(png)]
    done = subprocess.run(
        [*cmd, "--width", "800", "--height", "1200"], capture_output=True, text=True, timeout=180
    )
    assert done.returncode == 0, done.stderr
    image = Image.open(png).convert("L")
    assert image.size == (800, 1200)
    dark = sum(1 for v in image.getdata() if v < 100)
    assert dark > 2000  # text and charts were drawn, not a blank page
    assert not list(tmp_path.glob(".shot.png*"))  # the temporary file was renamed
    bad = subprocess.run([*cmd[:2], str(tmp_path / "missing.html"), str(png)], capture_output=True, text=True)
    assert bad.returncode == 2 and "no such report file" in bad.stderr


def test_one_sequence_gets_means_and_no_interval(tmp_path):
    config = _demo_folder(tmp_path)
    ev = json.loads((tmp_path / "eval.json").read_text())
    ev["sequences"] = 1
    ev["per_sequence"] = {k: {m: rows[:1] for m, rows in v.items()} for k, v in ev["per_sequence"].items()}
    (tmp_path / "eval.json").write_text(json.dumps(ev))
    html = build_report(tmp_path, config, {}).html()
    assert "One sequence, so no interval." in html and "nan" not in html
    assert "beats copy-last on PSNR at all 2 predicted steps (means only, no interval)" in html
