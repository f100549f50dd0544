"""VideoFlow's hyper-parameters: ``VideoFlowConfig`` and its presets (``tiny``, ``paper``).

``paper`` is tensor2tensor's ``next_frame_glow_bair_quant`` (the BAIR bits-per-pixel settings);
``tiny`` is a fast CPU model. The model and its maths: ``videoflow.py``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from worldmodel.dynamics.base import DynamicsConfig


@dataclasses.dataclass
class VideoFlowConfig(DynamicsConfig):
    """VideoFlow hyper-parameters. Defaults are the BAIR bits-per-pixel settings (``paper``)."""

    # The shared fields, at the paper's values (3 context frames, one scored frame per window).
    n_past: int = 3
    n_future: int = 1
    lr: float = 3e-4
    betas: tuple[float, float] = (0.85, 0.997)
    batch_size: int = 5

    levels: int = 3
    """Glow levels ``L`` (squeeze → flow steps → split)."""
    depth: int = 24
    """Flow steps ``K`` per level."""
    coupling: str = "affine"
    """``"affine"`` (sigmoid(h + 2) scale; the paper's likelihood runs) or ``"additive"``."""
    coupling_width: int = 512
    """Hidden channels of the coupling networks."""
    activation: str = "gatu"
    """Second layer of the coupling networks: ``"relu"`` or gated ``"gatu"`` (tanh · sigmoid)."""
    n_bits: int = 8
    """Bits per colour channel the likelihood models (frames are quantised to them)."""
    num_cond_latents: int = 3
    """Past latents ``n`` the temporal prior reads."""
    latent_width: int = 256
    """Hidden channels of the 3-D latent prior."""
    latent_depth: int = 5
    """Residual blocks of the 3-D latent prior."""
    latent_dilation_rates: tuple[int, ...] = (1, 3)
    """Extra spatial dilations ``r + 1`` of the latent prior, used where ``3 + 2r`` fits."""
    latent_activation: str = "gatu"
    """``"relu"`` or ``"gatu"`` in the latent prior's conv stacks."""
    latent_skip: bool = True
    """Prior mean ``= z_{t-1} + net(...)`` (residual in latent space)."""
    temporal_prior: bool = True
    """``False``: per-frame Glow (no latent dynamics; the baseline)."""
    action_conditioned: bool = True
    """Feed the actions to the temporal prior at every level (our extension)."""
    reencode: bool = True
    """Rollouts feed back the code of the (clipped) frame they show, not the raw samples (our fix;
    ``False``: the reference's feedback, whose open-loop latents can blow up)."""
    warmup_steps: int = 10_000
    """Linear learning-rate warm-up (optimiser steps)."""
    eps: float = 1e-6
    """Adam epsilon."""
    checkpointing: bool = False
    """Recompute flow steps and prior blocks in the backward pass (saves memory, costs ~1 forward)."""

    PRESETS: ClassVar[dict[str, dict[str, Any]]] = {
        # Fast CPU model for tests and the quick demo (16×16 frames, 2 levels of 4 steps).
        "tiny": {
            "image_size": 16,
            "levels": 2,
            "depth": 4,
            "coupling_width": 32,
            "activation": "relu",
            "num_cond_latents": 2,
            "latent_width": 16,
            "latent_depth": 2,
            "latent_activation": "gatu",
            "n_past": 2,
            "n_future": 2,
            "lr": 2e-3,
            "betas": (0.9, 0.999),
            "warmup_steps": 20,
            "batch_size": 16,
        },
        # next_frame_glow_bair_quant: 3 input frames, 4-frame training windows scored on the last
        # frame (evaluate with 3 context → 10 target frames), Adam(0.85, 0.997, 1e-6) 3e-4.
        "paper": {
            "image_size": 64,
            "levels": 3,
            "depth": 24,
            "coupling": "affine",
            "coupling_width": 512,
            "activation": "gatu",
            "n_bits": 8,
            "num_cond_latents": 3,
            "latent_width": 256,
            "latent_depth": 5,
            "latent_dilation_rates": (1, 3),
            "latent_activation": "gatu",
            "latent_skip": True,
            "n_past": 3,
            "n_future": 1,
            "lr": 3e-4,
            "betas": (0.85, 0.997),
            "eps": 1e-6,
            "warmup_steps": 10_000,
            "batch_size": 5,
        },
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.coupling not in ("affine", "additive"):
            raise ValueError(f"coupling must be 'affine' or 'additive', got {self.coupling!r}")
        for name in ("activation", "latent_activation"):
            if getattr(self, name) not in ("relu", "gatu"):
                raise ValueError(f"{name} must be 'relu' or 'gatu', got {getattr(self, name)!r}")
        self._check_positive(
            "levels", "depth", "coupling_width", "num_cond_latents", "latent_width", "n_past"
        )
        if not 1 <= self.n_bits <= 8:
            raise ValueError(f"n_bits must be in 1..8, got {self.n_bits}")
        if self.image_size % (2**self.levels):
            raise ValueError(f"image_size {self.image_size} must be divisible by 2**levels={2**self.levels}")
        if self.latent_depth < 0 or self.warmup_steps < 0:
            raise ValueError("latent_depth and warmup_steps must be >= 0")
