"""Inference copies of world models: the same function, re-expressed for faster batched steps.

``for_inference(model)`` returns a frozen copy in eval mode with four rewrites, each exact up to
float rounding (the tests check every shipped model against the original):

1. **BatchNorm folded into the convolution before it.** In eval mode BN is the affine map
   ``y = (x - mean) / sqrt(var + eps) * gamma + beta``, so a conv followed by BN is one conv with
   per-output-channel scaled weights and a shifted bias. Saves one pass over every feature map.
2. **Stride-2 4×4 transposed convolutions as sub-pixel convolutions** (Shi et al. 2016): output
   pixel ``2m + a`` of ``ConvTranspose2d(k=4, s=2, p=1)`` reads input pixels ``m - 1, m`` (phase
   ``a = 0``, taps 3 and 1) or ``m, m + 1`` (phase 1, taps 2 and 0). One 3×3 convolution with
   ``4 · C_out`` outputs (zeros on the unused taps) and one interleaving copy compute all four
   phases. On CPU, oneDNN's forward convolution beats its transposed one for layers with few
   output channels (float32) or for all of the DCGAN decoder's layers (bf16), despite the 2.25×
   extra multiply-adds; ``for_inference`` rewrites only those.
3. **Stride-1 transposed 2-D convolutions as ordinary ones** (flipped kernel, swapped in/out
   channels, padding ``k - 1 - p``), and 2-D weights stored channels-last (NHWC kernels).
4. **SVG decoders split at their skip connections** (``SkipSplitDecoder``). Each decoder stage
   starts with a convolution of ``cat([d, skip])``, which by linearity is ``conv_d(d) +
   conv_s(skip)``. With the reference's fixed skips (those of the last context frame) the
   ``conv_s`` half is the same at every step of a rollout, so ``SVG.initial`` computes it once
   (``skip_terms``) and keeps it in the state, and each step pays only for ``conv_d`` (and no
   concatenation).

With ``dtype="bfloat16"`` the model's ``inference_half_modules`` (SVG: the convolutional encoder
and decoder; the recurrent nets keep float32 state) are cast to bf16, at bf16 rounding. What each
rewrite and bf16 gain is measured by ``benchmarks/inference_copy.py`` (figures in
``benchmarks/README.md``).

Training never uses these copies: BatchNorm is gone and the weights do not require grad. The
original model is not touched.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from worldmodel.choices import check_choice
from worldmodel.dynamics.base import LatentDynamics

_CONV = (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)
_BN = (nn.BatchNorm2d, nn.BatchNorm3d)
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _like(w: Tensor) -> dict[str, object]:
    """Factory keywords for a new layer on ``w``'s device and in its dtype."""
    return {"device": w.device, "dtype": w.dtype}


class SubPixelConvTranspose2d(nn.Module):
    """``ConvTranspose2d(C_in, C_out, 4, stride=2, padding=1)`` as a 3×3 conv + a pixel shuffle.

    Input ``(N, C_in, H, W)`` → output ``(N, C_out, 2H, 2W)``, equal to the transposed conv's.
    """

    # Phase a of an output row/column → {3×3 tap index (input offset + 1): 4×4 transposed tap}.
    _TAPS = ({0: 3, 1: 1}, {1: 2, 2: 0})

    def __init__(self, ct: nn.ConvTranspose2d) -> None:
        super().__init__()
        if not is_subpixel_convertible(ct):
            raise ValueError(f"need ConvTranspose2d(k=4, s=2, p=1, groups=1, no output_padding), got {ct}")
        w = ct.weight.detach()  # (C_in, C_out, 4, 4)
        cin, cout = w.shape[:2]
        k = w.new_zeros(2, 2, cout, cin, 3, 3)
        for ay, taps_y in enumerate(self._TAPS):
            for ax, taps_x in enumerate(self._TAPS):
                for ty, sy in taps_y.items():
                    for tx, sx in taps_x.items():
                        k[ay, ax, :, :, ty, tx] = w[:, :, sy, sx].t()
        self.conv = nn.Conv2d(cin, 4 * cout, 3, 1, 1, bias=ct.bias is not None, **_like(w))
        with torch.no_grad():
            # Output channel (ay·2 + ax)·C_out + c is phase (ay, ax) of channel c: phase-major, so
            # the interleave below moves contiguous runs of 2·C_out values (pixel_shuffle's
            # channel-minor order made it 5-10x slower on channels-last maps).
            self.conv.weight.copy_(k.reshape(4 * cout, cin, 3, 3))
            if ct.bias is not None:
                self.conv.bias.copy_(ct.bias.detach().repeat(4))

    def forward(self, x: Tensor) -> Tensor:
        return _interleave(self.conv(x))


def _interleave(y: Tensor) -> Tensor:
    """Sub-pixel phases ``(N, 4C, H, W)`` (phase-major channels) → ``(N, C, 2H, 2W)``."""
    n, c4, h, w = y.shape
    # NHWC view (N, H, W, [ay, (ax, C)]) → (N, H, ay, W, (ax, C)) → (N, 2H, 2W, C): one copy.
    y = y.permute(0, 2, 3, 1).reshape(n, h, w, 2, c4 // 2).transpose(2, 3)
    return y.reshape(n, 2 * h, 2 * w, c4 // 4).permute(0, 3, 1, 2)


def is_subpixel_convertible(m: nn.Module) -> bool:
    return (
        type(m) is nn.ConvTranspose2d
        and m.kernel_size == (4, 4)
        and m.stride == (2, 2)
        and m.padding == (1, 1)
        and m.output_padding == (0, 0)
        and m.dilation == (1, 1)
        and m.groups == 1
    )


def transposed_as_conv(ct: nn.ConvTranspose2d) -> nn.Conv2d:
    """A stride-1 ``ConvTranspose2d`` as the equal ``Conv2d`` (flipped kernel, padding ``k-1-p``)."""
    if ct.stride != (1, 1) or ct.groups != 1 or ct.dilation != (1, 1) or ct.output_padding != (0, 0):
        raise ValueError(f"need a stride-1, ungrouped, undilated ConvTranspose2d, got {ct}")
    kh, kw = ct.kernel_size
    ph, pw = ct.padding
    if ph > kh - 1 or pw > kw - 1:
        raise ValueError(f"padding {ct.padding} exceeds kernel_size - 1 for {ct}")
    w = ct.weight.detach()
    padding = (kh - 1 - ph, kw - 1 - pw)
    conv = nn.Conv2d(
        ct.in_channels, ct.out_channels, ct.kernel_size, 1, padding, bias=ct.bias is not None, **_like(w)
    )
    with torch.no_grad():
        conv.weight.copy_(w.flip(2, 3).transpose(0, 1))
        if ct.bias is not None:
            conv.bias.copy_(ct.bias.detach())
    return conv


def fold_batchnorm(conv: nn.Module, bn: nn.Module) -> None:
    """Fold eval-mode ``bn`` (running statistics) into ``conv``'s weight and bias, in place."""
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f"{bn} keeps no running statistics; it cannot be folded")
    transposed = isinstance(conv, (nn.ConvTranspose2d, nn.ConvTranspose3d))
    with torch.no_grad():
        scale = (bn.running_var + bn.eps).rsqrt()
        if bn.weight is not None:
            scale = scale * bn.weight
        shift = -bn.running_mean * scale + (bn.bias if bn.bias is not None else 0.0)
        if conv.bias is None:
            conv.bias = nn.Parameter(torch.zeros_like(scale))
        shape = [1] * conv.weight.dim()
        shape[1 if transposed else 0] = -1  # the output-channel axis
        conv.weight.mul_(scale.reshape(shape))
        conv.bias.copy_(conv.bias * scale + shift)


class _SplitConv(nn.Module):
    """A stage's first layer on ``cat([d, skip])``, split by input channels: ``response(skip)``
    is the skip half's output (no bias); ``forward(d, term)`` adds ``term`` to the ``d`` half's.
    The layer is a ``Conv2d``, ``ConvTranspose2d`` or ``SubPixelConvTranspose2d`` (whose phases
    are summed before they are interleaved)."""

    def __init__(self, layer: nn.Module, d_channels: int) -> None:
        super().__init__()
        self.subpixel = isinstance(layer, SubPixelConvTranspose2d)
        conv = layer.conv if self.subpixel else layer
        if not isinstance(conv, (nn.Conv2d, nn.ConvTranspose2d)) or conv.groups != 1:
            raise ValueError(f"cannot split {layer} by input channels")
        self.transposed = isinstance(conv, nn.ConvTranspose2d)
        self.args = {"stride": conv.stride, "padding": conv.padding, "dilation": conv.dilation}
        if self.transposed:
            self.args["output_padding"] = conv.output_padding
        # Input channels are dim 0 of a transposed weight and dim 1 of an ordinary one.
        w, dim = conv.weight.detach(), 0 if self.transposed else 1
        wd, ws = w.narrow(dim, 0, d_channels), w.narrow(dim, d_channels, w.shape[dim] - d_channels)
        self.weight_d = nn.Parameter(wd.clone(), requires_grad=False)
        self.weight_s = nn.Parameter(ws.clone(), requires_grad=False)
        bias = conv.bias
        self.bias = None if bias is None else nn.Parameter(bias.detach().clone(), requires_grad=False)

    def _conv(self, x: Tensor, w: Tensor, b: Tensor | None) -> Tensor:
        a = self.args
        if self.transposed:
            return F.conv_transpose2d(
                x, w, b, a["stride"], a["padding"], a["output_padding"], 1, a["dilation"]
            )
        return F.conv2d(x, w, b, a["stride"], a["padding"], a["dilation"])

    def response(self, skip: Tensor) -> Tensor:
        return self._conv(skip, self.weight_s, None)

    def forward(self, d: Tensor, term: Tensor) -> Tensor:
        y = self._conv(d, self.weight_d, self.bias).add_(term)
        return _interleave(y) if self.subpixel else y


def _layers(module: nn.Module) -> list[nn.Module]:
    """The leaf layers of nested ``nn.Sequential`` blocks, in order."""
    if not isinstance(module, nn.Sequential):
        return [module]
    return [leaf for child in module for leaf in _layers(child)]


class SkipSplitDecoder(nn.Module):
    """An SVG decoder (``DCGANDecoder`` or ``VGGDecoder``) with each stage's first layer split at
    the skip concatenation (rewrite 4 in the module docstring).

    ``skip_terms(skips)`` → per-stage tensors to keep in a rollout's state; ``forward_terms(g,
    terms)`` → frames ``(N, C, H, W)``; ``forward(g, skips)`` is both, as the original decoder.
    """

    def __init__(self, decoder: nn.Module) -> None:
        super().__init__()
        self.unhead = decoder.unhead
        self.up = getattr(decoder, "up", None)  # VGG upsamples d before the concatenation
        firsts, rests = [], []
        for stage in decoder.stages:
            first, *rest = _layers(stage)  # VGG stages nest (conv, BN, LeakyReLU) blocks
            cin = first.conv.in_channels if isinstance(first, SubPixelConvTranspose2d) else first.in_channels
            firsts.append(_SplitConv(first, cin // 2))  # cat([d, skip]): equal halves in both nets
            rests.append(nn.Sequential(*rest))
        self.firsts, self.rests = nn.ModuleList(firsts), nn.ModuleList(rests)

    def skip_terms(self, skips: list[Tensor]) -> list[Tensor]:
        """Skips (highest resolution first, as the encoder returns them) → one term per stage."""
        return [first.response(skip) for first, skip in zip(self.firsts, reversed(skips), strict=True)]

    def forward_terms(self, g: Tensor, terms: list[Tensor]) -> Tensor:
        d = self.unhead(g[:, :, None, None])
        for first, rest, term in zip(self.firsts, self.rests, terms, strict=True):
            d = rest(first(self.up(d) if self.up is not None else d, term))
        return d

    def forward(self, g: Tensor, skips: list[Tensor]) -> Tensor:
        return self.forward_terms(g, self.skip_terms(skips))


def _rewrite(module: nn.Module, max_subpixel_out: int | None) -> None:
    """Apply the rewrites to ``module``'s children, recursively, in place. Stride-2 transposed
    convolutions become sub-pixel ones when their ``out_channels <= max_subpixel_out`` (all when
    ``None``)."""
    for child in module.children():
        _rewrite(child, max_subpixel_out)
    if isinstance(module, nn.Sequential):
        for i in range(len(module) - 1):
            conv, bn = module[i], module[i + 1]
            if isinstance(conv, _CONV) and isinstance(bn, _BN) and conv.out_channels == bn.num_features:
                fold_batchnorm(conv, bn)
                module[i + 1] = nn.Identity()
    for name, child in module.named_children():
        if is_subpixel_convertible(child) and (
            max_subpixel_out is None or child.out_channels <= max_subpixel_out
        ):
            setattr(module, name, SubPixelConvTranspose2d(child))
        elif type(child) is nn.ConvTranspose2d and child.stride == (1, 1) and child.groups == 1:
            setattr(module, name, transposed_as_conv(child))


def for_inference(
    model: LatentDynamics,
    *,
    dtype: str | torch.dtype = "float32",
    channels_last: bool = True,
    device: str | torch.device | None = None,
) -> LatentDynamics:
    """A frozen, eval-mode copy of ``model`` with the rewrites in the module docstring, on
    ``device`` (default: the model's). ``model`` itself is not changed, moved or put in eval mode.

    A copy is for rollouts only: its state dict differs from the model's (``checkpoint.save``
    refuses it), and its states hold ``dterm{k}`` instead of SVG's ``skip{k}``, so they are not
    interchangeable with the model's.

    ``dtype``: ``"float32"`` or ``"bfloat16"`` (the model's ``inference_half_modules`` only;
    ``ValueError`` for a model that lists none).
    ``channels_last``: store 4-D weights NHWC (batched 2-D convolutions then take NHWC kernels).
    The copy computes the same ``initial`` / ``step`` / ``rollout`` / ``decode`` / ``features`` as
    ``model`` up to float rounding.
    """
    if isinstance(dtype, str):
        check_choice("dtype", dtype, tuple(DTYPES))
        dtype = DTYPES[dtype]
    if dtype not in DTYPES.values():
        raise ValueError(f"dtype must be float32 or bfloat16, got {dtype}")
    half = model.inference_half_modules() if dtype != torch.float32 else []
    if dtype != torch.float32 and not half:
        raise ValueError(f"dtype {dtype}: {type(model).__name__} has no bf16 inference path; use float32")
    fast = copy.deepcopy(model).eval()
    if device is not None:
        fast.to(device)
    # float32: oneDNN's transposed kernel beats the 3×3 conv with its 2.25x zero taps except when
    # few output channels leave it poorly vectorised (tiny SVG, 256 rows, CPU: 16 → 3 channels
    # 12.7 → 6.7 ms; 64 → 16 channels 3.8 → 5.1 ms). bf16: the sub-pixel form won for every layer.
    _rewrite(fast, max_subpixel_out=4)
    for module in fast.inference_half_modules() if half else []:
        _rewrite(module, max_subpixel_out=None)
        module.to(dtype)
    fast.prepare_for_inference()
    fast.requires_grad_(False)
    fast.inference_copy = True  # checkpoint.save refuses copies
    if channels_last:
        with torch.no_grad():
            for p in fast.parameters():
                if p.dim() == 4:
                    p.data = p.data.contiguous(memory_format=torch.channels_last)
    return fast
