"""Fitting an ``ObjectHead`` to a frozen world model (``worldmodel train-head``).

``train_object_head`` runs the frozen model the way the dream runs it: the context through
``initial``, then ``step`` with the recorded actions (sampling the prior, seeded), and regresses
every present object's recorded position (and the end effector's) at each step from that step's
features. So the head learns what the model's dreams make predictable, on the features the env
will feed it. Such heads read the arm off the features (``ObjectHead.end_effector``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from worldmodel.dynamics.base import LatentDynamics
from worldmodel.dynamics.heads import ObjectHead


@torch.no_grad()
def dream_features(
    model: LatentDynamics,
    frames: Tensor,
    actions: Tensor,
    *,
    context: int | None = None,
    generator: torch.Generator | None = None,
    temperature: float = 1.0,
) -> Tensor:
    """Features of a dream along recorded actions: ``(B, T - context + 1, F)`` for frames
    ``context - 1 .. T - 1`` (the state after ``initial``, then one per ``step``).

    Args:
        frames: uint8 ``(B, T, H, W, 3)``; actions: float32 ``(B, T, A)`` (``a_t``: ``x_t → x_{t+1}``).
    """
    k = context or model.config.n_past
    dev = model.device
    state = model.initial(frames[:, :k].to(dev), actions[:, : k - 1].to(dev, torch.float32))
    feats = [model.features(state)]
    for t in range(k - 1, frames.shape[1] - 1):
        state = model.step(
            state, actions[:, t].to(dev, torch.float32), temperature=temperature, generator=generator
        )
        feats.append(model.features(state))
    return torch.stack(feats, 1)


def _pairs(
    model: LatentDynamics, items: Sequence[dict[str, Tensor]], batch_size: int, seed: int, context: int | None
) -> tuple[tuple[Tensor, Tensor, Tensor], tuple[Tensor, Tensor] | None]:
    """Rows on the CPU: ``(features, query, target)``, one per present object and dreamed step, and
    ``(features, end_effector)`` per dreamed step (``None`` when the items have no ``states``)."""
    k = context or model.config.n_past
    gen = torch.Generator(device=model.device).manual_seed(seed)
    fs, qs, ys, ee_f, ee_y = [], [], [], [], []
    with_ee = all("states" in it for it in items)
    for i in range(0, len(items), batch_size):
        chunk = items[i : i + batch_size]
        if any("objects" not in it for it in chunk):
            raise ValueError(
                "object-position heads need data with object positions (simulated data; "
                "real BAIR and PNG folders have none)"
            )
        frames = torch.stack([it["frames"] for it in chunk])
        actions = torch.stack([it["actions"] for it in chunk])
        objects = torch.stack([it["objects"] for it in chunk]).float()  # (B, T, K, 3), NaN: absent
        feats = dream_features(model, frames, actions, context=k, generator=gen).cpu()  # (B, S, F)
        target = objects[:, k - 1 :]  # (B, S, K, 3)
        query = objects[:, k - 1 : k].expand_as(target)
        present = torch.isfinite(target).all(-1) & torch.isfinite(query).all(-1)  # (B, S, K)
        f = feats.unsqueeze(2).expand(-1, -1, target.shape[2], -1)
        fs.append(f[present])
        qs.append(query[present])
        ys.append(target[present])
        if with_ee:
            ee_f.append(feats.flatten(0, 1))
            ee_y.append(torch.stack([it["states"] for it in chunk]).float()[:, k - 1 :, :3].flatten(0, 1))
    if not fs or sum(len(f) for f in fs) == 0:
        raise ValueError("no object positions found in the data")
    ee = (torch.cat(ee_f), torch.cat(ee_y)) if with_ee else None
    return (torch.cat(fs), torch.cat(qs), torch.cat(ys)), ee


def evaluate_object_head(
    head: ObjectHead,
    pairs: tuple[Tensor, Tensor, Tensor],
    train_mean: Tensor,
    ee_pairs: tuple[Tensor, Tensor] | None = None,
) -> dict:
    """Position error (metres, xy and xyz RMSE) of the head vs predicting ``train_mean`` and vs
    "the object stays where it started" (the query); the end effector's xyz RMSE vs its mean."""
    f, q, y = pairs
    with torch.no_grad():
        pred = head(f, q)

    def rmse(p: Tensor, target: Tensor, dims: slice) -> float:
        return float((p[:, dims] - target[:, dims]).pow(2).sum(1).mean().sqrt())

    mean = train_mean.expand_as(y)
    xy, xyz = slice(0, 2), slice(0, 3)
    out = {
        "rmse_xy": rmse(pred, y, xy),
        "rmse_xy_mean": rmse(mean, y, xy),
        "rmse_xy_static": rmse(q, y, xy),
        "rmse_xyz": rmse(pred, y, xyz),
        "rmse_xyz_mean": rmse(mean, y, xyz),
        "rows": len(y),
    }
    if ee_pairs is not None and head.has_end_effector:
        ef, ey = ee_pairs
        with torch.no_grad():
            out["ee_rmse_xyz"] = rmse(head.end_effector(ef), ey, xyz)
        out["ee_rmse_xyz_mean"] = rmse(head.ee_mean.expand_as(ey), ey, xyz)
    return out


def train_object_head(
    model: LatentDynamics,
    train_items: Sequence[dict[str, Tensor]],
    val_items: Sequence[dict[str, Tensor]] | None = None,
    *,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 1e-3,
    hidden: int = 256,
    seed: int = 0,
    context: int | None = None,
    progress=None,
) -> tuple[ObjectHead, dict[str, Any]]:
    """Fit an ``ObjectHead`` on a frozen ``model``'s dream features.

    Args:
        model: the world model (eval mode, any device); it is not changed.
        train_items / val_items: dataset items (``frames`` uint8 ``(T, H, W, 3)``, ``actions``
            ``(T, A)``, ``objects`` ``(T, K, 3)`` NaN rows for absent objects, and ``states``
            ``(T, 3)`` the end effector; without ``states`` the head has no end-effector branch).
        steps: Adam steps on minibatches of ``batch_size`` rows.
        progress: optional callable ``(step, loss)`` for the CLI's progress bar.

    Returns:
        ``(head, metrics)``; metrics are ``evaluate_object_head`` on ``val_items`` (``val_``
        prefix) and on the training rows (``train_`` prefix).
    """
    model.eval()
    train, train_ee = _pairs(model, train_items, 64, seed, context)
    f, q, y = train
    head = ObjectHead(model.feature_dim, hidden, end_effector=train_ee is not None)
    mean = y.mean(0)
    head.pos_mean.copy_(mean)
    head.pos_scale.copy_(y.std(0).clamp_min(1e-3))
    if train_ee is not None:
        head.ee_mean.copy_(train_ee[1].mean(0))
        head.ee_scale.copy_(train_ee[1].std(0).clamp_min(1e-3))
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    head.train()
    for step in range(steps):
        idx = torch.randint(0, len(y), (min(batch_size, len(y)),), generator=gen)
        pred = head(f[idx], q[idx])
        loss = ((pred - y[idx]) / head.pos_scale).pow(2).sum(1).mean()
        if train_ee is not None:
            ef, ey = train_ee
            j = torch.randint(0, len(ey), (min(batch_size, len(ey)),), generator=gen)
            loss = loss + ((head.end_effector(ef[j]) - ey[j]) / head.ee_scale).pow(2).sum(1).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if progress is not None:
            progress(step, float(loss.detach()))
    head.eval()
    metrics = {f"train_{k}": v for k, v in evaluate_object_head(head, train, mean, train_ee).items()}
    if val_items:
        val, val_ee = _pairs(model, val_items, 64, seed + 1, context)
        metrics.update({f"val_{k}": v for k, v in evaluate_object_head(head, val, mean, val_ee).items()})
    if not all(math.isfinite(v) for v in metrics.values()):
        raise RuntimeError(f"head training diverged: {metrics}")
    return head, metrics
