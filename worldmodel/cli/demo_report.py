"""The demo's HTML report, built from the files the stages wrote (``worldmodel demo``).

Every section reads its stage's output; a stage that has not run shows as "not run" instead of
failing, so a report can be written for a partial demo too. Each section opens with a one-line
verdict in plain words (does the model beat copy-last, does the planner beat random with 95 %
intervals apart, ...), worked out from the same numbers its charts and tables show:

- prediction quality: per-step means over the test sequences with Student-t 95 % intervals, and
  the model against copy-last by paired per-sequence differences (``eval.json["per_sequence"]``;
  an older ``eval.json`` without it gets means only, and says so);
- success rates: the 95 % Wilson intervals over episodes (``ci95`` of the plan and agent JSON,
  else recomputed from ``successes`` / ``episodes``).

The "Run" section shows ``run.json``, which the demo command writes (the command, the worldmodel
version, the git commit, the hardware); the library itself never asks git or the machine.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from worldmodel.cli.demo_settings import PLAN_FILES
from worldmodel.envs.task import wilson_interval
from worldmodel.report import Report, interval_chart, line_chart, mean_interval

# The trainer's held-out scores (eval/, control/) are not training-batch curves.
_SKIP_CURVES = ("lr", "frames_per_s", "grad_norm", "eval/", "control/")
# Plain names of the trainer's state-head metrics (training batches, cm).
_STATE_NAMES = {"metrics/state_ee_cm": "arm (end effector)", "metrics/state_obj_cm": "object"}


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _jsonl(path: Path) -> list[dict[str, Any]]:
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


def _curves(metrics_file: Path) -> dict[str, tuple[list[float], list[float]]]:
    """Loss curves from a trainer's ``metrics.jsonl``: ``{name: (steps, values)}``."""
    curves: dict[str, tuple[list[float], list[float]]] = {}
    for row in _jsonl(metrics_file):
        step = row.pop("step", None)
        for name, value in row.items():
            if step is None or name.startswith(_SKIP_CURVES) or not isinstance(value, (int, float)):
                continue
            xs, ys = curves.setdefault(name, ([], []))
            xs.append(float(step))
            ys.append(float(value))
    return curves


def _chart(rep: Report, series: dict, labels: dict[str, Any], caption: str) -> None:
    """A line chart, or a note when the series hold nothing finite (e.g. a diverged run)."""
    try:
        rep.chart(line_chart(series, **labels), caption)
    except ValueError as err:
        rep.paragraph(f"{labels.get('title', 'chart')}: nothing to plot ({err})")


def _rel(out: Path, path: Path) -> str | None:
    return str(path.relative_to(out)) if path.exists() else None


def _sentence(text: str) -> str:
    """``text`` with a capital first letter (``str.capitalize`` would lower "PSNR" too)."""
    return text[:1].upper() + text[1:]


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


def _training(rep: Report, out: Path) -> None:
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
    rep.verdict(_sentence("; ".join(said)) + " (training batches, first and last tenth of the log).")
    if losses:
        positive = all(min(ys) > 0 for _, ys in losses.values())
        _chart(
            rep,
            losses,
            dict(title="training losses", xlabel="step", ylabel="value", log_y=positive),
            "Loss terms the trainer logged (metrics.jsonl; TensorBoard in model/tb has all of them). "
            "Curves with the same values are drawn once and named together (a = b).",
        )
    if state:
        _chart(
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
    _chart(rep, series, labels, caption)


def _evaluation(rep: Report, out: Path, config: dict[str, Any]) -> None:
    rep.heading("Prediction quality vs copy-last-frame")
    ev = _json(out / "eval.json")
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
    rep.verdict(_sentence("; ".join(said)) + ".")
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
    if (gif := _rel(out, out / "eval.gif")) is not None:
        rep.image(
            gif, "One test sequence per row: truth | best sample | random sample (context frames first).", 384
        )


def _head(rep: Report, out: Path) -> None:
    head = _json(out / "head.json")
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


# --- control --------------------------------------------------------------------------------------
_AGENTS = (
    ("model", "MPC with the world model"),
    ("oracle", "MPC with the simulator"),
    ("random", "random actions"),
)
_PLAN_GIFS = (
    ("plan.gif", "push: real episode | imagined plan | goal image (the target object at the goal)"),
    ("plan_recorded.gif", "recorded goal: real episode | imagined plan | goal image (the recorded scene)"),
    (
        "plan_reach.gif",
        "reach: real episode | imagined plan | goal image (the start scene; its disc marks the goal)",
    ),
    ("agent_eval.gif", "the dream-trained agent's first real-sim episodes, side by side"),
)


def ci95(r: dict[str, Any]) -> tuple[float, float]:
    """A result's 95 % interval: its ``ci95``, else the Wilson interval of successes / episodes."""
    ci = r.get("ci95")
    if ci and len(ci) == 2 and None not in ci:
        return float(ci[0]), float(ci[1])
    n = int(r.get("episodes", 0))
    return wilson_interval(int(r.get("successes", round(r["success_rate"] * n))), n)


def _interval(r: dict[str, Any]) -> str:
    lo, hi = ci95(r)
    return f"{lo:.2f}–{hi:.2f}" if math.isfinite(lo) and math.isfinite(hi) else "—"


def verdict(policy: dict[str, Any] | None, random: dict[str, Any] | None) -> str:
    """A plain sentence: does ``policy`` beat ``random`` (95 % intervals apart), and by how much."""
    if not policy or not random:
        return "not measured"
    p, r = policy["success_rate"], random["success_rate"]
    lo, hi = ci95(policy)[0], ci95(random)[1]
    gap = f"{p:.2f} vs random {r:.2f} over {policy['episodes']} episodes"
    if lo > hi:
        return f"beats random ({gap}; the 95 % intervals do not overlap)"
    if p > r:
        return f"is better than random but not clearly ({gap}; the 95 % intervals overlap)"
    return f"does not beat random ({gap})"


def _success(rep: Report, out: Path) -> None:
    rep.heading("Control in the real simulator")
    plans = {task: _json(out / name) for task, name in PLAN_FILES.items()}
    agent = _json(out / "agent_eval.json")
    if not any(plans.values()) and agent is None:
        rep.paragraph("not run")
        return
    rows, verdicts, dots = [], [], []
    for task, plan in plans.items():
        if not plan:
            continue
        for key, label in _AGENTS:
            if plan.get(key):  # None when that agent was skipped (e.g. --oracle-budget 0)
                r = plan[key]
                ms = r.get("ms_per_action")
                rows.append([task, label, r["success_rate"], _interval(r), 100 * r["final_distance"], ms])
                dots.append((task, label, r["success_rate"], *ci95(r)))
        line = f"{task}: the learned planner {verdict(plan.get('model'), plan.get('random'))}"
        if plan.get("oracle"):
            line += f"; the simulator oracle reaches {plan['oracle']['success_rate']:.2f}"
        verdicts.append(line + ".")
    if agent is not None:
        task = agent.get("task", "push")
        label = "agent trained in the dream"
        rows.append(
            [task, label, agent["success_rate"], _interval(agent), 100 * agent["final_distance"], None]
        )
        dots.append((task, label, agent["success_rate"], *ci95(agent)))
        random = (plans.get(task) or {}).get("random")
        verdicts.append(f"{task}: the dream-trained agent {verdict(agent, random)}.")
    rep.verdict(*map(_sentence, verdicts))
    headers = ["task", "policy", "success rate", "95 % interval", "final distance (cm)", "planning ms/action"]
    rep.table(headers, rows)
    dots.sort(key=lambda d: list(PLAN_FILES).index(d[0]) if d[0] in PLAN_FILES else len(PLAN_FILES))
    rep.chart(
        interval_chart(dots, title="success rate in the real sim", xlabel="success rate"),
        "Dots: success rate over the episodes; whiskers: the 95 % Wilson interval. Two policies differ "
        "clearly when their whiskers do not overlap.",
    )
    for name, caption in _PLAN_GIFS:
        if (gif := _rel(out, out / name)) is not None:
            rep.image(gif, caption, 384)
    _agent_training(rep, out)


def _agent_curves(path: Path) -> tuple[dict, dict]:
    """``real sim`` and ``dream`` success rate against timesteps from ``agents.train``'s
    eval.jsonl, and their 95 % Wilson bands (from each row's episode counts)."""
    curves, bands = {}, {}
    rows = _jsonl(path)
    for key, count, label in (
        ("real_success_rate", "episodes", "real sim"),
        ("dream_success_rate", "dream_episodes", "dream"),
    ):
        pts = [r for r in rows if key in r and "timesteps" in r]
        if not pts:
            continue
        curves[label] = ([r["timesteps"] for r in pts], [r[key] for r in pts])
        if all(count in r for r in pts):
            cis = [wilson_interval(round(r[key] * r[count]), int(r[count])) for r in pts]
            bands[label] = ([c[0] for c in cis], [c[1] for c in cis])
    return curves, bands


def _agent_training(rep: Report, out: Path) -> None:
    curves, bands = _agent_curves(out / "agent" / "eval.jsonl")
    if not curves:
        return
    rep.heading("The agent while it trained in the dream", 3)
    rows = _jsonl(out / "agent" / "eval.jsonl")
    counts = []
    for label, key in (("real sim", "episodes"), ("dream", "dream_episodes")):
        sizes = sorted({int(r[key]) for r in rows if key in r})
        if label in curves and sizes:
            counts.append(f"{label} {'–'.join(map(str, sizes[:: max(1, len(sizes) - 1)]))} episodes")
    if {"real sim", "dream"} <= set(curves) and {"real sim", "dream"} <= set(bands):
        real, dream = curves["real sim"][1][-1], curves["dream"][1][-1]
        (rlo, rhi), (dlo, dhi) = ((b[0][-1], b[1][-1]) for b in (bands["real sim"], bands["dream"]))
        if dlo > rhi:
            how = "the dream overstates the agent's success (95 % intervals apart)"
        elif rlo > dhi:
            how = "the real sim goes better than the dream (95 % intervals apart)"
        else:
            how = "the dream and the real sim agree within their 95 % intervals"
        rep.verdict(
            f"At the end of training the agent succeeds at {dream:.2f} in the dream and {real:.2f} in the "
            f"real sim: {how}."
        )
    _chart(
        rep,
        curves,
        dict(
            title="agent success during training",
            xlabel="dream timesteps",
            ylabel="success rate",
            y_range=(0.0, 1.0),
            bands=bands,
        ),
        "Periodic evaluations of the agent while it trained in the dream (agent/eval.jsonl; "
        f"{', '.join(counts)} per point). Shaded: 95 % Wilson intervals.",
    )


# --- diagnostics ----------------------------------------------------------------------------------
def _beats_static(per_k: list[tuple[int, dict]], err: str, static: str) -> str:
    """Where the dreamed error beats "stays put", in words (``k`` listed when it is mixed)."""
    pairs = [(k, d.get(err), d.get(static)) for k, d in per_k]
    pairs = [(k, e, s) for k, e, s in pairs if e is not None and s is not None]
    if not pairs:
        return "not measured"
    good = [k for k, e, s in pairs if e < s]
    k, e, s = pairs[-1]
    at = f"{e:.3g} vs {s:.3g} cm at k = {k}"
    if len(good) == len(pairs):
        return f"beats 'stays put' at every k ({at})"
    if not good:
        return f"does not beat 'stays put' at any k ({at})"
    return f"beats 'stays put' at k = {', '.join(map(str, good))} only ({at})"


def _diagnostics(rep: Report, out: Path) -> None:
    """The control diagnostics of ``worldmodel eval`` (``eval.json["control"]``)."""
    control = (_json(out / "eval.json") or {}).get("control")
    if not control:
        return
    rep.heading("Why it plans as it does: dreamed arm and objects under the recorded actions")
    per_k = sorted(((int(k), d) for k, d in control.get("per_k", {}).items()), key=lambda kd: kd[0])
    ranking = control.get("ranking") or {}
    rank_k = control.get("rank_k", ranking.get("k", "?"))
    said = [
        f"the dreamed arm {_beats_static(per_k, 'ee_error_cm', 'ee_static_cm')}",
        f"the dreamed target object {_beats_static(per_k, 'target_error_cm', 'target_static_cm')}",
    ]
    for name, r in ranking.items():
        if isinstance(r, dict) and r.get("rank_score") is not None:
            above = (
                "ranks the recorded actions above" if r["rank_score"] > 0.5 else "does not rank them above"
            )
            said.append(f"the {name} cost {above} chance ({r['rank_score']:.2f}; 0.5 = chance)")
    rep.verdict(_sentence("; ".join(said)) + ".")
    rows = [
        [
            k,
            d.get("ee_error_cm"),
            d.get("ee_static_cm"),
            d.get("target_error_cm"),
            d.get("target_static_cm"),
            d.get("target_episodes"),
        ]
        for k, d in per_k
    ]
    rep.table(
        [
            "k (steps dreamed)",
            "arm error (cm)",
            "arm stays put (cm)",
            "target error (cm)",
            "target stays put (cm)",
            "episodes (target moved)",
        ],
        rows,
    )
    if ranking:
        rep.table(
            [f"planner cost (k = {rank_k})", "rank score (0.5 = chance)", "recorded best", "episodes"],
            [
                [name, r.get("rank_score"), r.get("top1"), r.get("episodes")]
                for name, r in ranking.items()
                if isinstance(r, dict)
            ],
        )
    rep.paragraph(
        "The model is rolled from held-out contexts with the recorded actions; its state head reads the "
        "end effector and the objects off the dreamed features. Rank score: how often the planner's cost "
        "prefers the recorded actions over other episodes' actions for reaching the recorded outcome."
    )


# --- run ------------------------------------------------------------------------------------------
def _run(rep: Report, out: Path, config: dict[str, Any], timings: dict[str, float], run: dict | None) -> None:
    rep.heading("Run")
    run = run if run is not None else _json(out / "run.json")
    if run:
        if run.get("command"):
            where = f" (in {run['cwd']})" if run.get("cwd") else ""
            rep.paragraph(f"Command{where}:")
            rep.code(run["command"])
        hw = run.get("hardware") or {}
        facts = [
            ("worldmodel", run.get("version")),
            ("git commit", run.get("commit")),
            ("device", hw.get("device")),
            ("GPU", hw.get("gpu")),
            ("CPU", hw.get("cpu")),
            ("torch", hw.get("torch")),
            ("Python", hw.get("python")),
            ("OS", hw.get("os")),
            ("started", run.get("started")),
        ]
        rep.table(["", ""], [[k, str(v)] for k, v in facts if v])
    else:
        rep.paragraph(
            "No run.json in this folder (written by `worldmodel demo`): command and machine unknown."
        )
    times = [[k, float(v)] for k, v in timings.items() if math.isfinite(v)]
    if times:
        rep.table(["stage", "seconds"], [*times, ["total", sum(v for _, v in times)]])
    rep.paragraph("Settings (demo_config.json):")
    # One field a line, lists kept on it: a long plan_args list would fill a screen otherwise.
    rep.code("\n".join(f"{k} = {json.dumps(v)}" for k, v in config.items()))


def build_report(
    out: Path, config: dict[str, Any], timings: dict[str, float], run: dict[str, Any] | None = None
) -> Report:
    """The report of the demo in ``out`` (see the module docstring).

    ``run``: the command, version, commit and hardware for the "Run" section (the demo command's
    ``run_info``); ``None`` reads ``out/run.json``, which the demo command writes.
    """
    out = Path(out)
    rep = Report(f"worldmodel demo: {config.get('model', '?')} ({config.get('preset', '?')})")
    rep.paragraph(
        "Collected pushing episodes → world model → prediction quality → planning and a dream-trained "
        "agent, both judged in the real simulator. Figures below come from the files in this folder."
    )
    _training(rep, out)
    _evaluation(rep, out, config)
    _head(rep, out)
    _diagnostics(rep, out)
    _success(rep, out)
    _run(rep, out, config, timings, run)
    return rep
