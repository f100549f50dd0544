"""Batched dreams: ``DreamVecEnv`` (an SB3 ``VecEnv``) and ``DreamVectorEnv`` (a Gymnasium
``VectorEnv``, what ``gymnasium.make_vec("worldmodel/Dream-v0", num_envs=N)`` returns).

Both keep all ``N`` episodes in one ``State`` on the model's device and advance them with one
``model.step`` per env step. Finished episodes are replaced in the same step (SB3 semantics,
Gymnasium ``AutoresetMode.SAME_STEP``): their fresh initial states are a gather from the
``DreamCore`` pool scattered into the batch, their first observations come from the pool's
precomputed observations on the host. Per step the only device → host copies are the
observations and one ``(N, K)`` float tensor of rewards, distances and the state head's readings.

Seeding: env ``i`` has its own ``np.random.Generator``, seeded ``seed + i`` at a seeded reset
(SB3's ``VecEnv.seed`` convention), and draws its episodes exactly as a single ``DreamEnv`` does
(``DreamCore.draw``); the model's noise is per row (``_noise.py``). So a ``DreamVecEnv`` seeded
``s`` reproduces ``N`` single ``Dream-v0`` envs seeded ``s + i`` stepped in lockstep (e.g. SB3's
``DummyVecEnv``), up to the last bits of batched vs. single-sample convolutions.

Infos: the task's keys (``worldmodel.envs.task.INFO_KEYS``, as ``Dream-v0`` and
``PushTable-v0``) and ``pool_index``; SB3's ``reset_infos`` hold each episode's reset info, so
``MPCAgent`` (``worldmodel.planning``) reads its goal from them and plans inside the dream
(``env_method("proprioception" | "render_goal" | "compute_reward")`` answer as a
``DummyVecEnv`` of ``Dream-v0`` would).

Start contexts of the caller's own (Dyna/MBPO-style branched rollouts from a replay buffer):
``DreamVecEnv.reset_from(contexts)`` (or SB3's ``set_options`` then ``reset()``) and
``DreamVectorEnv.reset(options=...)`` take ``Dream-v0``'s ``reset`` options
(``dream.CONTEXT_KEYS``) batched, with a leading ``num_envs`` axis, or one dict per env
(None: a pool context).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any, ClassVar

import gymnasium as gym
import numpy as np
import torch
from gymnasium.utils import seeding
from gymnasium.vector import AutoresetMode, VectorEnv
from stable_baselines3.common.vec_env.base_vec_env import VecEnv, VecEnvObs, VecEnvStepReturn

from worldmodel.dynamics.base import State
from worldmodel.envs.dream import DreamEnv, _row, row_info
from worldmodel.envs.dream_config import DreamConfig
from worldmodel.envs.dream_core import DreamCore
from worldmodel.envs.dream_inputs import check_actions
from worldmodel.envs.render import warn_no_render_mode


class _BatchedEpisodes:
    """The batched episode state both vector APIs share."""

    def __init__(self, core: DreamCore, num_envs: int) -> None:
        if num_envs < 1:
            raise ValueError(f"num_envs must be >= 1, got {num_envs}")
        self.core, self.n, dev = core, num_envs, core.device
        self.rngs: list[np.random.Generator] = [seeding.np_random(None)[0] for _ in range(num_envs)]
        self.counters = torch.zeros(num_envs, dtype=torch.long, device=dev)
        self.t = np.zeros(num_envs, np.int64)
        self.horizon = core.config.episode_steps
        self.ep = None
        self.state = None
        self.readout: dict[str, np.ndarray] = {}
        self.calls = 0

    def reset(
        self, seeds: Sequence[int | None], contexts: Sequence[dict | None] | None = None
    ) -> tuple[Any, dict[str, np.ndarray]]:
        """Start every env (``contexts[i]``: a caller's start context, None: the pool); returns
        the observations and the reset infos (``info_arrays``)."""
        contexts = list(contexts) if contexts is not None else [None] * self.n
        checked = []
        for i, c in enumerate(contexts):
            try:
                checked.append(self.core.check_context(c) if c else None)
            except ValueError as err:
                raise ValueError(f"env {i}: {err}") from None
        for i, s in enumerate(seeds):
            if s is not None:
                self.rngs[i] = seeding.np_random(int(s))[0]
        draws = [self.core.draw(self.rngs[i], checked[i]) for i in range(self.n)]
        self.ep, self.state, obs0, self.readout = self.core.begin(draws, checked)
        self.counters.zero_()
        self.t[:] = 0
        return self.core.observation(obs0, self.readout, self.ep), self.core.info_arrays(
            self.readout, self.ep
        )

    def step(self, actions: Any) -> dict[str, Any]:
        """Advance all envs; returns host arrays (see the keys below)."""
        if self.state is None:
            raise RuntimeError("step() called before reset()")
        core, ep = self.core, self.ep
        a = torch.from_numpy(check_actions(actions, (self.n, 4))).to(core.device)
        self.calls += 1
        self.state = core.step(self.state, a, ep.dev["keys"], self.counters, seed=self.calls)
        core.move_arm(ep, a)
        self.counters += 1
        self.t += 1
        obs = core.observe_episodes(self.state, ep).cpu().numpy()
        r = core.readout(self.state, ep)
        info = core.info_arrays(r, ep)
        obs = core.observation(obs, r, ep)
        truncated = self.t >= self.horizon
        done_rows = np.flatnonzero(truncated)
        out = {
            "obs": obs,
            "reward": r["reward"],
            "info": info,
            "terminated": np.zeros(self.n, bool),
            "truncated": truncated,
            "done_rows": done_rows,
            "final_obs": None,
            "reset_info": None,
        }
        self.readout = r
        if len(done_rows):
            out["final_obs"] = _take(obs, done_rows)
            draws = [core.draw(self.rngs[i]) for i in done_rows]
            new, state, obs0, start = core.begin(draws, [None] * len(done_rows))
            ep.assign(done_rows, new)
            rows = torch.as_tensor(done_rows, device=core.device)
            self.state = _scatter(self.state, rows, state)
            self.counters[rows] = 0
            self.t[done_rows] = 0
            _put(obs, done_rows, core.observation(obs0, start, new))
            self.readout = {k: v.copy() for k, v in r.items()}
            for k, v in start.items():
                self.readout[k][done_rows] = v
            out["reset_info"] = core.info_arrays(start, new)
        return out

    def ee_now(self, i: int) -> np.ndarray:
        if "ee_pos" not in self.readout:
            raise ValueError("this dream has no end effector to report (no state head with an arm branch)")
        return np.nan_to_num(self.readout["ee_pos"][i]).astype(np.float32)

    def goal_image(self, i: int) -> np.ndarray:
        return self.ep.dev["goal_image"][i].cpu().numpy()

    def images(self) -> list[np.ndarray]:
        frames = self.core.frames(self.state).cpu().numpy()
        goals = self.ep.dev["goal_image"].cpu().numpy()
        return [np.concatenate([f, g], axis=1) for f, g in zip(frames, goals, strict=True)]


def _scatter(state: State, rows: torch.Tensor, new: State) -> State:
    """``state`` with rows ``rows`` replaced by ``new``'s (dtypes promoted, as ``torch.where``:
    a bf16 model's stepped state next to its float32 initial one)."""
    out = {}
    for k, v in state.items():
        dtype = torch.promote_types(v.dtype, new[k].dtype)
        out[k] = v.to(dtype).index_copy(0, rows, new[k].to(dtype))
    return State(out)


def _take(obs: Any, rows: np.ndarray) -> Any:
    return {k: v[rows].copy() for k, v in obs.items()} if isinstance(obs, dict) else obs[rows].copy()


def _put(obs: Any, rows: np.ndarray, new: Any) -> None:
    if isinstance(obs, dict):
        for k, v in obs.items():
            v[rows] = new[k]
    else:
        obs[rows] = new


def split_contexts(contexts: Any, num_envs: int) -> list[dict | None]:
    """Per-env start contexts from a dict of batched arrays (leading ``num_envs``) or a sequence
    of ``num_envs`` dicts (None: a pool context)."""
    if isinstance(contexts, dict):
        out: list[dict] = [{} for _ in range(num_envs)]
        for k, v in contexts.items():
            a = np.asarray(v)
            if a.ndim == 0 or len(a) != num_envs:
                raise ValueError(
                    f"options[{k!r}]: batched start contexts need a leading axis of num_envs={num_envs}, "
                    f"got shape {a.shape}"
                )
            for i in range(num_envs):
                out[i][k] = a[i]
        return out
    seq = list(contexts)
    if len(seq) != num_envs:
        raise ValueError(f"contexts: {len(seq)} start contexts for {num_envs} envs")
    return [None if c is None else dict(c) for c in seq]


def _core(checkpoint: Any, head: Any, device: Any, options: dict[str, Any]) -> DreamCore:
    if isinstance(checkpoint, DreamCore):
        return checkpoint
    if checkpoint is None:
        raise ValueError("the dream needs checkpoint=PATH or a LatentDynamics")
    return DreamCore(checkpoint, DreamConfig(**options), head=head, device=device)


class _BatchedDream:
    """The construction both vector faces share: the ``DreamCore`` (from ``checkpoint``, ``head``,
    ``device`` and ``DreamConfig`` ``options``), the render mode and the batched episodes; each face
    sets its spaces in ``_init_spaces`` and maps its old call forms in ``_old_arguments``."""

    def __init__(
        self,
        checkpoint: Any = None,
        num_envs: int = 1,
        *,
        render_mode: str | None = None,
        head: Any = None,
        device: Any = "auto",
        **options: Any,
    ) -> None:
        checkpoint, num_envs = self._old_arguments(checkpoint, num_envs, options)
        self.core = _core(checkpoint, head, device, options)
        self.render_mode = render_mode
        self._batch = _BatchedEpisodes(self.core, num_envs)
        self._init_spaces(
            num_envs, self.core.observation_space(), gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
        )

    def _old_arguments(self, checkpoint: Any, num_envs: Any, options: dict[str, Any]) -> tuple[Any, Any]:
        """``(checkpoint, num_envs)`` from a deprecated call form (warned at the caller), else as given."""
        return checkpoint, num_envs

    def _init_spaces(self, num_envs: int, obs_space: gym.Space, action_space: gym.spaces.Box) -> None:
        raise NotImplementedError  # pragma: no cover


class DreamVecEnv(_BatchedDream, VecEnv):
    """``num_envs`` dreams stepped by one batched model call: an SB3 ``VecEnv``.

    Same-step auto-reset: an ended env's ``infos[i]`` holds ``terminal_observation`` and
    ``TimeLimit.truncated``, and the returned observation is already its next episode's first;
    ``reset_infos[i]`` is then that episode's reset info (a new dict per episode). Every
    ``infos[i]`` has the task's info keys (``Dream-v0``'s, see ``worldmodel.envs.task``). Works
    under ``VecMonitor``, ``VecTransposeImage``, ``evaluate_policy``, SB3's ``HerReplayBuffer``
    (``goal_conditioned=True``) and ``MPCAgent``. Seed with ``seed(s)`` before ``reset()``: env
    ``i`` then behaves as ``gym.make("worldmodel/Dream-v0", ...)`` reset with ``seed=s + i``.
    Episodes last ``horizon`` steps (default ``MAX_EPISODE_STEPS``, 50).

    Args:
        checkpoint: a checkpoint path or a loaded ``LatentDynamics`` (or a ``DreamCore`` to share
            its pool), as every dream takes first.
        num_envs: batch size.
        render_mode: ``None`` or ``"rgb_array"`` (``get_images``: frame | goal per env).
        head, device, **options: as ``DreamEnv``.
    """

    def _old_arguments(self, checkpoint: Any, num_envs: Any, options: dict[str, Any]) -> tuple[Any, Any]:
        if "model" in options:  # the old name of the first argument
            warnings.warn("DreamVecEnv(model=...) is now DreamVecEnv(checkpoint=...)", DeprecationWarning, 3)
            checkpoint = options.pop("model")
        return checkpoint, num_envs

    def _init_spaces(self, num_envs: int, obs_space: gym.Space, action_space: gym.spaces.Box) -> None:
        VecEnv.__init__(self, num_envs, obs_space, action_space)
        self._actions: np.ndarray | None = None

    @property
    def horizon(self) -> int:
        """Steps per episode; an env reaching it is truncated and restarts."""
        return self._batch.horizon

    def reset(self) -> VecEnvObs:
        """Start every env: from the contexts given by ``set_options`` (one ``Dream-v0`` options
        dict per env, or one for all), else from the pool."""
        contexts = [o or None for o in self._options]
        obs, info = self._batch.reset(self._seeds, contexts)
        self._reset_seeds()
        self._reset_options()
        self.reset_infos = [row_info(info, i) for i in range(self.num_envs)]
        return obs

    def reset_from(self, contexts: Any) -> VecEnvObs:
        """Reset every env from a caller's start context: ``contexts`` is a dict of ``Dream-v0``'s
        ``reset`` options batched with a leading ``num_envs`` axis (e.g. ``frames`` uint8
        ``(N, T0, H, W, 3)``, ``actions`` ``(N, T0 - 1, 4)``, ``objects``, ``goal`` ``(N, 3)``,
        ``target`` ``(N,)``), or a list of ``num_envs`` such dicts unbatched (None: a pool context).
        Seeds set by ``seed()`` apply, as at ``reset()``. Returns the first observations."""
        self.set_options(split_contexts(contexts, self.num_envs))
        return self.reset()

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        out = self._batch.step(self._actions)
        infos = [row_info(out["info"], i) for i in range(self.num_envs)]
        for j, i in enumerate(out["done_rows"]):
            infos[i]["terminal_observation"] = _row(out["final_obs"], j)
            infos[i]["TimeLimit.truncated"] = bool(out["truncated"][i] and not out["terminated"][i])
            self.reset_infos[i] = row_info(out["reset_info"], j)
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
        """What ``Dream-v0``'s method of that name returns, per env: ``compute_reward``
        (``goal_conditioned``), ``proprioception`` (the dreamed end effector now) and
        ``render_goal`` (the goal image)."""
        idx = self._get_indices(indices)
        if method_name == "compute_reward" and self.core.config.goal_conditioned:
            return [self.core.compute_reward(*method_args, **method_kwargs) for _ in idx]
        if method_name == "proprioception":
            return [self._batch.ee_now(i) for i in idx]
        if method_name == "render_goal":
            return [self._batch.goal_image(i) for i in idx]
        raise AttributeError(
            f"DreamVecEnv has no per-env objects to call {method_name!r} on "
            "(it answers compute_reward, proprioception and render_goal)"
        )

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False for _ in self._get_indices(indices)]


class DreamVectorEnv(_BatchedDream, VectorEnv):
    """The Gymnasium ``VectorEnv`` face of the batched dream (``AutoresetMode.SAME_STEP``).

    ``step`` returns arrays; ``infos`` is a dict of arrays with ``_key`` masks holding the task's
    info keys (``Dream-v0``'s, stacked as ``SyncVectorEnv`` stacks them); as in Gymnasium's
    same-step mode, an ended env's row holds its next episode's reset info and ``final_obs``
    (object array) and ``final_info`` hold the ended step's. ``reset(seed=s)`` seeds env ``i``
    with ``s + i`` (or a list of seeds); ``reset(options=...)`` takes ``Dream-v0``'s start-context
    options batched with a leading ``num_envs`` axis (``DreamVecEnv.reset_from``).
    """

    metadata: ClassVar[dict] = {
        "autoreset_mode": AutoresetMode.SAME_STEP,
        "render_modes": ["rgb_array"],
        "render_fps": 10,
    }

    def _old_arguments(self, checkpoint: Any, num_envs: Any, options: dict[str, Any]) -> tuple[Any, Any]:
        if isinstance(checkpoint, int) and not isinstance(num_envs, int):  # the old order
            warnings.warn(
                "DreamVectorEnv(num_envs, checkpoint) is now DreamVectorEnv(checkpoint, num_envs), as "
                "every dream takes its checkpoint first",
                DeprecationWarning,
                3,
            )
            return num_envs, checkpoint
        return checkpoint, num_envs

    def _init_spaces(self, num_envs: int, obs_space: gym.Space, action_space: gym.spaces.Box) -> None:
        self.num_envs = num_envs
        self.single_observation_space = obs_space
        self.single_action_space = action_space
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
        contexts = split_contexts(options, self.num_envs) if options else None
        obs, info = self._batch.reset(seeds, contexts)
        return obs, _masked(info, np.ones(self.num_envs, bool))

    def step(self, actions: Any):
        out = self._batch.step(actions)
        n, done = self.num_envs, out["terminated"] | out["truncated"]
        infos = _masked(out["info"], np.ones(n, bool))
        if len(out["done_rows"]):
            rows = out["done_rows"]
            final_obs = np.full(n, None, dtype=object)
            for j, i in enumerate(rows):
                final_obs[i] = _row(out["final_obs"], j)
            for k, v in out["reset_info"].items():  # Gymnasium's same-step rows: the new episode's
                infos[k] = infos[k].copy()
                infos[k][rows] = v
            infos.update(final_obs=final_obs, _final_obs=done, _final_info=done)
            infos["final_info"] = _masked(out["info"], done)
        return out["obs"], out["reward"].astype(np.float32), out["terminated"], out["truncated"], infos

    def render(self) -> tuple[np.ndarray, ...] | None:
        if self.render_mode is None:
            warn_no_render_mode(self)
            return None
        return tuple(self._batch.images())

    def close_extras(self, **kwargs: Any) -> None:
        pass


def _masked(arrays: dict[str, np.ndarray], mask: np.ndarray) -> dict[str, Any]:
    """Gymnasium vector infos: every key with its ``_key`` mask."""
    out: dict[str, Any] = {}
    for k, v in arrays.items():
        out[k] = v
        out[f"_{k}"] = mask
    return out


def make_dream_vector_env(
    num_envs: int = 1, checkpoint: Any = None, *, max_episode_steps: int | None = None, **kwargs: Any
) -> DreamVectorEnv:
    """``vector_entry_point`` of ``worldmodel/Dream-v0`` (``gymnasium.make_vec``).

    ``max_episode_steps`` (from ``make_vec``: the registered 50 unless given) is taken as
    ``horizon`` when that is not given.
    """
    if max_episode_steps is not None and kwargs.get("horizon") is None:
        kwargs["horizon"] = int(max_episode_steps)
    return DreamVectorEnv(checkpoint, num_envs, **kwargs)


__all__ = ["DreamEnv", "DreamVecEnv", "DreamVectorEnv", "make_dream_vector_env", "split_contexts"]
