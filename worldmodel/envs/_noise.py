"""Per-row random streams for batched dreams: row ``i`` of a batched model call draws the same noise
as a batch-of-one call for the same episode.

A ``LatentDynamics.step`` takes one ``torch.Generator`` for the whole batch, so a batch of N
episodes and N batch-of-one episodes would draw different numbers even with "the same" seeds
(and on the CPU ``torch.randn`` even fills a ``(1, 8)`` and a ``(256, 8)`` tensor with different
algorithms). ``RowNoise`` is a ``TorchFunctionMode`` that the dream environments enter only around
``model.step``: it answers the model's ``torch.randn`` / ``rand`` / ``randn_like`` / ``rand_like``
and ``Tensor.normal_`` / ``uniform_`` calls whose leading axis is the batch with noise from a
counter-based hash of ``(episode key, step, call number, element index)``. Integer hashing is
exact on every device, so each row's numbers depend only on its own episode, never on the batch
size, the other rows or the device; the float transform after it (Box–Muller) is elementwise.

Other random functions (``multinomial``, ``bernoulli``, ``randint``, draws whose leading axis is
not the batch) pass through to the generator the model was given: still seeded, but not
row-separable. Models written against ``LatentDynamics`` draw Gaussian latents with ``randn``,
which is covered.

Cost: a ``TorchFunctionMode`` sees every op of the step, about 2 ms per step of Python dispatch for
the tiny SVG (measured: 4.7 → 7.0 ms per batch-of-one step on a 2-core CPU; < 1 % of a 256-row
step). An explicit noise argument on ``LatentDynamics.step`` would remove it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.overrides import TorchFunctionMode

_M32 = 0xFFFFFFFF


def _mix32(x: Tensor) -> Tensor:
    """``lowbias32`` integer hash on int64 tensors holding uint32 values (exact on CPU and CUDA)."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32  # int64 products wrap; the low 32 bits are still exact
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def row_uniform(keys: Tensor, counters: Tensor, call: int, numel: int, dtype: torch.dtype) -> Tensor:
    """Uniforms in (0, 1), ``(B, numel, 2)``: two per element, from ``keys`` and ``counters``."""
    elem = torch.arange(numel * 2, device=keys.device, dtype=torch.int64).view(1, numel, 2)
    h = _mix32(elem ^ _mix32(torch.full_like(elem, call & _M32)))
    h = _mix32(h ^ _mix32(counters.view(-1, 1, 1) & _M32))
    h = _mix32(h ^ keys[:, 1].view(-1, 1, 1))
    h = _mix32(h ^ keys[:, 0].view(-1, 1, 1))
    return ((h >> 8).to(dtype) + 0.5) * (1.0 / (1 << 24))


def row_normal(keys: Tensor, counters: Tensor, call: int, numel: int, dtype: torch.dtype) -> Tensor:
    """Standard normals ``(B, numel)`` by Box–Muller from ``row_uniform``."""
    u = row_uniform(keys, counters, call, numel, torch.float32)
    r = torch.sqrt(-2.0 * torch.log(u[..., 0]))
    return (r * torch.cos((2.0 * math.pi) * u[..., 1])).to(dtype)


_SERVED = frozenset(
    {torch.randn, torch.rand, torch.randn_like, torch.rand_like, Tensor.normal_, Tensor.uniform_}
)


class RowNoise(TorchFunctionMode):
    """Serve the batch-leading noise draws of one ``model.step`` call from per-row streams.

    Args:
        keys: int64 ``(B, 2)``, two uint32 words per episode (drawn from the env's ``np_random``).
        counters: int64 ``(B,)``, the step number of each episode (so each step draws afresh).
    """

    def __init__(self, keys: Tensor, counters: Tensor) -> None:
        super().__init__()
        self.keys, self.counters = keys, counters
        self.batch = keys.shape[0]
        self.calls = 0

    def _draw(self, shape, dtype, device, normal: bool) -> Tensor | None:
        shape = tuple(int(s) for s in shape)
        if len(shape) == 0 or shape[0] != self.batch:
            return None
        dtype = dtype or torch.get_default_dtype()
        if not dtype.is_floating_point:
            return None
        numel = math.prod(shape[1:])
        self.calls += 1
        keys, counters = self.keys.to(device), self.counters.to(device)
        if normal:
            out = row_normal(keys, counters, self.calls, numel, dtype)
        else:
            out = row_uniform(keys, counters, self.calls, numel, dtype)[..., 0]
        return out.reshape(shape)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in _SERVED:  # the fast path: every other op of the model
            return func(*args, **kwargs)
        out = None
        if func in (torch.randn, torch.rand):
            shape = args[0] if len(args) == 1 and isinstance(args[0], (tuple, list, torch.Size)) else args
            if "size" in kwargs:
                shape = kwargs["size"]
            device = kwargs.get("device") or torch.get_default_device()
            out = self._draw(shape, kwargs.get("dtype"), device, normal=func is torch.randn)
        elif func in (torch.randn_like, torch.rand_like):
            t = args[0]
            out = self._draw(
                t.shape,
                kwargs.get("dtype") or t.dtype,
                kwargs.get("device") or t.device,
                normal=func is torch.randn_like,
            )
        elif func in (Tensor.normal_, Tensor.uniform_):
            t = args[0]
            draw = self._draw(t.shape, t.dtype, t.device, normal=func is Tensor.normal_)
            if draw is not None:
                rest = list(args[1:])
                if func is Tensor.normal_:
                    mean = kwargs.get("mean", rest[0] if rest else 0.0)
                    std = kwargs.get("std", rest[1] if len(rest) > 1 else 1.0)
                    draw = draw * std + mean
                else:
                    lo = kwargs.get("from", rest[0] if rest else 0.0)
                    hi = kwargs.get("to", rest[1] if len(rest) > 1 else 1.0)
                    draw = lo + (hi - lo) * draw
                with torch.no_grad():
                    return t.copy_(draw)
        if out is not None:
            if kwargs.get("requires_grad"):
                out.requires_grad_(True)
            return out
        return func(*args, **kwargs)
