"""Self-describing checkpoints: a model rebuilds from the file alone, and loading runs no code.

A checkpoint is a ``torch.save`` dict of plain types and tensors, read back with
``torch.load(weights_only=True)``:

``format`` (int), ``model`` (registry name), ``config`` (dict), ``weights`` (state dict),
``step`` (int), and optionally ``optimizers``, ``rng``, ``data`` (fingerprint) and ``extra``
(trainer bookkeeping for ``--resume``).
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from worldmodel.dynamics.base import LatentDynamics
from worldmodel.dynamics.registry import build_config, name_of, resolve
from worldmodel.errors import CheckpointError

FORMAT = 1


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when present, else CPU."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def checkpoint_dict(model: LatentDynamics, step: int = 0, **fields: Any) -> dict[str, Any]:
    """The dict that ``save`` writes for ``model`` (weights on the CPU)."""
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    return {
        "format": FORMAT,
        "model": name_of(model),
        "config": model.config_dict(),
        "weights": weights,
        "step": int(step),
        **fields,
    }


def atomic_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file beside ``path``, fsync, then rename over it."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def save(model: LatentDynamics, path: str | os.PathLike, step: int = 0, **fields: Any) -> Path:
    """Write a self-describing checkpoint atomically."""
    if getattr(model, "inference_copy", False):
        raise ValueError(
            f"{path}: the model is an inference copy (dynamics.inference.for_inference), whose "
            "weights are rewritten; save the model it was made from"
        )
    return atomic_save(checkpoint_dict(model, step, **fields), path)


def read(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint dict without running code, with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt, truncated, or not a torch file
        raise CheckpointError(
            f"{path}: not a readable worldmodel checkpoint ({type(err).__name__}: {err})"
        ) from None
    missing = [
        k for k in ("format", "model", "config", "weights") if not isinstance(ckpt, dict) or k not in ckpt
    ]
    if missing:
        raise CheckpointError(f"{path}: not a worldmodel checkpoint (missing {', '.join(missing)})")
    if ckpt["format"] > FORMAT:
        raise CheckpointError(
            f"{path}: checkpoint format {ckpt['format']} is newer than this worldmodel ({FORMAT})"
        )
    return ckpt


def load(path: str | os.PathLike, device: str | torch.device = "auto") -> LatentDynamics:
    """Rebuild the model stored in ``path`` on ``device``, in eval mode."""
    ckpt = read(path)
    try:
        cls, _ = resolve(ckpt["model"])
        model = cls(build_config(ckpt["model"], **ckpt["config"]))
        model.load_state_dict(ckpt["weights"])
    except (ValueError, RuntimeError, TypeError) as err:
        raise CheckpointError(f"{path}: incompatible checkpoint for {ckpt['model']!r}: {err}") from None
    return model.to(resolve_device(device)).eval()
