"""The numbers of the control diagnostics (``control.py``): argument checks, the per-k state
errors against their static baselines, and the JSON-safe number helpers they share."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from worldmodel.dynamics.base import LatentDynamics


def check_args(
    model: LatentDynamics,
    ks: Sequence[int],
    candidates: int,
    rank_k: int | None,
    context: int | None,
    moved_threshold: float,
    temperature: float,
) -> tuple[tuple[int, ...], int, int]:
    """``(sorted unique ks, context, rank_k)`` or ``ValueError`` naming the bad argument."""
    try:
        ks = tuple(ks)
    except TypeError:
        raise ValueError(f"ks: expected a sequence of step counts, got {ks!r}") from None
    if not ks:
        raise ValueError("ks: empty; give at least one step count, e.g. (5, 10, 20)")
    if not all(isinstance(k, int) and not isinstance(k, bool) and k >= 1 for k in ks):
        raise ValueError(f"ks: step counts must be positive ints, got {list(ks)}")
    ks = tuple(sorted(set(ks)))
    if not isinstance(candidates, int) or candidates < 1:
        raise ValueError(f"candidates: must be an int >= 1, got {candidates!r}")
    context = int(model.config.n_past) if context is None else context
    if not isinstance(context, int) or context < 1:
        raise ValueError(f"context: must be an int >= 1, got {context!r}")
    rank_k = max(ks) if rank_k is None else rank_k
    if not isinstance(rank_k, int) or rank_k < 1:
        raise ValueError(f"rank_k: must be an int >= 1, got {rank_k!r}")
    if not moved_threshold >= 0:
        raise ValueError(f"moved_threshold: must be >= 0 (metres), got {moved_threshold}")
    if not temperature >= 0:
        raise ValueError(f"temperature: must be >= 0, got {temperature}")
    return ks, context, rank_k


def num(x: float | Tensor) -> float | None:
    """A float, or ``None`` for NaN/Inf (JSON has no NaN)."""
    x = float(x)
    return x if math.isfinite(x) else None


def mean_cm(d: Tensor) -> float | None:
    """Mean of distances ``d`` (metres) in cm; ``None`` when empty."""
    return num(d.double().mean() * 100) if d.numel() else None


def ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b is not None and b > 0 else None


def xy(a: Tensor, b: Tensor) -> Tensor:
    return torch.linalg.vector_norm(a[..., :2] - b[..., :2], dim=-1)


def moved_target(objects: Tensor, c: int, k: int, threshold: float) -> tuple[Tensor, Tensor]:
    """Per episode: the index of the object that moved most (xy) from frame ``c - 1`` to ``c - 1 +
    k``, and whether it moved more than ``threshold``."""
    disp = xy(objects[:, c - 1 + k], objects[:, c - 1]).nan_to_num(-1.0)  # (n, K); absent: -1
    best, target = disp.max(1)
    return target, best > threshold


def state_errors(
    ee_pred: Tensor | None,
    obj_pred: Tensor | None,
    states: Tensor,
    objects: Tensor | None,
    c: int,
    k: int,
    threshold: float,
) -> dict[str, Any]:
    """The per-k block: end-effector, moved-object and target errors against their static baselines."""
    ee_true, ee_last = states[:, c - 1 + k], states[:, c - 1]
    out: dict[str, Any] = {
        "ee_error_cm": None
        if ee_pred is None
        else mean_cm(torch.linalg.vector_norm(ee_pred - ee_true, dim=-1)),
        "ee_static_cm": mean_cm(torch.linalg.vector_norm(ee_last - ee_true, dim=-1)),
    }
    out["ee_ratio"] = ratio(out["ee_error_cm"], out["ee_static_cm"])
    if objects is None or obj_pred is None:
        out.update(dict.fromkeys(("object_error_cm", "object_static_cm", "object_ratio")))
        out.update(objects_moved=0, target_error_cm=None, target_static_cm=None, target_ratio=None)
        out["target_episodes"] = 0
        return out
    last, now = objects[:, c - 1], objects[:, c - 1 + k]  # (n, K, 3)
    static = xy(last, now)  # NaN where absent
    moved = torch.isfinite(static) & (static > threshold)
    err = xy(obj_pred, now)
    out["object_error_cm"] = mean_cm(err[moved])
    out["object_static_cm"] = mean_cm(static[moved])
    out["object_ratio"] = ratio(out["object_error_cm"], out["object_static_cm"])
    out["objects_moved"] = int(moved.sum())
    target, tmoved = moved_target(objects, c, k, threshold)
    rows = torch.arange(len(target))
    out["target_error_cm"] = mean_cm(err[rows, target][tmoved])
    out["target_static_cm"] = mean_cm(static[rows, target][tmoved])
    out["target_ratio"] = ratio(out["target_error_cm"], out["target_static_cm"])
    out["target_episodes"] = int(tmoved.sum())
    return out
