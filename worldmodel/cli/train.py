"""``worldmodel train MODEL --data DIR --out RUN``: train a world model, resumably.

Several GPUs or hosts: ``torchrun --nproc_per_node N -m worldmodel train ...`` (data parallel;
``--batch-size`` is the total over all processes).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import sys
from pathlib import Path
from typing import Any

import torch

from worldmodel.cli.flags import CONFIG_HELP, nonneg_int, positive_float, positive_int, settings_of
from worldmodel.dynamics.checkpoint import read
from worldmodel.dynamics.registry import available, build_config, resolve
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
    "--seed": ("seed", nonneg_int, "seed of data order, initial weights and noise (default 0)"),
    "--device": ("device", str, "auto | cpu | cuda | cuda:N (default auto)"),
    "--amp": ("amp", str, "bf16 | none | auto (default auto: bf16 on CUDA)"),
    "--grad-clip": ("grad_clip", positive_float, "clip each optimiser's gradient norm (default: none)"),
    "--eval-every": (
        "eval_every",
        nonneg_int,
        "steps between held-out scores on the test split (eval/*, control/*); 0: none (default 1000)",
    ),
    "--eval-sequences": ("eval_sequences", positive_int, "test sequences scored (default 16)"),
    "--eval-samples": ("eval_samples", positive_int, "samples per test sequence, best of N (default 4)"),
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Flags of ``worldmodel train``."""
    p.add_argument("model", help=f"model name: {', '.join(available())}")
    p.add_argument("--data", required=True, help="dataset folder (collected shards, BAIR, or PNG folders)")
    p.add_argument("--out", required=True, help="run folder: checkpoints/, tb/ (TensorBoard), samples/")
    p.add_argument("--preset", default=None, help="named model config, e.g. tiny | paper")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a model config field (repeatable), e.g. --set z_dim=16 --set betas=0.5,0.999",
    )
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue from RUN/checkpoints/last.pt (starts fresh if there is none yet)",
    )
    for flag, (_, typ, help_text) in _TRAIN_FLAGS.items():
        p.add_argument(flag, type=typ, default=None, help=help_text)
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


def _fresh_config(args: argparse.Namespace, overrides: dict[str, Any]):
    """A new run's model config: the preset and ``--set``, with the frame size of the data unless
    ``--set image_size`` says otherwise (a preset never shrinks the user's frames silently)."""
    from worldmodel.data import open_dataset

    if "image_size" in overrides:
        return build_config(args.model, args.preset, **overrides)
    native = open_dataset(args.data, split="train", seq_len=1).spec.get("image_size")
    try:
        return build_config(args.model, args.preset, **{**overrides, "image_size": native})
    except ValueError as err:
        if "image_size" not in str(err):
            raise
        raise ValueError(
            f"{args.data}: {args.model} cannot take its {native}-px frames ({err}); resize them with "
            "--set image_size=N"
        ) from None


def _train_config(args: argparse.Namespace, saved: dict[str, Any] | None):
    from worldmodel.training.trainer import TrainConfig

    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    values = {k: v for k, v in (saved or {}).items() if k in fields}
    for flag, (name, _, _) in _TRAIN_FLAGS.items():
        given = getattr(args, flag.lstrip("-").replace("-", "_"))
        if given is not None:
            values[name] = given
    for name in ("compile", "channels_last"):
        if getattr(args, name):
            values[name] = True
    return TrainConfig(**values)


def _held_out(args: argparse.Namespace, config, tcfg, say):
    """The test split from step 0 for the trainer's held-out scores (whole episodes when the model
    has a state head, so the control diagnostics can find the push), or ``None``: scores off, or
    no usable test split (said once)."""
    if not tcfg.eval_every:
        return None
    from worldmodel.data import open_dataset
    from worldmodel.data.windows import ZeroActions
    from worldmodel.errors import DataError

    kw = {"split": "test", "random_offset": False, "image_size": config.image_size}
    try:
        test = open_dataset(args.data, seq_len=config.seq_len, **kw)
        if config.state_head and test.has_actions and test.episode_length > config.seq_len:
            test = open_dataset(args.data, seq_len=test.episode_length, **kw)
    except (DataError, ValueError) as err:
        say(f"worldmodel train: no held-out scores (eval/*): {err}", file=sys.stderr)
        return None
    return test if test.has_actions else ZeroActions(test, config.action_dim)


def run(args: argparse.Namespace) -> int:
    """Build (or restore) the model, open the data, train."""
    from worldmodel.data import open_dataset
    from worldmodel.data.windows import ZeroActions
    from worldmodel.training import distributed
    from worldmodel.training.trainer import Trainer

    out = Path(args.out)
    ckpt_path = out / "checkpoints" / "last.pt"
    main = distributed.env_info().is_main
    say = print if main else (lambda *a, **k: None)
    saved = None
    if ckpt_path.exists():
        if not args.resume:
            raise ValueError(f"{ckpt_path} exists: pass --resume to continue it, or choose another --out")
        saved = read(ckpt_path)
        if saved["model"] != args.model:
            raise ValueError(f"{ckpt_path} holds a {saved['model']!r} model, not {args.model!r}")
    elif args.resume:
        say(f"worldmodel train: no checkpoint in {out} yet; starting a fresh run", file=sys.stderr)

    overrides = parse_sets(args.set)
    if saved is not None:
        config = build_config(args.model, **{**saved["config"], **overrides})
    else:
        config = _fresh_config(args, overrides)
    tcfg = _train_config(args, (saved or {}).get("extra", {}).get("train_config"))

    data = open_dataset(args.data, split="train", seq_len=config.seq_len, image_size=config.image_size)
    if data.spec.get("image_size") != config.image_size:
        say(
            f"worldmodel train: {data.spec.get('image_size')}-px frames resized to {config.image_size} px "
            "(--set image_size)",
            file=sys.stderr,
        )
    if args.batch_size is not None and args.batch_size > len(data):
        raise ValueError(
            f"--batch-size {args.batch_size} is larger than the {len(data)} training windows of "
            f"{args.data}; use at most {len(data)}"
        )
    if config.state_head and not data.has_actions:  # PNG folders: no actions, no states
        raise ValueError(
            f"--set state_head=true: {args.data} records no states (end-effector positions) to train "
            "the state head on; train without it"
        )
    if not data.has_actions:
        say(f"worldmodel train: {args.data} has no actions; training with zero actions", file=sys.stderr)
        data = ZeroActions(data, config.action_dim)
    elif data.spec["action_dim"] != config.action_dim:
        raise ValueError(
            f"{args.data}: actions have {data.spec['action_dim']} dims, the model expects "
            f"{config.action_dim} (--set action_dim=...)"
        )

    cls, _ = resolve(args.model)
    torch.manual_seed(tcfg.seed)  # the initial weights
    model = cls(config)
    held_out = _held_out(args, config, tcfg, say) if main else None
    trainer = Trainer(model, data, out, tcfg, progress=main and not args.no_progress, eval_data=held_out)
    if main:  # the settings of this command, for `worldmodel train --config RUN/config.json`
        settings = settings_of(args, skip=("resume", "no_progress"))
        write_json_atomic(out / "config.json", {"command": "train", "args": settings})
    if saved is not None:
        step = trainer.resume(ckpt_path)
        say(f"worldmodel train: resumed {ckpt_path} at step {step}", file=sys.stderr)
    try:
        result = trainer.fit()
    finally:
        distributed.shutdown()
    last = result.history.get(result.step, {})
    losses = ", ".join(f"{k} {v:.5g}" for k, v in last.items())
    say(
        f"trained {args.model} to step {result.step} ({losses}); checkpoint {trainer.checkpoint_path}; "
        f"TensorBoard: tensorboard --logdir {out / 'tb'}"
    )
    return 0
