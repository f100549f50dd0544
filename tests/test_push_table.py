"""PushTable: checkers, determinism, state round trip, physics sanity, reward and goal image."""

from __future__ import annotations

import gymnasium as gym
import mujoco
import numpy as np
import pytest

import worldmodel
from worldmodel.envs.push_table import MAX_OBJECTS, PushTableConfig, PushTableEnv


@pytest.fixture(scope="module")
def env():
    e = PushTableEnv(num_objects=2)
    yield e
    e.close()


def _teleport_ee(env: PushTableEnv, xyz) -> None:
    p = env._palm_qpos
    env.data.qpos[p : p + 3] = xyz
    env.data.mocap_pos[env._mocap_target] = xyz
    mujoco.mj_forward(env.model, env.data)


def test_gymnasium_check_env():
    from gymnasium.utils.env_checker import check_env

    for num_objects in (None, 1, MAX_OBJECTS):  # None: 1..4 drawn per episode
        e = gym.make(worldmodel.PUSH_TABLE_ID, num_objects=num_objects)
        check_env(e.unwrapped)
        e.close()


def test_sb3_check_env():
    from stable_baselines3.common.env_checker import check_env

    e = gym.make(worldmodel.PUSH_TABLE_ID)
    check_env(e)
    e.close()


def test_spaces_and_info():
    e = gym.make(worldmodel.PUSH_TABLE_ID, image_size=48, num_objects=3)
    obs, info = e.reset(seed=1)
    assert obs.shape == (48, 48, 3) and obs.dtype == np.uint8
    assert e.action_space.shape == (4,) and e.action_space.dtype == np.float32
    assert info["ee_pos"].dtype == np.float32 and info["ee_pos"].shape == (3,)
    assert info["object_pos"].shape == (MAX_OBJECTS, 3) and not np.isnan(info["object_pos"]).any()
    assert (info["object_pos"][3:] == 0).all() and (info["object_pos"][:3] != 0).any(axis=1).all()
    assert info["num_objects"] == 3 and 0 <= info["target"] < 3
    _, reward, terminated, truncated, info = e.step(e.action_space.sample())
    assert type(reward) is float and terminated is False and truncated is False
    e.close()


def test_random_object_count():
    e = PushTableEnv()
    counts = {e.reset(seed=s)[1]["num_objects"] for s in range(30)}
    assert counts == {1, 2, 3, 4}


def _run(env, seed, steps=20):
    obs, info = env.reset(seed=seed)
    rng = np.random.default_rng(123)
    frames, infos = [obs], [info]
    for _ in range(steps):
        obs, _, _, _, info = env.step(rng.uniform(-1, 1, 4).astype(np.float32))
        frames.append(obs)
        infos.append(info)
    return np.stack(frames), infos


def test_same_seed_same_bytes(env):
    f1, i1 = _run(env, 7)
    f2, i2 = _run(PushTableEnv(num_objects=2), 7)
    assert f1.tobytes() == f2.tobytes()
    for a, b in zip(i1, i2, strict=True):
        assert a["ee_pos"].tobytes() == b["ee_pos"].tobytes()
        np.testing.assert_array_equal(a["object_pos"], b["object_pos"])
    f3, _ = _run(env, 8)
    assert f1.tobytes() != f3.tobytes()


def test_state_round_trip_is_bit_identical(env):
    env.reset(seed=3)
    rng = np.random.default_rng(0)
    for _ in range(5):
        env.step(rng.uniform(-1, 1, 4).astype(np.float32))
    state = env.get_state()
    actions = rng.uniform(-1, 1, (8, 4)).astype(np.float32)
    ref = [env.step(a)[0] for a in actions]
    other = PushTableEnv(num_objects=2)
    other.reset(seed=99)  # a different episode (other shapes and masses) must be fully overwritten
    other.set_state(state)
    again = [other.step(a)[0] for a in actions]
    assert np.stack(ref).tobytes() == np.stack(again).tobytes()
    env.set_state(state)  # and on the same env, after render_goal in between
    env.render_goal()
    assert np.stack([env.step(a)[0] for a in actions]).tobytes() == np.stack(ref).tobytes()


def test_push_moves_object_in_push_direction():
    e = PushTableEnv(num_objects=1)
    for seed in range(3):
        _, info = e.reset(seed=seed)
        obj = info["object_pos"][0].copy()
        _teleport_ee(e, (obj[0] - 0.09, obj[1], 0.012))
        for _ in range(5):
            _, _, _, _, info = e.step(np.array([1.0, 0.0, 0.0, 1.0], np.float32))
        moved = info["object_pos"][0] - obj
        assert moved[0] > 0.01, (seed, moved)
        assert abs(moved[1]) < moved[0]


def test_gripper_moves_fingers_and_pixels():
    e = PushTableEnv(num_objects=1)
    e.reset(seed=0)
    f = e._finger_qpos
    open_obs = [e.step(np.array([0, 0, 0, -1], np.float32))[0] for _ in range(3)][-1]
    opened = e.data.qpos[f].copy()
    closed_obs = [e.step(np.array([0, 0, 0, 1], np.float32))[0] for _ in range(3)][-1]
    closed = e.data.qpos[f].copy()
    assert np.all(closed - opened > 0.02)
    assert np.abs(open_obs.astype(int) - closed_obs.astype(int)).sum() > 0


def test_reward_success_and_goal_image():
    e = PushTableEnv(num_objects=2, render_mode="rgb_array")
    _, info = e.reset(seed=5)
    assert info["distance"] > e.config.success_tolerance and not info["is_success"]
    state = e.get_state()
    goal_img = e.render_goal()
    assert e.get_state()["physics"].tobytes() == state["physics"].tobytes()  # untouched
    # Put the target at the goal by hand: the render matches the goal image and the task is solved.
    q = e._obj_qpos[info["target"]]
    e.data.qpos[q : q + 3] = info["goal_pos"]
    e.data.qpos[q + 3 : q + 7] = e._goal_quat
    mujoco.mj_forward(e.model, e.data)
    assert np.array_equal(e.render(), goal_img)
    _, reward, _, _, info = e.step(np.zeros(4, np.float32))
    target = info["object_pos"][info["target"]].astype(np.float64)
    reach = np.linalg.norm(info["ee_pos"].astype(np.float64) - target)
    assert reward == pytest.approx(-info["distance"] - e.config.reach_weight * reach)  # the shaped reward
    assert info["distance"] < 0.01 and info["is_success"]


def test_config_and_bad_input():
    cfg = PushTableConfig(image_size=32, num_objects=1)
    e = PushTableEnv(config=cfg, success_tolerance=0.04)
    assert e.config.image_size == 32 and e.config.success_tolerance == 0.04
    e.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        e.step(np.array([np.nan, 0, 0, 0], np.float32))
    with pytest.raises(ValueError, match="num_objects"):
        PushTableConfig(num_objects=5)


def test_missing_gl_backend_is_a_clear_error(monkeypatch):
    def broken(*args, **kwargs):
        raise mujoco.FatalError("an OpenGL platform library has not been loaded")

    monkeypatch.setattr(mujoco, "Renderer", broken)
    e = PushTableEnv(num_objects=1)
    with pytest.raises(RuntimeError, match="MUJOCO_GL=egl"):
        e.reset(seed=0)


def test_make_vec_steps_envs_with_different_object_counts():
    # infos keep one shape whatever the number of objects, so Gymnasium can stack them
    envs = gym.make_vec(worldmodel.PUSH_TABLE_ID, num_envs=2, image_size=32)
    _, info = envs.reset(seed=[0, 1])
    assert info["object_pos"].shape == (2, MAX_OBJECTS, 3)
    assert info["num_objects"][0] != info["num_objects"][1]
    _, _, _, _, info = envs.step(envs.action_space.sample())
    for i, n in enumerate(info["num_objects"]):
        assert (info["object_pos"][i, n:] == 0).all() and (info["object_pos"][i, :n, 2] > 0).all()
    envs.close()


@pytest.mark.parametrize(
    "action",
    [np.zeros((2, 2)), np.zeros(4, np.complex64), np.zeros((1, 4)), np.array([0, 0, np.nan, 0]), "abcd"],
)
def test_step_refuses_actions_that_are_not_four_real_numbers(action):
    e = gym.make(worldmodel.PUSH_TABLE_ID, image_size=16, num_objects=1).unwrapped
    e.reset(seed=0)
    with pytest.raises(ValueError, match="4 finite real numbers"):
        e.step(action)
    e.close()
