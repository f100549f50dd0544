"""The online run's report and its model-free baseline.

``write_report`` writes ``OUT/online.json`` (the summary) and ``OUT/online.html`` (the
success-vs-real-steps chart and the table).

**Model-free baseline** (``ppo_run``): the folder of a ``python -m agents.train_real`` run on the
same task, whose ``eval.jsonl`` (success in the real sim against its real steps) is drawn on the
same axes (``read_ppo_run``); ``ppo_command`` gives the command for the loop's budget. The loop
never runs it (``worldmodel`` does not import ``agents``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from worldmodel import files
from worldmodel.envs.task import wilson_interval
from worldmodel.training.online_config import OnlineConfig


def ppo_command(cfg: OnlineConfig, timesteps: int, eval_every: int) -> str:
    """The ``agents.train_real`` command of the model-free baseline at the loop's final real-step
    budget ``timesteps``, evaluated every ``eval_every`` steps (and at the end) on as many
    episodes as the loop's evaluations."""
    out = cfg.out / "ppo"
    line = (
        f"python -m agents.train_real --algo ppo --timesteps {timesteps} --eval-every {eval_every} "
        f"--eval-episodes {cfg.eval_episodes} --seed {cfg.seed} --out {out}"
    )
    return line if cfg.task == "push" else f"{line} --task {cfg.task}"


def read_ppo_run(run: str | os.PathLike, task: str) -> dict[str, Any]:
    """The evaluations of an ``agents.train_real`` run: ``{"run", "algo", "rows": [{timesteps,
    success_rate, ci95, final_distance, episodes}]}``, in order of ``timesteps``. One-line
    ``ValueError`` naming the file when it is missing, of another task or not a real-sim run."""
    run = Path(run)
    config_path, evals = run / "config.json", run / "eval.jsonl"
    try:
        config = json.loads(config_path.read_text())
        lines = evals.read_text().splitlines()
    except FileNotFoundError as err:
        raise ValueError(
            f"--ppo-run {run}: no {Path(err.filename).name}: not an agents.train_real run"
        ) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"--ppo-run {config_path}: not valid JSON ({err})") from None
    config = config.get("args", config) if isinstance(config, dict) else {}
    if config.get("env", "real") != "real":
        raise ValueError(f"--ppo-run {config_path}: a run in the {config.get('env')!r} env, not the real sim")
    if config.get("task", "push") != task:
        raise ValueError(
            f"--ppo-run {config_path}: trained on task {config.get('task', 'push')!r}, not {task!r}"
        )
    rows = []
    for n, line in enumerate(lines, 1):
        try:
            r = json.loads(line)
            k = int(r["episodes"])
            rate = float(r["real_success_rate"])
            rows.append(
                {
                    "timesteps": int(r["timesteps"]),
                    "success_rate": rate,
                    "ci95": list(wilson_interval(round(rate * k), k)),
                    "final_distance": float(r.get("real_final_distance", float("nan"))),
                    "episodes": k,
                }
            )
        except (ValueError, KeyError, TypeError):
            if n < len(lines):  # a last line cut short by a kill is left out; others are errors
                raise ValueError(f"--ppo-run {evals}: line {n} is not an evaluation row") from None
    rows.sort(key=lambda r: r["timesteps"])
    return {"run": str(run), "algo": config.get("algo"), "rows": rows}


def write_report(out: str | os.PathLike, summary: dict[str, Any]) -> None:
    """``OUT/online.json`` (the summary) and ``OUT/online.html`` (the chart and the table), atomically."""
    from worldmodel.report import Report, line_chart

    out = Path(out)
    files.write_json_atomic(out / "online.json", summary)
    rows, ppo = summary["rows"], summary["ppo"]
    series = {"online MPC": ([r["real_steps"] for r in rows], [r["success_rate"] for r in rows])}
    bands = {"online MPC": ([r["ci95"][0] for r in rows], [r["ci95"][1] for r in rows])}
    if ppo and ppo["rows"]:
        name = f"{(ppo['algo'] or 'ppo').upper()} (model-free)"
        series[name] = ([p["timesteps"] for p in ppo["rows"]], [p["success_rate"] for p in ppo["rows"]])
        bands[name] = ([p["ci95"][0] for p in ppo["rows"]], [p["ci95"][1] for p in ppo["rows"]])
    report = Report(f"Online model-based RL on PushTable {summary['task']}")
    report.paragraph(
        f"Each iteration collects episodes of {summary['seq_len']} steps with the learned planner "
        "(plus exploration noise), appends them to the dataset, fine-tunes the model and evaluates the "
        f"planner without noise on the same {summary['settings']['eval_episodes']} episodes of "
        f"{summary['eval_steps']} steps. Real steps count every step in the dataset, the initial "
        f"{summary['initial_real_steps']} of the random collection included; evaluation steps are "
        "not counted."
    )
    if rows:
        chart = line_chart(
            series,
            title="success in the real sim vs real environment steps",
            xlabel="real environment steps",
            ylabel="success rate",
            y_range=(0.0, 1.0),
            bands=bands,
        )
        report.chart(chart, "shaded: 95% Wilson intervals")
    header = ["iteration", "real steps", "episodes", "success", "95% interval", "final dist (cm)"]
    header += ["collect success", "model step", "seconds", "PPO success (at steps)"]
    table = []
    for r in rows:
        ppo_cell = (
            None
            if r.get("ppo_success_rate") is None
            else f"{r['ppo_success_rate']:.2f} ({r['ppo_timesteps']})"
        )
        table.append(
            [
                r["iteration"],
                r["real_steps"],
                r["episodes"],
                r["success_rate"],
                "{:.2f}-{:.2f}".format(*r["ci95"]),
                100 * r["final_distance"],
                r["collect_success_rate"],
                r["train_step"],
                r["seconds"],
                ppo_cell,
            ]
        )
    report.table(header, table)
    if not ppo:
        report.paragraph("Model-free baseline at the same real-step budget (then pass --ppo-run OUT/ppo):")
        report.code(summary["ppo_command"])
    report.write(out / "online.html")
