"""Glow layers (Kingma & Dhariwal, 2018) as used by VideoFlow (tensor2tensor ``glow_ops``).

Every invertible layer maps ``x -> (y, logdet)`` with ``logdet`` of shape ``(N,)`` (the log
|det| of the Jacobian per example) and has ``reverse(y) -> x``. Tensors are ``(N, C, H, W)``.

- ``squeeze`` / ``unsqueeze``: space-to-depth by 2, channel order ``(c, fh, fw)`` as the
  reference's transpose (identical to ``pixel_unshuffle``).
- ``ActNorm``: per-channel bias then scale, ``y = (x + b) * exp(3 * logs)`` (the log-scale is
  stored divided by ``logscale_factor = 3``, an effective learning-rate factor), initialised from
  the first training batch so that outputs have zero mean and unit variance per channel (data-
  dependent init). ``time_steps`` gives the per-time-step variant of the 3-D latent prior.
- ``InvConv1x1``: LU-parameterised invertible 1×1 convolution ``W = P L (U + diag(sign·exp(log_s)))``
  with ``P`` and ``sign`` fixed, initialised from a random rotation.
- ``Coupling``: affine coupling, ``y2 = (x2 + shift) * sigmoid(h + 2)`` with ``(shift, h)`` from a
  network of ``x1`` (interleaved output channels ``0::2`` / ``1::2`` as in the reference), or
  additive ``y2 = x2 + NN(x1)``. The network is the reference ``conv_stack``: 3×3 conv → actnorm
  → ReLU → 1×1 conv → actnorm → ReLU (or the gated ``gatu``: ``tanh(·) * sigmoid(·)``) →
  zero-initialised 3×3 conv, so every coupling starts as the identity.
- ``FlowStep``: actnorm → 1×1 conv → coupling (reversed for sampling).
- ``Split``: keeps the first half of the channels, emits the second half as a latent, and owns the
  level's learned prior ``N(mean, exp(log_scale))`` of that latent given the kept half (a
  zero-initialised 3×3 conv, so it starts as ``N(0, I)``).
- ``Glow``: the multi-scale architecture, per level ``squeeze → K flow steps → split`` (no split
  at the top level).

Convolutions use the reference's "edge bias" padding: the input is zero-padded and gets an extra
channel that is 1 in the padded border and 0 inside, so a filter can tell padding from dark
pixels; weights start ``N(0, 0.05)``. Convolutions followed by an actnorm have no bias; the
zero-initialised output convolutions have a bias and a per-channel log-scale (``exp(3 * logs)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

LOGSCALE_FACTOR = 3.0
_INIT_STD = 0.05
_HALF_LOG_2PI = 0.5 * math.log(2 * math.pi)


def squeeze(x: Tensor) -> Tensor:
    """``(N, C, H, W) -> (N, 4C, H/2, W/2)``, channel ``c*4 + fh*2 + fw`` (space-to-depth)."""
    return F.pixel_unshuffle(x, 2)


def unsqueeze(x: Tensor) -> Tensor:
    """Inverse of ``squeeze``."""
    return F.pixel_shuffle(x, 2)


def gaussian_log_prob(x: Tensor, mean: Tensor, log_scale: Tensor) -> Tensor:
    """``log N(x; mean, exp(log_scale)^2)`` summed over all but the first axis: ``(N,)``."""
    lp = -_HALF_LOG_2PI - log_scale - 0.5 * ((x - mean) * torch.exp(-log_scale)).pow(2)
    return lp.flatten(1).sum(1)


def _edge_pad(x: Tensor, pad: int) -> Tensor:
    """Zero-pad the last two axes by ``pad`` and append an indicator channel (1 in the border)."""
    if pad == 0:
        return x
    ind = x.new_zeros(*x.shape[:1], 1, *x.shape[2:])
    return torch.cat([F.pad(x, (pad,) * 4), F.pad(ind, (pad,) * 4, value=1.0)], dim=1)


def _init_edge_conv(conv: nn.Module, out_ch: int, zero_init: bool) -> nn.Parameter | None:
    """Glow's init of an edge convolution: zeros and a per-channel log-scale (the last layer of a
    coupling net, so each coupling starts as the identity), else N(0, 0.05) weights."""
    if zero_init:
        nn.init.zeros_(conv.weight)
        nn.init.zeros_(conv.bias)
        return nn.Parameter(torch.zeros(out_ch))
    nn.init.normal_(conv.weight, std=_INIT_STD)
    return None


def hidden_activation(h: Tensor, convs: nn.ModuleList, norms: nn.ModuleList, activation: str) -> Tensor:
    """The middle layer of a coupling net or prior block: ``relu(norm(conv(h)))``, or for ``gatu``
    the gated ``tanh(norm(conv_a(h))) * sigmoid(norm(conv_b(h)))``."""
    if activation == "relu":
        return F.relu(norms[0].norm(convs[0](h)))
    return torch.tanh(norms[0].norm(convs[0](h))) * torch.sigmoid(norms[1].norm(convs[1](h)))


class EdgeConv2d(nn.Conv2d):
    """2-D convolution with edge-bias padding ("SAME" output size). ``zero_init`` makes it the
    reference's output conv: zero weights, a bias and a learned per-channel ``exp(3 * logs)``."""

    def __init__(
        self, in_ch: int, out_ch: int, kernel: int = 3, dilation: int = 1, zero_init: bool = False
    ) -> None:
        self.pad = dilation * (kernel - 1) // 2
        extra = 1 if self.pad else 0
        super().__init__(in_ch + extra, out_ch, kernel, dilation=dilation, bias=zero_init)
        self.logs = _init_edge_conv(self, out_ch, zero_init)

    def forward(self, x: Tensor) -> Tensor:
        y = super().forward(_edge_pad(x, self.pad))
        if self.logs is not None:
            y = y * torch.exp(LOGSCALE_FACTOR * self.logs).view(1, -1, 1, 1)
        return y


class EdgeConv3d(nn.Conv3d):
    """Causal 3-D convolution over ``(N, C, T, H, W)``: left-padded in time (output step ``t``
    sees inputs ``<= t``), edge-bias padded in space. ``zero_init`` as in ``EdgeConv2d``."""

    def __init__(
        self,
        in_ch: int,
        out_ch: int,
        kernel: tuple[int, int, int] = (2, 3, 3),
        dilation: int = 1,
        zero_init: bool = False,
    ) -> None:
        self.time_pad = kernel[0] - 1
        self.pad = dilation * (kernel[1] - 1) // 2
        extra = 1 if self.pad else 0
        super().__init__(in_ch + extra, out_ch, kernel, dilation=(1, dilation, dilation), bias=zero_init)
        self.logs = _init_edge_conv(self, out_ch, zero_init)

    def forward(self, x: Tensor) -> Tensor:
        # Causal in time (left zero pad). The indicator channel marks the spatial border only;
        # the reference also marks the time pad. Deliberate: with the time pad marked, the tiny
        # preset on textured moving squares reached 7.43 instead of 5.50 bits per dimension after
        # 400 steps (tests/test_videoflow.py::test_learning_after_400_steps, one CPU thread).
        x = F.pad(x, (0, 0, 0, 0, self.time_pad, 0))
        y = super().forward(_edge_pad(x, self.pad))
        if self.logs is not None:
            y = y * torch.exp(LOGSCALE_FACTOR * self.logs).view(1, -1, 1, 1, 1)
        return y


class ActNorm(nn.Module):
    """Per-channel affine normalisation with data-dependent initialisation.

    ``y = (x + bias) * exp(3 * logs)`` on ``(N, C, *spatial)``; with ``time_steps=T`` the input is
    ``(N, C, T, H, W)`` and every time step has its own parameters (the reference ``actnorm_3d``).
    The first call in training mode sets ``bias = -mean`` and ``logs = log(1 / (std + 1e-6)) / 3``
    over the batch (and space), then marks the layer initialised (a buffer, so checkpoints carry it).
    """

    def __init__(self, channels: int, time_steps: int | None = None) -> None:
        super().__init__()
        shape = (channels,) if time_steps is None else (channels, time_steps)
        self.bias = nn.Parameter(torch.zeros(shape))
        self.logs = nn.Parameter(torch.zeros(shape))
        self.register_buffer("initialized", torch.tensor(False))
        self._ready = False  # Python copy of ``initialized`` once checked (reset by loading)

    def _view(self, p: Tensor, x: Tensor) -> Tensor:
        return p.view(1, *p.shape, *([1] * (x.dim() - 1 - p.dim())))

    @torch.no_grad()
    def _initialize(self, x: Tensor) -> None:
        dims = [0, *range(1 + self.bias.dim(), x.dim())]  # batch and the shared spatial axes
        mean = x.mean(dim=dims)
        std = (x - self._view(mean, x)).pow(2).mean(dim=dims).sqrt()
        self.bias.copy_(-mean)
        self.logs.copy_(torch.log(1.0 / (std + 1e-6)) / LOGSCALE_FACTOR)
        self.initialized.fill_(True)

    def _load_from_state_dict(self, *args, **kwargs) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self._ready = False

    def _logdet(self, x: Tensor) -> Tensor:
        per_position = math.prod(x.shape[1 + self.bias.dim() :])
        return (LOGSCALE_FACTOR * self.logs).sum() * per_position

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x -> (y, logdet (N,))``."""
        if self.training and not self._ready:  # one host sync per module, not one per call
            if not bool(self.initialized):
                self._initialize(x)
            self._ready = True
        y = (x + self._view(self.bias, x)) * torch.exp(LOGSCALE_FACTOR * self._view(self.logs, x))
        return y, self._logdet(x).expand(x.shape[0])

    def reverse(self, y: Tensor) -> Tensor:
        return y * torch.exp(-LOGSCALE_FACTOR * self._view(self.logs, y)) - self._view(self.bias, y)

    def norm(self, x: Tensor) -> Tensor:
        """The forward map without the log-determinant (inside networks)."""
        return self(x)[0]


class InvConv1x1(nn.Module):
    """LU-parameterised invertible 1×1 convolution; ``logdet = H * W * sum(log_s)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        w = torch.linalg.qr(torch.randn(channels, channels))[0]  # a random rotation
        p, lower, upper = torch.linalg.lu(w)
        s = torch.diagonal(upper)
        self.register_buffer("p", p)
        self.register_buffer("sign_s", torch.sign(s))
        self.register_buffer("l_mask", torch.tril(torch.ones(channels, channels), -1))
        self.register_buffer("eye", torch.eye(channels))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_s = nn.Parameter(torch.log(s.abs()))

    def weight(self) -> Tensor:
        """``W = P L (U + diag(sign_s * exp(log_s)))``, ``(C, C)``."""
        lower = self.lower * self.l_mask + self.eye
        upper = self.upper * self.l_mask.T + torch.diag(self.sign_s * torch.exp(self.log_s))
        return self.p @ lower @ upper

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        c = x.shape[1]
        y = F.conv2d(x, self.weight().view(c, c, 1, 1))
        logdet = self.log_s.sum() * (x.shape[2] * x.shape[3])
        return y, logdet.expand(x.shape[0])

    def reverse(self, y: Tensor) -> Tensor:
        c = y.shape[1]
        w_inv = torch.linalg.inv(self.weight().double()).to(y.dtype)  # inverse in float64: exact round trips
        return F.conv2d(y, w_inv.view(c, c, 1, 1))


class ConvStack(nn.Module):
    """The reference ``conv_stack`` in 2-D: 3×3 conv → actnorm → ReLU → 1×1 conv(s) → actnorm →
    ReLU or gated ``tanh * sigmoid`` (``gatu``) → zero-initialised 3×3 conv to ``out_ch``."""

    def __init__(self, in_ch: int, out_ch: int, width: int, activation: str = "relu") -> None:
        super().__init__()
        if activation not in ("relu", "gatu"):
            raise ValueError(f"activation must be 'relu' or 'gatu', got {activation!r}")
        self.activation = activation
        self.conv1 = EdgeConv2d(in_ch, width, 3)
        self.norm1 = ActNorm(width)
        n2 = 2 if activation == "gatu" else 1
        self.conv2 = nn.ModuleList(EdgeConv2d(width, width, 1) for _ in range(n2))
        self.norm2 = nn.ModuleList(ActNorm(width) for _ in range(n2))
        self.out = EdgeConv2d(width, out_ch, 3, zero_init=True)

    def forward(self, x: Tensor) -> Tensor:
        h = F.relu(self.norm1.norm(self.conv1(x)))
        return self.out(hidden_activation(h, self.conv2, self.norm2, self.activation))


class Coupling(nn.Module):
    """Affine (``sigmoid(h + 2)`` scale) or additive coupling on ``x = [x1, x2]`` (channel halves)."""

    def __init__(self, channels: int, width: int, additive: bool = False, activation: str = "relu") -> None:
        super().__init__()
        self.c1 = channels // 2
        c2 = channels - self.c1
        self.additive = additive
        self.nn = ConvStack(self.c1, c2 if additive else 2 * c2, width, activation)

    def _shift_scale(self, x1: Tensor) -> tuple[Tensor, Tensor | None]:
        h = self.nn(x1)
        if self.additive:
            return h, None
        return h[:, 0::2], torch.sigmoid(h[:, 1::2] + 2.0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x1, x2 = x[:, : self.c1], x[:, self.c1 :]
        shift, scale = self._shift_scale(x1)
        if scale is None:
            return torch.cat([x1, x2 + shift], 1), x.new_zeros(x.shape[0])
        y2 = (x2 + shift) * scale
        return torch.cat([x1, y2], 1), torch.log(scale).flatten(1).sum(1)

    def reverse(self, y: Tensor) -> Tensor:
        y1, y2 = y[:, : self.c1], y[:, self.c1 :]
        shift, scale = self._shift_scale(y1)
        x2 = y2 - shift if scale is None else y2 / scale - shift
        return torch.cat([y1, x2], 1)


class FlowStep(nn.Module):
    """One Glow step (the reference ``revnet_step``): actnorm → invertible 1×1 conv → coupling."""

    def __init__(self, channels: int, width: int, additive: bool = False, activation: str = "relu") -> None:
        super().__init__()
        self.actnorm = ActNorm(channels)
        self.invconv = InvConv1x1(channels)
        self.coupling = Coupling(channels, width, additive, activation)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        x, ld1 = self.actnorm(x)
        x, ld2 = self.invconv(x)
        x, ld3 = self.coupling(x)
        return x, ld1 + ld2 + ld3

    def reverse(self, y: Tensor) -> Tensor:
        return self.actnorm.reverse(self.invconv.reverse(self.coupling.reverse(y)))


class Split(nn.Module):
    """Split ``x`` into the kept half ``x1`` and the latent ``z``; owns the level prior ``p(z | x1)``."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.c1 = channels // 2
        self.conv = EdgeConv2d(self.c1, 2 * (channels - self.c1), 3, zero_init=True)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """``x -> (x1, z)``."""
        return x[:, : self.c1], x[:, self.c1 :]

    def reverse(self, x1: Tensor, z: Tensor) -> Tensor:
        return torch.cat([x1, z], 1)

    def prior(self, x1: Tensor) -> tuple[Tensor, Tensor]:
        """``(mean, log_scale)`` of ``z``, each shaped like ``z`` (interleaved conv outputs)."""
        h = self.conv(x1)
        return h[:, 0::2], h[:, 1::2]


class Glow(nn.Module):
    """Multi-scale Glow: per level ``squeeze → depth × FlowStep → Split`` (no split at the top).

    ``encode(x)`` returns the latents ``[z_0, ..., z_{L-2}, z_top]`` (finest first), the kept halves
    ``[x1_0, ..., x1_{L-2}]`` that condition each split's prior, and ``logdet (N,)``. The latents
    hold exactly ``C·H·W`` numbers: for ``C×H×W`` input, ``z_l`` is ``(2^l·C, H/2^(l+1), W/2^(l+1))``
    and ``z_top`` is ``(2^(L+1)·C, H/2^L, W/2^L)``.
    """

    def __init__(
        self,
        channels: int,
        levels: int,
        depth: int,
        width: int,
        additive: bool = False,
        activation: str = "relu",
        checkpointing: bool = False,
    ) -> None:
        super().__init__()
        if levels < 1 or depth < 1:
            raise ValueError(f"levels and depth must be >= 1, got {levels}, {depth}")
        self.checkpointing = checkpointing
        self.levels = nn.ModuleList()
        self.splits = nn.ModuleList()
        c = channels
        for level in range(levels):
            c *= 4
            self.levels.append(nn.ModuleList(FlowStep(c, width, additive, activation) for _ in range(depth)))
            if level < levels - 1:
                self.splits.append(Split(c))
                c = c // 2

    def latent_shapes(self, channels: int, size: int) -> list[tuple[int, int, int]]:
        """``(C, H, W)`` of each latent for a ``channels × size × size`` input, finest first."""
        shapes, c, s = [], channels, size
        for level in range(len(self.levels)):
            c, s = c * 4, s // 2
            if level < len(self.levels) - 1:
                shapes.append((c - c // 2, s, s))
                c = c // 2
        return [*shapes, (c, s, s)]

    def _step(self, step: FlowStep, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(step, x, use_reentrant=False)
        return step(x)

    def encode(self, x: Tensor) -> tuple[list[Tensor], list[Tensor], Tensor]:
        """``x (N, C, H, W) -> (latents, kept halves, logdet (N,))`` (see the class docstring)."""
        latents, kept = [], []
        logdet = x.new_zeros(x.shape[0])
        for level, steps in enumerate(self.levels):
            x = squeeze(x)
            for step in steps:
                x, ld = self._step(step, x)
                logdet = logdet + ld
            if level < len(self.splits):
                x, z = self.splits[level](x)
                kept.append(x)
                latents.append(z)
        return [*latents, x], kept, logdet

    def decode(self, z_top: Tensor, split_latent: Callable[[int, Tensor], Tensor]) -> Tensor:
        """Invert the flow from the top latent down.

        ``split_latent(level, x1)`` supplies ``z_level`` given the kept half ``x1`` (the stored
        latent for an exact inverse, or a sample from that level's prior); it is called for the
        levels ``L-2, ..., 0``, coarsest first.
        """
        x = z_top
        for level in reversed(range(len(self.levels))):
            if level < len(self.splits):
                x = self.splits[level].reverse(x, split_latent(level, x))
            for step in reversed(self.levels[level]):
                x = step.reverse(x)
            x = unsqueeze(x)
        return x
