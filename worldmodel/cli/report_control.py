"""The demo report's sections on control: success in the real simulator of the planners and the
dream-trained agent on each task (``plan*.json``, ``agent_eval.json``), the agent while it trained
(``agent/eval.jsonl``), and the diagnostics of why the model plans as it does (``eval.json``'s
``control``).

Success rates come with their 95 % Wilson intervals over episodes (``ci95`` of the plan and agent
JSON, else recomputed from ``successes`` / ``episodes``).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from worldmodel.cli.demo_settings import PLAN_FILES
from worldmodel.cli.report_parts import chart_or_note, read_json, read_jsonl, relative, sentence
from worldmodel.envs.task import wilson_interval
from worldmodel.report import Report, interval_chart

# --- success in the real sim ---------------------------------------------------------------------
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


def control_section(rep: Report, out: Path) -> None:
    rep.heading("Control in the real simulator")
    plans = {task: read_json(out / name) for task, name in PLAN_FILES.items()}
    agent = read_json(out / "agent_eval.json")
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
    rep.verdict(*map(sentence, verdicts))
    headers = ["task", "policy", "success rate", "95 % interval", "final distance (cm)", "planning ms/action"]
    rep.table(headers, rows)
    dots.sort(key=lambda d: list(PLAN_FILES).index(d[0]) if d[0] in PLAN_FILES else len(PLAN_FILES))
    rep.chart(
        interval_chart(dots, title="success rate in the real sim", xlabel="success rate"),
        "Dots: success rate over the episodes; whiskers: the 95 % Wilson interval. Two policies differ "
        "clearly when their whiskers do not overlap.",
    )
    _prediction_checks(rep, plans)
    for name, caption in _PLAN_GIFS:
        if (gif := relative(out, out / name)) is not None:
            rep.image(gif, caption, 384)
    _agent_training(rep, out)


def _prediction_checks(rep: Report, plans: dict[str, dict | None]) -> None:
    """The learned planner's model on its own plans (``prediction_check`` of plan*.json), where run."""
    keys = ("anchor_error", "predicted_move", "real_move", "error", "stays_put")
    rows = []
    for task, plan in plans.items():
        check = ((plan or {}).get("model") or {}).get("prediction_check")
        if check and check.get("pairs"):
            rows.append([task, *(100 * check[k] for k in keys), check["pairs"]])
    if not rows:
        return
    rep.paragraph(
        "The model on its own plans: at every plan its state head reads the target object from the "
        "real frames it was re-anchored on and from its prediction of the actions then executed; the "
        "sim says where the target is (cm, means over consecutive plans). A model a planner can push "
        "with knows where the target is (small anchor error), expects the moves that happen, and "
        'beats "stays put" after them.'
    )
    headers = ["task", "anchor error", "predicted move", "real move", "error after the plan", "stays put"]
    rep.table([*headers, "plans"], rows)


def _agent_curves(path: Path) -> tuple[dict, dict]:
    """``real sim`` and ``dream`` success rate against timesteps from ``agents.train``'s
    eval.jsonl, and their 95 % Wilson bands (from each row's episode counts)."""
    curves, bands = {}, {}
    rows = read_jsonl(path)
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
    rows = read_jsonl(out / "agent" / "eval.jsonl")
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
    chart_or_note(
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


def diagnostics_section(rep: Report, out: Path) -> None:
    """The control diagnostics of ``worldmodel eval`` (``eval.json["control"]``)."""
    control = (read_json(out / "eval.json") or {}).get("control")
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
    rep.verdict(sentence("; ".join(said)) + ".")
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
