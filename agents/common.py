"""The command-line flags the agent scripts share, and ``cli``, which turns bad input into one line.

Everything else the scripts use is the library's public API (``worldmodel.rl``): the run config,
the real-sim evaluation, the callbacks, saving and loading agents, the training loop.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

os.environ.setdefault("MUJOCO_GL", "egl")

from worldmodel.cli.flags import (
    add_common_flags,
    apply_settings,
    config_path,
    nonneg_int,
    positive_int,
    read_settings,
)
from worldmodel.perf import keep_freed_memory
from worldmodel.rl import HYPER_DEFAULTS, HYPER_FLAGS, RunConfig, algo_class
from worldmodel.rl.config import ALGOS


def cli(name: str, run: Callable[[list[str] | None], int], argv: list[str] | None = None) -> None:
    """Run a script's ``run(argv)``; bad input becomes one line on stderr and exit status 2."""
    keep_freed_memory()  # the dream's batched steps reuse freed blocks (see worldmodel.perf)
    try:
        code = run(argv)
    except KeyboardInterrupt:
        print(f"{name}: interrupted", file=sys.stderr)
        code = 130
    except (OSError, ValueError, RuntimeError) as err:
        print(f"{name}: error: {err}", file=sys.stderr)
        code = 2
    sys.exit(code)


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


# RunConfig fields that are not flags: what the script derives or fixes itself
_NOT_FLAGS = ("env", "image_size", "vec", "format", "dtype")


def parse_with_run_config(parser, argv: list[str] | None):
    """``parser.parse_args(argv)``, with ``--config RUN/config.json`` (a ``RunConfig`` as runs save
    it) setting the defaults of the flags it maps to (``dream`` and ``hyper`` entries included), so
    that a run can be repeated or swept from a file and the command line's flags win."""
    argv = sys.argv[1:] if argv is None else list(argv)
    path = config_path(argv)
    if path is not None:
        saved = read_settings(path)
        where = f"--config {path}"
        keys = {v[0]: k.lstrip("-").replace("-", "_") for k, v in HYPER_FLAGS.items()}
        flat = {k: v for k, v in saved.items() if k not in ("dream", "hyper", *_NOT_FLAGS)}
        dream, hyper = saved.get("dream") or {}, saved.get("hyper") or {}
        if not isinstance(dream, dict) or not isinstance(hyper, dict):
            raise ValueError(f"{where}: dream and hyper must be JSON objects")
        flat.update({k: v for k, v in dream.items() if k not in _NOT_FLAGS})
        flat.update({keys.get(k, k): v for k, v in hyper.items()})
        apply_settings(parser, flat, where)
    return parser.parse_args(argv)


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
