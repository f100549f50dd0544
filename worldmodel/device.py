"""Which torch device a run uses: ``resolve_device``, shared by training, loading, the dream and
the planner (a layer of its own: it knows nothing of models, data or envs)."""

from __future__ import annotations

import torch


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA when present, else CPU; a device this machine lacks is a ``ValueError``."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ValueError(f"device {device!r} is not a device (auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(
                f"device {device!r}: this PyTorch build sees no CUDA GPU (torch.cuda.is_available() is "
                "False); use --device cpu or auto"
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"device {device!r}: there are only {torch.cuda.device_count()} CUDA devices")
    elif dev.type not in ("cpu", "mps", "xpu", "meta"):
        raise ValueError(f"device {device!r}: unsupported device type {dev.type!r} (auto, cpu or cuda)")
    return dev
