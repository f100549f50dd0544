"""The control targets of a demo run, measured against their bars, in one table.

    python benchmarks/control_targets.py out/demo          # after `worldmodel demo --quick --out out/demo`
    python benchmarks/control_targets.py out/demo --json targets.json

Reads what the demo's stages wrote (``eval.json``'s ``control`` section, ``plan.json``,
``plan_recorded.json``, ``plan_reach.json``, ``agent_eval.json``) and prints, for every target,
the measured figure, the bar it must clear and whether it does. Nothing is re-run: the figures
are those of the run, with the 95 % intervals the stages computed. The last line is the count
of targets met.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def _read(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def targets(out: Path) -> list[dict]:
    """One row per target: ``name``, ``measured``, ``bar``, ``met`` (None when not measured)."""
    rows: list[dict] = []
    control = (_read(out / "eval.json") or {}).get("control") or {}
    k10 = (control.get("per_k") or {}).get("10") or {}
    err, static = k10.get("target_error_cm"), k10.get("target_static_cm")
    rows.append(
        {
            "name": "dreamed target error at 10 steps <= 0.5 x stays put",
            "measured": None if err is None or static is None else f"{err:.2f} vs {static:.2f} cm",
            "bar": None if static is None else f"<= {0.5 * static:.2f} cm",
            "met": None if err is None or static is None else err <= 0.5 * static,
        }
    )
    ee = k10.get("ee_error_cm")
    rows.append(
        {
            "name": "dreamed end-effector error at 10 steps <= 2 cm",
            "measured": None if ee is None else f"{ee:.2f} cm",
            "bar": "<= 2.00 cm",
            "met": None if ee is None else ee <= 2.0,
        }
    )
    for task, name, ratio, margin in (
        ("push", "plan.json", 0.5, 0.25),
        ("recorded-goal", "plan_recorded.json", 0.6, 0.3),
    ):
        plan = _read(out / name) or {}
        model, oracle, rand = plan.get("model"), plan.get("oracle"), plan.get("random")
        if not (model and oracle and rand):
            rows.append({"name": f"learned MPC, {task}", "measured": None, "bar": None, "met": None})
            continue
        bar = max(ratio * oracle["success_rate"], rand["success_rate"] + margin)
        rows.append(
            {
                "name": f"learned MPC, {task}: >= {ratio} x oracle and >= random + {margin}",
                "measured": f"{model['success_rate']:.2f} ({model['episodes']} episodes; oracle "
                f"{oracle['success_rate']:.2f}, random {rand['success_rate']:.2f})",
                "bar": f">= {bar:.2f}",
                "met": model["success_rate"] >= bar,
            }
        )
    plan = _read(out / "plan_reach.json") or {}
    model, rand = plan.get("model"), plan.get("random")
    if model and rand:
        bar = max(0.8, rand["success_rate"] + 0.5)
        rows.append(
            {
                "name": "learned MPC, reach: >= 0.8 and >= random + 0.5",
                "measured": f"{model['success_rate']:.2f} ({model['episodes']} episodes; random "
                f"{rand['success_rate']:.2f})",
                "bar": f">= {bar:.2f}",
                "met": model["success_rate"] >= bar,
            }
        )
    agent = _read(out / "agent_eval.json")
    if agent is not None:
        task = agent.get("task", "push")
        files = {"push": "plan.json", "recorded-goal": "plan_recorded.json"}
        rand = (_read(out / files[task]) or {}).get("random") if task in files else None
        bar = None if rand is None else rand["success_rate"] + 0.15
        rows.append(
            {
                "name": "PPO in the dream >= random + 0.15 on push or recorded-goal",
                "measured": f"{agent['success_rate']:.2f} on {task} ({agent['episodes']} episodes)",
                "bar": None if bar is None else f">= {bar:.2f}",
                "met": None if bar is None else agent["success_rate"] >= bar,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("demo", help="a demo output folder")
    p.add_argument("--json", default=None, help="also write the rows as JSON")
    args = p.parse_args(argv)
    out = Path(args.demo)
    if not out.is_dir():
        print(f"{out}: no such demo folder", file=sys.stderr)
        return 2
    rows = targets(out)
    for r in rows:
        state = {True: "met", False: "NOT met", None: "not measured"}[r["met"]]
        print(f"{r['name']:<62} {r['measured'] or '-':<50} {r['bar'] or '-':>12}  {state}")
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2) + "\n")
    met = sum(r["met"] is True for r in rows)
    print(f"targets met: {met} of {len(rows)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
