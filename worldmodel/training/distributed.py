"""Data-parallel glue for ``torchrun ... -m worldmodel train``.

Reads the torchrun environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``), starts a process group
(NCCL on CUDA, gloo on CPU), and averages gradients across processes.

Why not wrap the model in ``DistributedDataParallel``: the trainer only calls ``model.loss`` and
supports models with several optimisers (a GAN's ``"g"`` and ``"d"``), each stepping on the
gradient of its own loss term through ``loss[key].backward(inputs=...)``. DDP's reducer expects
one backward per forward over all parameters, which that pattern breaks. Averaging the gradients
of each optimiser's parameters with one flat ``all_reduce`` after its backward gives the same
update as DDP (the mean of per-process gradients, i.e. the gradient of the combined batch for
mean-reduced losses), for every model, with no special cases. The price is that communication does
not overlap the backward pass, which matters little at these model sizes.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable

import torch
import torch.distributed as dist
from torch import nn


@dataclasses.dataclass(frozen=True)
class DistInfo:
    """Where this process sits in the job."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """True when there is more than one process."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 writes logs, samples and checkpoints."""
        return self.rank == 0


def env_info() -> DistInfo:
    """Rank and world size from torchrun's environment variables (single process when unset)."""
    return DistInfo(
        rank=int(os.environ.get("RANK", 0)),
        world_size=int(os.environ.get("WORLD_SIZE", 1)),
        local_rank=int(os.environ.get("LOCAL_RANK", 0)),
    )


def init(device: torch.device) -> DistInfo:
    """Join the process group torchrun describes; a no-op for a single process.

    Args:
        device: the training device; CUDA selects NCCL and pins this process to ``LOCAL_RANK``.
    """
    info = env_info()
    if not info.enabled or (dist.is_available() and dist.is_initialized()):
        return info
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(info.local_rank)
    dist.init_process_group(backend=backend, rank=info.rank, world_size=info.world_size)
    return info


def shutdown() -> None:
    """Leave the process group if one was started."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def wait_for_all() -> None:
    """Block until every process reaches this point (a no-op for a single process).

    The trainer calls it when a run ends normally: rank 0 finishes later (its last held-out
    scores, checkpoint and samples), and a gloo peer that tears its group down meanwhile can abort
    its process at exit ("terminate called without an active exception").
    """
    if active():
        dist.barrier()


def active() -> bool:
    """True inside an initialised process group with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def broadcast_module(module: nn.Module, src: int = 0) -> None:
    """Copy parameters and buffers from rank ``src`` to every process (as DDP does at start)."""
    if not active():
        return
    with torch.no_grad():
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src)


def average_gradients(params: Iterable[nn.Parameter]) -> None:
    """Replace each gradient by its mean over processes, in one flat all-reduce per dtype.

    Parameters without a gradient on this process count as zeros, so every process takes part
    in the same collectives whatever its batch did.
    """
    if not active():
        return
    world = dist.get_world_size()
    by_dtype: dict[torch.dtype, list[nn.Parameter]] = {}
    for p in params:
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        by_dtype.setdefault(p.grad.dtype, []).append(p)
    for group in by_dtype.values():
        flat = torch.cat([p.grad.reshape(-1) for p in group])
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat.div_(world)
        offset = 0
        for p in group:
            n = p.grad.numel()
            p.grad.copy_(flat[offset : offset + n].view_as(p.grad))
            offset += n


def all_true(flag: torch.Tensor) -> bool:
    """``flag`` (a bool scalar) is true on every process; a single host sync."""
    if active():
        flag = flag.to(torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())
