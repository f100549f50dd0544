"""``worldmodel plan CKPT``: MPC in the real PushTable sim with the learned model, the oracle and random."""

from __future__ import annotations

import argparse
import sys

from worldmodel.cli.flags import (
    CONFIG_HELP,
    add_common_flags,
    add_planner_flags,
    add_task_flags,
    config_from_args,
    nonneg_float,
    nonneg_int,
    positive_int,
    settings_of,
)
from worldmodel.files import write_json_atomic

OBJECTIVES = ("auto", "learned", "pixels", "features")
PLANNERS = ("cem", "icem", "mppi", "grad")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``worldmodel plan``."""
    p.add_argument("checkpoint", help="world-model checkpoint (e.g. RUN/checkpoints/last.pt)")
    add_task_flags(
        p,
        task="push (target object to a goal spot), recorded-goal (to where a recorded push took it "
        "--recorded-k steps later) or reach (the gripper to a point above the table); default push",
        recorded_k="recorded-goal: steps to the goal (default 20; budget 2k)",
    )
    p.add_argument("--episodes", type=positive_int, default=4, help="episodes per agent (default 4)")
    add_planner_flags(
        p,
        planners=PLANNERS,
        planner="cem, icem (colored noise, kept and shifted elites), mppi (softmax-weighted refits as in "
        "TD-MPC2; --elites: weight only the best, default all) or grad (a short CEM of --population x "
        "--iterations, then Adam steps through the differentiable model; the oracle plans with cem); "
        "default cem",
        population="model candidates per iteration (default 400)",
        elites="elites, fewer than --population (default: 10%% of --population)",
        iterations="refits per plan: CEM's / MPPI's iterations; for grad, its starting CEM's (default 3)",
    )
    p.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default="auto",
        help="learned (the task's reward on a state head's predictions), pixels or features (goal-image "
        "distance, push and recorded-goal only); auto: learned when the model has a state head or the "
        "checkpoint a head file, else pixels",
    )
    p.add_argument(
        "--head",
        default=None,
        help="object-head file (default: the model's own state head, else the checkpoint's "
        "CKPT_STEM.head.pt)",
    )
    add_common_flags(p, temperature="model sampling temperature (0: mean)")
    p.add_argument(
        "--particles",
        type=positive_int,
        default=1,
        help="model rollouts per candidate, their returns averaged (default 1; with --temperature > 0)",
    )
    p.add_argument(
        "--score-frames",
        choices=("all", "last"),
        default="all",
        help="learned planner's score: the reward summed over the horizon (all) or its last step (last)",
    )
    p.add_argument(
        "--oracle-budget",
        type=nonneg_int,
        default=32,
        help="oracle candidates per iteration, each simulated (default 32; 0 skips the oracle)",
    )
    add_task_flags(
        p,
        reach_weight="oracle cost: weight of the end-effector-to-object distance (the task's shaping; "
        "default 0.5)",
    )
    p.add_argument(
        "--learned-reach-weight",
        type=nonneg_float,
        default=None,
        help="the same shaping for the learned objective, from the head's end-effector branch "
        "(default: --reach-weight, the task's reward)",
    )
    add_task_flags(
        p,
        push_offset="object tasks: the shaping draws the gripper this far (m) behind the target, away from "
        "the goal, for every agent (default 0: to the target's centre; 0.05 measured best for the oracle)",
        max_steps="steps per episode (default the task's budget: push 50, recorded-goal 2k, reach 30)",
    )
    p.add_argument(
        "--envs", type=positive_int, default=1, help="envs planned together as one batch (default 1)"
    )
    p.add_argument("--num-objects", type=positive_int, default=None, help="objects per episode (default 1-4)")
    add_common_flags(
        p,
        seed="the episodes and the planners",
        device="",
        threads=True,
        json="the results (and the settings, 'args')",
    )
    p.add_argument(
        "--config", metavar="FILE", default=None, help=f"{CONFIG_HELP}; a --json report of plan is one"
    )
    add_common_flags(p, video="write env 0's episodes (.mp4/.gif): real | model's imagined plan | goal image")


def run(args: argparse.Namespace) -> int:
    """Parse the flags into a ``PlanJob``, run it (``worldmodel.planning.run.plan``), report one table."""

    from worldmodel.planning.run import PlanJob, plan

    job = config_from_args(PlanJob, args, record=args.video is not None)
    args.max_steps = job.max_steps  # the task's budget when not given, also in the saved settings

    def say(msg: str) -> None:
        print(f"worldmodel plan: {msg}", file=sys.stderr, flush=True)

    report, trace = plan(job, say=say)
    report.update(command="plan", args=settings_of(args))
    save(report, trace, args.json, args.video)
    print_table(job, report)
    if args.json or args.video:
        print("  " + "  ".join(f"{k}: {v}" for k, v in (("report", args.json), ("video", args.video)) if v))
    return 0


def save(report: dict, trace: list, json_path, video_path) -> None:
    """Write the report (``json_path``) and env 0's real | imagined | goal video (``video_path``,
    from ``plan``'s ``trace``); ``None`` skips either."""
    from worldmodel.planning.run import video_frames
    from worldmodel.video import write_video

    if json_path:
        write_json_atomic(json_path, report)
    if video_path:
        size = int(trace[0]["real"].shape[0]) if trace else 64
        write_video(video_path, video_frames(trace, size), fps=10)


def print_table(args, report: dict) -> None:
    """The three agents as one table (``args``: the flags, or the ``PlanJob``)."""
    from worldmodel.planning.prediction_check import describe

    kind = report["model"].get("objective")
    planner_text = f"{args.planner} H={args.horizon} iters={args.iterations}"
    print(
        f"{args.checkpoint}: {args.episodes} episode(s) of PushTable task {args.task} "
        f"({args.max_steps} steps), {planner_text}"
    )
    head = (
        f"{'agent':<8} {'success':>8} {'95% interval':>13} {'final dist (cm)':>16} {'plan ms/action':>15} "
        f"{'episodes':>9}"
    )
    print(head + "  candidates")
    for name in ("model", "oracle", "random"):
        r = report[name]
        if r is None:
            print(f"{name:<8} {'(skipped: --oracle-budget 0)':>40}")
            continue
        cands = {"model": f"{args.population} ({kind})", "oracle": f"{args.oracle_budget} (simulated)"}
        interval = "{:.2f}-{:.2f}".format(*r["ci95"])
        print(
            f"{name:<8} {r['success_rate']:>8.2f} {interval:>13} {100 * r['final_distance']:>16.2f} "
            f"{r['ms_per_action']:>15.1f} {r['episodes']:>9}  {cands.get(name, '-')}"
        )
    if line := describe(report["model"].get("prediction_check") or {}):
        print(line)
