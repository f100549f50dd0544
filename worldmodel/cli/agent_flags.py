"""The flags of the agent scripts (``python -m agents.train`` / ``agents.train_real``) and the
``RunConfig`` they make.

Here rather than in ``agents/`` because ``worldmodel demo`` and ``worldmodel bench`` read their
``agent_args`` (extra ``agents.train`` flags) with the same parser and train the same way, in their
own process, through ``worldmodel.rl`` (the ``worldmodel`` package never imports ``agents``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from worldmodel.cli.flags import add_common_flags, add_task_flags, nonneg_int, positive_float, positive_int
from worldmodel.envs.task import TaskSpec
from worldmodel.rl import HYPER_DEFAULTS, HYPER_FLAGS, RunConfig, algo_class
from worldmodel.rl.config import ALGOS


def add_dream_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``python -m agents.train``: the world model, the dream and the shared agent flags."""
    p.add_argument(
        "--checkpoint",
        default=None,
        help="world-model checkpoint (worldmodel train's RUN/checkpoints/last.pt; required for a new run)",
    )
    p.add_argument(
        "--obs",
        default="pixels",
        help="pixels: uint8 frames, CnnPolicy | latent: the model's features, MlpPolicy (default pixels)",
    )
    p.add_argument(
        "--reward",
        default="learned",
        help="learned: the object-position head's distance to the goal (needs `worldmodel train-head`) | "
        "goal-image: distance of the dreamed frame to the goal image (default learned)",
    )
    p.add_argument(
        "--head", default=None, help="object-position head file (default: the one beside --checkpoint)"
    )
    p.add_argument(
        "--horizon",
        type=positive_int,
        default=None,
        help="dream episode length (default the task's budget, as the real env: push 50, reach 30)",
    )
    add_task_flags(
        p,
        task="task trained in the dream and judged in the real sim: push, recorded-goal or reach "
        "(default push)",
    )
    p.add_argument(
        "--task-obs",
        action="store_true",
        help="--obs latent: append the end effector (dreamed by the state head; proprioception in the "
        "real sim) and the episode's goal to the features (the goal is not in the pixels for reach)",
    )
    p.add_argument(
        "--pool-size", type=positive_int, default=64, help="dream start contexts drawn once (default 64)"
    )
    add_common_flags(p, temperature="scale of the model's sampling noise, >= 0 (default 1)")
    p.add_argument(
        "--data",
        default=None,
        help="dataset folder for the dream's start contexts (default: fresh episodes of the real sim)",
    )
    p.add_argument(
        "--goal-distance",
        default="pixels",
        help="goal-image reward: pixels (RMS) | features (L2 of the model's features) (default pixels)",
    )
    p.add_argument(
        "--latent-window",
        type=positive_int,
        default=None,
        help="latent runs in the real sim: encode the last K real frames with the model "
        "(default: its training window n_past + n_future; 1000: the whole episode)",
    )
    p.add_argument(
        "--latent-bound",
        type=positive_float,
        default=10.0,
        help="latent observations are clipped to ±this, > 0 (default 10)",
    )
    add_agent_arguments(p, default_envs=16)


def add_agent_arguments(p, *, default_envs: int) -> None:
    """Flags every training script has: algorithm, budget, run folder, evaluation, SB3 settings."""
    p.add_argument("--algo", default=None, help=f"RL algorithm: {' | '.join(ALGOS)} (required for a new run)")
    p.add_argument(
        "--timesteps",
        type=positive_int,
        default=None,
        help="total environment steps over all envs (required for a new run; with --resume, the new total)",
    )
    p.add_argument(
        "--num-envs", type=positive_int, default=default_envs, help=f"parallel envs (default {default_envs})"
    )
    p.add_argument(
        "--out",
        required=True,
        help="run folder: config.json, checkpoints/last.zip, tb/ (TensorBoard), videos/, eval.jsonl",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue RUN from checkpoints/last.zip with the same step counter and RUN/config.json "
        "(other flags but --timesteps are then ignored); starts fresh if RUN holds no run yet",
    )
    p.add_argument(
        "--eval-every",
        type=nonneg_int,
        default=10_000,
        help="timesteps between evaluations in the real sim, each also saving the checkpoint "
        "(default 10000; 0: only at the end)",
    )
    p.add_argument(
        "--eval-episodes", type=positive_int, default=10, help="real episodes per evaluation (default 10)"
    )
    p.add_argument(
        "--video-episodes",
        type=nonneg_int,
        default=4,
        help="real episodes per evaluation written to RUN/videos/real_STEP.mp4 (default 4; 0: none)",
    )
    add_common_flags(p, seed="the agent and the training envs", device="for the agent and the world model")
    for flag, (_, typ, _, help_text) in HYPER_FLAGS.items():
        p.add_argument(flag, type=typ, default=None, help=help_text)
    p.add_argument(
        "--no-progress", action="store_true", help="no progress bar (evaluation lines still print)"
    )
    p.add_argument(
        "--config",
        metavar="FILE",
        default=None,
        help="another run's RUN/config.json: a new run (--out) with its settings; flags given here win",
    )


def dream_config(args: argparse.Namespace) -> RunConfig:
    """A new ``agents.train`` run's config from its flags (paths made absolute; the dream's
    horizon defaults to the task's budget, as the real env's)."""
    if args.checkpoint is None:
        raise ValueError("a new run needs --checkpoint")
    return base_config(
        args,
        env="dream",
        obs=args.obs,
        reward=args.reward,
        task=args.task,
        checkpoint=str(Path(args.checkpoint).resolve()),
        head=str(Path(args.head).resolve()) if args.head else None,
        dream={
            "horizon": args.horizon or TaskSpec(name=args.task).budget,
            "pool_size": args.pool_size,
            "temperature": args.temperature,
            "data": str(Path(args.data).resolve()) if args.data else None,
            "goal_distance": args.goal_distance,
            "task_obs": args.task_obs,
        },
        latent_window=args.latent_window,
        latent_bound=args.latent_bound,
    )


def hyper_from_args(args) -> dict[str, Any]:
    """SB3 keywords: the algorithm's defaults overridden by the flags given; a flag that does not
    apply to ``--algo`` is an error."""
    algo = args.algo
    algo_class(algo)
    out = dict(HYPER_DEFAULTS[algo])
    for flag, (key, _, algos, _) in HYPER_FLAGS.items():
        value = getattr(args, flag.lstrip("-").replace("-", "_"))
        if value is None:
            continue
        if algo not in algos:
            raise ValueError(f"{flag} applies to {' | '.join(algos)} only, not {algo}")
        out[key] = value
    return out


def base_config(args, **fields: Any) -> RunConfig:
    """A new run's config from the shared flags plus script-specific ``fields``."""
    if args.algo is None or args.timesteps is None:
        raise ValueError("a new run needs --algo and --timesteps")
    return RunConfig(
        algo=args.algo,
        timesteps=args.timesteps,
        num_envs=args.num_envs,
        seed=args.seed,
        device=args.device,
        eval_every=args.eval_every,
        eval_episodes=args.eval_episodes,
        video_episodes=args.video_episodes,
        hyper=hyper_from_args(args),
        **fields,
    )
