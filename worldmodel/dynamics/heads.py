"""Heads on a world model's ``features``: the object-position head behind the dream's learned reward.

``ObjectHead`` answers "where is the object that was at ``query`` when the episode started?" from
the model's features of the current (dreamed) state: ``pos_t = query + MLP([features_t, query])``.
The query is needed because slot order carries no visual identity in PushTable (objects are
placed in random order with random colours), so "object 2" cannot be read off an image; the
object's start position can. The dream env queries with the target's position at reset, which it
knows from the start context (sim ground truth or the dataset's ``objects``).

The head also knows the end effector's position, a second small MLP trained on the recorded
``states``: planners use it to shape their cost with the distance from the gripper to the object,
as the simulator oracle does, since a push-to-goal reward stays flat until something touches the
object. It either reads the arm off the features (``end_effector``) or, with ``arm_actions``
(``state_arm="actions"`` of the joint state heads), integrates it from proprioception and the
actions (``arm_step``: the arm, the action and the action before it give the arm's next move;
``arm_rollout`` along a plan). With ``object_actions`` (``state_objects="actions"``) the objects are
integrated the same way (``object_step``: a contact model of the object's position relative to
the arm before and after the step, the arm, the action and the previous action gives the
object's move; ``state_rollout`` moves arm and object together along a plan), started from the
object's known position where an episode starts and carried along the executed actions by the
planner and the dream alike. The arm is position-controlled, so its motion is almost a function
of the commands: measured on 1,946 recorded one-object pushes, an MLP of (arm, action, previous
action) rolled open loop is 0.4 / 0.7 / 1.2 cm off after 5 / 10 / 20 steps, where the quick
demo's features gave 0.9 / 2.2 / 8.1 cm (without the previous action, 1.9 cm at 5 steps: the
arm lags its target); the quick demo's integrated arm, trained with the model, 0.6 / 1.0 / 1.7 cm.

A head is trained with the model (``state_head=True``, ``LatentDynamics.state_loss``) or fitted
to a frozen model afterwards (``head_fit.train_object_head``, ``worldmodel train-head``).

Storage: a head file is a ``torch.save`` dict of plain types and tensors (loads with
``weights_only=True``): ``format``, ``kind`` ("object-position"), ``feature_dim``, ``hidden``,
``end_effector`` (bool), ``ee_relative`` (bool), ``arm_actions`` (int; format 4, written only by
heads that integrate the arm from the actions), ``object_actions`` (bool; format 5, written only
by heads that integrate the objects), ``weights``, ``model`` (registry name it was
trained on), ``checkpoint``
(its path), ``fitted_to`` (``fit_record``: the checkpoint's path, ``step`` and ``weights_sha256``,
the fingerprint of the weights the head was fitted on), ``metrics``. Format 1 files (no
end-effector branch) still load.
By default it lives next to the checkpoint: ``runs/x/last.pt`` → ``runs/x/last.head.pt``
(``head_path_for``). A checkpoint dict may instead carry it under ``heads["object_pos"]``;
``find_head`` looks there first. ``dynamics.load`` ignores both.

Staleness: ``worldmodel train --resume`` rewrites ``last.pt`` and leaves the head file as it was.
``load_head(path, checkpoint=..., model=...)`` therefore compares the file's ``fitted_to`` with the
weights it is about to be used with and refuses a head fitted to other weights
(``CheckpointError`` naming both files and both steps); a file without the record (written before
it existed) loads with a warning. ``select_head`` is the one lookup every consumer uses (plan,
eval, the dream, agents.train): an explicit head file, else the model's own state head, else the
head stored for the checkpoint, each checked for staleness and for the model's feature size.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from worldmodel.dynamics.checkpoint import atomic_save, model_sha256, read, weights_sha256
from worldmodel.errors import CheckpointError

HEAD_FORMAT = 5
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

    ``arm_actions = A > 0`` (``state_arm="actions"``): the arm that planners and dreams use is
    integrated from its start with ``arm_step`` (an MLP of the arm, the action and the previous
    action, ``A`` each; ``arm_along`` picks it). The features' reading (``end_effector``) is
    still trained beside it, so that the latent keeps carrying the arm (see ``state_loss``).

    ``object_actions`` (needs ``arm_actions``; ``state_objects="actions"``): the objects too are
    integrated from the actions (``object_step``, ``state_rollout``) from their positions where
    the episode started; the features' reading (``forward``) is still trained beside it.

    ``pos_mean`` / ``pos_scale`` and ``ee_mean`` / ``ee_scale`` (buffers) normalise positions; they
    are set from training data.
    """

    def __init__(
        self,
        feature_dim: int,
        hidden: int = 256,
        end_effector: bool = True,
        ee_relative: bool = False,
        arm_actions: int = 0,
        object_actions: bool = False,
    ) -> None:
        super().__init__()
        self.feature_dim, self.hidden = int(feature_dim), int(hidden)
        self.arm_actions = int(arm_actions) if end_effector else 0
        if self.arm_actions < 0:
            raise ValueError(f"arm_actions must be >= 0, got {arm_actions}")
        if object_actions and not self.arm_actions:
            raise ValueError(
                "object_actions: integrating the objects needs the integrated arm (arm_actions > 0)"
            )
        self.ee_relative = bool((ee_relative or self.arm_actions) and end_effector)
        self.net = _mlp(self.feature_dim + 3, hidden)
        nn.init.zeros_(self.net[-1].weight)  # starts as "the object has not moved"
        nn.init.zeros_(self.net[-1].bias)
        self.register_buffer("pos_mean", torch.zeros(3))
        self.register_buffer("pos_scale", torch.ones(3))
        self.ee_net = _mlp(self.feature_dim + 3 * self.ee_relative, hidden) if end_effector else None
        self.arm_net = None
        if self.arm_actions:  # (arm, action, previous action) -> the arm's move this step
            self.arm_net = _mlp(3 + 2 * self.arm_actions, hidden)
        self.obj_net = None
        if object_actions:  # (object - arm before and after, arm, object, action, previous) -> move
            self.obj_net = _mlp(12 + 2 * self.arm_actions, hidden)
        for net in (self.ee_net if self.ee_relative else None, self.arm_net, self.obj_net):
            if net is not None:  # starts as "the arm has not moved"
                nn.init.zeros_(net[-1].weight)
                nn.init.zeros_(net[-1].bias)
        self.register_buffer("ee_mean", torch.zeros(3))
        self.register_buffer("ee_scale", torch.ones(3))

    @property
    def has_end_effector(self) -> bool:
        """Whether the head knows the arm (heads saved before the branch existed do not)."""
        return self.ee_net is not None

    @property
    def arm_from_actions(self) -> bool:
        """Whether the arm is integrated from the actions (``arm_step``, ``arm_rollout``) rather
        than read off the features (``end_effector``)."""
        return self.arm_net is not None

    @property
    def objects_from_actions(self) -> bool:
        """Whether objects are integrated from the actions (``object_step``, ``state_rollout``)
        rather than read off the features."""
        return self.obj_net is not None

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

    def arm_step(self, arm: Tensor, action: Tensor, previous: Tensor) -> Tensor:
        """The end effector ``(B, 3)`` after ``action`` ``(B, A)`` from ``arm`` ``(B, 3)``, the step
        before having taken ``previous`` ``(B, A)`` (the arm lags its commanded target, so the
        last action says where it is still heading). Actions are clipped to [-1, 1], as the env
        clips them."""
        if self.arm_net is None:
            raise ValueError("this head reads the arm off the features only: use end_effector")
        a, p = action.clamp(-1, 1), previous.clamp(-1, 1)
        x = torch.cat([(arm - self.ee_mean) / self.ee_scale, a, p], dim=1)
        return arm + self.arm_net(x) * self.ee_scale

    def arm_rollout(self, start: Tensor, previous: Tensor, actions: Tensor) -> Tensor:
        """The end effector after each of ``actions`` ``(B, H, A)``, ``(B, H, 3)``, from ``start``
        ``(B, 3)`` (proprioception at the anchor) with ``previous`` ``(B, A)`` the action taken
        just before it."""
        arm, out = start, []
        for t in range(actions.shape[1]):
            arm = self.arm_step(arm, actions[:, t], previous)
            previous = actions[:, t]
            out.append(arm)
        return torch.stack(out, 1) if out else start.new_zeros(len(start), 0, 3)

    def object_step(
        self, obj: Tensor, arm: Tensor, arm_next: Tensor, action: Tensor, previous: Tensor
    ) -> Tensor:
        """The object after ``action`` ``(B, A)`` moved the arm from ``arm`` to ``arm_next`` ``(B,
        3)``, from ``obj`` ``(B, 3)``, or every object of each row from ``obj`` ``(B, K, 3)`` (the
        row's arm and actions for each); ``previous`` ``(B, A)`` the action before. Contacts are
        local, so the object is seen relative to the arm before and after the step."""
        if self.obj_net is None:
            raise ValueError("this head reads objects off the features only: call it on features")
        if obj.ndim == 3:  # (B, K, 3): the row's arm and actions for each of its K objects
            arm, arm_next, action, previous = (
                x[:, None].expand(-1, obj.shape[1], -1) for x in (arm, arm_next, action, previous)
            )
        s = self.pos_scale
        a, p = action.clamp(-1, 1), previous.clamp(-1, 1)
        rel = [(obj - arm) / s, (obj - arm_next) / s, (arm - self.ee_mean) / self.ee_scale]
        rel.append((obj - self.pos_mean) / s)
        return obj + self.obj_net(torch.cat([*rel, a, p], dim=-1)) * s

    def state_rollout(
        self, ee_start: Tensor, obj_start: Tensor, previous: Tensor, actions: Tensor
    ) -> tuple[Tensor, Tensor]:
        """The end effector and the object after each of ``actions`` ``(B, H, A)``: ``(arm (B, H,
        3), object (B, H, 3))``, from ``ee_start`` and ``obj_start`` ``(B, 3)`` (the arm and the
        object at the anchor; ``obj_start`` ``(B, K, 3)``: each row's K objects, ``(B, H, K, 3)``
        out) with ``previous`` ``(B, A)`` the action taken just before it."""
        arm, obj, arms, objs = ee_start, obj_start, [], []
        for t in range(actions.shape[1]):
            nxt = self.arm_step(arm, actions[:, t], previous)
            obj = self.object_step(obj, arm, nxt, actions[:, t], previous)
            arm, previous = nxt, actions[:, t]
            arms.append(arm)
            objs.append(obj)
        if not arms:
            return ee_start.new_zeros(len(ee_start), 0, 3), obj_start[:, None][:, :0]
        return torch.stack(arms, 1), torch.stack(objs, 1)

    def to_dict(self, **fields: Any) -> dict[str, Any]:
        """The plain dict a head file stores."""
        weights = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        return {
            # older readers load heads without the newer branches
            "format": 5 if self.objects_from_actions else 4 if self.arm_actions else 3,
            "kind": HEAD_KIND,
            "feature_dim": self.feature_dim,
            "hidden": self.hidden,
            "end_effector": self.has_end_effector,
            "ee_relative": self.ee_relative,
            "arm_actions": self.arm_actions,
            "object_actions": self.objects_from_actions,
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
            arm_actions=int(d.get("arm_actions", 0)),
            object_actions=bool(d.get("object_actions", False)),
        )
        if not head.has_end_effector:  # format 1: no branch and no buffers for it
            d = {**d, "weights": {**head.state_dict(), **d["weights"]}}
        try:
            head.load_state_dict(d["weights"])
        except RuntimeError as err:
            raise CheckpointError(f"{where}: incompatible head weights: {err}") from None
        return head.eval()


def arm_along(
    head: nn.Module,
    features: Tensor,
    start: Tensor,
    actions: Tensor | None = None,
    previous: Tensor | None = None,
) -> Tensor:
    """The end effector ``(B, H, 3)`` that ``head`` knows after each step of a rollout from
    ``start`` ``(B, 3)`` (the arm at the anchor): read off ``features`` ``(B, H, F)`` (the states
    after each action), or for a head that integrates the arm (``arm_from_actions``) from
    ``actions`` ``(B, H, A)``, the ``H`` actions, with ``previous`` ``(B, A)`` the one taken
    just before the anchor."""
    b, h = features.shape[:2]
    if not getattr(head, "arm_from_actions", False):
        flat_start = start[:, None].expand(b, h, 3).flatten(0, 1)
        return head.end_effector(features.flatten(0, 1), flat_start).view(b, h, 3)
    if actions is None or previous is None:
        raise ValueError("this head integrates the arm from the actions: pass actions and previous")
    return head.arm_rollout(start, previous, actions)


def objects_along(
    head: ObjectHead, start: Tensor, objects: Tensor, previous: Tensor, actions: Tensor
) -> Tensor:
    """Every object integrated along a rollout by a head with ``objects_from_actions``: ``(B, H,
    K, 3)`` after each of ``actions`` ``(B, H, A)`` from ``objects`` ``(B, K, 3)`` (NaN rows:
    absent, NaN out), the arm from ``start`` ``(B, 3)``, ``previous`` ``(B, A)`` the action taken
    just before."""
    present = torch.isfinite(objects).all(-1)  # (B, K)
    _, objs = head.state_rollout(start, objects.nan_to_num(0.0), previous, actions)  # (B, H, K, 3)
    return torch.where(present[:, None, :, None], objs, torch.nan)


def _mlp(inputs: int, hidden: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, 3)
    )


def head_path_for(checkpoint: str | os.PathLike) -> Path:
    """Default head file beside a checkpoint: ``last.pt`` → ``last.head.pt``."""
    p = Path(checkpoint)
    return p.with_name(p.stem + ".head.pt")


def fit_record(model: nn.Module, checkpoint: str | os.PathLike, step: int) -> dict[str, Any]:
    """What a head file records of the model it was fitted to (its ``fitted_to`` field): the
    checkpoint's path and ``step`` and the sha256 of the model's weights (``model_sha256``)."""
    return {"checkpoint": str(checkpoint), "step": int(step), "weights_sha256": model_sha256(model)}


def save_head(
    head: ObjectHead, path: str | os.PathLike, *, fitted_to: dict[str, Any] | None = None, **fields: Any
) -> Path:
    """Write a head file atomically; ``fitted_to`` (``fit_record``) lets loaders refuse it once
    the checkpoint it was fitted to has changed."""
    if fitted_to is not None:
        fields["fitted_to"] = dict(fitted_to)
    return atomic_save(head.to_dict(**fields), path)


def _read_head_file(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: head file not found")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        raise CheckpointError(f"{path}: not a readable head file ({type(err).__name__}: {err})") from None


def load_head(
    path: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    model: nn.Module | None = None,
    ckpt: dict[str, Any] | None = None,
) -> ObjectHead:
    """Read a head file (no code runs).

    With ``model`` the head must read its feature size (``check_head_fits``), and with
    ``checkpoint`` (a path) and/or ``model`` (the model it will read: preferred, since it is what
    runs even if the file was rewritten after it was loaded) it must have been fitted to those
    weights (``check_fitted``); ``ckpt``: that checkpoint's dict when already read."""
    path = Path(path)
    d = _read_head_file(path)
    head = ObjectHead.from_dict(d, str(path))
    if model is not None:
        where = str(checkpoint) if checkpoint is not None else "the model passed in"
        check_head_fits(head, model, str(path), where)
    if checkpoint is not None or model is not None:
        check_fitted(d.get("fitted_to"), path, checkpoint=checkpoint, model=model, ckpt=ckpt)
    return head


def check_fitted(
    record: Any,
    head_where: str | os.PathLike,
    *,
    checkpoint: str | os.PathLike | None = None,
    model: nn.Module | None = None,
    ckpt: dict[str, Any] | None = None,
) -> None:
    """Refuse (``CheckpointError``) a head whose ``fitted_to`` record names other weights than
    ``model``'s (else ``checkpoint``'s); warn when the head records nothing (an older file)."""
    target = str(checkpoint) if checkpoint is not None else "the model it is used with"
    if not (isinstance(record, dict) and isinstance(record.get("weights_sha256"), str)):
        warnings.warn(
            f"{head_where}: this head file does not record which checkpoint it was fitted to (written "
            f"by an older worldmodel), so it cannot be checked against {target}; if that changed "
            f"since (`worldmodel train --resume`), re-run `worldmodel train-head {target} --data DIR`",
            stacklevel=3,
        )
        return
    if model is not None:
        now = model_sha256(model)
    else:
        if ckpt is None:
            ckpt = read(checkpoint)
        now = weights_sha256(ckpt["weights"])
    if now == record["weights_sha256"]:
        return
    step = record.get("step", "?")
    fitted = f"{head_where} was fitted to {record.get('checkpoint', 'another checkpoint')} at step {step}"
    again = f"re-run `worldmodel train-head {target} --data DIR`"
    if checkpoint is None:
        raise CheckpointError(f"{fitted}; the model it is used with has other weights: {again}")
    now_step = _step_of(checkpoint, ckpt)
    if now_step is None:
        where_now = f"{checkpoint} holds other weights"
    elif str(now_step) == str(step):
        where_now = f"{checkpoint} is now at step {now_step} with other weights"
    else:
        where_now = f"{checkpoint} is now at step {now_step}"
    raise CheckpointError(f"{fitted}; {where_now}: {again}")


def _step_of(checkpoint: str | os.PathLike, ckpt: dict[str, Any] | None) -> int | None:
    if ckpt is not None:
        return ckpt.get("step")
    try:
        return read(checkpoint).get("step")
    except CheckpointError:
        return None


def find_head(checkpoint: str | os.PathLike, *, model: nn.Module | None = None) -> ObjectHead | None:
    """The object head stored for ``checkpoint``: its ``heads["object_pos"]`` entry (fitted with
    those weights by construction), else the file ``head_path_for(checkpoint)``, refused when it
    was fitted to other weights than ``model``'s (else the checkpoint's; see ``load_head``);
    ``None`` when there is neither."""
    return _stored_head(checkpoint, model)[0]


def _stored_head(
    checkpoint: str | os.PathLike, model: nn.Module | None
) -> tuple[ObjectHead | None, str, str]:
    """``find_head`` with where the head came from: ``(head, source, where)``."""
    ckpt = read(checkpoint)
    heads = ckpt.get("heads")
    if isinstance(heads, dict) and "object_pos" in heads:
        where = f"{checkpoint} heads['object_pos']"
        return ObjectHead.from_dict(heads["object_pos"], where), "checkpoint", where
    side = head_path_for(checkpoint)
    if not side.is_file():
        return None, "", ""
    return load_head(side, checkpoint=checkpoint, model=model, ckpt=ckpt), "file", str(side)


def check_head_fits(head: Any, model: Any, head_where: str, model_where: str) -> None:
    """``CheckpointError`` when ``head`` reads another feature size than ``model`` gives (a head
    fitted to another model), naming both and both sizes."""
    fd = getattr(head, "feature_dim", None)
    if fd is not None and fd != model.feature_dim:
        raise CheckpointError(
            f"{head_where}: the head reads {fd} features but the model of {model_where} gives "
            f"{model.feature_dim}: it was fitted to another model; re-run "
            f"`worldmodel train-head {model_where} --data DIR` or pass its own head"
        )


def select_head(
    checkpoint: str | os.PathLike | None, model: Any, head: Any = None
) -> tuple[ObjectHead | None, str]:
    """The object head to use with ``model`` (loaded from ``checkpoint``, a path or ``None``), the
    one lookup of plan, eval, the dream and agents.train.

    In order: ``head`` (an ``ObjectHead``, used as it is, or a head file), else the model's own
    ``state_head``, else ``find_head(checkpoint)``. Every choice is checked against the model's
    feature size (``check_head_fits``); head files are also refused when fitted to other weights
    (``check_fitted``; a file that records none loads with a warning).

    Returns:
        ``(head, source)``: source ``"argument"``, ``"file"`` (a head file: ``head`` or the side
        file), ``"model"``, ``"checkpoint"`` (its ``heads`` entry), or ``(None, "")`` when there is
        none.
    """
    model_where = str(checkpoint) if checkpoint is not None else "the model passed in"
    if isinstance(head, ObjectHead):
        found, source, where = head, "argument", "head"
    elif head is not None:
        found = load_head(head, checkpoint=checkpoint, model=model)
        source, where = "file", str(head)
    elif getattr(model, "state_head", None) is not None:
        return model.state_head, "model"
    elif checkpoint is None:
        return None, ""
    else:
        found, source, where = _stored_head(checkpoint, model)
        if found is None:
            return None, ""
    check_head_fits(found, model, where, model_where)
    return found, source
