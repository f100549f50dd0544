"""``worldmodel train MODEL --data DIR --out RUN``: train a world model, resumably.

Several GPUs or hosts: ``torchrun --nproc_per_node N -m worldmodel train ...`` (data parallel;
``--batch-size`` is the total over all processes).
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path
from typing import Any

from worldmodel.cli.flags import (
    CONFIG_HELP,
    add_common_flags,
    nonneg_int,
    positive_float,
    positive_int,
    settings_of,
)
from worldmodel.dynamics.registry import available
from worldmodel.files import write_json_atomic

# TrainConfig fields settable from the command line: flag -> (field, type, help)
_TRAIN_FLAGS: dict[str, tuple[str, Any, str]] = {
    "--steps": ("steps", positive_int, "total optimiser steps (default 1000; resume runs up to it)"),
    "--batch-size": ("batch_size", positive_int, "sequences per step, all processes (default: model's)"),
    "--lr": ("lr", positive_float, "learning rate of every optimiser (default: the model's preset)"),
    "--log-every": ("log_every", positive_int, "steps between scalar logs (default 50)"),
    "--ckpt-every": ("ckpt_every", positive_int, "steps between saves of checkpoints/last.pt (default 1000)"),
    "--keep-every": ("keep_every", positive_int, "also keep step_XXXXXXX.pt every this many steps"),
    "--sample-every": ("sample_every", nonneg_int, "steps between sample videos; 0: none (default 1000)"),
    "--workers": ("num_workers", nonneg_int, "DataLoader worker processes (default 0)"),
    "--amp": ("amp", str, "bf16 | none | auto (default auto: bf16 on CUDA)"),
    "--grad-clip": ("grad_clip", positive_float, "clip each optimiser's gradient norm (default: none)"),
    "--eval-every": (
        "eval_every",
        nonneg_int,
        "steps between held-out scores on the test split (eval/*, control/*); 0: none (default 1000)",
    ),
    "--eval-sequences": ("eval_sequences", positive_int, "test sequences scored (default 16)"),
    "--eval-samples": ("eval_samples", positive_int, "samples per test sequence, best of N (default 4)"),
    "--bn-batches": (
        "bn_batches",
        nonneg_int,
        "training batches BatchNorm statistics are recomputed on before each save and score; 0: "
        "keep the running averages (default 16)",
    ),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``worldmodel train``."""
    p.add_argument("model", help=f"model name: {', '.join(available())}")
    p.add_argument("--data", required=True, help="dataset folder (collected shards, BAIR, or PNG folders)")
    p.add_argument("--out", required=True, help="run folder: checkpoints/, tb/ (TensorBoard), samples/")
    p.add_argument("--preset", default=None, help="named model config, e.g. tiny | paper")
    add_common_flags(
        p, sets="override a model config field (repeatable), e.g. --set z_dim=16 --set betas=0.5,0.999"
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from RUN/checkpoints/last.pt (starts fresh if there is none yet)",
    )
    for flag, (_, typ, help_text) in _TRAIN_FLAGS.items():
        p.add_argument(flag, type=typ, default=None, help=help_text)
    # None: the resumed run's value, else TrainConfig's
    seed = "data order, initial weights and noise"
    add_common_flags(p, seed=seed, seed_default=None, unset="the resumed run's, else 0")
    add_common_flags(p, device="", device_default=None, unset="the resumed run's, else auto")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the loss")
    p.add_argument("--channels-last", action="store_true", default=None, help="channels-last conv weights")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--config", metavar="FILE", default=None, help=f"{CONFIG_HELP}; RUN/config.json is one")


def parse_value(text: str) -> Any:
    """``"3"`` → 3, ``"1e-4"`` → 0.0001, ``"true"`` → True, ``"0.5,0.999"`` → (0.5, 0.999), else the text."""
    low = text.strip().lower()
    if low in ("true", "false"):
        return low == "true"
    if "," in text:
        return tuple(parse_value(part) for part in text.split(",") if part.strip())
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    return value if isinstance(value, (int, float, tuple, list)) else text


def parse_sets(items: list[str]) -> dict[str, Any]:
    """``["k=v", ...]`` → ``{k: parse_value(v)}``."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set expects KEY=VALUE, got {item!r}")
        out[key.strip()] = parse_value(value)
    return out


def _train_config(args: argparse.Namespace) -> dict[str, Any]:
    """The ``TrainConfig`` fields given on the command line."""
    given = {name: getattr(args, flag[2:].replace("-", "_")) for flag, (name, _, _) in _TRAIN_FLAGS.items()}
    given.update(seed=args.seed, device=args.device)  # add_common_flags, default None as above
    values = {name: value for name, value in given.items() if value is not None}
    for name in ("compile", "channels_last"):
        if getattr(args, name):
            values[name] = True
    return values


def run(args: argparse.Namespace) -> int:
    """Parse the flags into a ``TrainJob`` and run it (``worldmodel.training.run.train_model``)."""
    from worldmodel.training import distributed
    from worldmodel.training.run import TrainJob, train_model

    main = distributed.env_info().is_main
    out = Path(args.out)

    def say(msg: str) -> None:
        if main:
            print(f"worldmodel train: {msg}", file=sys.stderr)

    def record_settings() -> None:  # for `worldmodel train --config RUN/config.json`
        settings = settings_of(args, skip=("resume", "no_progress"))
        write_json_atomic(out / "config.json", {"command": "train", "args": settings})

    job = TrainJob(
        model=args.model,
        data=args.data,
        out=out,
        preset=args.preset,
        overrides=parse_sets(args.set),
        train=_train_config(args),
        resume=args.resume,
        progress=not args.no_progress,
    )
    result = train_model(job, say=say, before_fit=record_settings)
    if main:
        print(trained_line(job, result))
    return 0


def trained_line(job, result) -> str:
    """The end of a training run in one line: the step, its losses, where the checkpoint is."""
    out = Path(job.out)
    last = result.history.get(result.step, {})
    losses = ", ".join(f"{k} {v:.5g}" for k, v in last.items())
    return (
        f"trained {job.model} to step {result.step} ({losses}); checkpoint "
        f"{out / 'checkpoints' / 'last.pt'}; TensorBoard: tensorboard --logdir {out / 'tb'}"
    )
