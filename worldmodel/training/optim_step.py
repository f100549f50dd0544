"""The parts of one training step that need no trainer state: the batch's shape check, the loss
terms per optimiser, the gradient norm (clipped when asked) and the names of the logged values.

A model's ``loss`` returns one scalar (for a single optimiser) or a dict keyed like its
``optimizers()`` (e.g. a GAN's ``{"g", "d"}``); each optimiser steps on the gradient of its own
term. The values a step reports are the losses, one per optimiser, then the gradient norms, named
``loss``/``grad_norm`` for the usual single ``"model"`` optimiser and ``loss/<key>``,
``grad_norm/<key>`` otherwise.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch
from torch import Tensor


def check_batch(batch: Mapping[str, Tensor], seq_len: int) -> None:
    """``ValueError`` unless ``batch`` holds frames ``(B, seq_len, H, W, 3)``."""
    frames = batch.get("frames")
    if frames is None or frames.dim() != 5 or frames.shape[1] != seq_len:
        shape = None if frames is None else tuple(frames.shape)
        raise ValueError(
            f"training batches need frames (B, {seq_len}, H, W, 3) (seq_len = n_past + n_future), got {shape}"
        )


def loss_terms(
    loss: Tensor | Mapping[str, Tensor], optimizer_keys: Iterable[str], model_name: str
) -> dict[str, Tensor]:
    """``loss`` keyed like the optimisers (one scalar goes to a single optimiser); ``ValueError``
    naming ``model_name`` when the keys do not match."""
    keys = list(optimizer_keys)
    if isinstance(loss, Mapping):
        terms = dict(loss)
    elif len(keys) == 1:
        terms = {keys[0]: loss}
    else:
        raise ValueError(f"{model_name}.loss returned one loss for optimizers {keys}")
    if set(terms) != set(keys):
        raise ValueError(f"loss keys {sorted(terms)} do not match optimizers {sorted(keys)}")
    return terms


def grad_norm(params: list[torch.nn.Parameter], clip: float | None, device: torch.device) -> Tensor:
    """The total gradient norm of ``params`` (0 without gradients), after clipping it to ``clip``
    when given (the norm returned is the one before clipping)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return torch.zeros((), device=device)
    if clip is not None:
        return torch.nn.utils.clip_grad_norm_(params, clip).float()
    return torch.nn.utils.get_total_norm(grads).float()


def value_names(optimizer_keys: Iterable[str]) -> list[str]:
    """The names of a step's values: the losses, then the gradient norms (module docstring)."""
    keys = list(optimizer_keys)
    loss_names = ["loss"] if keys == ["model"] else [f"loss/{k}" for k in keys]
    norm_names = ["grad_norm"] if keys == ["model"] else [f"grad_norm/{k}" for k in keys]
    return loss_names + norm_names
