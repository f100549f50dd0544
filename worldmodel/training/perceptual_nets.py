"""The networks of the perceptual metrics, in plain PyTorch: the Inception-v1 I3D of FVD and the
AlexNet / VGG16 trunks of LPIPS, with module names matching the weight files they load.

The metrics, the weight layouts and where these networks depart from the reference code are
documented in ``worldmodel.training.perceptual``; scoring is there, loading weights in
``worldmodel.training.perceptual_weights``.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

# --------------------------------------------------------------------------------------------
# I3D (Inception-v1, inflated)


def _same_pad(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF "SAME" padding (front, back) of one dimension: output ``ceil(size / stride)``."""
    total = max(kernel - (stride if size % stride == 0 else size % stride), 0)
    return total // 2, total - total // 2


def _pad3d(x: Tensor, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> Tensor:
    t, h, w = x.shape[-3:]
    pt, ph, pw = (_same_pad(s, k, st) for s, k, st in zip((t, h, w), kernel, stride, strict=True))
    return F.pad(x, (*pw, *ph, *pt))


class _MaxPoolSame(nn.Module):
    """3-D max pool with TF "SAME" padding (zeros: the inputs are ReLU outputs, >= 0)."""

    def __init__(self, kernel: tuple[int, int, int], stride: tuple[int, int, int]) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool3d(_pad3d(x, self.kernel, self.stride), self.kernel, self.stride)


class Unit3D(nn.Module):
    """Conv3d ("SAME" padding, no bias) + BatchNorm3d (eps 1e-3) + ReLU; the logits unit has a
    bias and neither BatchNorm nor ReLU."""

    def __init__(
        self,
        cin: int,
        cout: int,
        kernel: tuple[int, int, int] = (1, 1, 1),
        stride: tuple[int, int, int] = (1, 1, 1),
        *,
        logits: bool = False,
    ) -> None:
        super().__init__()
        self.kernel, self.stride = kernel, stride
        self.conv3d = nn.Conv3d(cin, cout, kernel, stride, padding=0, bias=logits)
        self.bn = None if logits else nn.BatchNorm3d(cout, eps=1e-3, momentum=0.01)
        self.relu = not logits

    def forward(self, x: Tensor) -> Tensor:
        x = self.conv3d(_pad3d(x, self.kernel, self.stride))
        if self.bn is not None:
            x = self.bn(x)
        return F.relu(x) if self.relu else x


class _Inception(nn.Module):
    """Four branches concatenated over channels: 1³ | 1³→3³ | 1³→3³ | 3³ max pool→1³."""

    def __init__(self, cin: int, c: tuple[int, int, int, int, int, int]) -> None:
        super().__init__()
        k3 = (3, 3, 3)
        self.b0 = Unit3D(cin, c[0])
        self.b1a, self.b1b = Unit3D(cin, c[1]), Unit3D(c[1], c[2], k3)
        self.b2a, self.b2b = Unit3D(cin, c[3]), Unit3D(c[3], c[4], k3)
        self.b3a, self.b3b = _MaxPoolSame(k3, (1, 1, 1)), Unit3D(cin, c[5])
        self.out_channels = c[0] + c[2] + c[4] + c[5]

    def forward(self, x: Tensor) -> Tensor:
        return torch.cat([self.b0(x), self.b1b(self.b1a(x)), self.b2b(self.b2a(x)), self.b3b(self.b3a(x))], 1)


# (name, channels of the six convolutions) of the Inception blocks, and the pools between them.
_I3D_BLOCKS: tuple[tuple[str, tuple[int, int, int, int, int, int]], ...] = (
    ("Mixed_3b", (64, 96, 128, 16, 32, 32)),
    ("Mixed_3c", (128, 128, 192, 32, 96, 64)),
    ("MaxPool3d_4a_3x3", ()),
    ("Mixed_4b", (192, 96, 208, 16, 48, 64)),
    ("Mixed_4c", (160, 112, 224, 24, 64, 64)),
    ("Mixed_4d", (128, 128, 256, 24, 64, 64)),
    ("Mixed_4e", (112, 144, 288, 32, 64, 64)),
    ("Mixed_4f", (256, 160, 320, 32, 128, 128)),
    ("MaxPool3d_5a_2x2", ()),
    ("Mixed_5b", (256, 160, 320, 32, 128, 128)),
    ("Mixed_5c", (384, 192, 384, 48, 128, 128)),
)
_I3D_POOLS = {"MaxPool3d_4a_3x3": ((3, 3, 3), (2, 2, 2)), "MaxPool3d_5a_2x2": ((2, 2, 2), (2, 2, 2))}


class I3D(nn.Module):
    """Inception-v1 I3D, Kinetics-400 layout (module names as the ``worldmodel.training.perceptual``
    docstring lists them).

    ``forward``: float ``(B, 3, T, H, W)`` in [-1, 1] → logits ``(B, num_classes)``, averaged over
    the time steps left after the final ``2×7×7`` average pool (clipped to smaller feature maps).
    Any ``T, H, W >= 1`` runs; the published numbers need ``224×224`` (about 16 frames and up).
    """

    def __init__(self, num_classes: int = 400) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.Conv3d_1a_7x7 = Unit3D(3, 64, (7, 7, 7), (2, 2, 2))
        self.MaxPool3d_2a_3x3 = _MaxPoolSame((1, 3, 3), (1, 2, 2))
        self.Conv3d_2b_1x1 = Unit3D(64, 64)
        self.Conv3d_2c_3x3 = Unit3D(64, 192, (3, 3, 3))
        self.MaxPool3d_3a_3x3 = _MaxPoolSame((1, 3, 3), (1, 2, 2))
        channels = 192
        for name, c in _I3D_BLOCKS:
            if name in _I3D_POOLS:
                self.add_module(name, _MaxPoolSame(*_I3D_POOLS[name]))
            else:
                block = _Inception(channels, c)
                self.add_module(name, block)
                channels = block.out_channels
        self.logits = Unit3D(channels, num_classes, logits=True)
        self._init_random()

    def _init_random(self) -> None:
        # Variance-preserving convolutions (BatchNorm is the identity before weights are loaded),
        # so that an untrained network's logits neither vanish nor explode: tests use one.
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")

    def forward(self, x: Tensor) -> Tensor:
        if x.dim() != 5 or x.shape[1] != 3:
            raise ValueError(f"I3D: expected videos (B, 3, T, H, W), got {tuple(x.shape)}")
        for name in ("Conv3d_1a_7x7", "MaxPool3d_2a_3x3", "Conv3d_2b_1x1", "Conv3d_2c_3x3"):
            x = getattr(self, name)(x)
        x = self.MaxPool3d_3a_3x3(x)
        for name, _ in _I3D_BLOCKS:
            x = getattr(self, name)(x)
        t, h, w = x.shape[-3:]
        x = F.avg_pool3d(x, (min(2, t), min(7, h), min(7, w)), stride=1)
        # Dropout of the reference is off at evaluation.
        return self.logits(x).mean(dim=(2, 3, 4))  # spatial squeeze, then the mean over time


# --------------------------------------------------------------------------------------------
# LPIPS

# torchvision ``features`` of each trunk: ("conv", cin, cout, kernel, stride, padding) | ("pool", k, s)
_ALEX = (
    ("conv", 3, 64, 11, 4, 2),
    ("pool", 3, 2),
    ("conv", 64, 192, 5, 1, 2),
    ("pool", 3, 2),
    ("conv", 192, 384, 3, 1, 1),
    ("conv", 384, 256, 3, 1, 1),
    ("conv", 256, 256, 3, 1, 1),
)
_VGG16 = tuple(
    layer
    for block, (cin, cout, n) in enumerate(
        ((3, 64, 2), (64, 128, 2), (128, 256, 3), (256, 512, 3), (512, 512, 3))
    )
    for layer in ([("pool", 2, 2)] if block else [])
    + [("conv", cin if i == 0 else cout, cout, 3, 1, 1) for i in range(n)]
)
# Each stage ends at the ReLU after these convolutions (counted from 0): the five LPIPS layers.
_STAGE_ENDS = {"alex": (0, 1, 2, 3, 4), "vgg": (1, 3, 6, 9, 12)}
_TRUNKS = {"alex": _ALEX, "vgg": _VGG16}
_MIN_SIZE = {"alex": 31, "vgg": 16}
# ScalingLayer of the reference (ImageNet statistics in [-1, 1] units).
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


class _Trunk(nn.Module):
    """``slice1..slice5`` holding torchvision's ``features`` layers under their original indices."""

    def __init__(self, net: str) -> None:
        super().__init__()
        slices = [nn.Sequential() for _ in range(5)]
        stage, conv, index = 0, 0, 0
        for layer in _TRUNKS[net]:
            if layer[0] == "pool":
                slices[stage].add_module(str(index), nn.MaxPool2d(layer[1], layer[2]))
                index += 1
                continue
            _, cin, cout, k, s, p = layer
            slices[stage].add_module(str(index), nn.Conv2d(cin, cout, k, s, p))
            slices[stage].add_module(str(index + 1), nn.ReLU())
            index += 2
            if conv == _STAGE_ENDS[net][stage]:
                stage += 1
            conv += 1
        for i, s in enumerate(slices, 1):
            self.add_module(f"slice{i}", s)
        self.channels = [s[-2].out_channels for s in slices]

    def forward(self, x: Tensor) -> Iterator[Tensor]:
        for i in range(1, 6):
            x = getattr(self, f"slice{i}")(x)
            yield x


class _Lin(nn.Module):
    """The reference ``NetLinLayer``: dropout (off at evaluation) and a bias-free 1×1 conv to 1 channel."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.model = nn.Sequential(nn.Dropout(), nn.Conv2d(channels, 1, 1, bias=False))
        nn.init.ones_(self.model[1].weight)  # unit weights: the unweighted "baseline" LPIPS


class LPIPS(nn.Module):
    """LPIPS v0.1 with an AlexNet (``net="alex"``) or VGG16 (``"vgg"``) trunk.

    ``forward(a, b)``: images float ``(N, 3, H, W)`` in [0, 1] → distances ``(N,)``.
    """

    def __init__(self, net: str = "alex") -> None:
        super().__init__()
        if net not in _TRUNKS:
            raise ValueError(f"LPIPS: net must be one of {sorted(_TRUNKS)}, got {net!r}")
        self.net_name = net
        self.min_size = _MIN_SIZE[net]
        self.net = _Trunk(net)
        for k, c in enumerate(self.net.channels):
            self.add_module(f"lin{k}", _Lin(c))
        # Not in the state dict: constants of the method, not weights.
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1), persistent=False)

    def check_size(self, height: int, width: int) -> None:
        """``ValueError`` when frames of this size are too small for the trunk."""
        if min(height, width) < self.min_size:
            raise ValueError(
                f"LPIPS with the {self.net_name} trunk needs images of at least {self.min_size}×"
                f"{self.min_size}, got {height}×{width}"
            )

    def forward(self, a: Tensor, b: Tensor) -> Tensor:
        if a.shape != b.shape or a.dim() != 4 or a.shape[1] != 3:
            raise ValueError(
                f"LPIPS: expected two images (N, 3, H, W), got {tuple(a.shape)}, {tuple(b.shape)}"
            )
        self.check_size(*a.shape[-2:])
        n = a.shape[0]
        x = (torch.cat([a, b]).float() * 2 - 1 - self.shift) / self.scale  # one trunk pass for both
        total = a.new_zeros(n, dtype=torch.float32)
        for k, f in enumerate(self.net(x)):
            f = f / (f.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            d = (f[:n] - f[n:]).pow(2)
            total = total + getattr(self, f"lin{k}").model(d).mean(dim=(1, 2, 3))
        return total
