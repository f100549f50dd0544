"""The task definition shared by the real env, the planner, the oracle and the dream."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from worldmodel.envs import task as tasks
from worldmodel.envs.push_table import PushTableEnv
from worldmodel.envs.task import TaskSpec, wilson_interval
from worldmodel.planning.objectives import LearnedReward, Task
from worldmodel.planning.oracle import SimOracle


class TruthHead(torch.nn.Module):
    """Features ``[ee (3), target (3)]`` read back exactly: the planner sees the true state."""

    has_end_effector = True

    def forward(self, features, query):
        return features[:, 3:6]

    def end_effector(self, features, start=None):
        return features[:, :3]


def _truth(info):
    target = np.asarray(info["object_pos"][info["target"]], np.float64)
    return np.asarray(info["ee_pos"], np.float64), target, np.asarray(info["goal_pos"], np.float64)


@pytest.mark.parametrize("name", ["push", "reach"])
def test_one_reward_in_env_planner_and_oracle(name):
    env = PushTableEnv(task=name, num_objects=2)
    env.reset(seed=3)
    _, reward, _, _, info = env.step(np.array([0.5, -0.3, -0.8, 0.0], np.float32))
    ee, target, goal = _truth(info)
    spec = env.config.task_spec()
    # The closed form, by hand.
    if name == "push":
        expect = -np.hypot(*(target - goal)[:2]) - 0.5 * np.linalg.norm(ee - target)
    else:
        expect = -np.linalg.norm(ee - goal)
    assert reward == pytest.approx(expect, abs=1e-6)  # info holds float32
    assert info["distance"] == pytest.approx(float(tasks.distance(spec, target, ee, goal)))
    # The planner's objective on a head that reads the true state: the same number.
    feats = torch.tensor(np.concatenate([ee, target]), dtype=torch.float32)[None, None]
    task = Task(goal_pos=torch.tensor(goal, dtype=torch.float32)[None], query=torch.zeros(1, 3))
    planned = LearnedReward(TruthHead(), task=spec).rewards(feats, task, torch.zeros(1, dtype=torch.long))
    assert float(planned) == pytest.approx(reward, abs=1e-5)
    # The oracle's cost is minus the same reward.
    assert SimOracle(env.config).cost(info) == pytest.approx(-reward, abs=1e-6)
    env.close()


def test_dream_scores_with_the_same_reward():
    from dream_fixtures import noisy_tiny_svg

    from worldmodel.envs.dream import DreamConfig, DreamCore

    model = noisy_tiny_svg(image_size=16)
    core = DreamCore(model, DreamConfig(reward="goal-image", pool_size=1, image_size=16), device="cpu")
    core.config = DreamConfig(reward="learned", pool_size=1, image_size=16)  # score through a head
    core.spec = core.config.task_spec()

    class Head(TruthHead):
        def forward(self, features, query):
            return query + features[:, :3]  # any function of the features will do

        def end_effector(self, features, start=None):
            return features[:, 3:6]

    core.head = Head()
    state = core.start(torch.zeros(1, dtype=torch.long))
    goal, query = torch.tensor([[0.1, -0.1, 0.02]]), torch.tensor([[0.0, 0.05, 0.02]])
    dist, reward, pos = core.score(state, goal, query, torch.zeros(1, dtype=torch.long))
    feats = model.features(state).float()
    ee = feats[:, 3:6].double().numpy()[0]
    target, g = pos.double().numpy()[0], goal.double().numpy()[0]
    spec = TaskSpec()
    assert float(reward) == pytest.approx(float(tasks.reward(spec, target, ee, g)), abs=1e-5)
    assert float(dist) == pytest.approx(float(tasks.distance(spec, target, ee, g)), abs=1e-6)


def test_recorded_goal_is_reached_by_replaying_the_recording():
    env = PushTableEnv(task="recorded-goal", num_objects=2)
    spec = env.config.task_spec()
    for seed in range(4):
        _, info = env.reset(seed=seed)
        # Doing nothing fails: the target starts at least 2 tolerances from its goal.
        assert info["distance"] >= spec.min_move - 1e-6 and not info["is_success"]
        for action in env.recorded_actions():
            _, _, _, _, info = env.step(action)
        assert info["is_success"] and info["distance"] < 1e-6  # the oracle check: exact replay
    assert env.recorded_actions().shape == (spec.recorded_k, 4)
    env.close()


def test_recorded_goal_image_is_the_recorded_scene():
    env = PushTableEnv(task="recorded-goal", num_objects=1, render_mode="rgb_array")
    obs, _ = env.reset(seed=1)
    goal_image = env.render_goal()
    assert np.array_equal(env.render(), obs)  # rendering the goal left the scene alone
    for action in env.recorded_actions():
        obs, *_ = env.step(action)
    assert np.array_equal(obs, goal_image)
    env.close()


def test_reach_goal_and_success():
    env = PushTableEnv(task="reach")
    spec = env.config.task_spec()
    _, info = env.reset(seed=7)
    goal = info["goal_pos"].astype(np.float64)
    assert np.all(goal >= np.array(spec.reach_low) - 1e-6) and np.all(
        goal <= np.array(spec.reach_high) + 1e-6
    )
    assert info["distance"] >= spec.reach_min_distance - 1e-6 and not info["is_success"]
    for _ in range(spec.budget):  # a proportional controller on the true state gets there
        delta = (goal - info["ee_pos"]) / env.config.action_scale
        _, _, _, _, info = env.step(np.append(np.clip(delta, -1, 1), -1.0).astype(np.float32))
    assert info["is_success"] and info["distance"] < spec.reach_tolerance
    env.close()


def test_wilson_interval_closed_forms():
    lo, hi = wilson_interval(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.1611, abs=1e-4)
    lo, hi = wilson_interval(10, 20)
    assert lo == pytest.approx(0.2993, abs=1e-4) and hi == pytest.approx(0.7007, abs=1e-4)
    assert np.isnan(wilson_interval(0, 0)).all()


def test_bad_task_input():
    with pytest.raises(ValueError, match="task must be one of"):
        PushTableEnv(task="juggle")
    with pytest.raises(ValueError, match="recorded_k"):
        TaskSpec(name="recorded-goal", recorded_k=0)
    with pytest.raises(ValueError, match="reach_weight"):
        TaskSpec(reach_weight=float("nan"))


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--task", "juggle"], "invalid choice"),
        (
            ["--task", "recorded-goal", "--recorded-k", "0"],
            "argument --recorded-k: must be a whole number in 1..100",
        ),
        (["--episodes", "0"], "argument --episodes: must be a whole number >= 1"),
        (["--reach-weight", "nan"], "argument --reach-weight: must be a finite number >= 0"),
    ],
)
def test_plan_rejects_bad_task_flags(tmp_path, flags, message):
    out = subprocess.run(
        [sys.executable, "-m", "worldmodel", "plan", str(tmp_path / "missing.pt"), *flags],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and message in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1


def test_push_offset_draws_the_gripper_behind_the_target():
    spec = TaskSpec(name="push", push_offset=0.05)
    target, goal = np.array([0.0, 0.0, 0.02]), np.array([0.1, 0.0, 0.02])
    behind = np.array([-0.05, 0.0, 0.02])  # 5 cm from the target, on the far side from the goal
    assert tasks.reward(spec, target, behind, goal) == pytest.approx(-0.1, abs=1e-6)  # no shaping cost
    assert tasks.reward(spec, target, target, goal) == pytest.approx(-0.1 - 0.5 * 0.05, abs=1e-6)
    above = np.array([-0.05, 0.0, 0.05])
    assert tasks.reward(spec, target, above, goal) == pytest.approx(-0.1 - 0.5 * 0.03, abs=1e-6)
    # Batched, NumPy and torch alike; offset 0 keeps the centre.
    rng = np.random.default_rng(0)
    t, e, g = (rng.uniform(-0.2, 0.2, (5, 3)) for _ in range(3))
    as_torch = tasks.reward(spec, *(torch.from_numpy(x) for x in (t, e, g))).numpy()
    np.testing.assert_allclose(tasks.reward(spec, t, e, g), as_torch, atol=1e-12)
    plain = TaskSpec(name="push")
    np.testing.assert_allclose(
        tasks.reward(plain, t, e, g), -np.hypot(*(t - g)[:, :2].T) - 0.5 * np.linalg.norm(e - t, axis=1)
    )
    with pytest.raises(ValueError, match="push_offset"):
        TaskSpec(name="push", push_offset=-0.01)


def test_push_offset_reaches_the_env_the_oracle_and_the_planner():
    env = PushTableEnv(task="push", num_objects=1, push_offset=0.05)
    env.reset(seed=3)
    _, reward, _, _, info = env.step(np.array([0.5, -0.3, -0.8, 0.0], np.float32))
    ee, target, goal = _truth(info)
    spec = env.config.task_spec()
    assert spec.push_offset == 0.05
    assert reward == pytest.approx(float(tasks.reward(spec, target, ee, goal)), abs=1e-6)
    assert reward != pytest.approx(float(tasks.reward(TaskSpec(name="push"), target, ee, goal)), abs=1e-4)
    assert SimOracle(env.config).cost(info) == pytest.approx(-reward, abs=1e-6)
    feats = torch.tensor(np.concatenate([ee, target]), dtype=torch.float32)[None, None]
    task = Task(goal_pos=torch.tensor(goal, dtype=torch.float32)[None], query=torch.zeros(1, 3))
    planned = LearnedReward(TruthHead(), task=spec).rewards(feats, task, torch.zeros(1, dtype=torch.long))
    assert float(planned) == pytest.approx(reward, abs=1e-5)
    env.close()
    from worldmodel.envs.dream_config import DreamConfig
    from worldmodel.planning.run import PlanJob, _spec

    assert TaskSpec.of(DreamConfig(push_offset=0.03)).push_offset == 0.03
    assert _spec(PlanJob("x.pt", push_offset=0.04)).push_offset == 0.04
