"""Heads on a world model's ``features``: the object-position head behind the dream's learned reward.

``ObjectHead`` answers "where is the object that was at ``query`` when the episode started?" from
the model's features of the current (dreamed) state: ``pos_t = query + MLP([features_t, query])``.
The query is needed because slot order carries no visual identity in PushTable (objects are
placed in random order with random colours), so "object 2" cannot be read off an image; the
object's start position can. The dream env queries with the target's position at reset, which it
knows from the start context (sim ground truth or the dataset's ``objects``).

The head also reads the end effector's position off the features (``end_effector``), a second
small MLP trained on the recorded ``states``: planners use it to shape their cost with the
distance from the gripper to the object, as the simulator oracle does, since a push-to-goal
reward stays flat until something touches the object.

Training (``train_object_head``) runs the frozen world model the way the dream runs it: the
context through ``initial``, then ``step`` with the recorded actions (sampling the prior, seeded),
and regresses every present object's recorded position (and the end effector's) at each step from
that step's features. So the head learns what the model's dreams make predictable, on the
features the env will feed it.

Storage: a head file is a ``torch.save`` dict of plain types and tensors (loads with
``weights_only=True``): ``format``, ``kind`` ("object-position"), ``feature_dim``, ``hidden``,
``end_effector`` (bool), ``weights``, ``model`` (registry name it was trained on), ``checkpoint``
(its path), ``metrics``. Format 1 files (no end-effector branch) still load.
By default it lives next to the checkpoint: ``runs/x/last.pt`` → ``runs/x/last.head.pt``
(``head_path_for``). A checkpoint dict may instead carry it under ``heads["object_pos"]``;
``find_head`` looks there first. ``dynamics.load`` ignores both.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from worldmodel.dynamics.base import LatentDynamics
from worldmodel.dynamics.checkpoint import atomic_save, read
from worldmodel.errors import CheckpointError

HEAD_FORMAT = 3
HEAD_KIND = "object-position"


class ObjectHead(nn.Module):
    """``(features (B, F), query (B, 3)) -> position (B, 3)`` in metres: the object that was at
    ``query`` at the start of the episode, now; ``end_effector(features, start)`` ``(B, 3)``: the
    gripper.

    ``ee_relative`` (the joint state heads): the gripper is read as its position at the start of
    the rollout (proprioception: the robot knows where its arm is; the dataset records it) plus a
    displacement from the features, ``start + MLP([features, start])``, as objects are read
    relative to their start; ``end_effector`` then needs ``start``. Otherwise it is read off the
    features alone (heads of ``train-head``). Measured on the quick demo's model: the absolute
    reading was 5.8 cm off already on the real last context frame.

    ``pos_mean`` / ``pos_scale`` and ``ee_mean`` / ``ee_scale`` (buffers) normalise positions; they
    are set from training data.
    """

    def __init__(
        self, feature_dim: int, hidden: int = 256, end_effector: bool = True, ee_relative: bool = False
    ) -> None:
        super().__init__()
        self.feature_dim, self.hidden = int(feature_dim), int(hidden)
        self.ee_relative = bool(ee_relative and end_effector)
        self.net = _mlp(self.feature_dim + 3, hidden)
        nn.init.zeros_(self.net[-1].weight)  # starts as "the object has not moved"
        nn.init.zeros_(self.net[-1].bias)
        self.register_buffer("pos_mean", torch.zeros(3))
        self.register_buffer("pos_scale", torch.ones(3))
        self.ee_net = _mlp(self.feature_dim + 3 * self.ee_relative, hidden) if end_effector else None
        if self.ee_relative:  # starts as "the arm has not moved"
            nn.init.zeros_(self.ee_net[-1].weight)
            nn.init.zeros_(self.ee_net[-1].bias)
        self.register_buffer("ee_mean", torch.zeros(3))
        self.register_buffer("ee_scale", torch.ones(3))

    @property
    def has_end_effector(self) -> bool:
        """Whether ``end_effector`` is available (heads saved before it existed lack it)."""
        return self.ee_net is not None

    def forward(self, features: Tensor, query: Tensor) -> Tensor:
        """Predicted position ``(B, 3)``."""
        q = (query - self.pos_mean) / self.pos_scale
        return query + self.net(torch.cat([features, q], dim=1)) * self.pos_scale

    def end_effector(self, features: Tensor, start: Tensor | None = None) -> Tensor:
        """Predicted end-effector position ``(B, 3)`` in metres; ``start`` ``(B, 3)``: its position
        at the start of the rollout (needed by ``ee_relative`` heads, ignored by the others)."""
        if self.ee_net is None:
            raise ValueError("this head has no end-effector branch (retrain it with `worldmodel train-head`)")
        if not self.ee_relative:
            return self.ee_mean + self.ee_net(features) * self.ee_scale
        if start is None:
            raise ValueError("end_effector: this head reads the arm relative to its start; pass start")
        s = (start - self.ee_mean) / self.ee_scale
        return start + self.ee_net(torch.cat([features, s], dim=1)) * self.ee_scale

    def to_dict(self, **fields: Any) -> dict[str, Any]:
        """The plain dict a head file stores."""
        weights = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        return {
            "format": HEAD_FORMAT,
            "kind": HEAD_KIND,
            "feature_dim": self.feature_dim,
            "hidden": self.hidden,
            "end_effector": self.has_end_effector,
            "ee_relative": self.ee_relative,
            "weights": weights,
            **fields,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "head") -> ObjectHead:
        """Rebuild from ``to_dict`` output; ``where`` names the source in errors."""
        if not isinstance(d, dict) or d.get("kind") != HEAD_KIND or "weights" not in d:
            raise CheckpointError(f"{where}: not an object-position head")
        if d.get("format", 0) > HEAD_FORMAT:
            raise CheckpointError(f"{where}: head format {d['format']} is newer than this worldmodel")
        head = cls(
            d["feature_dim"],
            d.get("hidden", 256),
            end_effector=bool(d.get("end_effector", False)),
            ee_relative=bool(d.get("ee_relative", False)),
        )
        if not head.has_end_effector:  # format 1: no branch and no buffers for it
            d = {**d, "weights": {**head.state_dict(), **d["weights"]}}
        try:
            head.load_state_dict(d["weights"])
        except RuntimeError as err:
            raise CheckpointError(f"{where}: incompatible head weights: {err}") from None
        return head.eval()


def _mlp(inputs: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 3)
    )


def head_path_for(checkpoint: str | os.PathLike) -> Path:
    """Default head file beside a checkpoint: ``last.pt`` → ``last.head.pt``."""
    p = Path(checkpoint)
    return p.with_name(p.stem + ".head.pt")


def save_head(head: ObjectHead, path: str | os.PathLike, **fields: Any) -> Path:
    """Write a head file atomically."""
    return atomic_save(head.to_dict(**fields), path)


def load_head(path: str | os.PathLike) -> ObjectHead:
    """Read a head file (no code runs)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: head file not found")
    try:
        d = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path}: not a readable head file ({type(err).__name__}: {err})") from None
    return ObjectHead.from_dict(d, str(path))


def find_head(checkpoint: str | os.PathLike) -> ObjectHead | None:
    """The object head stored for ``checkpoint``: its ``heads["object_pos"]`` entry, else the file
    ``head_path_for(checkpoint)``; ``None`` when there is neither."""
    ckpt = read(checkpoint)
    heads = ckpt.get("heads")
    if isinstance(heads, dict) and "object_pos" in heads:
        return ObjectHead.from_dict(heads["object_pos"], f"{checkpoint} heads['object_pos']")
    side = head_path_for(checkpoint)
    return load_head(side) if side.is_file() else None


# --------------------------------------------------------------------------------- training
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
