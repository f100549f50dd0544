"""The whole loop on a tiny learned task: a world model trained with its state head on recorded
moving-square episodes, then MPC with its own reward beats random actions (and the same model
untrained) in a world it never saw, judged by the world's own success rule."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import DummyVecEnv
from train_stubs import fit

from worldmodel import dynamics
from worldmodel.data.synthetic import _BACKGROUND, _PALETTE, moving_square
from worldmodel.envs.task import TaskSpec
from worldmodel.planning import CEM, CEMConfig, MPCAgent, RandomAgent, run_episodes
from worldmodel.planning.objectives import LearnedReward

SIZE, SQUARE, TOLERANCE = 16, 3, 0.1


class SquareWorld(gym.Env):
    """Reach in the moving-square world: move the square (the "arm", as in ``moving_square``:
    ``round(2 · action)`` pixels a step) to a goal position; success within ``TOLERANCE``."""

    observation_space = gym.spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8)
    action_space = gym.spaces.Box(-1, 1, (4,), np.float32)

    def _centre(self) -> np.ndarray:
        return np.array([*((self.pos + SQUARE / 2) / SIZE), 0.0], np.float32)

    def _obs(self) -> np.ndarray:
        frame = np.full((SIZE, SIZE, 3), _BACKGROUND, np.uint8)
        x, y = self.pos
        frame[y : y + SQUARE, x : x + SQUARE] = self.colour
        return frame

    def _info(self) -> dict:
        centre = self._centre()
        d = float(np.linalg.norm(centre - self.goal))
        info = {"ee_pos": centre, "object_pos": centre[None], "target": 0, "goal_pos": self.goal}
        return {**info, "distance": d, "is_success": d < TOLERANCE}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        r = self.np_random
        self.pos = r.integers(0, SIZE - SQUARE + 1, 2)
        self.colour = _PALETTE[int(r.integers(len(_PALETTE)))].numpy()
        g = r.integers(0, SIZE - SQUARE + 1, 2)
        self.goal = np.array([*((g + SQUARE / 2) / SIZE), 0.0], np.float32)
        self.t = 0
        return self._obs(), self._info()

    def step(self, action):
        move = np.round(np.asarray(action[:2], np.float64) * 2).astype(int)
        self.pos = np.clip(self.pos + move, 0, SIZE - SQUARE)
        self.t += 1
        return self._obs(), 0.0, False, self.t >= 10, self._info()

    def proprioception(self) -> np.ndarray:
        return self._centre()


def _train(steps: int):
    torch.manual_seed(0)
    data = moving_square(256, 8, image_size=SIZE, square=SQUARE, seed=0)
    model = dynamics.make("svg-lp", preset="tiny", image_size=SIZE, state_head=True, n_future=6)
    return fit(model, data, steps)


def _plan(model, venv) -> dict:
    planner = CEM(CEMConfig.cem(population=64, elites=8, horizon=4, iterations=2), 4)
    objective = LearnedReward(model.state_head, task=TaskSpec(name="reach", reach_tolerance=TOLERANCE))
    return run_episodes(MPCAgent(model, planner, objective, 1, seed=0), venv, 8, seed=0)


@pytest.fixture(scope="module")
def venv():
    env = DummyVecEnv([SquareWorld for _ in range(4)])
    yield env
    env.close()


def test_a_learned_model_plans_reach_and_random_does_not(venv):
    learned = _plan(_train(120), venv)
    untrained = _plan(_train(0), venv)
    random = run_episodes(RandomAgent(4, seed=0), venv, 8, seed=0)
    assert learned["episodes"] == untrained["episodes"] == random["episodes"] == 8
    assert learned["success_rate"] >= 0.75  # measured: 8/8
    assert learned["ci95"][0] > random["ci95"][1]  # the 95 % intervals do not overlap
    assert untrained["success_rate"] <= 0.25 and random["success_rate"] <= 0.25  # measured: 0/8, 0/8
    assert learned["final_distance"] < 0.25 * random["final_distance"]
