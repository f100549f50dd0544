"""The ``worldmodel`` command: thin argument parsing around library calls.

Each sub-command lives in its own module in this package and exposes
``add_arguments(parser)`` and ``run(args) -> int``; the other modules are shared by the commands
(``flags``, the agent scripts' ``agent_flags``, the demo's settings, pipeline and report, which the
bench reuses). Errors that come from bad input
(``WorldModelError`` and its subclasses, ``FileNotFoundError``, ``ValueError``) become a
one-line message and exit status 2, never a traceback.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from worldmodel.cli.flags import OneLineParser, apply_settings, config_path, read_settings
from worldmodel.perf import keep_freed_memory

# name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "collect": ("worldmodel.cli.collect", "roll out a random pushing policy and write a sharded dataset"),
    "show": ("worldmodel.cli.show", "write a grid video (MP4/GIF) of dataset sequences"),
    "train": ("worldmodel.cli.train", "train a world model on a dataset"),
    "train-head": ("worldmodel.cli.train_head", "fit the object-position head for Dream-v0's learned reward"),
    "eval": ("worldmodel.cli.evaluate", "score a checkpoint: per-step PSNR/SSIM vs copy-last-frame"),
    "plan": ("worldmodel.cli.plan", "MPC in the real sim: learned model vs simulator oracle vs random"),
    "demo": ("worldmodel.cli.demo", "run the whole pipeline on built-in defaults and write a report"),
    "bench": ("worldmodel.cli.bench", "train every model alike and compare how each predicts and plans"),
    "online": ("worldmodel.cli.online", "model-based RL loop: plan in the sim, grow the data, fine-tune"),
}


def build_parser() -> argparse.ArgumentParser:
    """The full parser with every available sub-command."""
    from worldmodel import __version__

    parser = OneLineParser(
        prog="worldmodel",
        description="World models you can plan and train agents in: collect data, train, evaluate, "
        "plan, run the demo. `worldmodel COMMAND --help` explains each command.",
    )
    parser.add_argument("--version", action="version", version=f"worldmodel {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    parser.commands = {}  # name -> its sub-parser (for --config)
    for name, (module_name, help_text) in COMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as err:
            if err.name != module_name:
                raise
            continue  # a command whose module is not written yet
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
        parser.commands[name] = p
    return parser


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line; a command with ``--config FILE`` takes its settings from the file
    (``{"command": NAME, "args": {...}}`` as runs save them, or a plain object of flag values) and
    the flags given on the command line over them."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    command = next((w for w in argv if w in COMMANDS), None)
    path = config_path(argv)
    if path is not None and command not in (None, "demo"):  # the demo reads its own format
        values = read_settings(path)
        if isinstance(values.get("args"), dict):
            if values.get("command", command) != command:
                raise ValueError(f"--config {path}: settings of `{values['command']}`, not `{command}`")
            values = values["args"]
        apply_settings(parser.commands[command], values, f"--config {path}")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of the console script."""
    try:
        args = parse(argv)
    except ValueError as err:
        print(f"worldmodel: error: {err}", file=sys.stderr)
        return 2
    keep_freed_memory()  # batched CPU steps reuse freed blocks instead of faulting in fresh pages
    try:
        if getattr(args, "threads", None):  # add_common_flags(threads=True)
            import torch

            torch.set_num_threads(args.threads)
        return int(args._run(args) or 0)
    except KeyboardInterrupt:
        print("worldmodel: interrupted", file=sys.stderr)
        return 130
    except (OSError, ValueError, RuntimeError) as err:
        print(f"worldmodel {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
