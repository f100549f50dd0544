"""``worldmodel online --data DIR --out OUT``: online model-based RL in the real sim, resumably.

Acts with the learned planner, appends the episodes to the dataset, fine-tunes the model, repeats;
reports success against real environment steps (``worldmodel.training.online``). The model-free
baseline is a separate command, printed at the end, whose run folder ``--ppo-run`` reads.
"""

from __future__ import annotations

import argparse
import sys

from worldmodel.cli.flags import (
    CONFIG_HELP,
    add_common_flags,
    add_planner_flags,
    add_task_flags,
    config_from_args,
    int_at_least,
    nonneg_float,
    nonneg_int,
    positive_float,
    positive_int,
    settings_of,
)
from worldmodel.files import write_json_atomic


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``worldmodel online``."""
    p.add_argument(
        "--data", required=True, help="initial dataset (a `worldmodel collect` folder; never written)"
    )
    p.add_argument(
        "--out",
        required=True,
        help="run folder: data/ (the growing dataset), model/ (checkpoints, TensorBoard), online.json, "
        "online.html; running again resumes it",
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        help="initial model with a state head (trained with --set state_head=true); default: train one "
        "(--model, --preset, --set, --initial-steps) on the initial data",
    )
    p.add_argument(
        "--model", default="svg-lp", help="without --checkpoint: the model to train (default svg-lp)"
    )
    p.add_argument("--preset", default="tiny", help="without --checkpoint: its preset (default tiny)")
    add_common_flags(
        p, sets="without --checkpoint: a model config override (repeatable; state_head is always on)"
    )
    p.add_argument(
        "--initial-steps",
        type=positive_int,
        default=1000,
        help="without --checkpoint: training steps on the initial data (default 1000)",
    )
    p.add_argument(
        "--iterations", type=nonneg_int, default=3, help="collect / fine-tune / evaluate rounds (default 3)"
    )
    p.add_argument(
        "--episodes-per-iter",
        type=positive_int,
        default=16,
        help="real episodes collected per iteration, each as long as the dataset's (default 16)",
    )
    p.add_argument(
        "--train-steps", type=positive_int, default=200, help="fine-tuning steps per iteration (default 200)"
    )
    p.add_argument(
        "--batch-size", type=positive_int, default=None, help="training batch (default: the model's)"
    )
    p.add_argument(
        "--lr",
        type=positive_float,
        default=None,
        help="fine-tuning learning rate (default: the checkpoint's)",
    )
    add_task_flags(
        p,
        task="push, recorded-goal or reach: what the planner aims at and is judged on (default push)",
        recorded_k="recorded-goal: steps to the goal (default 20)",
        reach_weight="object tasks: weight of the end-effector-to-object distance in the reward "
        "(default 0.5)",
        push_offset="object tasks: the shaping draws the gripper this far (m) behind the target, away from "
        "the goal (default 0: to its centre; see worldmodel plan)",
        max_steps="steps per evaluation episode (default the task's budget: push 50, recorded-goal 2k, "
        "reach 30)",
    )
    p.add_argument(
        "--eval-episodes",
        type=positive_int,
        default=20,
        help="evaluation episodes per iteration, the same ones every time (default 20)",
    )
    p.add_argument(
        "--envs",
        type=positive_int,
        default=4,
        help="episodes run side by side and planned as one batch; divides --episodes-per-iter and "
        "--eval-episodes (default 4)",
    )
    p.add_argument(
        "--explore-noise",
        type=nonneg_float,
        default=0.3,
        help="std of the Gaussian noise added to the planned actions while collecting (PlaNet's 0.3; "
        "0: none; evaluation never adds it)",
    )
    add_planner_flags(
        p,
        planners=("cem", "icem"),
        planner="cem or icem (default cem)",
        population="candidates per iteration (default 400)",
        elites="elites, fewer than --population (default 10%%)",
        iterations="CEM refits per plan (default 3)",
        iterations_flag="--plan-iterations",
    )
    add_common_flags(p, temperature="model sampling temperature (0: mean)")
    p.add_argument(
        "--num-objects",
        type=int_at_least(1, 4),
        default=None,
        help="objects per episode (default: as the initial dataset was collected)",
    )
    add_common_flags(p, seed="the episodes, planner, exploration noise and training", device="", threads=True)
    p.add_argument(
        "--ppo-run",
        default=None,
        metavar="RUN",
        help="an `agents.train_real` run folder on the same task, drawn beside the loop (the command for "
        "the loop's budget is printed at the end)",
    )
    add_common_flags(p, json="the summary (also in OUT/online.json)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--config", metavar="FILE", default=None, help=f"{CONFIG_HELP}; OUT/config.json is one")


def config_from(args: argparse.Namespace):
    """The ``OnlineConfig`` of the parsed flags (which it checks, and whose paths it makes ``Path``)."""
    from worldmodel.cli.train import parse_sets
    from worldmodel.training.online import OnlineConfig

    return config_from_args(OnlineConfig, args, model_set=parse_sets(args.set))


def run(args: argparse.Namespace) -> int:
    """Run or resume the loop, then print one row per iteration."""

    from worldmodel.training.online import run_online

    cfg = config_from(args)  # every check of the settings before anything is written

    def say(line: str) -> None:
        print(f"worldmodel online: {line}", file=sys.stderr, flush=True)

    summary = run_online(cfg, say, progress=not args.no_progress)
    settings = settings_of(args, skip=("no_progress",))
    write_json_atomic(cfg.out / "config.json", {"command": "online", "args": settings})
    if args.json:
        write_json_atomic(args.json, summary)

    print(
        f"{cfg.out}: online MPC on PushTable {cfg.task} ({summary['eval_steps']}-step evaluation episodes, "
        f"{cfg.planner} H={cfg.horizon} pop={cfg.population}); real steps include the initial "
        f"{summary['initial_real_steps']}"
    )
    print(
        f"{'iter':>4} {'real steps':>10} {'episodes':>8} {'success':>8} {'95% interval':>13} "
        f"{'final dist (cm)':>16} {'collect':>8} {'model step':>10} {'seconds':>8} {'PPO':>6}"
    )
    for r in summary["rows"]:
        collect = "-" if r["collect_success_rate"] is None else f"{r['collect_success_rate']:.2f}"
        ppo = "-" if r["ppo_success_rate"] is None else f"{r['ppo_success_rate']:.2f}"
        interval = "{:.2f}-{:.2f}".format(*r["ci95"])
        print(
            f"{r['iteration']:>4} {r['real_steps']:>10} {r['episodes']:>8} {r['success_rate']:>8.2f} "
            f"{interval:>13} {100 * r['final_distance']:>16.2f} {collect:>8} {r['train_step']:>10} "
            f"{r['seconds']:>8.0f} {ppo:>6}"
        )
    print(f"  report: {cfg.out / 'online.json'}  {cfg.out / 'online.html'}")
    if summary["ppo"] is None:
        print(f"  model-free baseline at the same budget (then --ppo-run {cfg.out / 'ppo'}):")
        print(f"    {summary['ppo_command']}")
    return 0
