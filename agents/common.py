"""What the agent scripts share: ``cli``, which turns bad input into one line, and
``parse_with_run_config`` (``--config RUN/config.json``).

Their flags and the ``RunConfig`` those make live in ``worldmodel.cli.agent_flags`` (re-exported
here), which ``worldmodel demo`` reads too; everything else the scripts use is the library's
public API (``worldmodel.rl``): the run config, the real-sim evaluation, the callbacks, saving and
loading agents, the training loops.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable

os.environ.setdefault("MUJOCO_GL", "egl")

from worldmodel.cli.agent_flags import add_agent_arguments, base_config, hyper_from_args
from worldmodel.cli.flags import apply_settings, config_path, read_settings
from worldmodel.perf import keep_freed_memory
from worldmodel.rl import HYPER_FLAGS

__all__ = ["add_agent_arguments", "base_config", "cli", "hyper_from_args", "parse_with_run_config"]


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
