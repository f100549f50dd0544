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

The flags (``worldmodel.cli.agent_flags``) become a ``RunConfig`` and ``worldmodel.rl.train_in_dream``
runs it.
"""

from __future__ import annotations

from pathlib import Path

from agents.common import cli, parse_with_run_config
from worldmodel.cli.agent_flags import add_dream_arguments, dream_config
from worldmodel.cli.flags import OneLineParser
from worldmodel.rl import prepare_run, train_in_dream


def build_parser() -> OneLineParser:
    p = OneLineParser(
        prog="python -m agents.train",
        description="Train an SB3 agent (PPO or SAC) in a world model's dream (DreamVecEnv) and "
        "evaluate it periodically in the real PushTable sim.",
    )
    add_dream_arguments(p)
    return p


def run(argv: list[str] | None = None) -> int:
    args = parse_with_run_config(build_parser(), argv)
    if args.checkpoint is not None and not Path(args.checkpoint).is_file():
        raise ValueError(f"{args.checkpoint}: world-model checkpoint not found")
    out = Path(args.out)
    cfg = prepare_run(out, args.resume, lambda: dream_config(args), args.timesteps)
    # writes RUN/config.json once SB3 has accepted the settings
    return train_in_dream(cfg, out, resume=args.resume, progress=not args.no_progress)


if __name__ == "__main__":
    cli("agents.train", run)
