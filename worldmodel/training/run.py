"""Train a world model from Python: ``train_model(TrainJob(...))``, what ``worldmodel train`` runs.

The job names a registered model, a dataset folder and a run folder; ``train_model`` builds the
model config (the preset, then ``overrides``, with the data's frame size unless ``image_size`` is
given), checks the data against it (frame size, action size, states for a state head), restores
``RUN/checkpoints/last.pt`` when ``resume`` asks and one exists, and trains with ``Trainer``,
scoring held out on the test split as configured. Notes for the user (a resize, zero actions, no
test split) go to ``say``; nothing is printed otherwise.

    from worldmodel.training.run import TrainJob, train_model

    result = train_model(TrainJob("svg-lp", data="data/push", out="runs/svg", preset="tiny",
                                  overrides={"state_head": True}, train={"steps": 2000}))
    result.checkpoint  # runs/svg/checkpoints/last.pt
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from worldmodel.dynamics.checkpoint import read
from worldmodel.dynamics.registry import build_config, resolve
from worldmodel.training.trainer import TrainConfig, Trainer, TrainResult


@dataclasses.dataclass
class TrainJob:
    """One training run."""

    model: str
    """Registered model name (``worldmodel.dynamics.available()``)."""
    data: str | os.PathLike
    """Dataset folder (collected shards, BAIR, PNG folders)."""
    out: str | os.PathLike
    """Run folder: ``checkpoints/``, ``tb/``, ``samples/``, ``metrics.jsonl``."""
    preset: str | None = None
    """Named model config (``tiny``, ``paper``); a new run only."""
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Model config fields over the preset (or over the checkpoint's config when resuming)."""
    train: dict[str, Any] = dataclasses.field(default_factory=dict)
    """``TrainConfig`` fields over the defaults (or over the resumed run's)."""
    resume: bool = False
    """Continue ``out``'s ``last.pt`` when there is one (fresh otherwise); without it an existing
    checkpoint is refused, so nothing is overwritten."""
    progress: bool = False
    """A progress bar on the main process."""


def train_model(
    job: TrainJob,
    say: Callable[[str], None] = lambda _: None,
    before_fit: Callable[[], None] | None = None,
) -> TrainResult:
    """Build (or restore) the model, open and check the data, train; see the module docstring.

    Raises ``ValueError`` (one line naming the file or setting) for settings the data or the
    checkpoint contradict, before anything is written. ``before_fit`` runs once everything has
    been checked, just before training starts (the CLI records its settings there)."""
    from worldmodel.data import open_dataset
    from worldmodel.data.windows import ZeroActions
    from worldmodel.training import distributed

    out = Path(job.out)
    ckpt_path = out / "checkpoints" / "last.pt"
    main = distributed.env_info().is_main
    saved = None
    if ckpt_path.exists():
        if not job.resume:
            raise ValueError(f"{ckpt_path} exists: pass --resume to continue it, or choose another --out")
        saved = read(ckpt_path)
        if saved["model"] != job.model:
            raise ValueError(f"{ckpt_path} holds a {saved['model']!r} model, not {job.model!r}")
    elif job.resume:
        say(f"no checkpoint in {out} yet; starting a fresh run")
    if saved is not None:
        config = build_config(job.model, **{**saved["config"], **job.overrides})
    else:
        config = model_config(job)
    stored = (saved or {}).get("extra", {}).get("train_config") or {}
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    tcfg = TrainConfig(**{**{k: v for k, v in stored.items() if k in fields}, **job.train})

    data = open_dataset(job.data, split="train", seq_len=config.seq_len, image_size=config.image_size)
    if data.spec.get("image_size") != config.image_size:
        say(f"{data.spec.get('image_size')}-px frames resized to {config.image_size} px (--set image_size)")
    if job.train.get("batch_size") is not None and job.train["batch_size"] > len(data):
        raise ValueError(
            f"--batch-size {job.train['batch_size']} is larger than the {len(data)} training windows of "
            f"{job.data}; use at most {len(data)}"
        )
    if config.state_head and not data.has_actions:  # PNG folders: no actions, no states
        raise ValueError(
            f"--set state_head=true: {job.data} records no states (end-effector positions) to train "
            "the state head on; train without it"
        )
    if not data.has_actions:
        say(f"{job.data} has no actions; training with zero actions")
        data = ZeroActions(data, config.action_dim)
    elif data.spec["action_dim"] != config.action_dim:
        raise ValueError(
            f"{job.data}: actions have {data.spec['action_dim']} dims, the model expects "
            f"{config.action_dim} (--set action_dim=...)"
        )

    cls, _ = resolve(job.model)
    torch.manual_seed(tcfg.seed)  # the initial weights
    model = cls(config)
    held_out = _held_out(job, config, tcfg, say) if main else None
    trainer = Trainer(model, data, out, tcfg, progress=main and job.progress, eval_data=held_out)
    if main and before_fit is not None:
        before_fit()
    if saved is not None:
        step = trainer.resume(ckpt_path)
        say(f"resumed {ckpt_path} at step {step}")
    try:
        return trainer.fit()
    finally:
        distributed.shutdown()


def model_config(job: TrainJob):
    """A new run's model config: the preset and the overrides, with the frame size of the data
    unless ``image_size`` is among the overrides (a preset never shrinks the user's frames)."""
    from worldmodel.data import open_dataset

    if "image_size" in job.overrides:
        return build_config(job.model, job.preset, **job.overrides)
    native = open_dataset(job.data, split="train", seq_len=1).spec.get("image_size")
    try:
        return build_config(job.model, job.preset, **{**job.overrides, "image_size": native})
    except ValueError as err:
        if "image_size" not in str(err):
            raise
        raise ValueError(
            f"{job.data}: {job.model} cannot take its {native}-px frames ({err}); resize them with "
            "--set image_size=N"
        ) from None


def _held_out(job: TrainJob, config, tcfg: TrainConfig, say: Callable[[str], None]):
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
        test = open_dataset(job.data, seq_len=config.seq_len, **kw)
        if config.state_head and test.has_actions and test.episode_length > config.seq_len:
            test = open_dataset(job.data, seq_len=test.episode_length, **kw)
    except (DataError, ValueError) as err:
        say(f"no held-out scores (eval/*): {err}")
        return None
    return test if test.has_actions else ZeroActions(test, config.action_dim)
