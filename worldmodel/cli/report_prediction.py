"""The demo report's sections on the world model itself: its training curves, its prediction
quality against copy-last-frame (``eval.json``) and, for a model without a state head, the
separate object-position head (``head.json``).

Prediction quality: per-step means over the test sequences with Student-t 95 % intervals, and the
model against copy-last by paired per-sequence differences (``eval.json["per_sequence"]``; an
older ``eval.json`` without it gets means only, and says so).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from worldmodel.cli.report_parts import chart_or_note, read_json, read_jsonl, relative, sentence
from worldmodel.report import Report, mean_interval

# The trainer's held-out scores (eval/, control/) are not training-batch curves.
_SKIP_CURVES = ("lr", "frames_per_s", "grad_norm", "eval/", "control/")
# Plain names of the trainer's state-head metrics (training batches, cm).
_STATE_NAMES = {"metrics/state_ee_cm": "arm (end effector)", "metrics/state_obj_cm": "object"}


def _curves(metrics_file: Path) -> dict[str, tuple[list[float], list[float]]]:
    """Loss curves from a trainer's ``metrics.jsonl``: ``{name: (steps, values)}``."""
    curves: dict[str, tuple[list[float], list[float]]] = {}
    for row in read_jsonl(metrics_file):
        step = row.pop("step", None)
        for name, value in row.items():
            if step is None or name.startswith(_SKIP_CURVES) or not isinstance(value, (int, float)):
                continue
            xs, ys = curves.setdefault(name, ([], []))
            xs.append(float(step))
            ys.append(float(value))
    return curves


def _steps(steps: list[int]) -> str:
    """``[1, 2, 3, 7, 9, 10]`` → ``"steps 1–3, 7, 9–10"``; ``[4]`` → ``"step 4"``."""
    runs: list[list[int]] = []
    for s in steps:
        if runs and s == runs[-1][-1] + 1:
            runs[-1].append(s)
        else:
            runs.append([s])
    text = ", ".join(f"{r[0]}–{r[-1]}" if len(r) > 1 else f"{r[0]}" for r in runs)
    return f"{'step' if len(steps) == 1 else 'steps'} {text}"


# --- training -------------------------------------------------------------------------------------
def trend(xs: list[float], ys: list[float]) -> str:
    """How a logged curve went, in words: fell / rose / stayed, from the mean of its first tenth of
    points to the mean of its last tenth (one noisy log step does not decide it)."""
    bad = [x for x, y in zip(xs, ys, strict=True) if not math.isfinite(y)]
    if bad:
        return f"became non-finite at step {bad[0]:.0f} (the run diverged)"
    k = max(1, len(ys) // 10)
    start, end = sum(ys[:k]) / k, sum(ys[-k:]) / k
    if len(ys) < 2 or abs(end - start) <= 0.1 * abs(start):
        return f"stayed near {end:.3g}"
    return f"{'fell' if end < start else 'rose'} from {start:.3g} to {end:.3g}"


def training_section(rep: Report, out: Path) -> None:
    rep.heading("World-model training")
    curves = _curves(out / "model" / "metrics.jsonl")
    if not curves:
        rep.paragraph("not run")
        return
    losses = {k: v for k, v in curves.items() if not k.endswith("_cm")}
    state = {k: v for k, v in curves.items() if k.endswith("_cm")}
    main = "loss" if "loss" in losses else next(iter(losses), None)
    said = []
    if main is not None:
        steps = losses[main][0]
        said.append(f"the training loss {trend(*losses[main])} over {steps[-1]:.0f} steps")
    for name, (xs, ys) in state.items():
        said.append(f"the state head's {_STATE_NAMES.get(name, name)} error {trend(xs, ys)} cm")
    rep.verdict(sentence("; ".join(said)) + " (training batches, first and last tenth of the log).")
    if losses:
        positive = all(min(ys) > 0 for _, ys in losses.values())
        chart_or_note(
            rep,
            losses,
            dict(title="training losses", xlabel="step", ylabel="value", log_y=positive),
            "Loss terms the trainer logged (metrics.jsonl; TensorBoard in model/tb has all of them). "
            "Curves with the same values are drawn once and named together (a = b).",
        )
    if state:
        chart_or_note(
            rep,
            state,
            dict(title="state head error on training batches", xlabel="step", ylabel="cm"),
            "How far the state head's reading of the arm and the objects is from the simulator's, "
            "in cm (the planner's learned cost and the dream's reward read this head).",
        )
    samples = sorted((out / "model" / "samples").glob("*.gif"))
    if samples:
        rep.image(
            str(samples[-1].relative_to(out)),
            f"{samples[-1].name}: one training sequence per row, prediction | truth; green frames "
            "are given (context and truth), red ones predicted.",
            256,
        )


# --- prediction quality ---------------------------------------------------------------------------
def _per_step(rows: list[list[float]]) -> tuple[list[float], list[float], list[float]]:
    """Per-step mean and 95 % interval over sequences of ``rows`` ``(sequences, steps)``."""
    cols = [mean_interval(col) for col in zip(*rows, strict=True)]
    return [c[0] for c in cols], [c[1] for c in cols], [c[2] for c in cols]


def quality_verdict(
    metric: str,
    model: list[list[float]] | list[float],
    copy: list[list[float]] | list[float],
    label: str = "the model",
) -> str:
    """Does ``model`` beat copy-last on ``metric``, step by step, in plain words.

    Given per-sequence scores (``(sequences, steps)`` lists), a step counts as beaten when the 95 %
    interval of the paired difference (model − copy-last, per sequence) lies above zero, and as
    lost when it lies below; given per-step means only (``(steps,)``), the means decide and the
    sentence says that no interval was available.
    """
    name = metric.upper()
    paired = bool(model) and isinstance(model[0], list)
    if paired:
        diffs = [[a - b for a, b in zip(m, c, strict=True)] for m, c in zip(model, copy, strict=True)]
        mean, lo, hi = _per_step(diffs)
    else:
        mean = [a - b for a, b in zip(model, copy, strict=True)]
        lo = hi = mean
    n = len(mean)
    above = [t + 1 for t in range(n) if lo[t] > 0]
    below = [t + 1 for t in range(n) if hi[t] < 0]
    how = "paired 95 % intervals" if paired else "means only, no interval"
    if len(above) == n:
        return f"{label} beats copy-last on {name} at all {n} predicted steps ({how})"
    if not above:
        where = f"below it at all {n} steps" if len(below) == n else f"below it at {_steps(below)} of {n}"
        if not below:
            where = f"level with it at all {n} steps"
        return f"{label} does not beat copy-last on {name}: {where} ({how})"
    level = [t for t in range(1, n + 1) if t not in above and t not in below]
    rest = (f", below it at {_steps(below)}" if below else "") + (
        f", level at {_steps(level)}" if level else ""
    )
    return f"{label} beats copy-last on {name} at {_steps(above)} of {n}{rest} ({how})"


def _quality_blocks(ev: dict[str, Any]) -> dict[str, tuple[dict, dict | None]]:
    """``{legend label: (block of per-step means, its per-sequence scores or None)}``."""
    n, per = ev["samples"], ev.get("per_sequence") or {}
    if ev["sequences"] < 2:  # no spread to make an interval of
        per = {}
    return {
        f"best of {n}": (ev, per.get("best")),
        f"mean of {n}": (ev["mean_of_n"], per.get("mean_of_n")),
        "copy last frame": (ev["baseline"], per.get("baseline")),
    }


def _quality_chart(rep: Report, ev: dict[str, Any], metric: str, unit: str, counted: str) -> None:
    blocks, n_samples = _quality_blocks(ev), ev["samples"]
    steps = list(range(1, len(ev[metric]) + 1))
    series, bands = {}, {}
    for label, (block, rows) in blocks.items():
        series[label] = (steps, block[metric])
        if rows and rows.get(metric):
            _, lo, hi = _per_step(rows[metric])
            bands[label] = (lo, hi)
    caption = f"{counted}, {n_samples} samples each, {ev['n_past']} context frames, {len(steps)} predicted."
    if bands:
        caption += " Shaded: 95 % interval of the mean over sequences."
    elif ev["sequences"] < 2:
        caption += " One sequence, so no interval."
    else:
        caption += " No per-sequence scores in eval.json (an older `worldmodel eval`), so no interval."
    gap = max(abs(a - b) for a, b in zip(ev[metric], ev["mean_of_n"][metric], strict=True))
    span = max(ev[metric] + ev["baseline"][metric]) - min(ev[metric] + ev["baseline"][metric])
    if n_samples > 1 and gap < 0.01 * max(span, 1e-12):
        at_most = f"{gap:.2g} {unit}".strip()
        caption += (
            f" Best of {n_samples} is at most {at_most} from mean of {n_samples}: the samples barely "
            "differ, so the two lines coincide."
        )
    labels = dict(
        title=f"{metric.upper()} per predicted step",
        xlabel="predicted step",
        ylabel=f"{metric.upper()} ({unit})" if unit else metric.upper(),
        bands=bands,
    )
    chart_or_note(rep, series, labels, caption)


def quality_section(rep: Report, out: Path, config: dict[str, Any]) -> None:
    rep.heading("Prediction quality vs copy-last-frame")
    ev = read_json(out / "eval.json")
    if ev is None:
        rep.paragraph("not run")
        return
    n_samples, n_seq = ev["samples"], ev["sequences"]
    blocks = _quality_blocks(ev)
    # The verdict is about the average sample: best-of-N picks its sample with hindsight of the truth.
    mean_block, mean_rows = blocks[f"mean of {n_samples}"]
    copy_block, copy_rows = blocks["copy last frame"]
    model = f"the model (scores averaged over its {n_samples} samples)" if n_samples > 1 else "the model"
    said = [
        quality_verdict(
            m, (mean_rows or {}).get(m) or mean_block[m], (copy_rows or {}).get(m) or copy_block[m], who
        )
        for m, who in (("psnr", model), ("ssim", "it"))
    ]
    rep.verdict(sentence("; ".join(said)) + ".")
    asked = config.get("eval_sequences")
    counted = f"{n_seq} test sequences"
    if isinstance(asked, int) and asked > n_seq:
        counted += f" ({asked} asked: the test split holds only {n_seq})"
    _quality_chart(rep, ev, "psnr", "dB", counted)
    _quality_chart(rep, ev, "ssim", "", counted)
    rows = []
    for label, (block, per_seq) in blocks.items():
        row: list[Any] = [label]
        for metric in ("psnr", "ssim"):
            row.append(block[f"{metric}_mean"])
            if per_seq and per_seq.get(metric):
                _, lo, hi = mean_interval([sum(r) / len(r) for r in per_seq[metric]])
                row.append(f"{lo:.3g}–{hi:.3g}")
            else:
                row.append(None)
        rows.append(row)
    if "bpp_mean" in ev:
        rows.append(["bits per dimension", ev["bpp_mean"], None, None, None])
    rep.table(["averaged over the steps", "PSNR (dB)", "95 % interval", "SSIM", "95 % interval"], rows)
    if (gif := relative(out, out / "eval.gif")) is not None:
        rep.image(
            gif, "One test sequence per row: truth | best sample | random sample (context frames first).", 384
        )


def head_section(rep: Report, out: Path) -> None:
    head = read_json(out / "head.json")
    if head is None or "val_rmse_xy" not in head:
        return
    rep.heading("Learned reward: object-position head (held-out episodes)")
    err, still = 100 * head["val_rmse_xy"], 100 * head["val_rmse_xy_static"]
    better = "beats" if err < still else "does not beat"
    rep.verdict(f"The head {better} 'the object stays put' ({err:.3g} vs {still:.3g} cm target xy RMSE).")
    rep.table(
        ["predictor", "target xy RMSE (cm)"],
        [
            ["head on dream features", err],
            ["predict the mean", 100 * head["val_rmse_xy_mean"]],
            ["object stays put", still],
        ],
    )
