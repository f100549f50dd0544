"""VGAN's networks (Vondrick, Pirsiavash & Torralba, NIPS 2016, "Generating Videos with Scene
Dynamics"): the two-stream generator with its context-frame encoder, and the discriminator.

Networks follow the reference Torch7 code (``cvondrick/videogan``: ``main.lua`` unconditional,
``main_conditional.lua`` future from a static image). Pixels inside the networks are in [-1, 1],
videos are ``(B, C, L, S, S)`` with ``L = clip_len`` frames (32 in the paper)::

    two-stream generator          video = m ⊙ f + (1 − m) ⊙ b
      foreground stream (3-D)     3-D transposed convolutions → f (Tanh, C×L×S×S), m (Sigmoid, 1×L×S×S)
      background stream (2-D)     2-D transposed convolutions → b (Tanh, C×S×S), repeated over the L frames
    discriminator                 3-D convolutions, LeakyReLU(0.2), a 2-way softmax (real / fake)

Unconditional (``main.lua``), both streams start from ``z ~ N(0, I)`` (100-d); conditional
(``main_conditional.lua``), an image encoder (2-D convolutions, no BatchNorm on the first) maps
the context frame ``x_0`` to a ``8·width × 4 × 4`` code that starts both streams (the modes and
their losses: ``vgan.py``).

Widths scale with ``width`` as in the reference (encoder ``width·[1, 2, 4, 8]``, foreground stream
``width·[8, 8, 4, 2, 1]``, background ``width·[4, 2, 1]``, discriminator ``width·[1, 2, 4, 8]`` for
64 px; smaller frames drop the highest-resolution layers, ``log2(S) − 2`` levels). Initialisation:
(transposed) convolution weights N(0, 0.01), biases 0; BatchNorm weights N(1, 0.02), biases 0.

Our extensions to the networks (the reference is action-free and, conditionally, deterministic):

- **Actions.** Clip frame ``j`` should follow the actions ``a_0..a_{j-1}`` (``a_j`` moves frame
  ``j`` to ``j+1``). The per-frame action signal ``s_j = [a_{j-1}, Σ_{i<j} a_i]`` (zero for
  ``j = 0``; the last action and the displacement so far) is concatenated as ``2A`` constant
  channels to the input of every foreground layer, at that layer's temporal scale: a cell that
  covers frames ``[τb, (τ+1)b)`` gets ``s_{τb}``, the signal at its first frame. The heads read it
  per frame. The discriminator gets the same signal at each of its scales, so it can tell motion
  that disagrees with the actions from motion that agrees.
- **Causality.** The reference's temporal kernels (4, stride 2, padding 1) let frame ``t`` see
  features of later frames, and so later actions. Each temporal up-sampling here drops the
  look-ahead tap (kernel 3, output cropped to ``2T``: output ``t`` reads inputs ``≤ ⌊t/2⌋``), and
  the temporal doublings move from the heads into the stream (first layer ``L/2^(levels-1)``
  frames instead of ``L/2^levels``, heads with temporal kernel 1), so the heads see one frame
  each. In eval mode, frame ``j`` of a clip therefore depends on ``a_0..a_{j-1}`` only: a clip
  generated for the first ``k`` actions agrees exactly with one generated for all of them on its
  first ``k + 1`` frames. (Training-mode BatchNorm statistics are over the whole clip, as in the
  reference.)
- **Noise in the conditional model.** A ``z_dim``-d ``z ~ N(0, I)`` is concatenated to the code at
  the first foreground layer (the reference conditional model has none).
"""

from __future__ import annotations

import itertools

import torch
from torch import Tensor, nn

from worldmodel.dynamics.vgan_config import VGANConfig


def init_weights(module: nn.Module) -> None:
    """Reference init: (transposed) conv weights N(0, 0.01), bias 0; BatchNorm N(1, 0.02), bias 0."""
    if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        nn.init.normal_(module.weight, 0.0, 0.01)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm2d, nn.BatchNorm3d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def action_signal(actions: Tensor, length: int) -> Tensor:
    """Per-frame action signal ``s_j = [a_{j-1}, Σ_{i<j} a_i]``, ``s_0 = 0``.

    Args:
        actions: ``(B, n, A)`` the actions of a clip, ``n <= length - 1`` (missing ones are zero).
        length: ``L``, frames in the clip.

    Returns:
        ``(B, 2A, L)``: frame ``j`` depends on ``a_0..a_{j-1}`` only.
    """
    b, n, a = actions.shape
    padded = actions.new_zeros(b, length, a)
    padded[:, 1 : n + 1] = actions[:, : length - 1]
    return torch.cat([padded, padded.cumsum(1)], dim=2).transpose(1, 2)


def _with_signal(h: Tensor, signal: Tensor | None) -> Tensor:
    """Concatenate the action signal ``(B, 2A, L)`` to ``h (B, C, T, S, S)`` at ``h``'s time scale:
    cell ``τ`` (frames ``[τL/T, (τ+1)L/T)``) gets the signal of its first frame."""
    if signal is None:
        return h
    t, s = h.shape[2], h.shape[-1]
    sub = signal[:, :, :: signal.shape[2] // t]
    return torch.cat([h, sub[..., None, None].expand(-1, -1, -1, s, s).to(h.dtype)], dim=1)


class CausalUp3d(nn.Module):
    """Doubles time and space: the reference's ``VolumetricFullConvolution(4,4,4, s2, p1)`` without
    its temporal look-ahead tap (kernel 3 in time, output cropped to ``2T``): output frame ``t``
    reads input frames ``≤ ⌊t/2⌋`` only."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.ConvTranspose3d(cin, cout, (3, 4, 4), stride=2, padding=(0, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x)[:, :, : 2 * x.shape[2]]


class Encoder(nn.Module):
    """Context frame ``(B, C, S, S)`` in [-1, 1] → code ``(B, 8·width, 4, 4)`` (64 px; reference
    ``main_conditional.lua``: Conv 4×4 s2 p1, ReLU, BatchNorm(eps 1e-3) from the second layer)."""

    def __init__(self, c: VGANConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        cin = c.channels
        for k in range(c.levels):
            cout = c.width * 2**k
            layers.append(nn.Conv2d(cin, cout, 4, 2, 1))
            if k > 0:
                layers.append(nn.BatchNorm2d(cout, eps=1e-3))
            layers.append(nn.ReLU(inplace=True))
            cin = cout
        self.net = nn.Sequential(*layers)
        self.out_channels = cin

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class Generator(nn.Module):
    """The two-stream generator: ``forward(code_or_z, z, actions)`` → ``video, fg, mask, bg``."""

    def __init__(self, c: VGANConfig) -> None:
        super().__init__()
        self.config = c
        lv, w, sig = c.levels, c.width, (2 * c.action_dim if c.action_conditioned else 0)
        self.first_frames = c.clip_len // 2 ** (lv - 1)
        self.encoder = Encoder(c) if c.conditional else None
        # Widths from the 4×4 level up: 8·width at 64 px (= the code's width), then halving.
        widths = [w * 2**k for k in reversed(range(lv))]
        top = widths[0]
        # Foreground stream: [code, z] (cond., 1×1 spatial kernel) or z (uncond., 4×4) → T0×4×4.
        if c.conditional:
            first = nn.ConvTranspose3d(top + c.z_dim, top, (self.first_frames, 1, 1))
        else:
            first = nn.ConvTranspose3d(c.z_dim, top, (self.first_frames, 4, 4))
        self.fg_first = nn.Sequential(first, nn.BatchNorm3d(top), nn.ReLU(inplace=True))
        self.fg_up = nn.ModuleList(
            nn.Sequential(CausalUp3d(cin + sig, cout), nn.BatchNorm3d(cout), nn.ReLU(inplace=True))
            for cin, cout in itertools.pairwise(widths)
        )
        head = {"kernel_size": (1, 4, 4), "stride": (1, 2, 2), "padding": (0, 1, 1)}
        self.fg_head = nn.ConvTranspose3d(widths[-1] + sig, c.channels, **head)
        self.mask_head = nn.ConvTranspose3d(widths[-1] + sig, 1, **head)
        # Background stream: code (cond.) or z (uncond., first a 1×1 → 4×4 layer) → one image.
        bg: list[nn.Module] = []
        if not c.conditional:
            bg += [nn.ConvTranspose2d(c.z_dim, top, 4), nn.BatchNorm2d(top), nn.ReLU(inplace=True)]
        for cin, cout in itertools.pairwise(widths):
            bg += [nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]
        bg += [nn.ConvTranspose2d(widths[-1], c.channels, 4, 2, 1), nn.Tanh()]
        self.background = nn.Sequential(*bg)

    def forward(self, context: Tensor | None, z: Tensor, actions: Tensor) -> dict[str, Tensor]:
        """Generate one clip.

        Args:
            context: ``(B, C, S, S)`` in [-1, 1] (conditional) or None (unconditional).
            z: ``(B, z_dim)`` noise.
            actions: ``(B, n, A)``, ``n <= L − 1``, the clip's actions (zeros where not yet taken).

        Returns:
            ``video (B, C, L, S, S)`` = ``mask·fg + (1 − mask)·bg`` in [-1, 1], ``fg`` (same shape,
            Tanh), ``mask (B, 1, L, S, S)`` in [0, 1], ``bg (B, C, S, S)`` (Tanh), ``code`` (the
            encoder's output, conditional only).
        """
        c = self.config
        signal = action_signal(actions, c.clip_len) if c.action_conditioned else None
        out: dict[str, Tensor] = {}
        if self.encoder is not None:
            code = self.encoder(context)
            out["code"] = code
            zmap = z[:, :, None, None].expand(-1, -1, *code.shape[-2:]).to(code.dtype)
            h = self.fg_first(torch.cat([code, zmap], 1)[:, :, None])
            bg = self.background(code)
        else:
            h = self.fg_first(z[:, :, None, None, None])
            bg = self.background(z[:, :, None, None])
        for layer in self.fg_up:
            h = layer(_with_signal(h, signal))
        h = _with_signal(h, signal)
        fg = torch.tanh(self.fg_head(h))
        mask = torch.sigmoid(self.mask_head(h))
        video = mask * fg + (1 - mask) * bg[:, :, None]
        return {"video": video, "fg": fg, "mask": mask, "bg": bg, **out}


class Discriminator(nn.Module):
    """Video ``(B, C, L, S, S)`` in [-1, 1] → 2 logits (real, fake): VConv 4×4×4 s2 p1 + LeakyReLU
    (0.2), BatchNorm(eps 1e-3) from the second layer, then a VConv over the remaining
    ``(L/2^levels, 4, 4)`` volume (reference: ``(2, 4, 4)``)."""

    def __init__(self, c: VGANConfig) -> None:
        super().__init__()
        self.action_conditioned = c.action_conditioned
        sig = 2 * c.action_dim if c.action_conditioned else 0
        self.layers = nn.ModuleList()
        cin = c.channels
        for k in range(c.levels):
            cout = c.width * 2**k
            mods: list[nn.Module] = [nn.Conv3d(cin + sig, cout, 4, 2, 1)]
            if k > 0:
                mods.append(nn.BatchNorm3d(cout, eps=1e-3))
            mods.append(nn.LeakyReLU(0.2, inplace=True))
            self.layers.append(nn.Sequential(*mods))
            cin = cout
        self.out = nn.Conv3d(cin + sig, 2, (c.clip_len // 2**c.levels, 4, 4))

    def forward(self, video: Tensor, signal: Tensor | None) -> Tensor:
        """``signal``: ``action_signal`` ``(B, 2A, L)`` or None → logits ``(B, 2)``."""
        h = video
        for layer in self.layers:
            h = layer(_with_signal(h, signal))
        return self.out(_with_signal(h, signal)).flatten(1)
