"""Frame-quality metrics for video prediction: per-frame PSNR and SSIM, batched in torch.

Both take float frames in [0, 1] shaped ``(..., C, H, W)`` and return one value per frame
``(...)``. SSIM follows Wang et al. 2004 with the settings of the SVG/SV2P evaluation code
(Gaussian window 11×11, sigma 1.5, data range 1, K1 0.01, K2 0.03), computed per channel and
averaged over channels and over the "valid" region. That is exactly what
``skimage.metrics.structural_similarity(x, y, gaussian_weights=True, sigma=1.5,
use_sample_covariance=False, data_range=1, channel_axis=...)`` computes: skimage filters with
reflect padding and then crops ``(win - 1) // 2`` pixels from each side, which leaves only
windows that lie fully inside the image (the valid convolution used here).

Pitfall (reference §2.5): old ``compare_ssim`` on float images without ``data_range`` used L = 2,
which inflates SSIM; here L is always 1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

PSNR_MAX_DB = 100.0
"""PSNR of identical frames (MSE 0), capped so that reports stay finite JSON."""

_WIN = 11
_SIGMA = 1.5
_C1 = (0.01 * 1.0) ** 2
_C2 = (0.03 * 1.0) ** 2


def _pair(x: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """Check ``(..., C, H, W)`` shapes and broadcast the leading axes."""
    if x.dim() < 3 or y.dim() < 3 or x.shape[-3:] != y.shape[-3:]:
        raise ValueError(f"metric inputs differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}")
    try:
        return torch.broadcast_tensors(x, y)
    except RuntimeError:
        raise ValueError(f"metric inputs differ in shape: {tuple(x.shape)} vs {tuple(y.shape)}") from None


def psnr(x: Tensor, y: Tensor) -> Tensor:
    """Peak signal-to-noise ratio in dB per frame, data range 1: ``10 log10(1 / mse)``.

    Args:
        x, y: float ``(..., C, H, W)`` in [0, 1]; leading axes broadcast.

    Returns:
        ``(...)`` float32; identical frames give ``PSNR_MAX_DB``.
    """
    x, y = _pair(x, y)
    mse = (x.float() - y.float()).pow(2).flatten(-3).mean(-1)
    return (10.0 * torch.log10(1.0 / mse.clamp_min(10 ** (-PSNR_MAX_DB / 10)))).clamp_max(PSNR_MAX_DB)


def _gaussian_window(device: torch.device, dtype: torch.dtype) -> Tensor:
    # scipy.ndimage.gaussian_filter with truncate=3.5 at sigma 1.5: radius 5, i.e. 11 taps.
    r = torch.arange(_WIN, device=device, dtype=torch.float64) - (_WIN - 1) / 2
    g = torch.exp(-(r**2) / (2 * _SIGMA**2))
    g = g / g.sum()
    return g.to(dtype)


def ssim(x: Tensor, y: Tensor) -> Tensor:
    """Structural similarity per frame (Gaussian 11×11, sigma 1.5, data range 1).

    Args:
        x, y: float ``(..., C, H, W)`` in [0, 1], ``H, W >= 11``; leading axes broadcast.

    Returns:
        ``(...)``: SSIM averaged over channels and valid pixels, in the input's float dtype
        (float32 for integer or half inputs).
    """
    x, y = _pair(x, y)
    *lead, c, h, w = x.shape
    if h < _WIN or w < _WIN:
        raise ValueError(f"SSIM needs frames of at least {_WIN}×{_WIN} pixels, got {h}×{w}")
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    # Every channel of every frame is an independent single-channel image: (N, 1, H, W).
    xs = x.to(dtype).reshape(-1, 1, h, w)
    ys = y.to(dtype).reshape(-1, 1, h, w)
    g = _gaussian_window(x.device, dtype)
    # Chunks bound the memory: the convolutions' working buffers are ~10x their input.
    per_image = torch.cat(
        [_ssim_map_means(xs[i : i + _CHUNK], ys[i : i + _CHUNK], g) for i in range(0, len(xs), _CHUNK)]
    )
    return per_image.view(*lead, c).mean(-1)


_CHUNK = 1024
"""Single-channel images per SSIM chunk (~0.5 GB of working memory at 64×64)."""


def _ssim_map_means(xs: Tensor, ys: Tensor, g: Tensor) -> Tensor:
    """Mean SSIM over the valid region of each ``(n, 1, H, W)`` image pair: ``(n,)``."""
    # Five maps filtered in one batched separable convolution: (5n, 1, H', W').
    maps = torch.cat([xs, ys, xs * xs, ys * ys, xs * ys], dim=0)
    maps = F.conv2d(maps, g.view(1, 1, 1, -1))
    maps = F.conv2d(maps, g.view(1, 1, -1, 1))
    ux, uy, uxx, uyy, uxy = maps.chunk(5, dim=0)
    vx, vy, vxy = uxx - ux * ux, uyy - uy * uy, uxy - ux * uy
    s = ((2 * ux * uy + _C1) * (2 * vxy + _C2)) / ((ux * ux + uy * uy + _C1) * (vx + vy + _C2))
    return s.flatten(1).mean(1)
