"""Inference copies (``dynamics/inference.py``): each rewrite equals the layer it replaces, every
shipped model's copy computes what the model does, bf16 stays close, the original is untouched."""

from __future__ import annotations

import copy
import math
import platform
import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from worldmodel.dynamics import make, save
from worldmodel.dynamics.inference import (
    SkipSplitDecoder,
    SubPixelConvTranspose2d,
    fold_batchnorm,
    for_inference,
    transposed_as_conv,
)
from worldmodel.dynamics.registry import builtin
from worldmodel.envs.dream import DreamConfig, DreamCore


def _randomise_batchnorm(model: nn.Module, seed: int = 0) -> None:
    """Non-trivial running statistics and affine parameters (fresh BN is the identity map)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.BatchNorm2d, nn.BatchNorm3d)):
                n = m.num_features
                m.running_mean.copy_(torch.rand(n, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(n, generator=g) * 1.5 + 0.5)
                if m.affine:
                    m.weight.copy_(torch.rand(n, generator=g) + 0.5)
                    m.bias.copy_(torch.rand(n, generator=g) * 0.4 - 0.2)


@pytest.mark.parametrize(("cin", "cout", "hw", "bias"), [(5, 3, 4, True), (8, 16, 7, False), (1, 1, 1, True)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_subpixel_equals_strided_transposed_conv(cin, cout, hw, bias, channels_last):
    torch.manual_seed(0)
    ct = nn.ConvTranspose2d(cin, cout, 4, 2, 1, bias=bias)
    sp = SubPixelConvTranspose2d(ct)
    x = torch.randn(3, cin, hw, hw + 1)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        want, got = ct(x), sp(x)
    assert got.shape == want.shape == (3, cout, 2 * hw, 2 * hw + 2)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_subpixel_refuses_other_transposed_convs():
    with pytest.raises(ValueError, match="k=4, s=2, p=1"):
        SubPixelConvTranspose2d(nn.ConvTranspose2d(4, 4, 3, 2, 1))


@pytest.mark.parametrize(("k", "p"), [(3, 1), (4, 0), (5, 2)])
def test_stride_one_transposed_conv_as_conv(k, p):
    torch.manual_seed(0)
    ct = nn.ConvTranspose2d(6, 4, k, 1, p)
    x = torch.randn(2, 6, 5, 3)
    with torch.no_grad():
        torch.testing.assert_close(transposed_as_conv(ct)(x), ct(x), atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match="stride-1"):
        transposed_as_conv(nn.ConvTranspose2d(6, 4, 4, 2, 1))


@pytest.mark.parametrize(
    ("conv", "bn", "shape"),
    [
        (nn.Conv2d(3, 5, 3, padding=1), nn.BatchNorm2d(5), (2, 3, 6, 6)),
        (nn.Conv2d(3, 5, 3, bias=False), nn.BatchNorm2d(5, affine=False), (2, 3, 6, 6)),
        (nn.ConvTranspose2d(4, 6, 4, 2, 1), nn.BatchNorm2d(6), (2, 4, 3, 3)),
        (nn.Conv3d(2, 3, 3, padding=1), nn.BatchNorm3d(3), (2, 2, 3, 4, 4)),
        (nn.ConvTranspose3d(3, 2, (3, 4, 4), 2, (0, 1, 1)), nn.BatchNorm3d(2), (1, 3, 2, 3, 3)),
    ],
)
def test_batchnorm_folds_into_the_conv_before_it(conv, bn, shape):
    torch.manual_seed(0)
    seq = nn.Sequential(conv, bn).eval()
    _randomise_batchnorm(seq)
    x = torch.randn(shape)
    with torch.no_grad():
        want = seq(x)
        fold_batchnorm(conv, bn)
        torch.testing.assert_close(conv(x), want, atol=1e-5, rtol=1e-5)


def _model(name: str, size: int = 32, **extra):
    if name == "vgan":
        extra = {"clip_len": 8, "n_future": 7, **extra}
    torch.manual_seed(0)
    model = make(name, preset="tiny", image_size=size, **extra).eval()
    _randomise_batchnorm(model)
    return model


@pytest.mark.parametrize(("encoder", "subpixel"), [("dcgan64", False), ("dcgan64", True), ("vgg64", False)])
def test_skip_split_decoder_equals_the_decoder(encoder, subpixel):
    model = _model("svg-lp", 32, encoder=encoder)
    decoder = copy.deepcopy(model.decoder)
    if subpixel:  # every stride-2 transposed conv as a sub-pixel conv, as bf16 copies have them
        for stage in decoder.stages:
            stage[0] = SubPixelConvTranspose2d(stage[0])
    split = SkipSplitDecoder(copy.deepcopy(decoder))
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        _, skips = model.encoder(torch.rand(2, 3, 32, 32, generator=g))
        code = torch.rand(2, model.config.g_dim, generator=g) * 2 - 1
        want = model.decoder(code, skips)
        terms = split.skip_terms(skips)
        torch.testing.assert_close(decoder(code, skips), want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(split.forward_terms(code, terms), want, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(split(code, skips), want, atol=1e-5, rtol=1e-5)
    assert len(terms) == len(model.decoder.stages)


def _rollout(model, frames, actions, noise):
    """Frames and features of ``initial`` then three steps with given noise."""
    with torch.no_grad():
        s = model.initial(frames, actions[:, : frames.shape[1] - 1])
        out = [(model.decode(s), model.features(s))]
        for t in range(3):
            eps = noise[t] if noise is not None else None
            s = model.step(s, actions[:, t], noise=eps, generator=torch.Generator().manual_seed(t))
            out.append((model.decode(s), model.features(s)))
    return out


VARIANTS = {
    **{name: {} for name in builtin()},
    "svg-lp vgg64": {"encoder": "vgg64"},
    "svg-lp last_frame_skip": {"last_frame_skip": True},
}


@pytest.mark.parametrize("variant", VARIANTS)
def test_inference_copy_computes_the_same_rollout(variant):
    name = variant.split()[0]
    model = _model(name, **VARIANTS[variant])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    fast = for_inference(model)
    g = torch.Generator().manual_seed(1)
    t0 = model.config.n_past
    frames = torch.randint(0, 256, (3, t0, 32, 32, 3), dtype=torch.uint8, generator=g)
    actions = torch.rand(3, t0 + 3, 4, generator=g) * 2 - 1
    noise = torch.randn(3, 3, model.noise_dim, generator=g) if model.noise_dim else None
    for (x0, f0), (x1, f1) in zip(
        _rollout(model, frames, actions, noise), _rollout(fast, frames, actions, noise), strict=True
    ):
        torch.testing.assert_close(x1, x0, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(f1, f0, atol=2e-5, rtol=1e-4)
    # The original keeps its weights, its BatchNorm layers and its gradients.
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())
    assert not any(p.requires_grad for p in fast.parameters())
    if name.startswith("svg"):
        assert not any(isinstance(m, nn.BatchNorm2d) for m in fast.modules())
        assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
        assert isinstance(fast.decoder, SkipSplitDecoder) and not isinstance(model.decoder, SkipSplitDecoder)


def test_a_copy_of_a_copy_computes_the_same():
    model = _model("svg-lp", 32)
    once = for_inference(model)
    twice = for_inference(once)
    g = torch.Generator().manual_seed(4)
    frames = torch.randint(0, 256, (2, 2, 32, 32, 3), dtype=torch.uint8, generator=g)
    actions = torch.rand(2, 5, 4, generator=g) * 2 - 1
    noise = torch.randn(3, 2, model.noise_dim, generator=g)
    for (x0, f0), (x1, f1) in zip(
        _rollout(once, frames, actions, noise), _rollout(twice, frames, actions, noise), strict=True
    ):
        torch.testing.assert_close(x1, x0, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(f1, f0, atol=1e-6, rtol=1e-6)


def _spread(model: nn.Module, gain: float = 1.5) -> nn.Module:
    """Weights of scale ``gain / sqrt(fan_in)``: frames then span most of [0, 1] (std ≈ 0.17) where
    the reference init gives ≈ 0.5 everywhere, so a broken rewrite shows in the frames."""
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                w = m.weight
                fan_in = (
                    w[0].numel()
                    if not isinstance(m, nn.ConvTranspose2d)
                    else w.shape[0] * w[0, 0].numel() / 4
                )
                w.copy_(torch.randn(w.shape, generator=g) * gain / math.sqrt(fan_in))
    return model


def test_bfloat16_copy_of_svg_stays_close_and_keeps_float32_state():
    model = _spread(_model("svg-lp", 64))
    fast = for_inference(model, dtype="bfloat16")
    g = torch.Generator().manual_seed(2)
    frames = torch.randint(0, 256, (4, 2, 64, 64, 3), dtype=torch.uint8, generator=g)
    actions = torch.rand(4, 5, 4, generator=g) * 2 - 1
    noise = torch.randn(3, 4, model.noise_dim, generator=g)
    steps = list(
        zip(_rollout(model, frames, actions, noise), _rollout(fast, frames, actions, noise), strict=True)
    )
    for (x0, f0), (x1, f1) in steps[1:]:  # decoded frames (step 0 is the real context frame)
        assert x1.dtype == f1.dtype == torch.float32
        assert x0.std() > 0.1  # frames vary: dropping one stage's skip term moves them by 0.05 on average
        assert (x1 - x0).abs().max() < 2e-2 and (x1 - x0).abs().mean() < 5e-3
        assert (f1 - f0).abs().max() < 2e-2
    assert fast.encoder.stages[0][0].weight.dtype == torch.bfloat16
    assert fast.predictor.embed.weight.dtype == torch.float32


def test_rewritten_layers_follow_the_weights_device_and_dtype():
    strided, unit = nn.ConvTranspose2d(4, 3, 4, 2, 1).double(), nn.ConvTranspose2d(4, 3, 3, 1, 1).double()
    with torch.device("meta"):  # another default device must not pull the new layers there
        rewritten = [(SubPixelConvTranspose2d(strided), strided), (transposed_as_conv(unit), unit)]
    x = torch.randn(2, 4, 5, 5, dtype=torch.float64)
    for layer, ref in rewritten:
        assert {(p.device.type, p.dtype) for p in layer.parameters()} == {("cpu", torch.float64)}
        with torch.no_grad():
            torch.testing.assert_close(layer(x), ref(x))


def test_copies_go_to_the_device_asked_for():
    model = _model("svg-lp", 32)
    fast = for_inference(model, dtype="bfloat16", device="meta")
    assert {p.device.type for p in fast.parameters()} == {"meta"}
    assert {p.device.type for p in model.parameters()} == {"cpu"}


@pytest.mark.gpu
def test_copies_run_on_cuda():
    model = _model("svg-lp", 32)
    for dtype in ("float32", "bfloat16"):
        fast = for_inference(model, dtype=dtype, device="cuda")
        assert {p.device.type for p in fast.parameters()} == {"cuda"}
        frames = torch.randint(0, 256, (2, 2, 32, 32, 3), dtype=torch.uint8, device="cuda")
        with torch.no_grad():
            s = fast.step(
                fast.initial(frames, torch.zeros(2, 1, 4, device="cuda")), torch.zeros(2, 4, device="cuda")
            )
        assert torch.isfinite(fast.decode(s)).all()


def test_states_of_copies_and_models_do_not_mix_and_copies_are_not_saved(tmp_path):
    model = _model("svg-lp", 32)
    fast = for_inference(model)
    frames = torch.randint(0, 256, (1, 2, 32, 32, 3), dtype=torch.uint8)
    a = torch.zeros(1, 1, 4)
    with torch.no_grad():
        with pytest.raises(ValueError, match="inference copy"):
            model.step(fast.initial(frames, a), a[:, 0])
        with pytest.raises(ValueError, match="without a split decoder"):
            fast.step(model.initial(frames, a), a[:, 0])
    with pytest.raises(ValueError, match="inference copy"):
        save(fast, tmp_path / "copy.pt")
    assert not (tmp_path / "copy.pt").exists()


def test_bfloat16_and_bad_dtypes_are_refused_where_there_is_no_path():
    with pytest.raises(ValueError, match="no bf16 inference path"):
        for_inference(_model("videoflow"), dtype="bfloat16")
    with pytest.raises(ValueError, match="dtype must be one of"):
        for_inference(_model("svg-lp"), dtype="float16")
    with pytest.raises(ValueError, match="dtype must be auto or one of"):
        DreamConfig(dtype="half")


def test_dream_core_runs_a_copy_and_leaves_the_model_alone():
    model = _spread(_model("svg-lp", 64)).train()
    core = DreamCore(model, DreamConfig(reward="goal-image", pool_size=2, horizon=3), device="cpu")
    assert core.model is not model and model.training  # not put in eval mode
    assert any(isinstance(m, nn.BatchNorm2d) for m in model.modules())
    bf = DreamCore(model, DreamConfig(reward="goal-image", pool_size=2, dtype="bfloat16"), device="cpu")
    # Same pool (same pool_seed), same rows, same noise keys: one dreamed step agrees up to bf16
    # rounding, and differs from the context frame (so the comparison is of decoded frames).
    idx, keys, counters = torch.arange(2), torch.tensor([[1, 2], [3, 4]]), torch.zeros(2, dtype=torch.long)
    act = torch.tensor([[0.5, -0.5, 0.0, 1.0], [-1.0, 0.2, 0.3, -1.0]])
    obs = [c.observe(c.step(c.start(idx), act, keys, counters)).numpy().astype(int) for c in (core, bf)]
    assert np.abs(obs[0] - core.obs0[:2].astype(int)).mean() > 5
    diff = np.abs(obs[0] - obs[1])
    assert diff.max() <= 6 and diff.mean() < 1.0


def test_keep_freed_memory_reports_whether_it_took():
    # In a child process: the setting is process-wide and the test process should not keep it.
    code = "from worldmodel.perf import keep_freed_memory as k; print(k(), k(2**20))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    glibc = sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"
    assert out.split() == (["True", "True"] if glibc else ["False", "False"])
