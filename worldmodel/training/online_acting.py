"""Acting in the real sim during the online loop: the exploring planner agent, the envs it runs
in, and the recording of its episodes.

The agent is ``MPCAgent`` + ``LearnedReward`` on the model's own state head (as ``worldmodel
plan`` builds it). While collecting, the executed actions are the plan's plus Gaussian
exploration noise (``NoisyMPC``: PlaNet's 0.3 by default; clipped to [-1, 1]; the agent's context
holds the executed action); evaluation acts without noise. Each collected episode is recorded as
``worldmodel.envs.policy.rollout`` records one (``record_episodes``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from worldmodel.planning import MPCAgent
from worldmodel.training.online_config import OnlineConfig


def episode_seed(*values: int) -> int:
    """A 31-bit seed from integers (stable across runs and platforms)."""
    return int(np.random.SeedSequence([int(v) for v in values]).generate_state(1)[0] >> 1)


class NoisyMPC(MPCAgent):
    """``MPCAgent`` that explores: ``predict(..., deterministic=False)`` adds Gaussian noise of std
    ``noise`` to the planned actions, clipped to [-1, 1], and keeps the executed (noisy) action as
    the one the next anchor's context holds (the real frames follow it, not the plan).
    ``deterministic=True`` (what SB3's ``evaluate_policy`` passes) acts exactly as ``MPCAgent``."""

    def __init__(self, *args: Any, noise: float = 0.0, noise_seed: int = 0, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if not (np.isfinite(noise) and noise >= 0):
            raise ValueError(f"noise must be a finite number >= 0, got {noise}")
        self.noise = float(noise)
        self.noise_rng = np.random.default_rng(noise_seed)

    def predict(self, observation, state=None, episode_start=None, deterministic=True):
        """``MPCAgent.predict``; with ``deterministic=False`` the actions carry the noise."""
        actions, _ = super().predict(observation, state, episode_start, deterministic)
        if deterministic or self.noise == 0:
            return actions, None
        noisy = actions + self.noise * self.noise_rng.standard_normal(actions.shape)
        noisy = np.clip(noisy, -1.0, 1.0).astype(np.float32)
        for slot, row in zip(self._slots, noisy.reshape(len(self._slots), -1), strict=True):
            slot.pending = row  # what was executed: the context of the next plan
        return noisy, None


def make_agent(cfg: OnlineConfig, model: Any, seed: int, noise: float, check: bool = False) -> Any:
    """The planner agent of ``worldmodel plan`` on the model's own state head, with ``noise``;
    ``check``: its ``prediction_check`` on object tasks (``worldmodel.planning.prediction_check``)."""
    from worldmodel.envs.push_table import REST_ACTION
    from worldmodel.planning import CEM, CEMConfig, LearnedReward
    from worldmodel.planning.prediction_check import checkable

    make = CEMConfig.icem if cfg.planner == "icem" else CEMConfig.cem
    planner = CEM(
        make(
            population=cfg.population, elites=cfg.elites, horizon=cfg.horizon, iterations=cfg.plan_iterations
        ),
        model.config.action_dim,
    )
    objective = LearnedReward(
        model.state_head,
        task=cfg.spec(),
        reach_weight=cfg.reach_weight,
        temperature=cfg.temperature,
        sample=cfg.temperature > 0,
    )
    return NoisyMPC(
        model,
        planner,
        objective,
        cfg.replan_every,
        seed=seed,
        rest_action=REST_ACTION,
        noise=noise,
        noise_seed=episode_seed(seed, 7),
        check_predictions=check and checkable(objective),
    )


def make_venv(cfg: OnlineConfig, image_size: int, num_objects: int | None, steps: int):
    import gymnasium as gym
    from stable_baselines3.common.vec_env import DummyVecEnv

    import worldmodel

    kw = dict(image_size=image_size, max_episode_steps=steps, task=cfg.task)
    kw.update(recorded_k=cfg.recorded_k, reach_weight=cfg.reach_weight, push_offset=cfg.push_offset)
    kw.update(num_objects=num_objects)
    return DummyVecEnv([lambda: gym.make(worldmodel.PUSH_TABLE_ID, **kw) for _ in range(cfg.envs)])


def record_episodes(
    agent: Any, venv: Any, seed: int, seq_len: int, deterministic: bool = False
) -> list[dict]:
    """Run ``agent`` for one episode of ``seq_len`` steps in each env of ``venv`` (an SB3 VecEnv
    over PushTable whose time limit is ``seq_len``; env ``i`` reset with seed ``seed + i``) and
    record them as ``worldmodel.envs.policy.rollout`` does.

    Returns one dict per env: frames uint8 ``(T, H, W, 3)``, actions float32 ``(T, 4)`` (the
    executed ones), states float32 ``(T, 3)``, objects float32 ``(T, MAX_OBJECTS, 3)`` (NaN rows for
    absent objects), goal float32 ``(3,)``, target / num_objects int64 ``()``, pushed bool ``()``
    (False: no scripted push), plus ``is_success`` and ``distance`` at the last step (not stored).
    ``frames[t]`` is observed, then ``actions[t]`` applied; the frame after the last is not kept.
    """
    from worldmodel.envs.scene import MAX_OBJECTS

    n = venv.num_envs
    agent.attach(venv)
    venv.seed(seed)
    obs = venv.reset()
    infos = [dict(i) for i in venv.reset_infos]
    frames = np.empty((n, seq_len, *obs.shape[1:]), np.uint8)
    actions = np.empty((n, seq_len, 4), np.float32)
    states = np.empty((n, seq_len, 3), np.float32)
    objects = np.full((n, seq_len, MAX_OBJECTS, 3), np.nan, np.float32)
    start = infos
    for t in range(seq_len):
        frames[:, t] = obs
        for i, info in enumerate(infos):
            states[i, t] = info["ee_pos"]
            k = int(info["num_objects"])
            objects[i, t, :k] = np.asarray(info["object_pos"])[:k]
        act, _ = agent.predict(obs, episode_start=np.full(n, t == 0), deterministic=deterministic)
        actions[:, t] = act
        obs, _, dones, infos = venv.step(act)
        if t < seq_len - 1 and dones.any():
            raise ValueError(
                f"venv: an episode ended at step {t + 1} of {seq_len}; make it with a time limit of {seq_len}"
            )
    return [
        {
            "frames": frames[i],
            "actions": actions[i],
            "states": states[i],
            "objects": objects[i],
            "goal": np.asarray(start[i]["goal_pos"], np.float32),
            "target": np.array(start[i]["target"], np.int64),
            "num_objects": np.array(start[i]["num_objects"], np.int64),
            "pushed": np.array(False, np.bool_),
            "is_success": bool(infos[i]["is_success"]),
            "distance": float(infos[i]["distance"]),
        }
        for i in range(n)
    ]
