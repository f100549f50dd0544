"""VideoFlow's latent dynamics prior (Kumar et al., ICLR 2020; tensor2tensor
``temporal_latent_to_dist``): a causal 3-D residual network per Glow level.

``TemporalPrior`` maps the stack of a level's previous ``n = num_cond_latents`` latents (with
what ``videoflow.py`` concatenates to them along channels) to the ``(mean, log_scale)`` of the
level's next latent. Depth ``latent_depth`` residual blocks, each the sum of ``conv_stack``s at
the allowed spatial dilations (1 always; ``r + 1`` for each ``r`` in ``latent_dilation_rates``
whose dilated 3×3 filter ``3 + 2r`` fits in the latent's width; ``allowed_dilations``), with
per-time-step actnorm, then the last time step → zero-initialised 1×1 conv. The layers are
Glow's (``glow.py``).

Deviation from the reference, deliberate:

- The latent prior's 3-D convolutions mark only the spatial border in their edge-indicator
  channel, not the causal time pad as the reference does: with the time pad marked, the ``tiny``
  preset learned textured moving squares much more slowly (7.43 instead of 5.50 bits per dimension
  after 400 steps; see ``glow.EdgeConv3d``).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from worldmodel.dynamics.glow import ActNorm, EdgeConv2d, EdgeConv3d, hidden_activation


def allowed_dilations(rates: tuple[int, ...], width: int) -> list[int]:
    """Spatial dilations of the latent prior at a latent of this width (reference rule)."""
    return [1] + [r + 1 for r in rates if 3 + 2 * r <= width]


class ConvStack3d(nn.Module):
    """The reference ``conv_stack`` in 3-D: causal (2, 3, 3) conv → per-step actnorm → ReLU → 1×1×1
    conv(s) → per-step actnorm → ReLU or ``gatu`` → zero-initialised causal (2, 3, 3) conv."""

    def __init__(self, channels: int, width: int, steps: int, dilation: int, activation: str) -> None:
        super().__init__()
        self.activation = activation
        self.conv1 = EdgeConv3d(channels, width, (2, 3, 3), dilation)
        self.norm1 = ActNorm(width, time_steps=steps)
        n2 = 2 if activation == "gatu" else 1
        self.conv2 = nn.ModuleList(EdgeConv3d(width, width, (1, 1, 1)) for _ in range(n2))
        self.norm2 = nn.ModuleList(ActNorm(width, time_steps=steps) for _ in range(n2))
        self.out = EdgeConv3d(width, channels, (2, 3, 3), dilation, zero_init=True)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.norm1.norm(self.conv1(x)))
        return self.out(hidden_activation(h, self.conv2, self.norm2, self.activation))


class TemporalPrior(nn.Module):
    """Causal 3-D residual network: ``(N, C_in, n, H, W) -> (mean, log_scale)`` each ``(N, C_out, H, W)``.

    ``h += Σ_dilations conv_stack_d(h)`` ``depth`` times, then the last time step (causal, so it has
    seen the whole history) → zero-initialised 1×1 conv → interleaved ``(mean, log_scale)``.
    """

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        width: int,
        depth: int,
        steps: int,
        dilations: list[int],
        activation: str,
        checkpointing: bool = False,
    ) -> None:
        super().__init__()
        self.checkpointing = checkpointing
        self.blocks = nn.ModuleList(
            nn.ModuleList(ConvStack3d(in_ch, width, steps, d, activation) for d in dilations)
            for _ in range(depth)
        )
        self.out = EdgeConv2d(in_ch, 2 * out_ch, 1, zero_init=True)

    @staticmethod
    def _block(stacks: nn.ModuleList, h: Tensor) -> Tensor:
        return h + sum(stack(h) for stack in stacks)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        h = x
        for stacks in self.blocks:
            if self.checkpointing and self.training and torch.is_grad_enabled():
                h = checkpoint(self._block, stacks, h, use_reentrant=False)
            else:
                h = self._block(stacks, h)
        out = self.out(h[:, :, -1])
        return out[:, 0::2], out[:, 1::2]
