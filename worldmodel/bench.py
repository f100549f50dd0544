"""Which world model plans best: the figures of ``worldmodel bench``, from its stages' reports.

Pure functions over what the stages wrote, already parsed: the trainer's ``metrics.jsonl`` rows,
``worldmodel eval --json`` (prediction quality and the ``control`` diagnostics), ``worldmodel plan
--json`` (one per planner and task) and ``agents.evaluate --json``. ``model_row`` makes one
model's figures, ``baselines`` the random and oracle agents of each task (they do not depend on the
model, so one plan report per task holds them), ``table`` the Markdown table of a whole bench.
Nothing here reads or writes a file or prints.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Mapping
from typing import Any

CONTROL_K = 10
"""Steps after the context at which the table reports the dreamed errors (the control targets'
k; the nearest measured k below it when the episodes are shorter)."""

_SUCCESS_KEYS = ("success_rate", "successes", "episodes", "ci95", "final_distance", "ms_per_action")
_STATE_KEYS = ("ee_error_cm", "ee_static_cm", "target_error_cm", "target_static_cm")


def frames_per_s(metrics_rows: Iterable[Mapping[str, Any]]) -> float | None:
    """Median of the trainer's logged ``frames_per_s`` (one per log window): the median keeps the
    first window's warm-up and a window slowed by other work out. ``None`` when none was logged."""
    values = [float(r["frames_per_s"]) for r in metrics_rows if "frames_per_s" in r]
    return statistics.median(values) if values else None


def success(report: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """An agent's success figures (rate, count, episodes, Wilson ``ci95``, final distance in m,
    ms per action where timed) from a plan or agent-evaluation report."""
    if not report:
        return None
    return {k: report[k] for k in _SUCCESS_KEYS if k in report}


def quality(eval_report: Mapping[str, Any] | None) -> dict[str, Any] | None:
    """PSNR / SSIM (best of N and mean of N, means over the predicted frames) against copy-last,
    and bits per dimension (``None`` for a model without a likelihood)."""
    if not eval_report:
        return None
    ev = eval_report
    blocks = {"": ev, "_mean_of_n": ev["mean_of_n"], "_copy_last": ev["baseline"]}
    scores = {
        f"{m}{suffix}": block[f"{m}_mean"] for suffix, block in blocks.items() for m in ("psnr", "ssim")
    }
    return {
        **scores,
        "bpp": ev.get("bpp_mean"),
        "sequences": ev["sequences"],
        "samples": ev["samples"],
        "n_past": ev.get("n_past"),
        "n_future": ev.get("n_future"),
    }


def control(eval_report: Mapping[str, Any] | None, k: int = CONTROL_K) -> dict[str, Any] | None:
    """The control diagnostics of ``eval_report``: dreamed arm and target-object errors (cm)
    against "stays put" at ``k`` steps (the largest measured k <= ``k``, else the smallest), every
    measured k, and the rank scores of the recorded actions (1 = always best, 0.5 = chance)."""
    c = (eval_report or {}).get("control")
    if not c or not c.get("per_k"):
        return None
    measured = sorted(int(key) for key in c["per_k"])
    below = [m for m in measured if m <= k]
    at = below[-1] if below else measured[0]
    per_k = {str(m): {key: c["per_k"][str(m)].get(key) for key in _STATE_KEYS} for m in measured}
    ranking = c.get("ranking") or {}
    return {
        "k": at,
        **per_k[str(at)],
        "rank_k": c.get("rank_k"),
        "rank_score": (ranking.get("learned") or {}).get("rank_score"),
        "rank_score_pixels": (ranking.get("pixels") or {}).get("rank_score"),
        "episodes": c.get("episodes"),
        "per_k": per_k,
    }


def model_row(
    *,
    preset: str,
    params: int | None,
    train_steps: int,
    batch_size: int,
    train_seconds: float | None,
    metrics_rows: Iterable[Mapping[str, Any]],
    eval_report: Mapping[str, Any] | None,
    plans: Mapping[str, Mapping[str, Mapping[str, Any] | None]],
    agent_report: Mapping[str, Any] | None,
) -> dict[str, Any]:
    """One model's figures. ``plans`` maps planner -> task -> that plan report (``None``: not
    run); the model's agent is kept with the planner's name and population. Missing reports give
    ``None`` figures, never a missing key."""
    plan_rows: dict[str, dict[str, Any]] = {}
    for planner, by_task in plans.items():
        plan_rows[planner] = {task: success((r or {}).get("model")) for task, r in by_task.items()}
        for task, r in by_task.items():
            if plan_rows[planner][task] is not None:
                plan_rows[planner][task]["population"] = r["model"].get("population")
    agent = success(agent_report)
    if agent is not None:
        agent.update({k: agent_report.get(k) for k in ("algo", "task", "obs", "timesteps")})
    return {
        "preset": preset,
        "params": params,
        "train": {
            "steps": train_steps,
            "batch_size": batch_size,
            "seconds": None if train_seconds is None else round(train_seconds, 1),
            "frames_per_s": frames_per_s(metrics_rows),
        },
        "quality": quality(eval_report),
        "control": control(eval_report),
        "plan": plan_rows,
        "agent": agent,
    }


def baselines(
    reports: Mapping[str, Iterable[tuple[str, Mapping[str, Any] | None]]],
) -> dict[str, dict[str, Any] | None]:
    """The random and oracle agents of each task: ``reports`` maps task -> ``(model, plan
    report)`` in order of preference; the first report that ran the oracle gives both (its random
    ran on the same episodes). ``None`` for a task none of them ran the oracle on."""
    out: dict[str, dict[str, Any] | None] = {}
    for task, candidates in reports.items():
        out[task] = None
        for model, report in candidates:
            if report and report.get("oracle") and report.get("random"):
                oracle = success(report["oracle"])
                oracle.update(
                    planner=report["oracle"].get("planner"), population=report["oracle"].get("population")
                )
                out[task] = {"from": model, "random": success(report["random"]), "oracle": oracle}
                break
    return out


# ----------------------------------------------------------------------------------- the table
def _num(value: float | None, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def _count(n: int | None) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f} M" if n >= 1e6 else f"{n / 1e3:.1f} k"


def _paren(value: float | None, ref: float | None, spec: str) -> str:
    return "-" if value is None else f"{value:{spec}} ({_num(ref, spec)})"


def _slash(value: float | None, ref: float | None, spec: str) -> str:
    return "-" if value is None else f"{value:{spec}} / {_num(ref, spec)}"


def _rate(r: Mapping[str, Any] | None, timed: bool = True) -> str:
    """``3/10 (0.11-0.60) 41 ms``: successes, Wilson 95 % interval, ms per action."""
    if not r:
        return "-"
    lo, hi = r["ci95"]
    text = f"{r['successes']}/{r['episodes']} ({lo:.2f}-{hi:.2f})"
    ms = r.get("ms_per_action")
    if timed and ms is not None:
        text += f" {ms:.0f} ms" if ms >= 10 else f" {ms:.1f} ms"
    return text


def _columns(bench: Mapping[str, Any]) -> list[tuple[str, str]]:
    return [(planner, task) for planner, tasks in bench["planners"].items() for task in tasks]


def _model_cells(row: Mapping[str, Any] | None, plans: list[tuple[str, str]]) -> list[str]:
    row = row or {}
    q, c, t = row.get("quality") or {}, row.get("control") or {}, row.get("train") or {}
    cells = [
        _count(row.get("params")),
        _num(t.get("seconds"), ".0f"),
        _num(t.get("frames_per_s"), ".0f"),
        _paren(q.get("psnr"), q.get("psnr_copy_last"), ".2f"),
        _paren(q.get("ssim"), q.get("ssim_copy_last"), ".3f"),
        _num(q.get("bpp"), ".3f"),
        _slash(c.get("ee_error_cm"), c.get("ee_static_cm"), ".2f"),
        _slash(c.get("target_error_cm"), c.get("target_static_cm"), ".2f"),
        _num(c.get("rank_score"), ".3f"),
    ]
    plan = row.get("plan") or {}
    cells += [_rate((plan.get(planner) or {}).get(task)) for planner, task in plans]
    return [*cells, _rate(row.get("agent"), timed=False)]


def table(bench: Mapping[str, Any]) -> str:
    """The bench as one Markdown table: a row per model, then the random and oracle agents in the
    first column of each task, under a line that states the shared data and budget."""
    b, plans = bench["budget"], _columns(bench)
    ks = {(r.get("control") or {}).get("k") for r in bench["models"].values() if r} - {None}
    k = min(ks) if ks else CONTROL_K
    head = ["model", "params", "train s", "frames/s", "PSNR dB (copy-last)", "SSIM (copy-last)", "bpp"]
    head += [f"arm cm @{k} (dream / stays put)", f"target cm @{k} (dream / stays put)", "rank"]
    head += [f"{planner} {task}" for planner, task in plans] + [
        f"{b['agent_algo'].upper()} {b['agent_task']}"
    ]
    rows = [[name, *_model_cells(row, plans)] for name, row in bench["models"].items()]
    first: dict[str, int] = {}
    for i, (_, task) in enumerate(plans):
        first.setdefault(task, i)
    for agent in ("random", "oracle"):
        cells = ["-"] * len(plans)
        for task, i in first.items():
            base = (bench.get("baselines") or {}).get(task)
            cells[i] = _rate(base and base[agent], timed=agent == "oracle")
        rows.append([f"*{agent}*", *["-"] * 9, *cells, "-"])
    widths = [max(len(r[i]) for r in (head, *rows)) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    lines = [
        f"Same data: {b['episodes']} episodes x {b['episode_len']} frames at {b['image_size']} px, collected "
        f"once. Same budget: {b['train_steps']} steps x batch {b['batch_size']}, preset {b['preset']}, "
        "every model with its state head.",
        f"Eval: {b['eval_sequences']} test sequences, best of {b['eval_samples']} samples; control at "
        f"k={k} steps; rank: recorded actions' rank score (learned objective; 0.5 = chance).",
        f"Plan: {b['plan_episodes']} real-sim episodes per agent and task, successes (Wilson 95 %) and "
        f"ms per action; {' '.join(b['plan_args'])}. {b['agent_algo'].upper()}: {b['agent_timesteps']} "
        f"dream steps on {b['agent_task']}, {b['agent_eval_episodes']} real episodes.",
        "",
        line(head),
        "| " + " | ".join("-" * w for w in widths) + " |",
        *map(line, rows),
    ]
    errors = bench.get("errors") or {}
    lines += [f"{name}: failed: {msg}" for name, messages in errors.items() for msg in messages]
    return "\n".join(lines)
