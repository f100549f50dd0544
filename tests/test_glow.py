"""Glow layers: exact inverses, log-determinants against autograd Jacobians, initialisation."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from worldmodel.dynamics.glow import (
    ActNorm,
    Coupling,
    EdgeConv2d,
    EdgeConv3d,
    FlowStep,
    Glow,
    InvConv1x1,
    Split,
    gaussian_log_prob,
    squeeze,
    unsqueeze,
)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _randomize(module: nn.Module, scale: float = 0.1) -> nn.Module:
    """Perturb every parameter so zero-initialised layers are not the identity."""
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn_like(p))
    return module


def _initialized(module: nn.Module, x: torch.Tensor) -> nn.Module:
    """Run the data-dependent init on ``x``, perturb, and switch to eval mode."""
    module.train()
    module(x)
    return _randomize(module).eval()


def _jacobian_logdet(fn, x: torch.Tensor) -> float:
    """log |det| of the Jacobian of ``fn`` (flattened output) at a single example ``x``."""
    jac = torch.autograd.functional.jacobian(lambda v: fn(v.view_as(x)).flatten(), x.flatten())
    return torch.linalg.slogdet(jac)[1].item()


def _layers() -> dict[str, nn.Module]:
    x = torch.randn(8, 4, 3, 3) * 2 + 1
    return {
        "actnorm": _initialized(ActNorm(4), x),
        "invconv": _randomize(InvConv1x1(4)).eval(),
        "affine": _initialized(Coupling(4, 8), x),
        "additive": _initialized(Coupling(4, 8, additive=True), x),
        "affine-gatu": _initialized(Coupling(4, 8, activation="gatu"), x),
        "flowstep": _initialized(FlowStep(4, 8), x),
    }


@pytest.mark.parametrize("name", ["actnorm", "invconv", "affine", "additive", "affine-gatu", "flowstep"])
def test_layer_inverts_and_logdet_matches_jacobian(name):
    layer = _layers()[name]
    x = torch.randn(5, 4, 3, 3)
    with torch.no_grad():
        y, logdet = layer(x)
        assert logdet.shape == (5,)
        assert not torch.allclose(y, x, atol=1e-3)  # the layer does something
        torch.testing.assert_close(layer.reverse(y), x, atol=1e-4, rtol=0)
    layer = layer.double()
    for i in range(2):
        xi = x[i : i + 1].double()
        expected = _jacobian_logdet(lambda v: layer(v)[0], xi)
        assert layer(xi)[1].item() == pytest.approx(expected, abs=1e-8)


def test_squeeze_order_and_inverse():
    x = torch.randn(2, 3, 4, 6)
    y = squeeze(x)
    assert y.shape == (2, 12, 2, 3)
    c, fh, fw, i, j = 2, 1, 0, 1, 2
    assert y[1, c * 4 + fh * 2 + fw, i, j] == x[1, c, 2 * i + fh, 2 * j + fw]
    assert torch.equal(unsqueeze(y), x)


def test_actnorm_data_dependent_init_normalises_the_first_batch():
    x = torch.randn(64, 3, 4, 4) * torch.tensor([0.5, 2.0, 5.0]).view(1, 3, 1, 1) + 3.0
    layer = ActNorm(3).train()
    y, _ = layer(x)
    assert bool(layer.initialized)
    torch.testing.assert_close(y.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5, rtol=0)
    torch.testing.assert_close(y.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4, rtol=0)
    # Later batches do not re-initialise; the flag travels with the state dict.
    before = layer.bias.clone()
    layer(x * 3)
    assert torch.equal(layer.bias, before)
    fresh = ActNorm(3)
    fresh.load_state_dict(layer.state_dict())
    assert bool(fresh.initialized)


def test_actnorm_per_time_step():
    x = torch.randn(16, 2, 3, 4, 4) * torch.tensor([1.0, 3.0, 9.0]).view(1, 1, 3, 1, 1)
    layer = ActNorm(2, time_steps=3).train()
    y = layer.norm(x)
    torch.testing.assert_close(y.std(dim=(0, 3, 4), unbiased=False), torch.ones(2, 3), atol=1e-4, rtol=0)


def test_invconv_starts_as_a_rotation_and_weight_is_plu():
    layer = InvConv1x1(6)
    w = layer.weight()
    torch.testing.assert_close(w @ w.T, torch.eye(6), atol=1e-5, rtol=0)
    assert layer(torch.randn(2, 6, 3, 3))[1].abs().max() < 1e-4  # |det| = 1
    assert not layer.p.requires_grad and not layer.sign_s.requires_grad


def test_couplings_start_as_identity():
    x = torch.randn(4, 6, 3, 3)
    for additive in (False, True):
        layer = Coupling(6, 8, additive=additive).train()
        y, logdet = layer(x)
        if additive:
            torch.testing.assert_close(y, x)
            assert torch.equal(logdet, torch.zeros(4))
        else:  # zero network output: shift 0, scale sigmoid(2)
            scale = torch.sigmoid(torch.tensor(2.0))
            torch.testing.assert_close(y[:, 3:], x[:, 3:] * scale)
            torch.testing.assert_close(logdet, torch.full((4,), 27 * math.log(scale)))


def test_edge_bias_padding_marks_the_border():
    conv = EdgeConv2d(2, 1, 3)
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 2, 1, 1] = 1.0  # reads the indicator channel at the centre tap
    out = conv(torch.zeros(1, 2, 4, 4))
    assert out.shape == (1, 1, 4, 4) and torch.equal(out, torch.zeros(1, 1, 4, 4))
    with torch.no_grad():
        conv.weight.zero_()
        conv.weight[0, 2, 0, 0] = 1.0  # top-left tap: 1 exactly on the first row and column
    out = conv(torch.zeros(1, 2, 4, 4))[0, 0]
    expected = torch.zeros(4, 4)
    expected[0, :] = 1
    expected[:, 0] = 1
    assert torch.equal(out, expected)


def test_causal_conv3d_never_sees_the_future():
    conv = EdgeConv3d(3, 5, (2, 3, 3), dilation=2)
    x = torch.randn(2, 3, 4, 6, 6)
    y = conv(x)
    assert y.shape == (2, 5, 4, 6, 6)
    x2 = x.clone()
    x2[:, :, 2:] = torch.randn(2, 3, 2, 6, 6)
    y2 = conv(x2)
    torch.testing.assert_close(y2[:, :, :2], y[:, :, :2])
    assert not torch.allclose(y2[:, :, 2], y[:, :, 2])


def test_split_prior_starts_standard_normal():
    split = Split(8)
    x1, z = split(torch.randn(2, 8, 4, 4))
    mean, log_scale = split.prior(x1)
    assert mean.shape == log_scale.shape == z.shape == (2, 4, 4, 4)
    assert torch.equal(mean, torch.zeros_like(mean)) and torch.equal(log_scale, torch.zeros_like(mean))


def test_gaussian_log_prob_matches_torch_distributions():
    x, m, s = torch.randn(3, 2, 4), torch.randn(3, 2, 4), torch.randn(3, 2, 4) * 0.3
    ref = torch.distributions.Normal(m, s.exp()).log_prob(x).sum((1, 2))
    torch.testing.assert_close(gaussian_log_prob(x, m, s), ref)


@pytest.mark.parametrize("additive", [False, True])
def test_whole_glow_inverts_and_logdet_matches_jacobian(additive):
    glow = Glow(3, levels=2, depth=2, width=8, additive=additive, activation="gatu").train()
    glow.encode(torch.rand(16, 3, 8, 8) - 0.5)  # data-dependent init
    glow = _randomize(glow).eval()
    assert glow.latent_shapes(3, 8) == [(6, 4, 4), (24, 2, 2)]
    x = torch.rand(4, 3, 8, 8) - 0.5
    with torch.no_grad():
        latents, kept, _ = glow.encode(x)
        assert [tuple(z.shape[1:]) for z in latents] == [(6, 4, 4), (24, 2, 2)]
        assert sum(z[0].numel() for z in latents) == 3 * 8 * 8
        assert kept[0].shape == (4, 6, 4, 4)
        back = glow.decode(latents[-1], lambda level, x1: latents[level])
    torch.testing.assert_close(back, x, atol=1e-4, rtol=0)
    # log |det| of the whole multi-scale map x -> [z_0, z_top] on a 3×4×4 input (48×48 Jacobian).
    glow = glow.double()
    xi = torch.rand(1, 3, 4, 4, dtype=torch.float64) - 0.5
    expected = _jacobian_logdet(lambda v: torch.cat([z.flatten() for z in glow.encode(v)[0]]), xi)
    assert glow.encode(xi)[2].item() == pytest.approx(expected, abs=1e-8)


def test_glow_checkpointing_gives_the_same_gradients():
    x = torch.rand(4, 3, 8, 8) - 0.5
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(1)
        glow = Glow(3, levels=2, depth=2, width=8, checkpointing=ckpt).train()
        latents, _, logdet = glow.encode(x)
        (logdet.sum() + sum(z.pow(2).sum() for z in latents)).backward()
        grads.append(torch.cat([p.grad.flatten() for p in glow.parameters() if p.grad is not None]))
    torch.testing.assert_close(grads[0], grads[1])


def test_inverse_keeps_the_dtype():
    conv = InvConv1x1(4).double()
    x = torch.randn(2, 4, 3, 3, dtype=torch.float64)
    y, _ = conv(x)
    back = conv.reverse(y)
    assert back.dtype == torch.float64 and torch.allclose(back, x, atol=1e-10)
