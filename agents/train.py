"""``python -m agents.train``: train a PPO or SAC agent in a world model's dream, judge it in the real sim.

    python -m agents.train --algo ppo --checkpoint runs/svg/checkpoints/last.pt --timesteps 200000 \\
        --num-envs 16 --obs pixels --reward learned --out runs/ppo-dream

The agent learns only in ``DreamVecEnv`` (all envs stepped by one batched model call, under
``VecMonitor``; SB3 adds ``VecTransposeImage`` for ``CnnPolicy`` itself). Pixel observations use
``CnnPolicy``, latent observations (the model's features) ``MlpPolicy``. Every ``--eval-every``
steps a callback runs the policy in the real ``worldmodel/PushTable-v0`` (latent policies
through ``LatentObservation``, which encodes the real frames with the same model) and logs
``real/success_rate`` and ``real/final_distance`` next to ``dream/success_rate`` (episodes that
ended in the dream since the previous evaluation) and SB3's own curves in ``RUN/tb``; it also
writes ``RUN/videos/real_STEP.mp4``, a line of ``RUN/eval.jsonl`` and ``RUN/checkpoints/last.zip``.
``agents.evaluate RUN`` rebuilds everything from ``RUN/config.json``.

``RUN/config.json`` is written only once SB3 has accepted the settings, so a refused value leaves
the folder free for the corrected command. ``--resume`` rebuilds the agent from it and reads
``last.zip`` (and SAC's ``replay_buffer.npz``) with ``worldmodel.rl.load_agent``, which executes
nothing from the run folder.
"""

from __future__ import annotations

from pathlib import Path

from agents.common import (
    add_agent_arguments,
    base_config,
    cli,
    parse_with_run_config,
)
from worldmodel.cli.flags import OneLineParser, nonneg_float, positive_float, positive_int
from worldmodel.envs.task import TASKS, TaskSpec
from worldmodel.rl import (
    MIN_CNN_SIZE,
    RunConfig,
    load_world_model,
    make_eval_env,
    prepare_run,
    train,
)


def build_parser() -> OneLineParser:
    p = OneLineParser(
        prog="python -m agents.train",
        description="Train an SB3 agent (PPO or SAC) in a world model's dream (DreamVecEnv) and "
        "evaluate it periodically in the real PushTable sim.",
    )
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
    p.add_argument(
        "--task",
        choices=TASKS,
        default="push",
        help="task trained in the dream and judged in the real sim: push, recorded-goal or reach "
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
    p.add_argument(
        "--temperature",
        type=nonneg_float,
        default=1.0,
        help="scale of the model's sampling noise, >= 0 (default 1)",
    )
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
    return p


def run(argv: list[str] | None = None) -> int:
    args = parse_with_run_config(build_parser(), argv)
    out = Path(args.out)

    def fresh() -> RunConfig:
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

    if args.checkpoint is not None and not Path(args.checkpoint).is_file():
        raise ValueError(f"{args.checkpoint}: world-model checkpoint not found")
    cfg = prepare_run(out, args.resume, fresh, args.timesteps)
    model = load_world_model(cfg.checkpoint, cfg.device)
    cfg.image_size = int(model.config.image_size)
    if cfg.obs == "pixels" and cfg.image_size < MIN_CNN_SIZE:
        raise ValueError(
            f"{cfg.checkpoint}: the model makes {cfg.image_size}-px frames, too small for SB3's CnnPolicy "
            f"(>= {MIN_CNN_SIZE}); use --obs latent or a larger model"
        )
    head = _head(cfg, model)
    return train(  # writes RUN/config.json once SB3 has accepted the settings
        cfg,
        out,
        lambda: _dream(cfg, model, head),
        lambda: make_eval_env(cfg, model),
        resume=args.resume,
        progress=not args.no_progress,
    )


def _head(cfg: RunConfig, model):
    """The object-position head of a ``learned``-reward run: ``--head``, else the model's own state
    head (``None``: the dream uses it), else the one stored for the checkpoint (``None`` for
    ``goal-image``)."""
    from worldmodel.dynamics.heads import head_path_for, select_head

    if cfg.reward != "learned":
        return None
    # Refused when stale (fitted to other weights) or fitted to another model (feature size).
    head, source = select_head(cfg.checkpoint, model, cfg.head)
    if source == "model":
        return None
    if head is None:
        raise ValueError(
            f"{cfg.checkpoint}: --reward learned needs an object-position head and there is none "
            f"(looked in the checkpoint and at {head_path_for(cfg.checkpoint)}); run "
            "`worldmodel train-head CKPT --data DIR`, pass --head FILE, or use --reward goal-image"
        )
    return head


def _dream(cfg: RunConfig, model, head):
    from worldmodel.envs import DreamVecEnv

    return DreamVecEnv(
        model,
        cfg.num_envs,
        head=head,
        device=cfg.device,
        reward=cfg.reward,
        task=cfg.task,
        obs=cfg.obs,
        image_size=cfg.image_size,
        latent_bound=cfg.latent_bound,
        pool_seed=cfg.seed,
        **cfg.dream,
    )


if __name__ == "__main__":
    cli("agents.train", run)
