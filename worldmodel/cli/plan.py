"""``worldmodel plan CKPT``: MPC in the real PushTable sim with the learned model, the oracle and random."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from worldmodel.files import write_json_atomic

OBJECTIVES = ("auto", "learned", "pixels", "features")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``worldmodel plan``."""
    p.add_argument("checkpoint", help="world-model checkpoint (e.g. RUN/checkpoints/last.pt)")
    p.add_argument("--episodes", type=int, default=4, help="episodes per agent (default 4)")
    p.add_argument("--planner", choices=("cem", "icem"), default="cem", help="cem or icem (default cem)")
    p.add_argument("--population", type=int, default=400, help="model candidates per iteration (default 400)")
    p.add_argument("--elites", type=int, default=40, help="elites (default 40)")
    p.add_argument("--horizon", type=int, default=10, help="planning horizon in steps (default 10)")
    p.add_argument("--iterations", type=int, default=3, help="CEM iterations per plan (default 3)")
    p.add_argument("--replan-every", type=int, default=1, help="actions executed per plan (default 1)")
    p.add_argument(
        "--objective",
        choices=OBJECTIVES,
        default="auto",
        help="learned (object head: predicted object-goal distance), pixels or features (goal-image "
        "distance); auto: learned when the checkpoint has a head, else pixels",
    )
    p.add_argument(
        "--head", default=None, help="object-head file (default: the checkpoint's, CKPT_STEM.head.pt)"
    )
    p.add_argument("--temperature", type=float, default=1.0, help="model sampling temperature (0: mean)")
    p.add_argument(
        "--oracle-budget",
        type=int,
        default=32,
        help="oracle candidates per iteration, each simulated (default 32; 0 skips the oracle)",
    )
    p.add_argument(
        "--reach-weight",
        type=float,
        default=0.5,
        help="oracle cost: weight of the end-effector-to-object distance (shaping; default 0.5)",
    )
    p.add_argument(
        "--learned-reach-weight",
        type=float,
        default=0.0,
        help="the same shaping for the learned objective, from the object head's end-effector branch "
        "(default 0: it helps only when the head's gripper estimate is accurate)",
    )
    p.add_argument(
        "--max-steps", type=int, default=50, help="steps per episode (default 50, as PushTable-v0)"
    )
    p.add_argument("--envs", type=int, default=1, help="envs planned together as one batch (default 1)")
    p.add_argument("--num-objects", type=int, default=None, help="objects per episode (default 1-4)")
    p.add_argument("--seed", type=int, default=0, help="seed of the episodes and the planners (default 0)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--json", default=None, metavar="FILE", help="write the results as JSON")
    p.add_argument(
        "--video",
        default=None,
        metavar="FILE",
        help="write env 0's episodes (.mp4/.gif): real | model's imagined plan | goal image",
    )


def _objective(args: argparse.Namespace, ckpt: Path):
    from worldmodel.dynamics.heads import find_head, load_head
    from worldmodel.planning import GoalImage, LearnedReward

    options = {"temperature": args.temperature, "sample": args.temperature > 0}
    kind = args.objective
    head = load_head(args.head) if args.head else None
    if kind in ("auto", "learned") and head is None:
        head = find_head(ckpt)
        if head is None and kind == "learned":
            raise ValueError(f"{ckpt}: --objective learned needs an object head; run `worldmodel train-head`")
    if kind == "learned" or (kind == "auto" and head is not None):
        return "learned", LearnedReward(head, reach_weight=args.learned_reach_weight, **options)
    kind = "pixels" if kind == "auto" else kind
    return kind, GoalImage(kind, **options)


def _venv(args: argparse.Namespace, image_size: int):
    import gymnasium as gym
    from stable_baselines3.common.vec_env import DummyVecEnv

    import worldmodel

    kw = {"image_size": image_size, "max_episode_steps": args.max_steps}
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
    if args.oracle_budget and args.oracle_budget < 2:
        raise ValueError(f"--oracle-budget must be 0 (skip the oracle) or >= 2, got {args.oracle_budget}")


def run(args: argparse.Namespace) -> int:
    """Load the model, run the three agents on the same episodes, report one table."""
    import torch

    from worldmodel.dynamics import load
    from worldmodel.envs.push_table import REST_ACTION
    from worldmodel.planning import CEM, CEMConfig, MPCAgent, OracleAgent, RandomAgent, evaluate
    from worldmodel.planning.oracle import SimOracle
    from worldmodel.video import write_video

    for name in ("episodes", "population", "elites", "horizon", "iterations", "replan_every", "envs"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    if args.oracle_budget < 0:
        raise ValueError(f"--oracle-budget must be >= 0, got {args.oracle_budget}")
    if args.threads:
        torch.set_num_threads(args.threads)
    _check_counts(args)
    torch.manual_seed(args.seed)
    ckpt = Path(args.checkpoint)
    model = load(ckpt, device=args.device)
    size = model.config.image_size
    kind, objective = _objective(args, ckpt)
    make_config = CEMConfig.icem if args.planner == "icem" else CEMConfig.cem
    planning = {"horizon": args.horizon, "iterations": args.iterations}
    config = make_config(population=args.population, elites=min(args.elites, args.population), **planning)
    mpc = MPCAgent(
        model,
        CEM(config, model.config.action_dim),
        objective,
        args.replan_every,
        seed=args.seed,
        rest_action=REST_ACTION,
    )
    mpc.record = args.video is not None
    venv = _venv(args, size)
    agents = {"model": mpc, "random": RandomAgent(model.config.action_dim, seed=args.seed)}
    if args.oracle_budget:
        elites = min(args.oracle_budget, max(2, min(config.elites, args.oracle_budget // 4)))
        oracle_cfg = make_config(population=args.oracle_budget, elites=elites, **planning)
        oracle = SimOracle(venv.get_attr("config", indices=[0])[0], reach_weight=args.reach_weight)
        agents["oracle"] = OracleAgent(CEM(oracle_cfg, 4), oracle, args.replan_every, seed=args.seed)
    results: dict[str, dict | None] = {"model": None, "oracle": None, "random": None}
    for name in ("model", "oracle", "random"):
        if name not in agents:
            continue
        print(
            f"worldmodel plan: running {name} for {args.episodes} episode(s)...", file=sys.stderr, flush=True
        )
        results[name] = evaluate(agents[name], venv, args.episodes, seed=args.seed)
    venv.close()
    results["model"].update(objective=kind, planner=args.planner, population=args.population)
    if results["oracle"] is not None:
        results["oracle"].update(planner=args.planner, population=args.oracle_budget)
    planner_text = f"{args.planner} H={args.horizon} iters={args.iterations}"
    if args.json:
        write_json_atomic(args.json, results)
    if args.video:
        write_video(args.video, _video_frames(mpc.trace, size), fps=10)

    print(
        f"{ckpt}: {args.episodes} episode(s) of PushTable ({size} px, {args.max_steps} steps), {planner_text}"
    )
    head = f"{'agent':<8} {'success':>8} {'final dist (cm)':>16} {'plan ms/action':>15} {'episodes':>9}"
    print(head + "  candidates")
    for name, r in results.items():
        if r is None:
            print(f"{name:<8} {'(skipped: --oracle-budget 0)':>40}")
            continue
        cands = {"model": f"{args.population} ({kind})", "oracle": f"{args.oracle_budget} (simulated)"}
        print(
            f"{name:<8} {r['success_rate']:>8.2f} {100 * r['final_distance']:>16.2f} "
            f"{r['ms_per_action']:>15.1f} {r['episodes']:>9}  {cands.get(name, '-')}"
        )
    if args.json or args.video:
        print("  " + "  ".join(f"{k}: {v}" for k, v in (("report", args.json), ("video", args.video)) if v))
    return 0
