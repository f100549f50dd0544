"""Every shipped model works where SVG does: the dream env (single and batched), the planner's
objectives and MPC in the real sim. Tiny presets, 16-px frames, a few steps each."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from dream_fixtures import drive_until_done
from gymnasium.utils.env_checker import check_env
from gymnasium.wrappers import TimeLimit
from stable_baselines3.common.vec_env import DummyVecEnv

import worldmodel  # noqa: F401 - registers the env ids
from worldmodel.dynamics import make
from worldmodel.dynamics.registry import builtin
from worldmodel.envs import DreamVecEnv
from worldmodel.envs.push_table import PushTableEnv
from worldmodel.planning import CEM, CEMConfig, MPCAgent
from worldmodel.planning.objectives import GoalImage

NAMES = [n for n in builtin() if n != "svg-det"]
DREAM = {"reward": "goal-image", "pool_size": 4, "horizon": 6, "image_size": 16}


@pytest.fixture(scope="module", params=NAMES)
def model(request):
    torch.manual_seed(0)
    return make(request.param, preset="tiny", image_size=16).eval()


def test_dream_env_passes_check_env_and_is_seeded(model):
    env = gym.make("worldmodel/Dream-v0", checkpoint=model, **DREAM).unwrapped
    check_env(env, skip_render_check=True)
    runs = []
    for _ in range(2):
        obs, _ = env.reset(seed=3)
        frames = [obs]
        for t in range(4):
            obs, *_ = env.step(np.full(4, 0.5 * (-1) ** t, np.float32))
            frames.append(obs)
        runs.append(np.stack(frames))
    np.testing.assert_array_equal(runs[0], runs[1])
    assert runs[0].shape == (5, 16, 16, 3) and runs[0].dtype == np.uint8


def test_batched_dream_matches_single_envs(model):
    vec = DreamVecEnv(model, 3, **DREAM)
    vec.seed(5)
    obs = vec.reset()
    singles = [gym.make("worldmodel/Dream-v0", checkpoint=model, **DREAM) for _ in range(3)]
    single_obs = np.stack([e.reset(seed=5 + i)[0] for i, e in enumerate(singles)])
    assert np.abs(obs.astype(int) - single_obs.astype(int)).max() <= 1
    actions = np.random.default_rng(0).uniform(-1, 1, (3, 4)).astype(np.float32)
    obs, rewards, _, _ = vec.step(actions)
    stepped = [e.step(a) for e, a in zip(singles, actions, strict=True)]
    np.testing.assert_allclose(rewards, [s[1] for s in stepped], atol=2e-3)


def test_mpc_with_goal_image_runs_in_the_real_sim(model):
    venv = DummyVecEnv([lambda: TimeLimit(PushTableEnv(image_size=16), max_episode_steps=3)])
    planner = CEM(CEMConfig(population=6, elites=2, iterations=1, horizon=2), action_dim=4)
    agent = MPCAgent(model, planner, GoalImage("pixels"), seed=0)
    drive_until_done(agent, venv)
