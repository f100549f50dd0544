"""What a resumable training checkpoint holds beyond the weights, and the checks around it.

- The global RNG states (torch, CUDA, NumPy, Python) as plain tensors and numbers, so the file
  loads with ``weights_only=True``; under DDP every process's states are gathered to rank 0.
- ``read_resumable``: a checkpoint is resumed only by the same model config, on the same data
  (fingerprint), with every optimiser's state, and when it is finite throughout.
- ``nonfinite_state``: a checkpoint is never written with a NaN or infinite weight, buffer or
  optimiser state (``atomic_save`` refuses it too). When a diverging step has already spoiled the
  state (BatchNorm statistics are updated by the forward pass that produced the NaN loss), the
  previous finite checkpoint stays and the trainer's ``TrainingDivergedError`` says so.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from worldmodel.dynamics.base import LatentDynamics
from worldmodel.dynamics.checkpoint import check_finite, first_nonfinite, read
from worldmodel.errors import CheckpointError
from worldmodel.training import distributed as D


def rng_state() -> dict[str, Any]:
    """This process's torch, NumPy, Python (and CUDA, when present) RNG states."""
    np_state = np.random.get_state()
    py_state = random.getstate()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "keys": torch.from_numpy(np_state[1].astype(np.int64)),
            "pos": int(np_state[2]),
            "has_gauss": int(np_state[3]),
            "gauss": float(np_state[4]),
        },
        "python": {"version": py_state[0], "state": list(py_state[1]), "gauss": py_state[2]},
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Mapping[str, Any]) -> None:
    """Restore what ``rng_state`` returned (CUDA states only on as many devices as saved them)."""
    torch.set_rng_state(state["torch"])
    n = state["numpy"]
    np.random.set_state(
        ("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"])
    )
    p = state["python"]
    random.setstate((p["version"], tuple(p["state"]), p["gauss"]))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


def gathered_rng_states(dist: D.DistInfo) -> list[dict[str, Any] | None]:
    """Every process's ``rng_state``, by rank (every process must call it; the other processes'
    CUDA states stay with them)."""
    rng = rng_state()
    rngs: list[dict[str, Any] | None] = [rng]
    if D.active():
        rngs = [None] * dist.world_size
        torch.distributed.all_gather_object(rngs, {k: v for k, v in rng.items() if k != "cuda"})
        rngs[dist.rank] = rng
    return rngs


def read_resumable(
    path: Path, model: LatentDynamics, fingerprint: str | None, optimizer_keys: Iterable[str]
) -> dict[str, Any]:
    """The checkpoint at ``path``, checked for resuming ``model``'s training on the data with
    ``fingerprint`` (``None``: not checked) with the optimisers ``optimizer_keys``; a one-line
    ``CheckpointError`` naming the file otherwise."""
    ckpt = read(path)
    if ckpt["config"] != model.config_dict():
        raise CheckpointError(f"{path}: the checkpoint's model config differs from the model being trained")
    if fingerprint and ckpt.get("data") and ckpt["data"] != fingerprint:
        raise CheckpointError(
            f"{path}: trained on different data (fingerprint {ckpt['data']}, now {fingerprint})"
        )
    missing = sorted(set(optimizer_keys) - set(ckpt.get("optimizers") or {}))
    if missing:
        raise CheckpointError(f"{path}: no optimizer state for {', '.join(missing)}; cannot resume")
    check_finite(ckpt, path, optimizers=True)
    return ckpt


def nonfinite_state(
    model: LatentDynamics,
    optimizers: Mapping[str, torch.optim.Optimizer],
    device: torch.device,
    *,
    path: Path,
    step: int,
    saved_step: int,
) -> str | None:
    """``None`` when every weight, buffer and optimiser state is finite on every process, else
    why the state will not be saved to ``path`` and which checkpoint stays (one line).

    Args:
        step: the step the state is at.
        saved_step: the step of the last checkpoint written (-1: none yet).
    """
    bad = first_nonfinite(
        {
            "weights": model.state_dict(),
            "optimizers": {k: opt.state_dict()["state"] for k, opt in optimizers.items()},
        }
    )
    flag = torch.tensor([0.0 if bad is None else 1.0], device=device)
    if D.active():
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
    if not float(flag):
        return None
    what = f"{bad} holds NaN or infinite values" if bad else "another process's state is non-finite"
    if saved_step >= 0:
        kept = f"kept the previous checkpoint {path} (step {saved_step})"
    elif path.exists():
        kept = f"left {path} as it was"
    else:
        kept = "no checkpoint was written"
    return f"after step {step} {what}, so that state was not saved; {kept}"
