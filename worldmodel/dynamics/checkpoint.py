"""Self-describing checkpoints: a model rebuilds from the file alone, and loading runs no code.

A checkpoint is a ``torch.save`` dict of plain types and tensors, read back with
``torch.load(weights_only=True)``:

``format`` (int), ``model`` (registry name), ``config`` (dict), ``weights`` (state dict),
``step`` (int), and optionally ``optimizers``, ``rng``, ``data`` (fingerprint) and ``extra``
(trainer bookkeeping for ``--resume``).

Safety: ``atomic_save`` never replaces a file with one holding a NaN or infinite floating tensor
(weights, buffers, optimiser state; ``NonFiniteError``), nor leaves a temporary file behind (a
full disk is a one-line ``CheckpointError`` saying the previous file survived); the file gets the
mode a plain ``open()`` would give it (``0o666 & ~umask``). ``load`` refuses weights with NaN or
infinite values. ``weights_sha256`` fingerprints a model's weights (head files record it).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from worldmodel.device import resolve_device
from worldmodel.dynamics.base import LatentDynamics
from worldmodel.dynamics.registry import build_config, name_of, resolve
from worldmodel.errors import CheckpointError
from worldmodel.files import atomic_path, disk_full

FORMAT = 1


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


class NonFiniteError(CheckpointError):
    """A checkpoint to write or read holds a NaN or infinite floating tensor."""


def first_nonfinite(obj: Any, name: str = "") -> str | None:
    """The name (``weights.enc.0.weight``, ``optimizers.model.state.3.exp_avg``...) of the first
    floating tensor in ``obj`` (nested dicts, lists, tuples) with a NaN or infinite value, else
    ``None``. One host sync per device, not per tensor."""
    named: list[tuple[str, Tensor]] = []
    _collect_floats(obj, name, named)
    by_device: dict[torch.device, list[int]] = {}
    for i, (_, t) in enumerate(named):
        by_device.setdefault(t.device, []).append(i)
    bad = []
    for idx in by_device.values():
        ok = torch.stack([torch.isfinite(named[i][1]).all() for i in idx]).tolist()
        bad += [i for i, good in zip(idx, ok, strict=True) if not good]
    return named[min(bad)][0] if bad else None


def _collect_floats(obj: Any, name: str, out: list[tuple[str, Tensor]]) -> None:
    if isinstance(obj, Tensor):
        if (obj.is_floating_point() or obj.is_complex()) and obj.numel():
            out.append((name or "tensor", obj.detach()))
    elif isinstance(obj, Mapping):
        for k, v in obj.items():
            _collect_floats(v, f"{name}.{k}" if name else str(k), out)
    elif isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            _collect_floats(v, f"{name}.{i}" if name else str(i), out)


def weights_sha256(weights: Mapping[str, Tensor]) -> str:
    """sha256 over a state dict's tensors in key order (each key, dtype, shape and bytes in
    logical order): the fingerprint a head file records of the weights it was fitted to."""
    h = hashlib.sha256()
    for key in sorted(weights):
        t = weights[key].detach()
        h.update(f"{key}\0{t.dtype}\0{tuple(t.shape)}\0".encode())
        h.update(t.cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def model_sha256(model: torch.nn.Module) -> str:
    """``weights_sha256`` of a model's state dict (equal to that of the checkpoint it was loaded
    from)."""
    return weights_sha256(model.state_dict())


def atomic_save(obj: Any, path: str | os.PathLike, *, check_finite: bool = True) -> Path:
    """``torch.save`` through ``worldmodel.files.atomic_path`` (temporary file, fsync, rename; the
    mode ``open()`` would give).

    With ``check_finite`` (the default) an ``obj`` holding a NaN or infinite floating tensor is
    refused (``NonFiniteError``) before anything is written, so it never replaces a good file. A full
    disk is a ``CheckpointError`` saying so; either way ``path`` is left as it was and no temporary
    file remains."""
    path = Path(path)
    if check_finite:
        bad = first_nonfinite(obj)
        if bad is not None:
            kept = f"the previous {path} is kept" if path.exists() else "nothing was written"
            raise NonFiniteError(f"{path}: not written: {bad} holds NaN or infinite values; {kept}")
    try:
        with atomic_path(path) as tmp, open(tmp, "wb") as f:
            torch.save(obj, f)
    except OSError as err:
        if disk_full(err):
            raise CheckpointError(str(err)) from err
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
    if not isinstance(ckpt["format"], int) or isinstance(ckpt["format"], bool):
        raise CheckpointError(
            f"{path}: not a worldmodel checkpoint (format {ckpt['format']!r} is not a number)"
        )
    if ckpt["format"] > FORMAT:
        raise CheckpointError(
            f"{path}: checkpoint format {ckpt['format']} is newer than this worldmodel ({FORMAT})"
        )
    return ckpt


def check_finite(ckpt: dict[str, Any], path: str | os.PathLike, *, optimizers: bool = False) -> None:
    """``NonFiniteError`` naming ``path`` and the first NaN or infinite tensor of the checkpoint's
    weights (and optimiser states with ``optimizers``): a diverged run's model."""
    parts = {"weights": ckpt["weights"]}
    if optimizers:
        parts["optimizers"] = ckpt.get("optimizers") or {}
    bad = first_nonfinite(parts)
    if bad is not None:
        raise NonFiniteError(
            f"{path}: {bad} holds NaN or infinite values (a diverged run's model); refusing to use it: "
            "take an earlier checkpoint or train again"
        )


def model_from(
    ckpt: dict[str, Any], path: str | os.PathLike, device: str | torch.device = "auto"
) -> LatentDynamics:
    """Rebuild the model of a checkpoint dict ``read`` from ``path`` (named in errors) on
    ``device``, in eval mode; refuses NaN or infinite weights."""
    check_finite(ckpt, path)
    try:
        cls, _ = resolve(ckpt["model"])
        model = cls(build_config(ckpt["model"], **ckpt["config"]))
        model.load_state_dict(ckpt["weights"])
    except (ValueError, RuntimeError, TypeError) as err:
        raise CheckpointError(f"{path}: incompatible checkpoint for {ckpt['model']!r}: {err}") from None
    return model.to(resolve_device(device)).eval()


def load(path: str | os.PathLike, device: str | torch.device = "auto") -> LatentDynamics:
    """Rebuild the model stored in ``path`` on ``device``, in eval mode (``CheckpointError`` for a
    missing, corrupt or incompatible file, or one whose weights hold NaN or infinite values)."""
    return model_from(read(path), path, device)
