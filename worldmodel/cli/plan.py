"""``worldmodel plan CKPT``: MPC in the real PushTable sim with the learned model, the oracle and random."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from worldmodel.cli.flags import (
    CONFIG_HELP,
    int_at_least,
    nonneg_float,
    nonneg_int,
    positive_int,
    settings_of,
)
from worldmodel.envs.task import TASKS
from worldmodel.files import write_json_atomic

OBJECTIVES = ("auto", "learned", "pixels", "features")
PLANNERS = ("cem", "icem", "mppi", "grad")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``worldmodel plan``."""
    p.add_argument("checkpoint", help="world-model checkpoint (e.g. RUN/checkpoints/last.pt)")
    p.add_argument(
        "--task",
        choices=TASKS,
        default="push",
        help="push (target object to a goal spot), recorded-goal (to where a recorded push took it "
        "--recorded-k steps later) or reach (the gripper to a point above the table); default push",
    )
    p.add_argument(
        "--recorded-k",
        type=int_at_least(1, 100),
        default=20,
        help="recorded-goal: steps to the goal (default 20; budget 2k)",
    )
    p.add_argument("--episodes", type=positive_int, default=4, help="episodes per agent (default 4)")
    p.add_argument(
        "--planner",
        choices=PLANNERS,
        default="cem",
        help="cem, icem (colored noise, kept and shifted elites), mppi (softmax-weighted refits as in "
        "TD-MPC2; --elites: weight only the best, default all) or grad (a short CEM of --population x "
        "--iterations, then Adam steps through the differentiable model; the oracle plans with cem); "
        "default cem",
    )
    p.add_argument(
        "--population", type=int_at_least(2), default=400, help="model candidates per iteration (default 400)"
    )
    p.add_argument(
        "--elites",
        type=positive_int,
        default=None,
        help="elites, fewer than --population (default: 10%% of --population)",
    )
    p.add_argument("--horizon", type=positive_int, default=10, help="planning horizon in steps (default 10)")
    p.add_argument(
        "--iterations",
        type=positive_int,
        default=3,
        help="refits per plan: CEM's / MPPI's iterations; for grad, its starting CEM's (default 3)",
    )
    p.add_argument(
        "--replan-every", type=positive_int, default=1, help="actions executed per plan (default 1)"
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
    p.add_argument(
        "--temperature", type=nonneg_float, default=1.0, help="model sampling temperature (0: mean)"
    )
    p.add_argument(
        "--oracle-budget",
        type=nonneg_int,
        default=32,
        help="oracle candidates per iteration, each simulated (default 32; 0 skips the oracle)",
    )
    p.add_argument(
        "--reach-weight",
        type=nonneg_float,
        default=0.5,
        help="oracle cost: weight of the end-effector-to-object distance (the task's shaping; default 0.5)",
    )
    p.add_argument(
        "--learned-reach-weight",
        type=nonneg_float,
        default=None,
        help="the same shaping for the learned objective, from the head's end-effector branch "
        "(default: --reach-weight, the task's reward)",
    )
    p.add_argument(
        "--max-steps",
        type=positive_int,
        default=None,
        help="steps per episode (default the task's budget: push 50, recorded-goal 2k, reach 30)",
    )
    p.add_argument(
        "--envs", type=positive_int, default=1, help="envs planned together as one batch (default 1)"
    )
    p.add_argument("--num-objects", type=positive_int, default=None, help="objects per episode (default 1-4)")
    p.add_argument(
        "--seed", type=nonneg_int, default=0, help="seed of the episodes and the planners (default 0)"
    )
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument("--threads", type=positive_int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument(
        "--json", default=None, metavar="FILE", help="write the results (and the settings, 'args') as JSON"
    )
    p.add_argument(
        "--config", metavar="FILE", default=None, help=f"{CONFIG_HELP}; a --json report of plan is one"
    )
    p.add_argument(
        "--video",
        default=None,
        metavar="FILE",
        help="write env 0's episodes (.mp4/.gif): real | model's imagined plan | goal image",
    )


def _objective(args: argparse.Namespace, ckpt: Path, model):
    from worldmodel.dynamics.heads import select_head
    from worldmodel.planning import GoalImage, LearnedReward

    options = {"temperature": args.temperature, "sample": args.temperature > 0}
    kind = args.objective
    head = None
    if args.head or kind in ("auto", "learned"):
        # --head, else the model's own state head, else the checkpoint's; refused when stale or
        # fitted to another model (a different feature size).
        head, _ = select_head(ckpt, model, args.head)
        if head is None and (kind == "learned" or args.task == "reach"):
            raise ValueError(
                f"{ckpt}: --objective learned (and --task reach) needs a state head: train the model with "
                "--set state_head=true or run `worldmodel train-head`"
            )
    if kind == "learned" or (kind == "auto" and head is not None):
        weight = args.reach_weight if args.learned_reach_weight is None else args.learned_reach_weight
        return "learned", LearnedReward(head, task=_spec(args), reach_weight=weight, **options)
    if args.task == "reach":
        raise ValueError("--task reach is scored on the gripper's position: use --objective learned")
    kind = "pixels" if kind == "auto" else kind
    return kind, GoalImage(kind, **options)


def _planners(args: argparse.Namespace, action_dim: int):
    """The model's planner, the oracle's (None with --oracle-budget 0) and the oracle's planner name:
    the simulator has no gradient, so ``grad``'s oracle plans with ``cem``."""
    from worldmodel.planning import CEM, MPPI, CEMConfig, GradientConfig, GradientPlanner, MPPIConfig

    planning = {"horizon": args.horizon, "iterations": args.iterations}
    if args.planner == "mppi":
        model = MPPI(MPPIConfig.mppi(population=args.population, elites=args.elites, **planning), action_dim)
        if not args.oracle_budget:
            return model, None, None
        return model, MPPI(MPPIConfig.mppi(population=args.oracle_budget, **planning), 4), "mppi"
    make_config = CEMConfig.icem if args.planner == "icem" else CEMConfig.cem
    config = make_config(population=args.population, elites=args.elites, **planning)
    if args.planner == "grad":
        model = GradientPlanner(GradientConfig.cem_adam(config), action_dim)
    else:
        model = CEM(config, action_dim)
    if not args.oracle_budget:
        return model, None, None
    elites = min(args.oracle_budget - 1, max(2, min(config.elites, args.oracle_budget // 4)))
    oracle_cfg = make_config(population=args.oracle_budget, elites=elites, **planning)
    return model, CEM(oracle_cfg, 4), "icem" if args.planner == "icem" else "cem"


def _spec(args: argparse.Namespace):
    from worldmodel.envs.task import TaskSpec

    return TaskSpec(name=args.task, reach_weight=args.reach_weight, recorded_k=args.recorded_k)


def _venv(args: argparse.Namespace, image_size: int):
    import gymnasium as gym
    from stable_baselines3.common.vec_env import DummyVecEnv

    import worldmodel

    kw = {"image_size": image_size, "max_episode_steps": args.max_steps, "task": args.task}
    kw.update(recorded_k=args.recorded_k, reach_weight=args.reach_weight)
    if args.num_objects is not None:
        kw["num_objects"] = args.num_objects
    return DummyVecEnv([lambda: gym.make(worldmodel.PUSH_TABLE_ID, **kw) for _ in range(args.envs)])


def _video_frames(trace: list[dict], size: int):
    """uint8 ``(T, h, 3w, 3)``: real | imagined | goal per step, upscaled to about 64 px."""
    import numpy as np

    scale = max(1, 64 // size)
    rows = []
    for step in trace:
        blank = np.zeros_like(step["real"])
        parts = [step["real"], step["imagined"] if step["imagined"] is not None else blank]
        parts.append(step["goal"] if step["goal"] is not None else blank)
        row = np.concatenate(parts, axis=1)
        rows.append(row.repeat(scale, 0).repeat(scale, 1))
    return np.stack(rows)


def _check_counts(args: argparse.Namespace) -> None:
    if args.envs < 1 or args.episodes < 1 or args.episodes % args.envs:
        # SB3's evaluate_policy gives env i episodes // envs (+1 for the first ones); envs that are
        # done keep stepping and would keep planning, which skews the timing and the video.
        raise ValueError(f"--episodes ({args.episodes}) must be a positive multiple of --envs ({args.envs})")
    if args.elites is not None and args.elites >= args.population:
        raise ValueError(
            f"--elites ({args.elites}) must be < --population ({args.population}): refitting to every "
            "candidate never selects; leave --elites out for 10% of the population"
        )
    if args.oracle_budget and args.oracle_budget < 2:
        raise ValueError(f"--oracle-budget must be 0 (skip the oracle) or >= 2, got {args.oracle_budget}")


def _check_args(args: argparse.Namespace) -> None:
    """What the flags' types cannot say alone: the default episode length is the task's."""
    if args.max_steps is None:
        args.max_steps = _spec(args).budget


def run(args: argparse.Namespace) -> int:
    """Load the model, run the three agents on the same episodes, report one table."""
    import torch

    from worldmodel.dynamics import load
    from worldmodel.envs.push_table import REST_ACTION
    from worldmodel.planning import MPCAgent, OracleAgent, RandomAgent, run_episodes
    from worldmodel.planning.oracle import SimOracle
    from worldmodel.video import write_video

    _check_args(args)
    if args.threads:
        torch.set_num_threads(args.threads)
    _check_counts(args)
    torch.manual_seed(args.seed)
    ckpt = Path(args.checkpoint)
    model = load(ckpt, device=args.device)
    size = model.config.image_size
    kind, objective = _objective(args, ckpt, model)
    planner, oracle_planner, oracle_name = _planners(args, model.config.action_dim)
    mpc = MPCAgent(
        model,
        planner,
        objective,
        args.replan_every,
        seed=args.seed,
        rest_action=REST_ACTION,
    )
    mpc.record = args.video is not None
    venv = _venv(args, size)
    agents = {"model": mpc, "random": RandomAgent(model.config.action_dim, seed=args.seed)}
    if oracle_planner is not None:
        oracle = SimOracle(venv.get_attr("config", indices=[0])[0], reach_weight=args.reach_weight)
        agents["oracle"] = OracleAgent(oracle_planner, oracle, args.replan_every, seed=args.seed)
    results: dict[str, dict | None] = {"model": None, "oracle": None, "random": None}
    for name in ("model", "oracle", "random"):
        if name not in agents:
            continue
        print(
            f"worldmodel plan: running {name} for {args.episodes} episode(s)...", file=sys.stderr, flush=True
        )
        results[name] = run_episodes(agents[name], venv, args.episodes, seed=args.seed)
    venv.close()
    results["model"].update(objective=kind, planner=args.planner, population=args.population)
    report = {"task": args.task, "max_steps": args.max_steps, **results}
    report.update(command="plan", args=settings_of(args))
    if args.task == "recorded-goal":
        report["recorded_k"] = args.recorded_k
    if results["oracle"] is not None:
        results["oracle"].update(planner=oracle_name, population=args.oracle_budget)
    planner_text = f"{args.planner} H={args.horizon} iters={args.iterations}"
    if args.json:
        write_json_atomic(args.json, report)
    if args.video:
        write_video(args.video, _video_frames(mpc.trace, size), fps=10)

    print(
        f"{ckpt}: {args.episodes} episode(s) of PushTable task {args.task} ({size} px, {args.max_steps} "
        f"steps), {planner_text}"
    )
    head = (
        f"{'agent':<8} {'success':>8} {'95% interval':>13} {'final dist (cm)':>16} {'plan ms/action':>15} "
        f"{'episodes':>9}"
    )
    print(head + "  candidates")
    for name, r in results.items():
        if r is None:
            print(f"{name:<8} {'(skipped: --oracle-budget 0)':>40}")
            continue
        cands = {"model": f"{args.population} ({kind})", "oracle": f"{args.oracle_budget} (simulated)"}
        interval = "{:.2f}-{:.2f}".format(*r["ci95"])
        print(
            f"{name:<8} {r['success_rate']:>8.2f} {interval:>13} {100 * r['final_distance']:>16.2f} "
            f"{r['ms_per_action']:>15.1f} {r['episodes']:>9}  {cands.get(name, '-')}"
        )
    if args.json or args.video:
        print("  " + "  ".join(f"{k}: {v}" for k, v in (("report", args.json), ("video", args.video)) if v))
    return 0
