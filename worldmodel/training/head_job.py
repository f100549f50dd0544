"""Fit an object-position head from Python: ``fit_head(HeadJob(...))``, what ``worldmodel train-head`` runs.

The head (``worldmodel.dynamics.heads.ObjectHead``) reads the objects' and the end effector's
positions off a trained world model's dreamed features, for Dream-v0's learned reward and the
planner's learned objective when the model has no state head of its own. The model is not
modified: ``train_object_head`` dreams the data's train split (whole episodes by default) with the
recorded actions and fits the head on those features; it is scored on the test split (on a fifth
of the training episodes when the data has none, said through ``say``) and written beside the
checkpoint (``CKPT_STEM.head.pt``, where Dream-v0 finds it) with a record of the weights it was
fitted to, so loaders refuse it once the checkpoint changes.

    from worldmodel.training.head_job import HeadJob, fit_head

    result = fit_head(HeadJob("runs/svg/checkpoints/last.pt", data="data/push", steps=1000))
    result["head"], result["val_rmse_xy"]
"""

from __future__ import annotations

import dataclasses
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


@dataclasses.dataclass
class HeadJob:
    """One head fit (the flags of ``worldmodel train-head``, which documents each)."""

    checkpoint: str | os.PathLike
    data: str | os.PathLike
    """Collected sim dataset (it must record object positions)."""
    steps: int = 2000
    out: str | os.PathLike | None = None
    """Head file to write (``None``: beside the checkpoint, ``CKPT_STEM.head.pt``)."""
    episodes: int = 512
    """Training episodes used (features are computed once)."""
    val_episodes: int = 128
    seq_len: int | None = None
    """Window length (``None``: the data's whole episodes)."""
    batch_size: int = 256
    lr: float = 1e-3
    seed: int = 0
    device: str = "auto"
    json: str | os.PathLike | None = None
    """Also write the result (``checkpoint``, ``head`` and the metrics) as JSON here."""
    progress: bool = False
    """A progress bar over the Adam steps."""

    def __post_init__(self) -> None:
        for name in ("steps", "episodes", "val_episodes", "batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')}: must be >= 1, got {getattr(self, name)}")
        if self.seq_len is not None and self.seq_len < 2:
            raise ValueError(f"--seq-len: must be >= 2, got {self.seq_len}")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise ValueError(f"--lr: must be a finite number > 0, got {self.lr}")


def fit_head(job: HeadJob, say: Callable[[str], None] = lambda _: None) -> dict[str, Any]:
    """Load the model, compute dream features on the data, fit and save the head; returns
    ``{"checkpoint", "head", **metrics}`` (train and held-out RMSE against predict-the-mean and
    object-stays-put), also written to ``job.json`` when given."""
    import torch
    from tqdm.auto import tqdm

    from worldmodel.data import open_dataset
    from worldmodel.dynamics.checkpoint import model_from, read
    from worldmodel.dynamics.head_fit import train_object_head
    from worldmodel.dynamics.heads import fit_record, head_path_for, save_head
    from worldmodel.errors import DataError
    from worldmodel.files import write_json_atomic

    torch.manual_seed(job.seed)
    ckpt = Path(job.checkpoint)
    saved = read(ckpt)  # read once: the record below describes exactly the weights fitted on
    model = model_from(saved, ckpt, device=job.device)
    fitted_to = fit_record(model, ckpt, saved["step"])
    # Whole episodes by default: objects mostly move late in an episode, and the dream runs long.
    seq_len = job.seq_len or open_dataset(job.data, "train", seq_len=1).spec["episode_length"]
    kw = {"seq_len": seq_len, "random_offset": False, "image_size": model.config.image_size}
    train = _items(open_dataset(job.data, "train", **kw), job.episodes)
    try:
        val = _items(open_dataset(job.data, "test", **kw), job.val_episodes)
    except DataError as err:  # a small collection may have no test episodes: hold out a fifth of train
        cut = max(1, len(train) // 5)
        train, val = train[:-cut], train[-cut:]
        say(f"{err}; holding out {cut} training episodes instead")
    with tqdm(
        total=job.steps, desc="train-head", unit="step", dynamic_ncols=True, disable=not job.progress
    ) as bar:

        def progress(step: int, loss: float) -> None:
            bar.update(1)
            if step % 50 == 0:
                bar.set_postfix(loss=f"{loss:.4f}")

        head, metrics = train_object_head(
            model,
            train,
            val,
            steps=job.steps,
            batch_size=job.batch_size,
            lr=job.lr,
            seed=job.seed,
            progress=progress,
        )
    out = Path(job.out) if job.out else head_path_for(ckpt)
    save_head(
        head,
        out,
        model=saved["model"],
        checkpoint=str(ckpt),
        fitted_to=fitted_to,
        data=str(job.data),
        steps=job.steps,
        metrics=metrics,
    )
    result = {"checkpoint": str(ckpt), "head": str(out), **metrics}
    if job.json:
        write_json_atomic(job.json, result)
    return result


def _items(data, n: int) -> list:
    return [data[i] for i in range(min(n, len(data)))]
