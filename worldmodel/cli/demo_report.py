"""The demo's HTML report, built from the files the stages wrote (``worldmodel demo``).

Every section reads its stage's output; a stage that has not run shows as "not run" instead of
failing, so a report can be written for a partial demo too. Each section opens with a one-line
verdict in plain words (does the model beat copy-last, does the planner beat random with 95 %
intervals apart, ...), worked out from the same numbers its charts and tables show. The sections
on the model (training, prediction quality, the head) are in ``report_prediction``, those on
control (the real sim, the agent, the diagnostics) in ``report_control``.

The "Run" section, here, shows ``run.json``, which the demo command writes (the command, the
worldmodel version, the git commit, the hardware); the library itself never asks git or the machine.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from worldmodel.cli.report_control import PLAN_FILES, ci95, control_section, diagnostics_section, verdict
from worldmodel.cli.report_parts import read_json
from worldmodel.cli.report_prediction import (
    head_section,
    quality_section,
    quality_verdict,
    training_section,
    trend,
)
from worldmodel.report import Report

__all__ = ["PLAN_FILES", "build_report", "ci95", "quality_verdict", "trend", "verdict"]


# --- run ------------------------------------------------------------------------------------------
def _run(rep: Report, out: Path, config: dict[str, Any], timings: dict[str, float], run: dict | None) -> None:
    rep.heading("Run")
    run = run if run is not None else read_json(out / "run.json")
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
    training_section(rep, out)
    quality_section(rep, out, config)
    head_section(rep, out)
    diagnostics_section(rep, out)
    control_section(rep, out)
    _run(rep, out, config, timings, run)
    return rep
