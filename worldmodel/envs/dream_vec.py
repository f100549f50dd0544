"""Batched dreams: ``DreamVecEnv`` (an SB3 ``VecEnv``) and ``DreamVectorEnv`` (a Gymnasium
``VectorEnv``, what ``gymnasium.make_vec("worldmodel/Dream-v0", num_envs=N)`` returns).

Both keep all ``N`` episodes in one ``State`` on the model's device and advance them with one
``model.step`` per env step. Finished episodes are replaced in the same step (SB3 semantics,
Gymnasium ``AutoresetMode.SAME_STEP``): their fresh initial states are a gather from the
``DreamCore`` pool merged with ``State.where``, their first observations come from the pool's
precomputed observations on the host. Per step the only device → host copies are the
observations and one ``(2, N)`` float tensor of rewards and distances.

Seeding: env ``i`` has its own ``np.random.Generator``, seeded ``seed + i`` at a seeded reset
(SB3's ``VecEnv.seed`` convention), and draws its episodes exactly as a single ``DreamEnv`` does
(``DreamCore.draw``); the model's noise is per row (``_noise.py``). So a ``DreamVecEnv`` seeded
``s`` reproduces ``N`` single ``Dream-v0`` envs seeded ``s + i`` stepped in lockstep (e.g. SB3's
``DummyVecEnv``), up to the last bits of batched vs. single-sample convolutions.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvObs, VecEnvStepReturn

from worldmodel.envs.dream import DreamConfig, DreamCore, DreamEnv, check_actions


class _Batch:
    """The batched episode state both vector APIs share."""

    def __init__(self, core: DreamCore, num_envs: int) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.core, self.n, dev = core, num_envs, core.device
        self.rngs: list[np.random.Generator] = [seeding.np_random(None)[0] for _ in range(num_envs)]
        self.pidx = torch.zeros(num_envs, dtype=torch.long, device=dev)
        self.goal = torch.zeros(num_envs, 3, device=dev)
        self.query = torch.zeros(num_envs, 3, device=dev)
        self.keys = torch.zeros(num_envs, 2, dtype=torch.long, device=dev)
        self.counters = torch.zeros(num_envs, dtype=torch.long, device=dev)
        self.t = np.zeros(num_envs, np.int64)
        self.pidx_np = np.zeros(num_envs, np.int64)
        self.state = None
        self.calls = 0

    def reset(self, seeds: Sequence[int | None]) -> np.ndarray:
        for i, s in enumerate(seeds):
            if s is not None:
                self.rngs[i] = seeding.np_random(int(s))[0]
        rows = np.arange(self.n)
        self.state = self.core.start(self._begin(rows))
        return self.core.with_goal(self.core.obs0[self.pidx_np].copy(), self.goal.cpu().numpy())

    def _begin(self, rows: np.ndarray) -> torch.Tensor:
        """Draw new episodes for ``rows`` (a host loop over resetting envs only); returns pool indices."""
        draws = [self.core.draw(self.rngs[i]) for i in rows]
        dev = self.core.device
        r = torch.as_tensor(rows, device=dev)
        idx = torch.as_tensor([d[0] for d in draws], device=dev)
        self.pidx[r] = idx
        self.goal[r] = torch.as_tensor(np.stack([d[1] for d in draws]), device=dev)
        self.query[r] = torch.as_tensor(np.stack([d[2] for d in draws]), device=dev)
        self.keys[r] = torch.as_tensor(np.stack([d[3] for d in draws]), device=dev)
        self.counters[r] = 0
        self.t[rows] = 0
        self.pidx_np[rows] = [d[0] for d in draws]
        return idx

    def step(self, actions: Any) -> dict[str, Any]:
        """Advance all envs; returns host arrays (see the keys below)."""
        if self.state is None:
            raise RuntimeError("step() called before reset()")
        core = self.core
        a = torch.from_numpy(check_actions(actions, (self.n, 4))).to(core.device)
        self.calls += 1
        self.state = core.step(self.state, a, self.keys, self.counters, seed=self.calls)
        self.counters += 1
        self.t += 1
        dist, reward, _ = core.score(self.state, self.goal, self.query, self.pidx)
        obs = core.observe(self.state, self.pidx, self.goal).cpu().numpy()
        dist, reward = torch.stack([dist.float(), reward.float()]).cpu().numpy()
        truncated = self.t >= core.config.horizon
        done_rows = np.flatnonzero(truncated)
        out = {
            "obs": obs,
            "reward": reward,
            "distance": dist,
            "is_success": dist < core.tolerance(),
            "terminated": np.zeros(self.n, bool),
            "truncated": truncated,
            "done_rows": done_rows,
            "final_obs": None,
            "final_pidx": self.pidx_np.copy(),
        }
        if len(done_rows):
            out["final_obs"] = obs[done_rows].copy()
            self._begin(done_rows)  # new pool indices, tasks and keys for the ended rows
            mask = torch.zeros(self.n, dtype=torch.bool, device=core.device)
            mask[torch.as_tensor(done_rows, device=core.device)] = True
            self.state = self.state.where(mask, core.start(self.pidx))  # one batched gather + select
            goals = self.goal[torch.as_tensor(done_rows, device=core.device)].cpu().numpy()
            obs[done_rows] = core.with_goal(core.obs0[self.pidx_np[done_rows]], goals)
        return out

    def images(self) -> list[np.ndarray]:
        frames = self.core.frames(self.state).cpu().numpy()
        goals = self.core.goal_images(self.pidx_np)
        return [np.concatenate([f, g], axis=1) for f, g in zip(frames, goals, strict=True)]


def _core(checkpoint: Any, head: Any, device: Any, options: dict[str, Any]) -> DreamCore:
    if isinstance(checkpoint, DreamCore):
        return checkpoint
    if checkpoint is None:
        raise ValueError("the dream needs checkpoint=PATH or a LatentDynamics")
    return DreamCore(checkpoint, DreamConfig(**options), head=head, device=device)


class DreamVecEnv(VecEnv):
    """``num_envs`` dreams stepped by one batched model call: an SB3 ``VecEnv``.

    Same-step auto-reset: an ended env's ``infos[i]`` holds ``terminal_observation`` and
    ``TimeLimit.truncated``, and the returned observation is already its next episode's first.
    Every ``infos[i]`` has ``distance`` and ``is_success``. Works under ``VecMonitor``,
    ``VecTransposeImage`` and ``evaluate_policy``. Seed with ``seed(s)`` before ``reset()``:
    env ``i`` then behaves as ``gym.make("worldmodel/Dream-v0", ...)`` reset with ``seed=s + i``.

    Args:
        model: a checkpoint path or a ``LatentDynamics`` (or a ``DreamCore`` to share its pool).
        num_envs: batch size.
        render_mode: ``None`` or ``"rgb_array"`` (``get_images``: frame | goal per env).
        head, device, **options: as ``DreamEnv``.
    """

    def __init__(
        self,
        model: Any,
        num_envs: int,
        *,
        render_mode: str | None = None,
        head: Any = None,
        device: Any = "auto",
        **options: Any,
    ) -> None:
        self.core = _core(model, head, device, options)
        self.render_mode = render_mode
        self._batch = _Batch(self.core, num_envs)
        obs_space = self.core.observation_space()
        super().__init__(num_envs, obs_space, gym.spaces.Box(-1.0, 1.0, (4,), np.float32))
        self._actions: np.ndarray | None = None

    def reset(self) -> VecEnvObs:
        obs = self._batch.reset(self._seeds)
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [{} for _ in range(self.num_envs)]
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        out = self._batch.step(self._actions)
        dist, success = out["distance"], out["is_success"]
        infos: list[dict[str, Any]] = [
            {"distance": float(d), "is_success": bool(s)}
            for d, s in zip(dist.tolist(), success.tolist(), strict=True)
        ]
        for j, i in enumerate(out["done_rows"]):
            infos[i]["terminal_observation"] = out["final_obs"][j]
            infos[i]["TimeLimit.truncated"] = bool(out["truncated"][i] and not out["terminated"][i])
            self.reset_infos[i] = {}
        dones = out["terminated"] | out["truncated"]
        return out["obs"], out["reward"].astype(np.float32), dones, infos

    def close(self) -> None:
        pass

    def get_images(self) -> Sequence[np.ndarray | None]:
        return self._batch.images()

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        idx = self._get_indices(indices)
        if attr_name == "render_mode":
            return [self.render_mode for _ in idx]
        return [
            getattr(self.core.config, attr_name)
            if hasattr(self.core.config, attr_name)
            else getattr(self, attr_name)
            for _ in idx
        ]

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        raise AttributeError(f"DreamVecEnv: envs share one model and config; cannot set {attr_name!r}")

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs) -> list[Any]:
        raise AttributeError(f"DreamVecEnv has no per-env objects to call {method_name!r} on")

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]


class DreamVectorEnv(VectorEnv):
    """The Gymnasium ``VectorEnv`` face of the batched dream (``AutoresetMode.SAME_STEP``).

    ``step`` returns arrays; ``infos`` is a dict of arrays with ``_key`` masks: ``distance``,
    ``is_success`` every step, and for ended envs ``final_obs`` (object array) and
    ``final_info``. ``reset(seed=s)`` seeds env ``i`` with ``s + i`` (or a list of seeds).
    """

    metadata: ClassVar[dict] = {
        "autoreset_mode": AutoresetMode.SAME_STEP,
        "render_modes": ["rgb_array"],
        "render_fps": 10,
    }

    def __init__(
        self,
        num_envs: int,
        checkpoint: Any = None,
        *,
        render_mode: str | None = None,
        head: Any = None,
        device: Any = "auto",
        **options: Any,
    ) -> None:
        self.core = _core(checkpoint, head, device, options)
        self._batch = _Batch(self.core, num_envs)
        self.num_envs = num_envs
        self.render_mode = render_mode
        self.single_observation_space = self.core.observation_space()
        self.single_action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
        self.observation_space = gym.vector.utils.batch_space(self.single_observation_space, num_envs)
        self.action_space = gym.vector.utils.batch_space(self.single_action_space, num_envs)

    def reset(self, *, seed: int | Sequence[int | None] | None = None, options: dict | None = None):
        if seed is None or isinstance(seed, (int, np.integer)):
            seeds = [None if seed is None else int(seed) + i for i in range(self.num_envs)]
        else:
            seeds = list(seed)
            if len(seeds) != self.num_envs:
                raise ValueError(f"reset: {len(seeds)} seeds for {self.num_envs} envs")
        if seed is not None:
            self._np_random, self._np_random_seed = seeding.np_random(seeds[0])
        return self._batch.reset(seeds), {}

    def step(self, actions: Any):
        out = self._batch.step(actions)
        n, done = self.num_envs, out["terminated"] | out["truncated"]
        infos: dict[str, Any] = {
            "distance": out["distance"],
            "_distance": np.ones(n, bool),
            "is_success": out["is_success"],
            "_is_success": np.ones(n, bool),
        }
        if len(out["done_rows"]):
            final_obs = np.full(n, None, dtype=object)
            for j, i in enumerate(out["done_rows"]):
                final_obs[i] = out["final_obs"][j]
            infos.update(
                final_obs=final_obs,
                _final_obs=done,
                _final_info=done,
                final_info={
                    "distance": out["distance"],
                    "_distance": done,
                    "is_success": out["is_success"],
                    "_is_success": done,
                },
            )
        return out["obs"], out["reward"].astype(np.float32), out["terminated"], out["truncated"], infos

    def render(self) -> tuple[np.ndarray, ...] | None:
        return tuple(self._batch.images())

    def close_extras(self, **kwargs: Any) -> None:
        pass


def make_dream_vector_env(
    num_envs: int = 1, checkpoint: Any = None, *, max_episode_steps: int | None = None, **kwargs: Any
) -> DreamVectorEnv:
    """``vector_entry_point`` of ``worldmodel/Dream-v0`` (``gymnasium.make_vec``).

    ``max_episode_steps`` (from ``make_vec``) is taken as ``horizon`` when that is not given.
    """
    if max_episode_steps is not None and "horizon" not in kwargs:
        kwargs["horizon"] = int(max_episode_steps)
    return DreamVectorEnv(num_envs, checkpoint, **kwargs)


__all__ = ["DreamEnv", "DreamVecEnv", "DreamVectorEnv", "make_dream_vector_env"]
