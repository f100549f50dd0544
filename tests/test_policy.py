"""The scripted BAIR-like pushing policy and the rollout recorder."""

from __future__ import annotations

import numpy as np
import pytest

from worldmodel.envs.policy import RandomPushPolicy, rollout
from worldmodel.envs.push_table import MAX_OBJECTS, PushTableEnv


@pytest.fixture(scope="module")
def env():
    e = PushTableEnv()
    yield e
    e.close()


def test_rollout_shapes_dtypes_alignment(env):
    ep = rollout(env, RandomPushPolicy(seed=0), seq_len=12, seed=0)
    assert ep["frames"].shape == (12, 64, 64, 3) and ep["frames"].dtype == np.uint8
    assert ep["actions"].shape == (12, 4) and ep["actions"].dtype == np.float32
    assert ep["states"].shape == (12, 3) and ep["states"].dtype == np.float32
    assert ep["objects"].shape == (12, MAX_OBJECTS, 3) and ep["objects"].dtype == np.float32
    assert ep["goal"].shape == (3,) and ep["goal"].dtype == np.float32
    for key, dtype in (("target", np.int64), ("num_objects", np.int64), ("pushed", np.bool_)):
        assert ep[key].shape == () and ep[key].dtype == dtype
    # frames[0] is the reset observation; actions[t] drives frames[t] -> frames[t + 1].
    obs, info = env.reset(seed=0)
    assert np.array_equal(obs, ep["frames"][0])
    np.testing.assert_array_equal(info["ee_pos"], ep["states"][0])
    obs, *_ = env.step(ep["actions"][0])
    assert np.array_equal(obs, ep["frames"][1])
    n = int(ep["num_objects"])
    assert not np.isnan(ep["objects"][:, :n]).any() and np.isnan(ep["objects"][:, n:]).all()


def test_rollout_deterministic(env):
    a = rollout(env, RandomPushPolicy(seed=4), seq_len=10, seed=4)
    b = rollout(env, RandomPushPolicy(seed=4), seq_len=10, seed=4)
    for key in a:
        assert a[key].tobytes() == b[key].tobytes(), key


def test_actions_bounded_and_smooth(env):
    for seed in range(4):
        ep = rollout(env, RandomPushPolicy(seed=seed), seq_len=30, seed=seed)
        assert np.all(np.abs(ep["actions"]) <= 1.0)
        assert np.abs(np.diff(ep["actions"], axis=0)).mean() < 0.35


def test_push_episodes_move_objects(env):
    moved = []
    for seed in range(8):
        ep = rollout(env, RandomPushPolicy(seed=seed, push_probability=1.0), seq_len=30, seed=seed)
        assert bool(ep["pushed"])
        obj = ep["objects"]
        moved.append(np.nanmax(np.linalg.norm(obj[-1, :, :2] - obj[0, :, :2], axis=-1)))
    assert np.mean(np.array(moved) > 0.02) >= 0.6, moved


def test_push_probability_zero_never_scripts(env):
    policy = RandomPushPolicy(seed=1, push_probability=0.0)
    assert not any(bool(rollout(env, policy, seq_len=3, seed=s)["pushed"]) for s in range(5))
    with pytest.raises(ValueError):
        RandomPushPolicy(seed=0, push_probability=1.5)
