"""The demo's HTML report, built from the files the stages wrote (``worldmodel demo``).

Every section reads its stage's output; a stage that has not run shows as "not run" instead of
failing, so a report can be written for a partial demo too.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from worldmodel.report import Report, line_chart

_SKIP_CURVES = ("lr", "frames_per_s", "grad_norm")


def _json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


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


def _training(rep: Report, out: Path) -> None:
    rep.heading("World-model training")
    curves = _curves(out / "model" / "metrics.jsonl")
    if not curves:
        rep.paragraph("not run")
        return
    positive = all(min(ys) > 0 for _, ys in curves.values())
    _chart(
        rep,
        curves,
        dict(title="training losses", xlabel="step", ylabel="value", log_y=positive),
        "Scalars the trainer logged (metrics.jsonl; TensorBoard in model/tb has all of them).",
    )
    samples = sorted((out / "model" / "samples").glob("*.gif"))
    if samples:
        rep.image(str(samples[-1].relative_to(out)), f"{samples[-1].name}: context | prediction | truth", 512)


def _evaluation(rep: Report, out: Path) -> None:
    rep.heading("Prediction quality vs copy-last-frame")
    ev = _json(out / "eval.json")
    if ev is None:
        rep.paragraph("not run")
        return
    steps = list(range(1, len(ev["psnr"]) + 1))
    for metric in ("psnr", "ssim"):
        series = {
            f"best of {ev['samples']}": (steps, ev[metric]),
            f"mean of {ev['samples']}": (steps, ev["mean_of_n"][metric]),
            "copy last frame": (steps, ev["baseline"][metric]),
        }
        _chart(
            rep,
            series,
            dict(title=f"{metric.upper()} per predicted step", xlabel="step", ylabel=metric),
            f"{ev['sequences']} test sequences, {ev['n_past']} context frames.",
        )
    rows = [
        [f"best of {ev['samples']}", ev["psnr_mean"], ev["ssim_mean"]],
        [f"mean of {ev['samples']}", ev["mean_of_n"]["psnr_mean"], ev["mean_of_n"]["ssim_mean"]],
        ["copy last frame", ev["baseline"]["psnr_mean"], ev["baseline"]["ssim_mean"]],
    ]
    if "bpp_mean" in ev:
        rows.append(["bits per dimension", ev["bpp_mean"], None])
    rep.table(["", "PSNR (dB)", "SSIM"], rows)
    if (gif := _rel(out, out / "eval.gif")) is not None:
        rep.image(gif, "truth | best sample | random sample (context frames first)", 512)


def _head(rep: Report, out: Path) -> None:
    head = _json(out / "head.json")
    if head is None or "val_rmse_xy" not in head:
        return
    rep.heading("Learned reward: object-position head (held-out episodes)")
    rep.table(
        ["predictor", "target xy RMSE (cm)"],
        [
            ["head on dream features", 100 * head["val_rmse_xy"]],
            ["predict the mean", 100 * head["val_rmse_xy_mean"]],
            ["object stays put", 100 * head["val_rmse_xy_static"]],
        ],
    )


PLAN_FILES = {"push": "plan.json", "recorded-goal": "plan_recorded.json", "reach": "plan_reach.json"}
_AGENTS = (
    ("model", "MPC with the world model"),
    ("oracle", "MPC with the simulator"),
    ("random", "random actions"),
)


def _interval(r: dict[str, Any]) -> str:
    ci = r.get("ci95")
    return f"{ci[0]:.2f}–{ci[1]:.2f}" if ci and None not in ci else "—"


def verdict(policy: dict[str, Any] | None, random: dict[str, Any] | None) -> str:
    """A plain sentence: does ``policy`` beat ``random`` (95 % intervals apart), and by how much."""
    if not policy or not random:
        return "not measured"
    p, r = policy["success_rate"], random["success_rate"]
    lo, hi = policy.get("ci95", [p, p])[0], random.get("ci95", [r, r])[1]
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
    rows, verdicts = [], []
    for task, plan in plans.items():
        if not plan:
            continue
        for key, label in _AGENTS:
            if plan.get(key):  # None when that agent was skipped (e.g. --oracle-budget 0)
                r = plan[key]
                rows.append(
                    [
                        task,
                        label,
                        r["success_rate"],
                        _interval(r),
                        100 * r["final_distance"],
                        r.get("ms_per_action"),
                    ]
                )
        verdicts.append(f"{task}: the learned planner {verdict(plan.get('model'), plan.get('random'))}.")
    if agent is not None:
        task = agent.get("task", "push")
        rows.append(
            [
                task,
                "agent trained in the dream",
                agent["success_rate"],
                _interval(agent),
                100 * agent["final_distance"],
                None,
            ]
        )
        random = (plans.get(task) or {}).get("random")
        verdicts.append(f"{task}: the dream-trained agent {verdict(agent, random)}.")
    headers = ["task", "policy", "success rate", "95 % interval", "final distance (cm)", "planning ms/action"]
    rep.table(headers, rows)
    for line in verdicts:
        rep.paragraph(line)
    for name, caption in (
        ("plan.gif", "push: real episode | imagined plan | goal"),
        ("plan_recorded.gif", "recorded goal: real episode | imagined plan | goal"),
        ("plan_reach.gif", "reach: real episode | imagined plan"),
        ("agent_eval.gif", "agent in the real sim"),
    ):
        if (gif := _rel(out, out / name)) is not None:
            rep.image(gif, caption, 384)
    curves = _agent_curves(out / "agent" / "eval.jsonl")
    if curves:
        _chart(
            rep,
            curves,
            dict(title="agent success in training", xlabel="dream timesteps", ylabel="rate"),
            "Periodic evaluations of the agent while it trained in the dream (agent/eval.jsonl).",
        )


def _diagnostics(rep: Report, out: Path) -> None:
    """The control diagnostics of ``worldmodel eval`` (``eval.json["control"]``)."""
    control = (_json(out / "eval.json") or {}).get("control")
    if not control:
        return
    rep.heading("Why it plans as it does: dreamed arm and objects under the recorded actions")
    rows = []
    for k, d in sorted(control.get("per_k", {}).items(), key=lambda kv: int(kv[0])):
        rows.append(
            [
                int(k),
                d.get("ee_error_cm"),
                d.get("ee_static_cm"),
                d.get("target_error_cm"),
                d.get("target_static_cm"),
                d.get("target_episodes"),
            ]
        )
    rep.table(
        [
            "k",
            "arm error (cm)",
            "arm stays put (cm)",
            "target error (cm)",
            "target stays put (cm)",
            "episodes",
        ],
        rows,
    )
    ranking = control.get("ranking") or {}
    if ranking:
        rep.table(
            [
                f"planner cost (k = {ranking.get('k', '?')})",
                "rank score (0.5 = chance)",
                "recorded best",
                "episodes",
            ],
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


def _agent_curves(path: Path) -> dict[str, tuple[list[float], list[float]]]:
    """``real`` and ``dream`` success rate against timesteps from ``agents.train``'s eval.jsonl."""
    curves: dict[str, tuple[list[float], list[float]]] = {}
    rows = _jsonl(path)
    for key, label in (("real_success_rate", "real sim"), ("dream_success_rate", "dream")):
        pts = [(r["timesteps"], r[key]) for r in rows if key in r and "timesteps" in r]
        if pts:
            curves[label] = ([p[0] for p in pts], [p[1] for p in pts])
    return curves


def build_report(out: Path, config: dict[str, Any], timings: dict[str, float]) -> Report:
    """The report of the demo in ``out`` (see the module docstring)."""
    out = Path(out)
    rep = Report(f"worldmodel demo: {config.get('model', '?')} ({config.get('preset', '?')})")
    rep.paragraph(
        "Collected pushing episodes → world model → prediction quality → planning and a dream-trained "
        "agent, both judged in the real simulator. Figures below come from the files in this folder."
    )
    _training(rep, out)
    _evaluation(rep, out)
    _head(rep, out)
    _diagnostics(rep, out)
    _success(rep, out)
    rep.heading("Run")
    rep.table(["stage", "seconds"], [[k, v] for k, v in timings.items() if math.isfinite(v)])
    rep.code(json.dumps(config, indent=2))
    return rep
