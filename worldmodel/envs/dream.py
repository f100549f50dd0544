"""``worldmodel/Dream-v0``: a learned world model behind the spaces of ``worldmodel/PushTable-v0``.

``DreamEnv`` is the single env: a ``DreamCore`` (``dream_core.py``: the model, a pool of start
contexts with their tasks, and batched ``draw`` / ``begin`` / ``step`` / ``observe`` /
``readout``, shared with the batched env of ``dream_vec.py``) at batch size one, so a single env
and row ``i`` of a batched env run the same code. The rest of the dream lives beside it, along
its data flow:

- ``dream_config.py``: ``DreamConfig``, the options (every one a ``gym.make`` keyword);
- ``dream_pool.py``: the start contexts drawn once at construction (real-sim episodes or a
  dataset's first frames);
- ``dream_inputs.py``: the caller's own start contexts (``reset(options=...)``,
  ``CONTEXT_KEYS``) and actions, checked;
- ``dream_episodes.py``: one episode's random draws and the rows' data;
- ``dream_core.py``: ``DreamCore``, the resets (what ``reset(seed=...)`` draws) and the
  randomness (the same seed gives the same dream, bit for bit on the CPU);
- ``dream_readout.py``: observations, rewards (``reward="learned"``: the state head's readings
  scored by the task; ``"goal-image"``: distance to the goal image) and info.

Episode length: ``horizon`` (None by default: ``Dream-v0`` leaves it to ``gym.make``'s
``TimeLimit``, registered at ``MAX_EPISODE_STEPS`` = 50; the batched envs use 50).

``DreamConfig``, ``DreamCore``, ``resolve_dtype``, ``CONTEXT_KEYS``, ``check_actions`` and the
other names of those modules that callers import from here are re-exported (``__all__``).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium import spaces

from worldmodel.dynamics.base import State
from worldmodel.envs import task as tasks
from worldmodel.envs.dream_config import GOAL_DISTANCES, OBS_TYPES, REWARDS, DreamConfig
from worldmodel.envs.dream_core import DreamCore, resolve_dtype
from worldmodel.envs.dream_episodes import Draw, Episodes
from worldmodel.envs.dream_inputs import CONTEXT_KEYS, check_actions
from worldmodel.envs.render import warn_no_render_mode

__all__ = [
    "CONTEXT_KEYS",
    "GOAL_DISTANCES",
    "OBS_TYPES",
    "REWARDS",
    "Draw",
    "DreamConfig",
    "DreamCore",
    "DreamEnv",
    "Episodes",
    "check_actions",
    "resolve_dtype",
    "row_info",
]


class DreamEnv(tasks.GoalConditionedReward, gym.Env):
    """A world model's dream of PushTable, one episode at a time.

    **Spaces** as ``worldmodel/PushTable-v0``: action ``Box(-1, 1, (4,), float32)``;
    observation ``Box(0, 255, (64, 64, 3), uint8)`` (``obs="pixels"``) or, with ``obs="latent"``,
    ``Box(-latent_bound, latent_bound, (F,), float32)``, the model's ``features``. With
    ``goal_conditioned=True``: ``Dict(observation=<that>, achieved_goal=Box(3),
    desired_goal=Box(3))`` and ``compute_reward(achieved_goal, desired_goal, info)``, as
    PushTable's (``worldmodel.envs.task``).

    **Actions**: a NaN/Inf or wrong-shaped action raises ``ValueError``; values outside [-1, 1]
    are clipped (as the real env does).

    **Episode**: never terminated (as the real env); truncated after ``horizon`` steps when it is
    set; by default ``gym.make``'s ``TimeLimit`` (``spec.max_episode_steps``, 50) ends it.

    **reset** ``options``: a start context of the caller's own (``CONTEXT_KEYS``: ``frames``,
    ``actions``, ``states``, ``objects``, ``num_objects``, ``goal``, ``target``, ``goal_image``, a
    dataset item's names; e.g. a replay buffer's for Dyna/MBPO-style branched rollouts) instead of
    a pool entry. The same seed then gives the same noise as a pool reset: the pool's context
    reset with the same seed dreams the same episode. Bad options: ``ValueError`` naming the key.

    **info**: the task's keys (``worldmodel.envs.task.INFO_KEYS``): ``distance`` and
    ``is_success``; with ``reward="learned"`` also ``goal_pos``, ``target``, ``num_objects``,
    ``object_pos``, ``target_pos`` and ``ee_pos``, the state head's readings of the dreamed state
    (at reset the context's recorded positions); plus ``pool_index`` (int, -1 for a caller's
    context).

    **render** (``render_mode="rgb_array"``): the dreamed frame next to the goal image,
    uint8 ``(H, 2W, 3)``; ``None`` with a warning when ``render_mode`` is ``None``.

    Args:
        checkpoint: a checkpoint path or a ``LatentDynamics``.
        head: the object-position head (``ObjectHead`` or path) for ``reward="learned"``; by
            default the model's own state head, else the one stored for the checkpoint
            (``heads.select_head``: a stale head file or one of another feature size is refused).
        device: ``"auto"`` (CUDA when present), ``"cpu"``, ...
        **options: ``DreamConfig`` fields.
    """

    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}  # noqa: RUF012

    def __init__(
        self,
        checkpoint: Any = None,
        *,
        render_mode: str | None = None,
        head: Any = None,
        device: str | torch.device = "auto",
        core: DreamCore | None = None,
        **options: Any,
    ) -> None:
        if render_mode is not None and render_mode not in self.metadata["render_modes"]:
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if core is None:
            if checkpoint is None:
                raise ValueError("Dream-v0 needs checkpoint=PATH or a LatentDynamics")
            core = DreamCore(checkpoint, DreamConfig(**options), head=head, device=device)
        self.core = core
        self.config = core.config
        self.render_mode = render_mode
        self.observation_space = core.observation_space()
        self.action_space = spaces.Box(-1.0, 1.0, (4,), np.float32)
        self._state: State | None = None

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
        super().reset(seed=seed)
        core = self.core
        context = core.check_context(options) if options else None
        draw = core.draw(self.np_random, context)
        self._ep, self._state, obs0, start = core.begin([draw], [context])
        self._seed = int(draw.key[0])
        self._t = 0
        self._readout = start
        return _row(core.observation(obs0, start, self._ep)), row_info(core.info_arrays(start, self._ep), 0)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        if self._state is None:
            raise RuntimeError("DreamEnv.step() called before reset()")
        core, ep = self.core, self._ep
        a = torch.from_numpy(check_actions(action, (4,))).to(core.device)[None]
        counter = torch.tensor([self._t], device=core.device)
        self._state = core.step(self._state, a, ep.dev["keys"], counter, self._seed + self._t)
        core.move_arm(ep, a)
        self._t += 1
        obs = core.observe_episodes(self._state, ep).cpu().numpy()
        self._readout = r = core.readout(self._state, ep)
        truncated = self.config.horizon is not None and self._t >= self.config.horizon
        info = row_info(core.info_arrays(r, ep), 0)
        return _row(core.observation(obs, r, ep)), float(r["reward"][0]), False, bool(truncated), info

    def _compute_reward(self, achieved_goal: Any, desired_goal: Any, info: Any) -> Any:
        """The reward for achieved and desired goals ``(..., 3)`` (``goal_conditioned``; a float
        for one pair, ``(B,)`` for a batch): ``worldmodel.envs.task.compute_reward``."""
        return self.core.compute_reward(achieved_goal, desired_goal, info)

    def proprioception(self) -> np.ndarray:
        """The dreamed end effector now, float32 ``(3,)`` (``info["ee_pos"]``; what planners read
        from ``PushTableEnv.proprioception`` in the real env)."""
        if self._state is None:
            raise RuntimeError("DreamEnv.proprioception() called before reset()")
        if "ee_pos" not in self._readout:
            raise ValueError("this dream has no end effector to report (no state head with an arm branch)")
        return np.nan_to_num(self._readout["ee_pos"][0]).astype(np.float32)

    def render_goal(self) -> np.ndarray:
        """The episode's goal image, uint8 ``(H, W, 3)``."""
        if self._state is None:
            raise RuntimeError("DreamEnv.render_goal() called before reset()")
        return self._ep.dev["goal_image"][0].cpu().numpy()

    def render(self) -> np.ndarray | None:
        """Dreamed frame | goal image, uint8 ``(H, 2W, 3)``; ``None`` (and a warning) when the env
        was made without a render mode."""
        if self.render_mode is None:
            warn_no_render_mode(self)
            return None
        if self._state is None:
            raise RuntimeError("DreamEnv.render() called before reset()")
        frame = self.core.frames(self._state)[0].cpu().numpy()
        return np.concatenate([frame, self.render_goal()], axis=1)


def row_info(arrays: dict[str, np.ndarray], i: int) -> dict[str, Any]:
    """Row ``i`` of ``DreamCore.info_arrays`` as one env's info: Python scalars (``float``,
    ``bool``, ``int``, as PushTable's) and float32 arrays."""
    out: dict[str, Any] = {}
    for k, v in arrays.items():
        x = v[i]
        if v.ndim > 1:
            out[k] = x.copy()
        elif v.dtype == np.bool_:
            out[k] = bool(x)
        elif v.dtype.kind in "iu":
            out[k] = int(x)
        else:
            out[k] = float(x)
    return out


def _row(x: Any, i: int = 0) -> Any:
    """Row ``i`` of batched observations (an array, or the goal-conditioned dict of arrays)."""
    if isinstance(x, dict):
        return {k: v[i].copy() for k, v in x.items()}
    return x[i].copy()
