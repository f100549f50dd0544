"""SVG building blocks (Denton & Fergus 2018, ``edenton/svg``): encoders, decoders and LSTMs.

Encoders map a frame ``(N, nc, S, S)`` to ``(h, skips)``: ``h`` is ``(N, g_dim)`` (Tanh) and
``skips`` the multi-scale stage outputs, highest resolution first. Decoders take ``(g, skips)``
and return ``(N, nc, S, S)`` in [0, 1] (Sigmoid), concatenating each skip with the upsampled map.

Image sizes. The reference nets are for 64×64: four stages at 64, 32, 16 and 8 px (vgg64) or 32,
16, 8 and 4 px (dcgan64), then a 4×4 valid conv to 1×1. For ``image_size`` 32 or 16 we drop the
highest-resolution stage(s) and keep the rest unchanged (``log2(S) - 2`` stages), so the low-
resolution bottleneck and the 4×4 → 1×1 head are those of the reference. ``nf`` is the width of
the first reference stage (64 in the paper); stage ``k`` has ``nf * 2**k`` channels.

The recurrent parts keep no state: ``LSTM.forward(x, h, c)`` takes and returns the hidden state
``(N, layers, rnn_size)``, so batch size is never baked in and rollout state lives in a ``State``.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

# Reference layer counts per stage (64-px nets, highest resolution first).
_VGG_LAYERS = (2, 2, 3, 3)
SUPPORTED_SIZES = (16, 32, 64)


def num_stages(image_size: int) -> int:
    """Encoder stages for ``image_size`` (4 for 64 px, 3 for 32, 2 for 16)."""
    if image_size not in SUPPORTED_SIZES:
        raise ValueError(f"image_size must be one of {SUPPORTED_SIZES}, got {image_size}")
    return int(math.log2(image_size)) - 2


def _stage_channels(image_size: int, nf: int) -> list[int]:
    """Channels of the kept stages: the last ``num_stages`` of ``nf * [1, 2, 4, 8]``."""
    return [nf * 2**k for k in range(4)][4 - num_stages(image_size) :]


def init_weights(module: nn.Module) -> None:
    """Reference init: Conv/Linear weight N(0, 0.02), bias 0; BatchNorm weight N(1, 0.02), bias 0.

    ``LSTMCell`` keeps PyTorch's default init, as in the reference (its class-name match skips it).
    """
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.BatchNorm2d):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def _vgg_layer(cin: int, cout: int) -> nn.Sequential:
    """Conv 3×3 s1 p1 → BatchNorm → LeakyReLU(0.2)."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, 1, 1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True))


def _dcgan_conv(cin: int, cout: int) -> nn.Sequential:
    """Conv 4×4 s2 p1 → BatchNorm → LeakyReLU(0.2): halves the resolution."""
    return nn.Sequential(nn.Conv2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True))


def _dcgan_upconv(cin: int, cout: int) -> nn.Sequential:
    """ConvTranspose 4×4 s2 p1 → BatchNorm → LeakyReLU(0.2): doubles the resolution."""
    return nn.Sequential(
        nn.ConvTranspose2d(cin, cout, 4, 2, 1), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True)
    )


def _head(cin: int, g_dim: int) -> nn.Sequential:
    """4×4 → 1×1: Conv 4×4 valid → BatchNorm → Tanh."""
    return nn.Sequential(nn.Conv2d(cin, g_dim, 4, 1, 0), nn.BatchNorm2d(g_dim), nn.Tanh())


def _unhead(g_dim: int, cout: int) -> nn.Sequential:
    """1×1 → 4×4: ConvTranspose 4×4 → BatchNorm → LeakyReLU(0.2)."""
    return nn.Sequential(
        nn.ConvTranspose2d(g_dim, cout, 4, 1, 0), nn.BatchNorm2d(cout), nn.LeakyReLU(0.2, inplace=True)
    )


class VGGEncoder(nn.Module):
    """``vgg_64``: VGG stages (3×3 conv + BN + LeakyReLU) with max-pooling between them."""

    def __init__(self, g_dim: int, nc: int = 3, image_size: int = 64, nf: int = 64) -> None:
        super().__init__()
        chans = _stage_channels(image_size, nf)
        layers = _VGG_LAYERS[4 - len(chans) :]
        stages, cin = [], nc
        for cout, n in zip(chans, layers, strict=True):
            stages.append(
                nn.Sequential(_vgg_layer(cin, cout), *[_vgg_layer(cout, cout) for _ in range(n - 1)])
            )
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.pool = nn.MaxPool2d(2, 2)
        self.head = _head(cin, g_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        skips = []
        for k, stage in enumerate(self.stages):
            x = stage(x if k == 0 else self.pool(x))
            skips.append(x)
        h = self.head(self.pool(x))
        return h.flatten(1), skips


class VGGDecoder(nn.Module):
    """Mirror of ``VGGEncoder``: nearest ×2 upsampling, concat the skip, VGG layers; Sigmoid out."""

    def __init__(self, g_dim: int, nc: int = 3, image_size: int = 64, nf: int = 64) -> None:
        super().__init__()
        chans = _stage_channels(image_size, nf)
        layers = _VGG_LAYERS[4 - len(chans) :]
        self.unhead = _unhead(g_dim, chans[-1])
        stages = []
        for k in reversed(range(len(chans))):  # deepest stage first
            c, n = chans[k], layers[k]
            mods = [_vgg_layer(2 * c, c), *[_vgg_layer(c, c) for _ in range(n - 2)]]
            if k > 0:
                mods.append(_vgg_layer(c, chans[k - 1]))
            else:  # last stage ends in the reference's ConvTranspose 3×3 + Sigmoid
                mods += [nn.ConvTranspose2d(c, nc, 3, 1, 1), nn.Sigmoid()]
            stages.append(nn.Sequential(*mods))
        self.stages = nn.ModuleList(stages)
        self.up = nn.UpsamplingNearest2d(scale_factor=2)

    def forward(self, g: Tensor, skips: list[Tensor]) -> Tensor:
        d = self.unhead(g[:, :, None, None])
        for stage, skip in zip(self.stages, reversed(skips), strict=True):
            d = stage(torch.cat([self.up(d), skip], dim=1))
        return d


class DCGANEncoder(nn.Module):
    """``dcgan_64``: strided 4×4 convs (each halves the size), then the 4×4 → 1×1 head."""

    def __init__(self, g_dim: int, nc: int = 3, image_size: int = 64, nf: int = 64) -> None:
        super().__init__()
        chans = _stage_channels(image_size, nf)
        stages, cin = [], nc
        for cout in chans:
            stages.append(_dcgan_conv(cin, cout))
            cin = cout
        self.stages = nn.ModuleList(stages)
        self.head = _head(cin, g_dim)

    def forward(self, x: Tensor) -> tuple[Tensor, list[Tensor]]:
        skips = []
        for stage in self.stages:
            x = stage(x)
            skips.append(x)
        return self.head(x).flatten(1), skips


class DCGANDecoder(nn.Module):
    """Mirror of ``DCGANEncoder``: transposed 4×4 s2 convs on ``[d, skip]``; Sigmoid out."""

    def __init__(self, g_dim: int, nc: int = 3, image_size: int = 64, nf: int = 64) -> None:
        super().__init__()
        chans = _stage_channels(image_size, nf)
        self.unhead = _unhead(g_dim, chans[-1])
        stages = []
        for k in reversed(range(len(chans))):
            if k > 0:
                stages.append(_dcgan_upconv(2 * chans[k], chans[k - 1]))
            else:
                stages.append(nn.Sequential(nn.ConvTranspose2d(2 * chans[0], nc, 4, 2, 1), nn.Sigmoid()))
        self.stages = nn.ModuleList(stages)

    def forward(self, g: Tensor, skips: list[Tensor]) -> Tensor:
        d = self.unhead(g[:, :, None, None])
        for stage, skip in zip(self.stages, reversed(skips), strict=True):
            d = stage(torch.cat([d, skip], dim=1))
        return d


ENCODERS = {"vgg64": (VGGEncoder, VGGDecoder), "dcgan64": (DCGANEncoder, DCGANDecoder)}


class LSTM(nn.Module):
    """The reference ``lstm``: Linear embed → stacked ``LSTMCell``s → Linear → Tanh.

    Stateless: ``forward(x, h, c)`` with ``h, c`` of shape ``(N, layers, hidden)`` returns
    ``(out, h, c)``. ``zero_state(N)`` gives the per-sequence start state.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int, layers: int) -> None:
        super().__init__()
        self.hidden, self.layers = hidden, layers
        self.embed = nn.Linear(in_dim, hidden)
        self.cells = nn.ModuleList([nn.LSTMCell(hidden, hidden) for _ in range(layers)])
        self.out = nn.Sequential(nn.Linear(hidden, out_dim), nn.Tanh())

    def zero_state(
        self, n: int, device: torch.device, dtype: torch.dtype = torch.float32
    ) -> tuple[Tensor, Tensor]:
        z = torch.zeros(n, self.layers, self.hidden, device=device, dtype=dtype)
        return z, z.clone()

    def _cells(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        x = self.embed(x)
        hs, cs = [], []
        for k, cell in enumerate(self.cells):
            hk, ck = cell(x, (h[:, k], c[:, k]))
            hs.append(hk)
            cs.append(ck)
            x = hk
        return x, torch.stack(hs, 1), torch.stack(cs, 1)

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        y, h, c = self._cells(x, h, c)
        return self.out(y), h, c


class GaussianLSTM(LSTM):
    """The reference ``gaussian_lstm``: embed → cells → Linear heads ``mu`` and ``logvar``.

    ``forward(x, h, c)`` returns ``(mu, logvar, h, c)``; sampling is left to the caller so that
    it can use its own generator and temperature.
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int, layers: int) -> None:
        super().__init__(in_dim, out_dim, hidden, layers)
        del self.out
        self.mu = nn.Linear(hidden, out_dim)
        self.logvar = nn.Linear(hidden, out_dim)

    def forward(self, x: Tensor, h: Tensor, c: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # type: ignore[override]
        y, h, c = self._cells(x, h, c)
        return self.mu(y), self.logvar(y), h, c


def kl_gaussians(mu1: Tensor, logvar1: Tensor, mu2: Tensor, logvar2: Tensor) -> Tensor:
    """Elementwise KL(N(mu1, exp(logvar1)) || N(mu2, exp(logvar2)))."""
    return 0.5 * (logvar2 - logvar1 + (logvar1.exp() + (mu1 - mu2).pow(2)) / logvar2.exp() - 1.0)


def kl_standard_normal(mu: Tensor, logvar: Tensor) -> Tensor:
    """Elementwise KL(N(mu, exp(logvar)) || N(0, 1)) (the SVG-FP term)."""
    return -0.5 * (1.0 + logvar - mu.pow(2) - logvar.exp())
