"""The per-episode data of running dreams.

One episode's random draws (``Draw``), the rows' data on the device and the host (``Episodes``),
and the goal drawn for a start context that stores none (``draw_goal``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch
from torch import Tensor

from worldmodel.envs import task as tasks
from worldmodel.envs.task import TaskSpec


class Draw(NamedTuple):
    """One episode's draws (``DreamCore.draw``)."""

    idx: int
    """Pool entry (-1: a caller's context)."""
    goal: np.ndarray
    """float32 ``(3,)``."""
    query: np.ndarray
    """float32 ``(3,)``: the target's position at reset (zeros when unknown)."""
    key: np.ndarray
    """int64 ``(2,)``: the noise key."""
    target: int


class Episodes:
    """Per-row data of running episodes: ``dev`` tensors (``goal``, ``query`` ``(B, 3)``,
    ``objects`` ``(B, MAX_OBJECTS, 3)`` at reset (NaN: absent), ``ee`` ``(B, 3)`` at reset (NaN:
    unknown), ``keys`` ``(B, 2)``, ``goal_image`` uint8 ``(B, H, W, 3)``, ``goal_features``
    ``(B, F)`` or None) and their ``host`` copies (``pidx``, ``target``, ``num_objects``,
    ``goal``, ``objects``, ``ee``), so a step reads them without a device round trip."""

    def __init__(self, dev: dict[str, Tensor | None], host: dict[str, np.ndarray]) -> None:
        self.dev, self.host = dev, host

    def assign(self, rows: np.ndarray, other: Episodes) -> None:
        """Rows ``rows`` (host indices) become ``other``'s (one row each, in order)."""
        r = None
        for k, v in self.dev.items():
            if v is not None:
                r = torch.as_tensor(rows, device=v.device) if r is None else r
                v[r] = other.dev[k]
        for k, v in self.host.items():
            v[rows] = other.host[k]


def draw_goal(spec: TaskSpec, rng: np.random.Generator, target: np.ndarray, ee: np.ndarray) -> np.ndarray:
    """A goal for an episode whose context stores none, from PushTable's goal distribution:
    ``reach`` a point ``sample_reach_goal`` away from the arm ``ee``; else a ``push`` goal
    (``task.sample_push_goal``) at the target's height."""
    if spec.name == "reach":
        return tasks.sample_reach_goal(spec, rng, np.asarray(ee, np.float64))
    goal = tasks.sample_push_goal(spec, rng, np.asarray(target[:2]), tries=100)
    z = float(target[2]) if np.isfinite(target).all() else 0.0
    return np.array([goal[0], goal[1], z])
