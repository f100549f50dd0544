"""What a training run is told (``TrainConfig``), what it returns (``TrainResult``) and how it stops
when the numbers blow up (``TrainingDivergedError``); ``worldmodel.training.trainer`` runs it."""

from __future__ import annotations

import dataclasses
from pathlib import Path


class TrainingDivergedError(RuntimeError):
    """A loss or gradient became NaN or infinite; the message names the step and the last good
    checkpoint."""


@dataclasses.dataclass
class TrainConfig:
    """How to train (the model's own settings live in its config)."""

    steps: int = 1000
    """Total optimiser steps (a resumed run continues up to this count)."""
    batch_size: int | None = None
    """Sequences per step over all processes; ``None`` takes the model config's ``batch_size``."""
    lr: float | None = None
    """Override the learning rate of every optimiser (``None``: the model's preset)."""
    log_every: int = 50
    """Steps between scalar logs (TensorBoard, metrics.jsonl, progress bar)."""
    ckpt_every: int = 1000
    """Steps between checkpoints (``last.pt``); the final step is always saved."""
    keep_every: int | None = None
    """Also keep ``step_XXXXXXX.pt`` every this many steps (``None``: only ``last.pt``)."""
    sample_every: int = 1000
    """Steps between sample grids/videos; 0 disables them."""
    num_samples: int = 4
    """Sequences in the sample grids."""
    num_workers: int = 0
    """DataLoader worker processes."""
    seed: int = 0
    """Seed of the data order, window offsets, initial weights and model noise."""
    device: str = "auto"
    """``auto`` picks CUDA when present."""
    amp: str = "auto"
    """``bf16`` (autocast), ``none``, or ``auto`` (bf16 on CUDA, none on CPU)."""
    compile: bool = False
    """``torch.compile`` the loss function."""
    channels_last: bool = False
    """Put the model's conv weights in channels-last memory format (CUDA)."""
    grad_clip: float | None = None
    """Clip each optimiser's gradient norm (the SVG reference uses none)."""
    eval_every: int = 1000
    """Steps between held-out scores (``eval/*``, ``control/*``; also at the last step) when the
    trainer has ``eval_data``; 0 disables them."""
    eval_sequences: int = 16
    """Held-out sequences scored (the first ones of ``eval_data``, the same at every evaluation)."""
    eval_samples: int = 4
    """Samples per held-out sequence (best-of-N)."""
    bn_batches: int = 16
    """Before every checkpoint and held-out score, BatchNorm statistics are recomputed with the
    weights of that step over this many training batches (``training/precise_bn.py``); 0 keeps
    the running averages."""


@dataclasses.dataclass
class TrainResult:
    """What a ``Trainer.fit`` call did."""

    step: int
    """Last completed step."""
    history: dict[int, dict[str, float]]
    """Per step of this call: every loss term, named like the optimisers (``loss/<key>``)."""
    checkpoint: Path | None
    """The last checkpoint written."""
