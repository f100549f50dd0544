"""Per-row random streams for batched dreams: row ``i`` of a batched model step gets the same noise
as a batch-of-one step of the same episode.

One ``torch.Generator`` for a whole batch cannot give that (and on the CPU ``torch.randn`` even
fills a ``(1, 8)`` and a ``(256, 8)`` tensor with different algorithms). The dream environments
instead hand ``LatentDynamics.step`` its ``noise`` argument, computed here from a counter-based
hash of ``(episode key, step, element index)``. Integer hashing is exact on every device, so each
row's numbers depend only on its own episode, never on the batch size, the other rows or the
device; the float transform after it (Box–Muller) is elementwise.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

_M32 = 0xFFFFFFFF


def _mix32(x: Tensor) -> Tensor:
    """``lowbias32`` integer hash on int64 tensors holding uint32 values (exact on CPU and CUDA)."""
    x = x ^ (x >> 16)
    x = (x * 0x7FEB352D) & _M32  # int64 products wrap; the low 32 bits are still exact
    x = x ^ (x >> 15)
    x = (x * 0x846CA68B) & _M32
    return x ^ (x >> 16)


def row_uniform(keys: Tensor, counters: Tensor, numel: int) -> Tensor:
    """Uniforms in (0, 1), float32 ``(B, numel, 2)``: two per element.

    Args:
        keys: int64 ``(B, 2)``, two uint32 words per episode.
        counters: int64 ``(B,)``, each episode's step number (each step draws afresh).
        numel: values per row.
    """
    elem = torch.arange(numel * 2, device=keys.device, dtype=torch.int64).view(1, numel, 2)
    h = _mix32(elem ^ _mix32(counters.to(keys.device).view(-1, 1, 1) & _M32))
    h = _mix32(h ^ keys[:, 1].view(-1, 1, 1))
    h = _mix32(h ^ keys[:, 0].view(-1, 1, 1))
    return ((h >> 8).to(torch.float32) + 0.5) * (1.0 / (1 << 24))


def row_normal(keys: Tensor, counters: Tensor, numel: int, dtype: torch.dtype = torch.float32) -> Tensor:
    """Standard normals ``(B, numel)`` by Box–Muller from ``row_uniform``."""
    u = row_uniform(keys, counters, numel)
    r = torch.sqrt(-2.0 * torch.log(u[..., 0]))
    return (r * torch.cos((2.0 * math.pi) * u[..., 1])).to(dtype)
