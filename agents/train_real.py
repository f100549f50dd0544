"""``python -m agents.train_real``: the same SB3 agents trained in the real PushTable sim (model-free).

    python -m agents.train_real --algo ppo --timesteps 9000 --num-envs 4 --out runs/ppo-real

The baseline for dream-trained agents at equal real-sample budgets: ``--timesteps`` counts real
sim steps (give the number of transitions the world model's dataset holds). Pixel observations
and ``CnnPolicy``, envs in ``SubprocVecEnv`` worker processes (``--vec dummy``: in this process)
under ``VecMonitor``; the reward is the sim's (the task's shared reward, ``worldmodel.envs.task``).
Outputs as ``agents.train`` (``config.json``, ``checkpoints/last.zip``, ``tb/`` with ``real/*``
from separate evaluation episodes, the ``real/video`` of each evaluation, ``train_env/success_rate``
and the run's hparams, ``videos/``, ``eval.jsonl``), so ``agents.evaluate RUN`` works on it too.
"""

from __future__ import annotations

import functools
from pathlib import Path

from agents.common import (
    add_agent_arguments,
    base_config,
    cli,
    parse_with_run_config,
)
from worldmodel.choices import check_choice
from worldmodel.cli.flags import OneLineParser, add_task_flags, positive_int
from worldmodel.rl import (
    MIN_CNN_SIZE,
    make_eval_env,
    make_real_env,
    prepare_run,
    train,
)

VEC_TYPES = ("subproc", "dummy")


def build_parser() -> OneLineParser:
    p = OneLineParser(
        prog="python -m agents.train_real",
        description="Train an SB3 agent (PPO or SAC) in the real PushTable sim, evaluated as agents.train.",
    )
    p.add_argument(
        "--vec",
        default="subproc",
        help="subproc: one worker process per env (SubprocVecEnv) | dummy: all in this process "
        "(default subproc)",
    )
    p.add_argument("--image-size", type=positive_int, default=64, help="sim frames, pixels (default 64)")
    add_task_flags(p, task="task trained and judged on (default push)")
    add_agent_arguments(p, default_envs=4)
    return p


def run(argv: list[str] | None = None) -> int:
    args = parse_with_run_config(build_parser(), argv)
    out = Path(args.out)

    def fresh():
        check_choice("--vec", args.vec, VEC_TYPES)
        if args.image_size < MIN_CNN_SIZE:
            raise ValueError(f"--image-size {args.image_size}: SB3's CnnPolicy needs >= {MIN_CNN_SIZE} px")
        return base_config(
            args, env="real", obs="pixels", image_size=args.image_size, vec=args.vec, task=args.task
        )

    cfg = prepare_run(out, args.resume, fresh, args.timesteps)
    return train(  # writes RUN/config.json once SB3 has accepted the settings
        cfg,
        out,
        lambda: _vec_env(cfg),
        lambda: make_eval_env(cfg),
        resume=args.resume,
        progress=not args.no_progress,
    )


def _vec_env(cfg):
    from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

    make = functools.partial(make_real_env, cfg.image_size, task=cfg.task)
    fns = [make for _ in range(cfg.num_envs)]
    return SubprocVecEnv(fns) if cfg.vec == "subproc" else DummyVecEnv(fns)


if __name__ == "__main__":
    cli("agents.train_real", run)
