"""MPC agent on a stub linear world model: it drives a point to its goal, through SB3's evaluate_policy."""

from __future__ import annotations

import itertools

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium import spaces
from point_stub import SIZE, SPEED, PointModel
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor
from torch import Tensor

from worldmodel.dynamics.base import State
from worldmodel.planning import (
    CEM,
    CEMConfig,
    GoalImage,
    LearnedReward,
    MPCAgent,
    RandomAgent,
    Task,
    TaskInfo,
    run_episodes,
)


def encode(pos: np.ndarray) -> np.ndarray:
    """A point in [-1, 1]^2 as an image: pixel (0, 0) carries x and y in its red and green values."""
    img = np.zeros((SIZE, SIZE, 3), np.uint8)
    img[0, 0, :2] = np.round((np.clip(pos, -1, 1) + 1) * 127.5)
    return img


class PointEnv(gym.Env):
    """A point moved by ``SPEED * (dx, dy)`` per step; PushTable's task info, pixels only."""

    metadata = {"render_modes": []}  # noqa: RUF012

    def __init__(self) -> None:
        self.observation_space = spaces.Box(0, 255, (SIZE, SIZE, 3), np.uint8)
        self.action_space = spaces.Box(-1.0, 1.0, (4,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.pos = self.np_random.uniform(-0.8, 0.8, 2)
        self.goal = self.np_random.uniform(-0.8, 0.8, 2)
        return encode(self.pos), self._info()

    def step(self, action):
        self.pos = np.clip(self.pos + SPEED * np.clip(np.asarray(action)[:2], -1, 1), -1, 1)
        info = self._info()
        return encode(self.pos), -info["distance"], False, False, info

    def render_goal(self) -> np.ndarray:
        return encode(self.goal)

    def _info(self) -> dict:
        d = float(np.linalg.norm(self.pos - self.goal))
        return {
            "object_pos": np.array([[*self.pos, 0.0]], np.float32),
            "target": 0,
            "goal_pos": np.array([*self.goal, 0.0], np.float32),
            "distance": d,
            "is_success": d < 0.05,
        }


class LinearPoint(PointModel):
    """The point stub, reading and drawing the point as ``encode`` does; it counts its ``initial``
    and ``decode`` calls and checks the context it is given."""

    name = "stub-linear"

    def __init__(self) -> None:
        super().__init__()
        self.calls = {"initial": 0, "decode": 0}

    def initial(self, frames: Tensor, actions: Tensor) -> State:
        assert frames.dtype == torch.uint8 and actions.shape[1] == frames.shape[1] - 1
        self.calls["initial"] += 1
        return super().initial(frames, actions)

    def decode(self, state: State) -> Tensor:
        self.calls["decode"] += 1
        return super().decode(state)


class PositionHead(torch.nn.Module):
    """An exact object head for the stub: the features are the position."""

    def forward(self, features: Tensor, query: Tensor) -> Tensor:
        return torch.cat([features, torch.zeros_like(features[:, :1])], 1)


def agent(objective, replan_every=1, icem=False, seed=0) -> MPCAgent:
    make = CEMConfig.icem if icem else CEMConfig.cem
    planner = CEM(make(horizon=5, population=64, elites=8, iterations=3), 4)
    return MPCAgent(LinearPoint(), planner, objective, replan_every=replan_every, seed=seed)


def make_venv(n: int) -> DummyVecEnv:
    return DummyVecEnv([lambda: gym.wrappers.TimeLimit(PointEnv(), 25) for _ in range(n)])


@pytest.mark.parametrize(
    "objective,icem",
    [(GoalImage("features"), False), (GoalImage("pixels"), True)],
    ids=["features", "pixels-icem"],
)
def test_mpc_drives_the_point_to_its_goal(objective, icem):
    venv = VecMonitor(make_venv(2))  # the agent reads goals through VecEnv wrappers
    result = run_episodes(agent(objective, icem=icem), venv, episodes=4, seed=0)
    random = run_episodes(RandomAgent(seed=0), venv, episodes=4, seed=0)
    assert result["episodes"] == 4
    assert result["success_rate"] == 1.0 and result["final_distance"] < 0.05, result
    assert random["success_rate"] == 0.0 and random["final_distance"] > 0.2, random


def test_evaluate_policy_runs_the_agent_on_a_single_env():
    env = TaskInfo(gym.wrappers.TimeLimit(PointEnv(), 25))
    mpc = agent(LearnedReward(PositionHead()), replan_every=2).attach(env)
    env.reset(seed=1)
    finals = []

    def on_step(local, _):
        if local["done"]:
            finals.append(local["info"]["distance"])

    _, lengths = evaluate_policy(
        mpc, env, n_eval_episodes=2, return_episode_rewards=True, warn=False, callback=on_step
    )
    assert lengths == [25, 25] and max(finals) < 0.05, finals
    # Planned every other step; the model is re-anchored on real frames at each plan.
    assert mpc.plans == 26 and mpc.model.calls["initial"] == 26
    assert mpc.model.calls["decode"] == 0  # a feature objective never decodes


def test_context_window_holds_real_frames_and_executed_actions():
    mpc = agent(GoalImage("features"))
    mpc.set_task(0, Task(goal_image=torch.from_numpy(encode(np.array([0.5, 0.5])))[None]))
    frames = [encode(np.array([x, 0.0])) for x in (0.0, 0.1, 0.2)]
    a0, _ = mpc.predict(frames[0], episode_start=np.array([True]))
    assert a0.shape == (4,) and mpc.window(0)[2] == 1
    mpc.predict(frames[1][None])
    seen, executed, _ = mpc.window(0)
    assert [f[0, 0, 0] for f in seen] == [frames[0][0, 0, 0], frames[1][0, 0, 0]]
    assert np.array_equal(executed[0], a0)
    state = mpc.anchor([0])
    assert torch.allclose(state["pos"], torch.tensor([[0.1, 0.0]]), atol=0.01)
    mpc.predict(frames[2][None], episode_start=np.array([True]))  # a new episode forgets the old one
    seen, _, t = mpc.window(0)
    assert len(seen) == 1 and t == 1
    with pytest.raises(ValueError, match="env 1 has no episode"):
        mpc.window(1)


def test_each_plan_knows_the_action_executed_last():
    """For heads that integrate the arm from the actions: the rest action at an episode's start,
    then the action the env executed last."""
    seen: list[Tensor] = []

    class Spy(GoalImage):
        needs_last_action = True

        def __call__(self, model, state, task, actions, generator=None):
            seen.append(task.last_action.clone())
            return super().__call__(model, state, task, actions, generator)

    mpc = agent(Spy("features"))
    mpc.set_task(0, Task(goal_image=torch.from_numpy(encode(np.array([0.5, 0.5])))[None]))
    a0, _ = mpc.predict(encode(np.zeros(2)), episode_start=np.array([True]))
    assert seen and all(torch.equal(x, torch.zeros(1, 4)) for x in seen)
    seen.clear()
    mpc.predict(encode(np.array([0.1, 0.0]))[None])
    assert seen and all(torch.equal(x, torch.from_numpy(a0)[None]) for x in seen)


def test_the_target_is_carried_along_the_executed_actions():
    """For heads that integrate the objects: every executed action moves the target the planner
    starts from (``object_step``, here 1 cm in x per action), from the task's query at an
    episode's start; a new episode starts from its query again."""
    seen: list[Tensor] = []

    class Head(torch.nn.Module):  # the arm stays, the target moves 1 cm in x per action
        def arm_step(self, arm, action, previous):
            return arm

        def object_step(self, obj, arm, arm_next, action, previous):
            return obj + torch.tensor([0.01, 0.0, 0.0])

    class Spy(GoalImage):
        integrates_objects, head = True, Head()

        def __call__(self, model, state, task, actions, generator=None):
            seen.append(task.object_start.clone())
            return super().__call__(model, state, task, actions, generator)

    mpc = agent(Spy("features"), replan_every=2)
    query = torch.tensor([[0.1, -0.1, 0.02]])
    image = torch.from_numpy(encode(np.array([0.5, 0.5])))[None]
    task = Task(goal_image=image, query=query, ee_start=torch.zeros(1, 3))
    mpc.set_task(0, task)
    for t in range(5):  # plans at steps 0, 2 and 4
        mpc.predict(encode(np.array([0.02 * t, 0.0]))[None], episode_start=np.array([t == 0]))
    steps = sorted({round(float(x[0, 0] - query[0, 0]) / 0.01) for x in seen})
    assert steps == [0, 2, 4], steps
    seen.clear()
    mpc.set_task(0, task)
    mpc.predict(encode(np.zeros(2))[None], episode_start=np.array([True]))
    torch.testing.assert_close(seen[0], query)


def test_errors():
    mpc = agent(GoalImage("features"))
    with pytest.raises(RuntimeError, match="attach"):
        mpc.predict(encode(np.zeros(2)))
    with pytest.raises(ValueError, match="TaskInfo"):
        mpc.attach(PointEnv())
    mpc.set_task(0, Task(goal_image=torch.zeros(1, SIZE, SIZE, 3, dtype=torch.uint8)))
    with pytest.raises(ValueError, match="image_size"):
        mpc.predict(np.zeros((16, 16, 3), np.uint8))
    with pytest.raises(ValueError, match="goal_pos"):
        agent(LearnedReward(PositionHead())).attach(make_venv(1)).predict(np.zeros((1, 8, 8, 3), np.uint8))


def test_auto_resets_are_noticed_without_episode_start():
    """A plain loop that never passes episode_start still plans for each new episode's goal."""
    venv = make_venv(1)
    mpc = agent(GoalImage("features")).attach(venv)
    obs = venv.reset()
    tasks = []
    for _ in range(60):  # episodes of 25 steps: two auto-resets
        action, _ = mpc.predict(obs)
        tasks.append(mpc._slots[0].task)
        obs, _, _, _ = venv.step(action)
    changes = sum(a is not b for a, b in itertools.pairwise(tasks))
    assert changes == 2, changes  # a new task exactly at each of the two new episodes
