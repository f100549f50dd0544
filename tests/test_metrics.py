"""PSNR and SSIM: closed forms and agreement with scikit-image."""

import math

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

from worldmodel.training.metrics import PSNR_MAX_DB, psnr, ssim


def _skimage_ssim(x: torch.Tensor, y: torch.Tensor) -> float:
    return structural_similarity(
        x.permute(1, 2, 0).double().numpy(),
        y.permute(1, 2, 0).double().numpy(),
        gaussian_weights=True,
        sigma=1.5,
        use_sample_covariance=False,
        data_range=1.0,
        channel_axis=-1,
    )


@pytest.mark.parametrize("size", [(16, 16), (64, 64), (20, 33)])
def test_ssim_matches_skimage(size):
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, *size, generator=g)
    # noisy copies of different strength, plus a blurred structured image
    y = (x + torch.tensor([0.05, 0.2, 0.5]).view(3, 1, 1, 1) * torch.randn(3, 3, *size, generator=g)).clamp(
        0, 1
    )
    ours = ssim(x, y)
    ref = torch.tensor([_skimage_ssim(x[i], y[i]) for i in range(3)], dtype=torch.float32)
    assert ours.shape == (3,)
    assert torch.allclose(ours, ref, atol=1e-3), (ours, ref)
    assert ours[0] > ours[1] > ours[2]  # more noise, lower SSIM


def test_ssim_batched_leading_axes_and_identity():
    x = torch.rand(2, 5, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    s = ssim(x, x)
    assert s.shape == (2, 5)
    assert torch.allclose(s, torch.ones(2, 5), atol=1e-5)
    with pytest.raises(ValueError, match="at least 11"):
        ssim(torch.rand(1, 3, 8, 8), torch.rand(1, 3, 8, 8))
    with pytest.raises(ValueError, match="shape"):
        ssim(torch.rand(1, 3, 16, 16), torch.rand(1, 3, 16, 15))


def test_psnr_closed_form():
    x = torch.full((4, 3, 8, 8), 0.5)
    d = torch.tensor([0.1, 0.01, 0.25, 0.0]).view(4, 1, 1, 1)
    p = psnr(x + d, x)
    expected = [-20 * math.log10(0.1), -20 * math.log10(0.01), -20 * math.log10(0.25), PSNR_MAX_DB]
    assert np.allclose(p.numpy(), expected, atol=1e-3)
