"""The planner's prediction check: its figures in closed form, and the MPC agent's readings of a
sim whose target moves by a known amount per step."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from dream_fixtures import noisy_tiny_svg

from worldmodel.dynamics.heads import ObjectHead
from worldmodel.planning import CEM, CEMConfig, LearnedReward, MPCAgent
from worldmodel.planning.prediction_check import PlanReading, PredictionCheck


def reading(t: int, real, estimate, predicted) -> PlanReading:
    return PlanReading(t, np.array(real, float), np.array(estimate, float), np.array(predicted, float))


def test_consecutive_plans_of_an_episode_pair_into_the_figures():
    check = PredictionCheck(replan_every=2)
    episode, other = object(), object()
    check.add(0, episode, reading(0, [0.0, 0.0], [0.03, 0.04], [0.03, 0.05]))
    check.add(0, episode, reading(2, [0.06, 0.08], [0.0, 0.0], [0.0, 0.0]))  # pairs with t=0
    check.add(0, episode, reading(5, [0.5, 0.5], [0.0, 0.0], [0.0, 0.0]))  # 3 steps later: no pair
    check.add(0, other, reading(7, [0.5, 0.5], [0.0, 0.0], [0.0, 0.0]))  # new episode: no pair
    check.add(1, episode, reading(7, [0.0, 0.0], [0.0, 0.0], [0.0, 0.0]))  # another env: first plan
    error = np.hypot(0.06 - 0.03, 0.08 - 0.05)  # predicted after the plan against the sim then
    expected = {"anchor_error": 0.05, "predicted_move": 0.01, "real_move": 0.1, "stays_put": 0.1}
    expected["error"] = error
    expected["direction"] = 0.8  # predicted move (0, 0.01), real (0.06, 0.08): cos = 0.08 / 0.1
    assert check.rows == [pytest.approx(expected)]
    summary = check.summary()
    assert (summary["pairs"], summary["moved"]) == (1, 1)
    assert summary["error_moved"] == pytest.approx(error) and summary["stays_put_moved"] == 0.1
    assert summary["direction_moved"] == pytest.approx(0.8)
    check.reset()
    assert check.summary()["pairs"] == 0 and np.isnan(check.summary()["error"])


class SimWithoutTarget(gym.Env):
    """Noise frames; the target slides ``speed`` m along x per step from (0.1, -0.05), and the env
    does not say so."""

    observation_space = gym.spaces.Box(0, 255, (16, 16, 3), np.uint8)
    action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
    speed = 0.01

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        objects = np.zeros((4, 3), np.float32)
        objects[0] = self._target()
        info = {"goal_pos": np.array([0.0, 0.0, 0.02], np.float32), "target": 0, "object_pos": objects}
        return self.observation_space.sample(), info

    def step(self, action):
        self.t += 1
        return self.observation_space.sample(), 0.0, False, self.t >= 6, {}

    def _target(self) -> np.ndarray:
        return np.array([0.1 + self.speed * self.t, -0.05, 0.02], np.float32)


class SlidingTarget(SimWithoutTarget):
    """The same sim, telling where its target is (as ``PushTableEnv.target_position``)."""

    def target_position(self) -> np.ndarray:
        return self._target()


def test_the_agent_reads_the_sim_at_every_plan():
    from stable_baselines3.common.vec_env import DummyVecEnv

    model = noisy_tiny_svg(image_size=16)
    head = ObjectHead(model.feature_dim, hidden=16)  # untrained: "the target is where it started"
    planner = CEM(CEMConfig(population=8, elites=2, horizon=3, iterations=1), 4)
    agent = MPCAgent(model, planner, LearnedReward(head, task="push"), 2, check_predictions=True)
    venv = DummyVecEnv([SlidingTarget])
    venv.seed(0)
    agent.attach(venv)
    obs = venv.reset()
    for _ in range(6):  # one episode: plans at t = 0, 2, 4
        obs, *_ = venv.step(agent.predict(obs)[0])
    rows, v = agent.prediction_check.rows, SlidingTarget.speed
    assert len(rows) == 2  # (0, 2) and (2, 4); the episode ended before a plan at t = 6
    for n, row in enumerate(rows):  # the head answers the start; the target is n * 2 * v past it
        assert row["anchor_error"] == pytest.approx(2 * n * v, abs=1e-6)
        assert row["predicted_move"] == 0.0 and row["direction"] == 0.0  # it expects nothing
        assert row["real_move"] == pytest.approx(2 * v, abs=1e-6) == row["stays_put"]
        assert row["error"] == pytest.approx(2 * (n + 1) * v, abs=1e-6)
    agent.reset_stats()
    assert agent.prediction_check.rows == []


def test_the_check_needs_an_object_task_and_a_sim_that_knows_the_target():
    from stable_baselines3.common.vec_env import DummyVecEnv

    model = noisy_tiny_svg(image_size=16)
    head = ObjectHead(model.feature_dim, hidden=16, end_effector=True)
    planner = CEM(CEMConfig(population=8, elites=2, horizon=3, iterations=1), 4)
    with pytest.raises(ValueError, match="push or recorded-goal"):
        MPCAgent(model, planner, LearnedReward(head, task="reach"), 1, check_predictions=True)
    agent = MPCAgent(model, planner, LearnedReward(head, task="push"), 1, check_predictions=True)
    venv = DummyVecEnv([SimWithoutTarget])
    agent.attach(venv)
    with pytest.raises(ValueError, match="no target_position"):
        agent.predict(venv.reset())
