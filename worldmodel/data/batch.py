"""The one container that flows from datasets to models.

A dataset item is a dict of tensors for one window of ``T`` steps; ``torch.utils.data``'s default
collate turns a list of them into a batch with a leading ``B`` axis:

- ``frames``:  uint8 ``(B, T, H, W, 3)`` — kept uint8 until it is on the model's device.
- ``actions``: float32 ``(B, T, A)`` in [-1, 1]; ``actions[:, t]`` drives ``frames[:, t]`` to
  ``frames[:, t + 1]`` (BAIR alignment), so the last action of a window is unused by prediction.
- ``states``:  float32 ``(B, T, S)`` — end-effector position (BAIR ``endeffector_pos``).
- ``objects``: float32 ``(B, T, K, 3)`` — object positions, NaN rows for absent objects
  (only for simulated data; real BAIR and PNG folders have none).
- ``goal``: float32 ``(B, 3)``, ``target``: int64 ``(B,)``, ``num_objects``: int64 ``(B,)`` — the
  episode's push-to-goal task (the goal position and which object should reach it) and how many
  objects are present; per episode, no time axis (simulated data only).
- ``transitions``: a dict of ``(N, ...)`` recorded steps drawn from the whole training data, added
  by the trainer for state heads that integrate the arm and the objects
  (``data/transitions.py``: ``RecordedTransitions.sample``); not in dataset items.
"""

from __future__ import annotations

from typing import TypedDict

import torch


class Batch(TypedDict, total=False):
    """A batch (or a single item, without the ``B`` axis) of aligned sequences."""

    frames: torch.Tensor
    actions: torch.Tensor
    states: torch.Tensor
    objects: torch.Tensor
    goal: torch.Tensor
    target: torch.Tensor
    num_objects: torch.Tensor
    transitions: dict[str, torch.Tensor]


def frames_to_float(frames: torch.Tensor) -> torch.Tensor:
    """uint8 ``(..., H, W, 3)`` → float ``(..., 3, H, W)`` in [0, 1], on the input's device.

    Call after moving the uint8 tensor to the device: 4× less to copy than float32.
    """
    if frames.dtype != torch.uint8:
        raise ValueError(f"frames: expected uint8 (..., H, W, 3), got {frames.dtype} {tuple(frames.shape)}")
    return frames.movedim(-1, -3).float().div_(255.0)


def frames_to_uint8(frames: torch.Tensor) -> torch.Tensor:
    """float ``(..., 3, H, W)`` in [0, 1] → uint8 ``(..., H, W, 3)`` (rounded, clamped)."""
    # One float32 temporary, then in place (same values as clamp(0, 1) · 255 rounded): on a batched
    # dream step the frames are the largest tensors and each extra pass showed in the profile.
    x = frames.detach().to(torch.float32, copy=True).mul_(255.0).clamp_(0, 255).round_()
    return x.to(torch.uint8).movedim(-3, -1)
