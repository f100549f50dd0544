"""VGAN's hyper-parameters: ``VGANConfig`` and its presets (``tiny``, ``paper``,
``paper-unconditional``).

The ``paper`` presets are the reference Torch7 code's settings (``cvondrick/videogan``:
``main_conditional.lua`` and ``main.lua``); ``tiny`` is a fast CPU model. What the fields do to the
networks is in ``vgan_nets.py``, what they do to the loss and the rollouts in ``vgan.py``.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

from worldmodel.dynamics.base import DynamicsConfig


@dataclasses.dataclass
class VGANConfig(DynamicsConfig):
    """VGAN hyper-parameters. Defaults are the conditional model of the paper (the ``paper`` preset)."""

    conditional: bool = True
    """Future generation from a context frame (True) or unconditional videos from ``z`` (False)."""
    clip_len: int = 32
    """Frames ``L`` per generated clip (frame 0 reconstructs the conditioning frame)."""
    width: int = 128
    """Width of the last foreground layer and the first discriminator layer (reference: 128
    conditional, 64 unconditional); other layers scale with it."""
    z_dim: int = 100
    """Size of the noise vector ``z`` (one per clip)."""
    first_frame_l1: float = 10.0
    """Weight of the L1 loss between generated frame 0 and the context frame (conditional)."""
    mask_l1: float = 0.0
    """Weight of the L1 sparsity penalty on the mask (reference: 0.1 unconditional, 0 conditional)."""
    recon_l1: float = 0.0
    """Weight of an L1 loss on every generated frame (our extension; 0 = reference)."""
    action_conditioned: bool = True
    """Condition the foreground stream and the discriminator on the actions (our extension)."""
    feature_pool: int = 2
    """``features`` pools the encoder code to ``feature_pool × feature_pool``."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # Fast CPU model for tests and the quick demo (16×16 frames, 8-frame clips). It learns
        # action-driven motion within a few hundred CPU steps only with the L1 on every frame
        # (our extension) and a 5× higher learning rate than the paper's.
        "tiny": {
            "image_size": 16,
            "clip_len": 8,
            "width": 16,
            "z_dim": 8,
            "n_past": 1,
            "n_future": 7,
            "recon_l1": 10.0,
            "lr": 1e-3,
            "betas": (0.5, 0.999),
            "batch_size": 16,
        },
        # main_conditional.lua: 64 px, 32 frames, width 128 (G ≈ 68 M, D ≈ 44 M), batch 32.
        "paper": {
            "image_size": 64,
            "conditional": True,
            "clip_len": 32,
            "width": 128,
            "z_dim": 100,
            "first_frame_l1": 10.0,
            "mask_l1": 0.0,
            "recon_l1": 0.0,
            "n_past": 1,
            "n_future": 31,
            "lr": 2e-4,
            "betas": (0.5, 0.999),
            "batch_size": 32,
        },
        # main.lua: z ~ N(0, I) 100-d, width 64, mask L1 0.1, batch 64.
        "paper-unconditional": {
            "image_size": 64,
            "conditional": False,
            "clip_len": 32,
            "width": 64,
            "z_dim": 100,
            "first_frame_l1": 0.0,
            "mask_l1": 0.1,
            "recon_l1": 0.0,
            "n_past": 1,
            "n_future": 31,
            "lr": 2e-4,
            "betas": (0.5, 0.999),
            "batch_size": 64,
        },
    }

    lr: float = 2e-4
    betas: tuple[float, float] = (0.5, 0.999)
    batch_size: int = 32
    n_past: int = 1
    n_future: int = 31

    def __post_init__(self) -> None:
        super().__post_init__()
        s = self.image_size
        if s < 8 or s & (s - 1):
            raise ValueError(f"image_size must be a power of two >= 8 for VGAN, got {s}")
        self._check_positive("clip_len", "width", "z_dim", "n_past", "feature_pool")
        d = 2**self.levels
        if self.clip_len < 2 or self.clip_len % d:
            raise ValueError(
                f"clip_len must be a multiple of {d} (2**levels at {s} px) and >= 2, got {self.clip_len}"
            )
        if self.n_future < self.clip_len - 1:
            raise ValueError(f"n_future must be >= clip_len - 1 = {self.clip_len - 1}, got {self.n_future}")
        if self.feature_pool > 4:
            raise ValueError(f"feature_pool must be <= 4 (the code is 4×4), got {self.feature_pool}")

    @property
    def levels(self) -> int:
        """Resolution levels between 4 px and the frame size: ``log2(image_size) − 2`` (4 for 64 px)."""
        return int(math.log2(self.image_size)) - 2
