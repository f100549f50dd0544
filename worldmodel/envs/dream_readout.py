"""What a dream reports for its states: observations, rewards and info (``DreamReadout``).

Rewards. ``reward="learned"``: an ``ObjectHead`` (``dynamics/heads.py``; the model's own
``state_head`` when it was trained with one, else the head stored for the checkpoint, refused
when it was fitted to other weights or reads another feature size: ``heads.select_head``) predicts
where the target object and the end effector are now from the model's features (and the
target's position at reset); distance, reward and success are then the task's
(``worldmodel.envs.task``, ``task=push|recorded-goal|reach``), computed as the real env computes
them (a head that integrates the objects from the actions, ``state_objects="actions"``,
carries every object from its position at reset along the actions instead: ``move_arm``): for
``push``, minus the target's xy distance (m) to the goal minus ``reach_weight`` times
the end effector's distance to the target, ``is_success`` when the distance is below
``success_tolerance`` (0.05 m). ``reward="goal-image"``: minus the distance between the dreamed
frame and the goal image,
``goal_distance="pixels"`` (RMS over pixels in [0, 1]) or ``"features"`` (L2 between the model's
features of the two frames, each encoded alone with ``initial``); ``is_success`` below
``image_tolerance``. The only kind for real BAIR data, which has no object positions.

Info and observations: the task's info keys (``worldmodel.envs.task.INFO_KEYS``, the same as
PushTable-v0's; a dream reports its state head's readings, at reset the context's recorded
positions, and omits what it cannot know) and, with ``goal_conditioned=True``, the
goal-conditioned ``Dict`` observation with ``compute_reward`` (``task.goal_space``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from worldmodel.data.batch import frames_to_uint8
from worldmodel.dynamics.base import LatentDynamics, State
from worldmodel.envs import task as tasks
from worldmodel.envs.dream_config import DreamConfig
from worldmodel.envs.dream_episodes import Episodes
from worldmodel.envs.task import MAX_OBJECTS, TaskSpec


class DreamReadout:
    """The half of ``DreamCore`` that reads dreamed states: ``arm`` and ``move_arm`` (the end
    effector), ``frames``, ``observe`` (device observations), ``with_goal`` and ``observation``
    (host observations), ``frame_features``, ``score``, ``readout`` (distance, reward and the
    head's positions, one host copy), ``info_arrays`` (the info keys, batched), ``compute_reward``
    and ``tolerance``.

    ``DreamCore`` sets the attributes these read at its construction.
    """

    config: DreamConfig
    model: LatentDynamics
    head: Any
    """The state head (``reward="learned"``), else None."""
    spec: TaskSpec
    device: torch.device
    pool: dict[str, Tensor]
    goal_features: Tensor | None

    @property
    def has_ee(self) -> bool:
        """Whether the dream knows the end effector (a state head with an end-effector branch)."""
        return self.head is not None and self.head.has_end_effector

    def arm(self, feats: Tensor, start: Tensor, now: Tensor | None = None) -> Tensor:
        """The end effector the head knows, ``(B, 3)``: read off ``feats`` ``(B, F)`` relative to
        ``start`` ``(B, 3)`` (the arm at reset), or for a head that integrates the arm from the
        actions (``arm_from_actions``), ``now`` (``Episodes.dev["arm"]``; ``start`` before any step)."""
        if getattr(self.head, "arm_from_actions", False):
            return start if now is None else now
        return self.head.end_effector(feats, start)

    @property
    def observes_target(self) -> bool:
        """``task_obs`` with a head that integrates the objects: the target's carried position
        (``Episodes.dev["now"]``) follows the arm and the goal in the observation."""
        return bool(self.config.task_obs and self.integrates_objects)

    @property
    def task_obs_dim(self) -> int:
        """Entries ``task_obs`` appends to the features: the arm and the goal, and the target
        where the dream carries it (``observes_target``)."""
        return (6 + 3 * self.observes_target) if self.config.task_obs else 0

    @property
    def integrates_objects(self) -> bool:
        """Whether the head integrates the objects from the actions (``objects_from_actions``)."""
        return bool(getattr(self.head, "objects_from_actions", False))

    @torch.no_grad()
    def move_arm(self, ep: Episodes, actions: Tensor) -> None:
        """After a step with ``actions`` ``(B, A)``: a head that integrates the arm moves each row's
        ``ep.dev["arm"]`` (``ObjectHead.arm_step``) and remembers the action, and one that
        integrates the objects moves every present object of ``ep.dev["now"]`` ``(B, K, 3)``
        (``object_step``, from their positions at reset); others read the arm and the objects off
        the features and keep nothing."""
        if getattr(self.head, "arm_from_actions", False):
            d, a = ep.dev, actions.float()
            arm = self.head.arm_step(d["arm"], a, d["last_action"])
            if self.integrates_objects:  # (B, K, 3); absent objects stay NaN
                now = d["now"]
                moved = self.head.object_step(now.nan_to_num(0.0), d["arm"], arm, a, d["last_action"])
                d["now"] = torch.where(torch.isfinite(now), moved, now)
            d["arm"] = arm
            d["last_action"] = a.clone()

    @torch.no_grad()
    def frames(self, state: State) -> Tensor:
        """Dreamed frames, uint8 ``(B, H, W, 3)``."""
        return frames_to_uint8(self.model.decode(state))

    @torch.no_grad()
    def observe(
        self,
        state: State,
        pidx: Tensor | None = None,
        goal: Tensor | None = None,
        *,
        ee: Tensor | None = None,
        arm: Tensor | None = None,
        target: Tensor | None = None,
    ) -> Tensor:
        """Observations on the device: uint8 frames or clipped float32 features; with ``task_obs``
        the head's end effector (read relative to ``ee`` ``(B, 3)``, the arm at reset, or to the
        rows' pool entries ``pidx``; for a head that integrates the arm, ``arm`` ``(B, 3)``, see
        ``arm``), ``goal`` and ``target`` ``(B, 3)`` (when given) follow."""
        if self.config.obs == "pixels":
            return self.frames(state)
        b = self.config.latent_bound
        feats = self.model.features(state).float()
        if self.config.task_obs:
            start = self.pool["ee"][pidx] if ee is None else ee
            arm = self.arm(feats, start, arm)
            extra = [x.float() for x in (goal, target) if x is not None]
            feats = torch.cat([feats, arm, *extra], dim=1)
        return feats.clamp(-b, b)

    def observe_episodes(self, state: State, ep: Episodes) -> Tensor:
        """``observe`` after a step: the episodes' arm, goal and (``observes_target``) the
        target where the dream carries it."""
        d = ep.dev
        target = self.target_now(ep).nan_to_num(0.0) if self.observes_target else None
        return self.observe(state, goal=d["goal"], ee=d["ee"], arm=d["arm"], target=target)

    def target_now(self, ep: Episodes) -> Tensor:
        """``(B, 3)``: each episode's target where the dream has carried it (NaN where absent)."""
        d = ep.dev
        rows = torch.arange(len(d["now"]), device=d["now"].device)
        return d["now"][rows, d["target"].clamp(min=0)]

    def with_goal(self, obs: np.ndarray, goal: np.ndarray, target: np.ndarray | None = None) -> np.ndarray:
        """``obs0`` rows ``(..., D)`` with the episode's goal ``(..., 3)`` appended (``task_obs``),
        and the target's start position ``(..., 3)`` where the dream observes it."""
        if not self.config.task_obs:
            return obs
        b = self.config.latent_bound
        parts = [obs, np.clip(goal, -b, b)]
        if self.observes_target:
            parts.append(np.clip(np.nan_to_num(target), -b, b))
        return np.concatenate(parts, axis=-1).astype(np.float32)

    def observation(self, obs: np.ndarray, readout: dict[str, np.ndarray], ep: Episodes) -> Any:
        """Host observations ``(B, ...)``, or with ``goal_conditioned`` the dict of ``(B, ...)``
        arrays ``observation``, ``achieved_goal`` (from ``readout``) and ``desired_goal``."""
        if not self.config.goal_conditioned:
            return obs
        achieved = tasks.achieved_goal(self.spec, readout["target_pos"], readout.get("ee_pos"))
        return {
            "observation": obs,
            "achieved_goal": np.nan_to_num(np.asarray(achieved, np.float32)),
            "desired_goal": ep.host["goal"].copy(),
        }

    @torch.no_grad()
    def frame_features(self, frames: Tensor) -> Tensor:
        """Features of single frames uint8 ``(B, H, W, 3)``, each encoded alone by ``initial``."""
        empty = torch.zeros(len(frames), 0, self.model.config.action_dim, device=self.device)
        return self.model.features(self.model.initial(frames[:, None], empty)).float()

    @torch.no_grad()
    def score(self, state: State, goal: Tensor, query: Tensor, pidx: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(distance (B,), reward (B,), target_pos (B, 3))`` of rows started from pool entries
        ``pidx`` (see the module docstring); ``reward="learned"`` computes the task's distance and
        reward as the real env does (``worldmodel.envs.task``) on the head's predicted target and
        end effector."""
        if self.config.reward == "learned":  # (an integrated target is at its query at reset)
            now = query if self.integrates_objects else None
            dist, reward, pos, _ = self._task_score(
                self.model.features(state).float(), goal, query, self.pool["ee"][pidx], target=now
            )
            return dist, reward, pos
        images = self.pool["goal_image"][pidx]
        feats = None if self.goal_features is None else self.goal_features[pidx]
        d = self._image_distance(state, images, feats)
        return d, -d, torch.full_like(goal, float("nan"))

    def _task_score(
        self,
        feats: Tensor,
        goal: Tensor,
        query: Tensor,
        ee_start: Tensor,
        arm: Tensor | None = None,
        target: Tensor | None = None,
    ):
        """The task's ``(distance, reward, target, ee or None)`` on the head's readings (``arm``:
        the integrated arm, see ``arm``; ``target``: the integrated target, else it is read off
        ``feats`` with ``query``)."""
        pos = self.head(feats, query) if target is None else target
        ee = self.arm(feats, ee_start, arm) if self.head.has_end_effector else None
        arm = pos if ee is None else ee  # no branch: reach_weight == 0 and an object task (checked)
        return tasks.distance(self.spec, pos, arm, goal), tasks.reward(self.spec, pos, arm, goal), pos, ee

    def _image_distance(self, state: State, images: Tensor, goal_features: Tensor | None) -> Tensor:
        """``goal-image`` distance ``(B,)`` of dreamed frames to ``images`` uint8 ``(B, H, W, 3)``."""
        if self.config.goal_distance == "pixels":
            x = self.model.decode(state).float()
            g = images.movedim(-1, -3).float() / 255.0
            return (x - g).pow(2).flatten(1).mean(1).sqrt()
        diff = self.frame_features(self.frames(state)) - goal_features
        return torch.linalg.vector_norm(diff, dim=1)

    @torch.no_grad()
    def readout(self, state: State, ep: Episodes) -> dict[str, np.ndarray]:
        """What a step reports, on the host in one device-to-host copy: ``distance`` and ``reward``
        ``(B,)``; with ``reward="learned"`` also the head's ``target_pos`` ``(B, 3)``,
        ``object_pos`` ``(B, MAX_OBJECTS, 3)`` (every present object read with its position at
        reset as the query; NaN rows absent) and ``ee_pos`` ``(B, 3)`` (heads with an arm)."""
        d = ep.dev
        if self.config.reward != "learned":
            dist = self._image_distance(state, d["goal_image"], d["goal_features"]).float()
            dist = dist.cpu().numpy()
            return {"distance": dist, "reward": -dist}
        feats = self.model.features(state).float()
        b = len(feats)
        now = self.target_now(ep) if self.integrates_objects else None
        dist, reward, pos, ee = self._task_score(feats, d["goal"], d["query"], d["ee"], d.get("arm"), now)
        objects = torch.full((b, MAX_OBJECTS, 3), float("nan"), device=self.device)
        present = torch.isfinite(d["objects"]).all(-1)
        rows, slots = present.nonzero(as_tuple=True)
        if self.integrates_objects:
            objects = d["now"].float().clone()
        elif len(rows):
            objects[rows, slots] = self.head(feats[rows], d["objects"][rows, slots]).float()
        parts = [dist.float()[:, None], reward.float()[:, None], pos.float(), objects.flatten(1)]
        if ee is not None:
            parts.append(ee.float())
        flat = torch.cat(parts, 1).cpu().numpy()
        out = {
            "distance": flat[:, 0],
            "reward": flat[:, 1],
            "target_pos": flat[:, 2:5],
            "object_pos": flat[:, 5 : 5 + 3 * MAX_OBJECTS].reshape(b, MAX_OBJECTS, 3),
        }
        out["object_pos"][np.arange(b), ep.host["target"]] = np.where(
            np.isfinite(ep.host["objects"][np.arange(b), ep.host["target"]]).all(-1, keepdims=True),
            out["target_pos"],
            np.nan,
        )  # the target's row is the reading the reward used
        if ee is not None:
            out["ee_pos"] = flat[:, 5 + 3 * MAX_OBJECTS :]
        return self._goal_reward(out, ep)

    def _goal_reward(self, readout: dict[str, np.ndarray], ep: Episodes) -> dict[str, np.ndarray]:
        """``goal_conditioned``: the reward recomputed on the host by ``compute_reward`` from the
        float32 goals and ``ee_pos`` the step reports, so HER's relabelled rewards equal the
        dream's bit for bit (float32 rounding off the device's)."""
        if self.config.goal_conditioned:
            achieved = self.observation(readout["distance"], readout, ep)["achieved_goal"]
            info = {"ee_pos": np.nan_to_num(readout["ee_pos"])} if "ee_pos" in readout else {}
            readout["reward"] = np.asarray(self.compute_reward(achieved, ep.host["goal"], info), np.float64)
        return readout

    def info_arrays(self, readout: dict[str, np.ndarray], ep: Episodes) -> dict[str, np.ndarray]:
        """The task's info keys (``worldmodel.envs.task.INFO_KEYS``, those this dream knows) and
        ``pool_index`` as ``(B, ...)`` arrays, in the dtypes a Gymnasium vector env stacks the
        real env's infos into (float64, bool, int64, float32 positions)."""
        dist = readout["distance"]
        out: dict[str, np.ndarray] = {
            "distance": dist.astype(np.float64),
            "is_success": dist < self.tolerance(),
        }
        if self.config.reward == "learned":
            h = ep.host
            n = h["num_objects"]
            present = np.arange(MAX_OBJECTS)[None, :] < n[:, None]
            objects = np.where(present[..., None], np.nan_to_num(readout["object_pos"]), 0.0).astype(
                np.float32
            )
            target = objects[np.arange(len(n)), h["target"]]
            out.update(
                goal_pos=h["goal"].copy(), target=h["target"].copy(), num_objects=n.copy(), object_pos=objects
            )
            out["target_pos"] = np.where(
                (h["target"] < n)[:, None], target, np.nan_to_num(readout["target_pos"])
            ).astype(np.float32)
            if "ee_pos" in readout:
                out["ee_pos"] = np.nan_to_num(readout["ee_pos"]).astype(np.float32)
        out["pool_index"] = ep.host["pidx"].copy()
        return out

    def compute_reward(self, achieved_goal: Any, desired_goal: Any, info: Any) -> Any:
        """``worldmodel.envs.task.compute_reward`` with this dream's task (``goal_conditioned``)."""
        return tasks.compute_reward(self.spec, achieved_goal, desired_goal, info)

    def tolerance(self) -> float:
        """Success threshold on ``distance`` for the configured reward."""
        return self.spec.tolerance if self.config.reward == "learned" else self.config.image_tolerance

    def goal_images(self, pidx: np.ndarray) -> np.ndarray:
        return self.pool["goal_image"][torch.as_tensor(pidx, device=self.device)].cpu().numpy()
