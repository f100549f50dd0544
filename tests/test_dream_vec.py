"""DreamVecEnv / make_vec: lockstep equality with single envs, SB3 wrappers, Gymnasium vector API, PPO."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from dream_fixtures import identity_head, noisy_tiny_svg, object_moving_svg
from gymnasium.vector import AutoresetMode
from stable_baselines3 import PPO
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor, VecTransposeImage

import worldmodel
from worldmodel.envs.dream import DreamConfig, DreamCore, DreamEnv
from worldmodel.envs.dream_vec import DreamVecEnv, DreamVectorEnv

N = 3


@pytest.fixture(scope="module")
def model():
    return noisy_tiny_svg(64)


@pytest.fixture(scope="module", params=["pixels", "latent", "pixels bfloat16", "latent task_obs"])
def core(request, model):
    obs, *extra = request.param.split()
    dtype = "bfloat16" if "bfloat16" in extra else "float32"
    cfg = DreamConfig(
        reward="learned", obs=obs, pool_size=6, horizon=3, dtype=dtype, task_obs="task_obs" in extra
    )
    return DreamCore(model, cfg, head=identity_head(model), device="cpu")


def test_batched_equals_lockstep_singles(core):
    """Env i of DreamVecEnv seeded s == a single Dream-v0 reset with seed s + i, through auto-resets.

    Tolerances: the batched model call runs convolutions and matmuls on (N, ...) tensors, the
    single envs on (1, ...); on the CPU those pick different kernels/blockings, so floats may
    differ in the last bits. Sampling noise is per row and exact (``_noise.py``), episode draws come
    from per-env generators, so the only differences left are those last bits: frames may differ
    by one uint8 level where a value sits on a rounding edge, rewards and features by ~1e-5.
    """
    vec = DreamVecEnv(core, N)
    singles = DummyVecEnv([lambda: DreamEnv(core=core) for _ in range(N)])
    vec.seed(11)
    singles.seed(11)
    pixels = core.config.obs == "pixels"

    def close(a, b):
        a, b = np.asarray(a), np.asarray(b)
        if pixels and a.dtype == np.uint8:
            return np.abs(a.astype(int) - b.astype(int)).max() <= 1
        return np.allclose(a, b, atol=1e-4, rtol=1e-4)

    assert close(vec.reset(), singles.reset())
    rng = np.random.default_rng(0)
    ended = 0
    for _ in range(8):  # crosses two horizons: same-step auto-resets included
        actions = rng.uniform(-1.3, 1.3, (N, 4)).astype(np.float32)
        o1, r1, d1, i1 = vec.step(actions)
        o2, r2, d2, i2 = singles.step(actions)
        assert close(o1, o2)
        assert np.allclose(r1, r2, atol=1e-4)
        assert np.array_equal(d1, d2)
        for a, b in zip(i1, i2, strict=True):
            assert a["is_success"] == b["is_success"]
            assert ("terminal_observation" in a) == ("terminal_observation" in b)
            if "terminal_observation" in a:
                ended += 1
                assert close(a["terminal_observation"], b["terminal_observation"])
                assert a["TimeLimit.truncated"] is True and b["TimeLimit.truncated"] is True
    assert ended == 2 * N


def test_sb3_wrappers_and_evaluate_policy(core):
    env = VecMonitor(DreamVecEnv(core, N))
    if core.config.obs == "pixels":
        env = VecTransposeImage(env)
        assert env.observation_space.shape == (3, 64, 64)

    class Zero:
        def predict(self, obs, state=None, episode_start=None, deterministic=True):
            return np.zeros((len(obs), 4), np.float32), None

    mean, _ = evaluate_policy(Zero(), env, n_eval_episodes=N)
    assert np.isfinite(mean) and mean < 0
    env.reset()
    _, _, dones, infos = env.step(np.zeros((N, 4), np.float32))
    assert len(infos) == N and not dones.any()


def test_bad_actions_batched(core):
    env = DreamVecEnv(core, 2)
    env.reset()
    with pytest.raises(ValueError, match="NaN"):
        env.step(np.array([[0, 0, 0, 0], [np.nan, 0, 0, 0]], np.float32))
    with pytest.raises(ValueError, match="shape"):
        env.step(np.zeros((3, 4), np.float32))


def test_make_vec_vector_entry_point(model):
    env = gym.make_vec(
        worldmodel.DREAM_ID,
        num_envs=3,
        vectorization_mode="vector_entry_point",
        checkpoint=model,
        reward="goal-image",
        pool_size=2,
        horizon=2,
        device="cpu",
    )
    assert isinstance(env.unwrapped, DreamVectorEnv)
    assert env.metadata["autoreset_mode"] == AutoresetMode.SAME_STEP
    obs, _ = env.reset(seed=0)
    assert obs.shape == (3, 64, 64, 3)
    _, r, term, trunc, info = env.step(env.action_space.sample())
    assert r.shape == (3,) and not trunc.any() and "final_obs" not in info
    obs, r, term, trunc, info = env.step(env.action_space.sample())
    assert trunc.all() and not term.any()
    assert info["_final_obs"].all() and info["final_obs"][0].shape == (64, 64, 3)
    assert info["final_info"]["is_success"].shape == (3,)
    # Same seed: env 1 of the vector == a single env seeded 0 + 1.
    single = DreamEnv(core=env.unwrapped.core)
    vobs, _ = env.reset(seed=0)
    sobs, _ = single.reset(seed=1)
    assert np.array_equal(vobs[1], sobs)


@pytest.mark.parametrize("obs", ["pixels", "latent"])
def test_ppo_runs_in_the_dream(model, obs):
    core = DreamCore(
        model,
        DreamConfig(reward="learned", obs=obs, pool_size=4, horizon=16),
        head=identity_head(model),
        device="cpu",
    )
    env = VecMonitor(DreamVecEnv(core, 4))
    policy = "CnnPolicy" if obs == "pixels" else "MlpPolicy"
    agent = PPO(
        policy,
        env,
        n_steps=32,
        batch_size=64,
        n_epochs=1,
        seed=0,
        device="cpu",
        policy_kwargs={"net_arch": [32]}
        if obs == "latent"
        else {"features_extractor_kwargs": {"features_dim": 32}},
    )
    agent.set_logger(Logger(folder=None, output_formats=[]))  # no SB3-* folder in /tmp
    agent.learn(total_timesteps=256)
    assert agent.num_timesteps >= 256
    assert len(agent.ep_info_buffer) > 0  # VecMonitor saw episodes end


def test_task_observation_ends_with_the_dreamed_arm_and_the_goal(model):
    cfg = DreamConfig(reward="learned", obs="latent", task_obs=True, task="reach", pool_size=4, horizon=2)
    core = DreamCore(model, cfg, head=identity_head(model), device="cpu")
    vec = DreamVecEnv(core, 2)
    f = model.feature_dim
    assert vec.observation_space.shape == (f + 6,)
    vec.seed(3)
    obs = vec.reset()
    assert obs.shape == (2, f + 6)
    goals = np.stack([info["goal_pos"] for info in vec.reset_infos])
    np.testing.assert_allclose(obs[:, -3:], goals, atol=1e-6)  # the episode's goal
    obs, reward, _, infos = vec.step(np.zeros((2, 4), np.float32))
    # reach: the reward is minus the distance from the dreamed arm (in the observation) to the goal
    dist = np.linalg.norm(obs[:, f : f + 3] - obs[:, -3:], axis=1)
    np.testing.assert_allclose(-reward, dist, atol=1e-5)
    np.testing.assert_allclose([i["distance"] for i in infos], dist, atol=1e-5)
    with pytest.raises(ValueError, match="task_obs"):
        DreamConfig(task_obs=True, obs="pixels")


_MOVES = np.array([[0.5, -0.2, 0.1, 0.0], [-0.3, 0.4, 0.0, 1.0]], np.float32)


def _two_steps(vec, key: str, start: np.ndarray):
    """Two steps of ``vec`` with ``_MOVES``, checking that info ``key`` moves 1 cm in x per step
    from ``start``; returns ``([(obs, infos)] per step, [rewards] per step)``."""
    steps, rewards = [], []
    for t in (1, 2):
        obs, reward, _, infos = vec.step(_MOVES)
        want = start + np.array([0.01 * t, 0.0, 0.0], np.float32)
        np.testing.assert_allclose(np.stack([i[key] for i in infos]), want, atol=1e-5)
        steps.append((obs, infos))
        rewards.append(reward)
    return steps, rewards


def test_a_dream_integrates_the_arm_as_the_planner_does():
    """A state head that integrates the arm from the actions (here: 1 cm in x per action): the
    dream's arm (info, task observation, reward) moves with the actions taken from the recorded
    start, is back at the start after an auto-reset, and the planner's learned reward scores the
    same actions from the same start to the same numbers."""
    import torch

    from worldmodel import dynamics
    from worldmodel.planning.objectives import LearnedReward, Task

    torch.manual_seed(0)
    arm_model = dynamics.make(
        "svg-lp", preset="tiny", image_size=64, state_head=True, state_arm="actions"
    ).eval()
    with torch.no_grad():
        arm_model.state_head.arm_net[-1].bias.copy_(torch.tensor([0.1, 0.0, 0.0]))  # x ee_scale (0.1 m)
    cfg = DreamConfig(reward="learned", obs="latent", task_obs=True, task="reach", pool_size=4, horizon=3)
    vec = DreamVecEnv(DreamCore(arm_model, cfg, device="cpu"), 2)
    f = arm_model.feature_dim
    vec.seed(1)
    obs = vec.reset()
    start = np.stack([info["ee_pos"] for info in vec.reset_infos])
    goal = obs[:, -3:]
    np.testing.assert_allclose(obs[:, f : f + 3], start, atol=1e-6)
    actions = _MOVES
    steps, rewards = _two_steps(vec, "ee_pos", start)
    for t, (obs, _) in enumerate(steps, 1):
        want = start + np.array([0.01 * t, 0.0, 0.0], np.float32)
        np.testing.assert_allclose(obs[:, f : f + 3], want, atol=1e-5)
    planned = LearnedReward(arm_model.state_head, task="reach").rewards(
        torch.zeros(2, 2, f),
        Task(goal_pos=torch.as_tensor(goal), ee_start=torch.as_tensor(start), last_action=torch.zeros(2, 4)),
        torch.arange(2),
        torch.as_tensor(actions)[:, None].expand(2, 2, 4),
    )
    np.testing.assert_allclose(planned.detach().T.numpy(), np.stack(rewards), atol=1e-5)
    _, _, done, infos = vec.step(actions)  # the third step ends the episodes; they restart
    assert done.all()
    restart = np.stack([i["terminal_observation"][f : f + 3] for i in infos])
    np.testing.assert_allclose(restart, start + np.array([0.03, 0.0, 0.0], np.float32), atol=1e-5)
    new_start = np.stack([info["ee_pos"] for info in vec.reset_infos])
    obs, _, _, infos = vec.step(actions)
    np.testing.assert_allclose(
        np.stack([i["ee_pos"] for i in infos]), new_start + np.array([0.01, 0.0, 0.0]), atol=1e-5
    )


def test_a_dream_integrates_the_target_as_the_planner_does():
    """A state head that integrates the objects from the actions (here: 1 cm in x per action, the
    arm still): the dream's target (info, reward, the end of the task observation) moves with the
    actions from its recorded start, and the planner's learned reward scores the same actions from
    the same start to the same numbers; an auto-reset starts it from its record again."""
    import torch

    from worldmodel.planning.objectives import LearnedReward, Task

    m = object_moving_svg(0.01)
    cfg = DreamConfig(reward="learned", obs="latent", task="push", pool_size=4, horizon=3, task_obs=True)
    vec = DreamVecEnv(DreamCore(m, cfg, device="cpu"), 2)
    assert vec.observation_space.shape == (m.feature_dim + 9,)  # arm, goal and the carried target
    vec.seed(1)
    obs = vec.reset()
    start = np.stack([info["target_pos"] for info in vec.reset_infos])
    np.testing.assert_allclose(obs[:, -3:], start, atol=1e-6)
    ee = np.stack([info["ee_pos"] for info in vec.reset_infos])
    goal = np.stack([info["goal_pos"] for info in vec.reset_infos])
    actions = _MOVES
    steps, rewards = _two_steps(vec, "target_pos", start)
    for obs, infos in steps:
        np.testing.assert_allclose(np.stack([i["ee_pos"] for i in infos]), ee, atol=1e-5)
        np.testing.assert_allclose(obs[:, -3:], np.stack([i["target_pos"] for i in infos]), atol=1e-6)
    task = Task(
        goal_pos=torch.as_tensor(goal),
        query=torch.as_tensor(start),
        ee_start=torch.as_tensor(ee),
        last_action=torch.zeros(2, 4),
    )
    planned = LearnedReward(m.state_head, task="push").rewards(
        torch.zeros(2, 2, m.feature_dim),
        task,
        torch.arange(2),
        torch.as_tensor(actions)[:, None].expand(2, 2, 4),
    )
    np.testing.assert_allclose(planned.detach().T.numpy(), np.stack(rewards), atol=1e-5)
    vec.step(actions)  # the third step ends the episodes; they restart from their records
    new_start = np.stack([info["target_pos"] for info in vec.reset_infos])
    obs, _, _, infos = vec.step(actions)
    np.testing.assert_allclose(
        np.stack([i["target_pos"] for i in infos]), new_start + np.array([0.01, 0.0, 0.0]), atol=1e-5
    )
    np.testing.assert_allclose(obs[:, -3:], new_start + np.array([0.01, 0.0, 0.0]), atol=1e-5)


def test_every_dream_takes_its_checkpoint_first(model):
    core = DreamCore(model, DreamConfig(reward="goal-image", pool_size=2, horizon=3), device="cpu")
    for env in (DreamVecEnv(core, 2), DreamVectorEnv(core, 2)):
        assert env.num_envs == 2 and env.core is core
        env.close()
    with pytest.warns(DeprecationWarning, match="DreamVectorEnv\\(checkpoint, num_envs\\)"):
        old = DreamVectorEnv(2, core)  # the old order still works, with a warning
    assert old.num_envs == 2 and old.core is core
    with pytest.warns(DeprecationWarning, match="DreamVecEnv\\(checkpoint=...\\)"):
        assert DreamVecEnv(model=core, num_envs=3).num_envs == 3
