"""What Gymnasium, SB3, mbrl-lib/torchrl and Gymnasium-Robotics users expect of the four faces of
the task (PushTable-v0, Dream-v0, DreamVecEnv, the make_vec dream): one set of info keys,
render() under render_mode=None, spec.max_episode_steps, imagination from the caller's own
context, the goal-conditioned Dict observation for HER, and MPC planning inside a dream."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from dream_fixtures import identity_head, noisy_tiny_svg
from gymnasium.utils.env_checker import check_env as gym_check_env
from point_stub import SIZE, PointModel
from stable_baselines3 import SAC, HerReplayBuffer
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import Logger
from torch import Tensor

import worldmodel
from worldmodel.dynamics.heads import ObjectHead
from worldmodel.envs import scene
from worldmodel.envs import task as tasks
from worldmodel.envs.dream import DreamConfig, DreamCore, DreamEnv
from worldmodel.envs.dream_vec import DreamVecEnv
from worldmodel.envs.push_table import PushTableEnv
from worldmodel.envs.task import INFO_KEYS, INFO_SPEC, MAX_EPISODE_STEPS
from worldmodel.planning import CEM, CEMConfig, LearnedReward, MPCAgent, RandomAgent, run_episodes

EXTRAS = {"pool_index"}  # the dreams' documented extra key


@pytest.fixture(scope="module")
def model():
    return noisy_tiny_svg(64)


@pytest.fixture(scope="module")
def core(model):
    cfg = DreamConfig(reward="learned", pool_size=3, horizon=3)
    return DreamCore(model, cfg, head=identity_head(model), device="cpu")


def _check_single(info: dict) -> None:
    assert set(info) - EXTRAS == set(INFO_KEYS), sorted(info)
    for k, (kind, shape) in INFO_SPEC.items():
        if shape:
            assert info[k].dtype == kind and info[k].shape == shape, k
        else:
            assert type(info[k]) is kind, (k, type(info[k]))


def test_info_keys_and_types_are_one_set_across_the_four_faces(core):
    assert tasks.MAX_OBJECTS == scene.MAX_OBJECTS
    real = PushTableEnv(image_size=16, num_objects=2)
    _, info = real.reset(seed=0)
    _check_single(info)
    _check_single(real.step(np.zeros(4, np.float32))[4])
    dream = DreamEnv(core=core)
    _, info = dream.reset(seed=0)
    _check_single(info)
    _, _, _, _, info = dream.step(np.zeros(4, np.float32))
    _check_single(info)
    # The dream reads every present object off its state; absent rows are zero, as in the sim.
    n = info["num_objects"]
    assert (info["object_pos"][n:] == 0).all() and np.isfinite(info["object_pos"]).all()
    assert np.array_equal(info["object_pos"][info["target"]], info["target_pos"])
    vec = DreamVecEnv(core, 2)
    vec.seed(0)
    vec.reset()
    for i in vec.reset_infos:
        _check_single(i)
    for _ in range(3):  # through an auto-reset
        _, _, dones, infos = vec.step(np.zeros((2, 4), np.float32))
        for i in infos:
            _check_single(
                {k: v for k, v in i.items() if k not in ("terminal_observation", "TimeLimit.truncated")}
            )
    assert dones.all()
    for i in vec.reset_infos:
        _check_single(i)
    # Gymnasium's vector faces: the dream's make_vec stacks its infos as SyncVectorEnv stacks the sim's.
    sims = gym.make_vec(worldmodel.PUSH_TABLE_ID, num_envs=2, image_size=16)
    dreams = gym.make_vec(
        worldmodel.DREAM_ID, num_envs=2, vectorization_mode="vector_entry_point", checkpoint=core
    )
    for venv in (sims, dreams):
        for info in (venv.reset(seed=0)[1], venv.step(np.zeros((2, 4), np.float32))[4]):
            for k, (kind, shape) in INFO_SPEC.items():
                want = {float: np.float64, bool: np.bool_, int: np.int64}.get(kind, kind)
                assert info[k].dtype == want and info[k].shape == (2, *shape), (venv, k)
                assert info[f"_{k}"].all()
    sims.close()
    # A dream without a state head knows only the distance: it omits the rest, always.
    blind = DreamEnv(core.model, reward="goal-image", pool_size=2, horizon=2, device="cpu")
    assert (
        set(blind.reset(seed=0)[1])
        == set(blind.step(np.zeros(4, np.float32))[4])
        == {
            "distance",
            "is_success",
            "pool_index",
        }
    )


def test_render_is_none_without_render_mode(core):
    for env in (PushTableEnv(image_size=16, num_objects=1), DreamEnv(core=core)):
        env.reset(seed=0)
        with pytest.warns(UserWarning, match="render method without specifying any render mode"):
            assert env.render() is None
    frame = PushTableEnv(image_size=16, num_objects=1, render_mode="rgb_array")
    obs, _ = frame.reset(seed=0)
    assert np.array_equal(frame.render(), obs)


def _episode_length(env) -> int:
    env.reset(seed=0)
    for t in range(1, 200):
        _, _, terminated, truncated, _ = env.step(np.zeros(4, np.float32))
        assert not terminated
        if truncated:
            return t
    return -1


def test_spec_max_episode_steps_is_the_episode_length(core):
    assert gym.spec(worldmodel.DREAM_ID).max_episode_steps == MAX_EPISODE_STEPS == 50
    assert gym.spec(worldmodel.PUSH_TABLE_ID).max_episode_steps == MAX_EPISODE_STEPS
    small = DreamCore(core.model, DreamConfig(pool_size=1), head=core.head, device="cpu")  # horizon None
    env = gym.make(worldmodel.DREAM_ID, core=small)
    assert env.spec.max_episode_steps == 50 and _episode_length(env) == 50
    env = gym.make(
        worldmodel.DREAM_ID, core=small, max_episode_steps=60
    )  # longer than 50: the TimeLimit rules
    assert env.spec.max_episode_steps == 60 and _episode_length(env) == 60
    assert _episode_length(gym.make(worldmodel.DREAM_ID, core=core)) == 3  # core's horizon=3 still ends it
    assert _episode_length(DreamEnv(core=small)) == -1  # unwrapped, as PushTableEnv: no truncation of its own
    assert DreamVecEnv(small, 1).horizon == 50


def _pool_context(core: DreamCore, idx: int, window: bool = False) -> dict:
    """Pool entry ``idx`` as a caller would pass it (a dataset item's names)."""
    p = {k: v[idx].cpu().numpy() for k, v in core.pool.items()}
    ctx = {
        "frames": p["frames"],
        "actions": p["actions"],
        "states": p["ee"],
        "objects": p["objects"][: int(np.isfinite(p["objects"]).all(-1).sum())],
        "goal": p["goal"],
        "target": int(p["target"]),
        "goal_image": p["goal_image"],
    }
    if window:  # a dataset window of T0 steps: per-step states and objects, T0 actions
        t0 = len(p["frames"])
        ctx["actions"] = np.concatenate([p["actions"], np.ones((1, 4), np.float32)])
        ctx["states"] = np.stack([np.zeros(3, np.float32)] * (t0 - 1) + [p["ee"]])
        ctx["objects"] = np.stack([np.zeros_like(p["objects"])] * (t0 - 1) + [p["objects"]])
    return ctx


def _run(env, seed, options=None, steps=4):
    obs, info = env.reset(seed=seed, options=options)
    rng = np.random.default_rng(5)
    out = [(obs, 0.0, info)]
    for _ in range(steps):
        obs, r, _, _, info = env.step(rng.uniform(-1, 1, 4).astype(np.float32))
        out.append((obs, r, info))
    return out


@pytest.mark.parametrize("window", [False, True], ids=["context", "dataset-window"])
def test_reset_from_a_callers_context_equals_the_pool_context(window):
    model = noisy_tiny_svg(64)
    cfg = DreamConfig(reward="learned", pool_size=1, horizon=10)  # pool initial at batch 1, as the caller's
    core = DreamCore(model, cfg, head=identity_head(model), device="cpu")
    env = DreamEnv(core=core)
    pooled = _run(env, seed=7)
    own = _run(env, seed=7, options=_pool_context(core, pooled[0][2]["pool_index"], window))
    assert own[0][2]["pool_index"] == -1
    for (o1, r1, i1), (o2, r2, i2) in zip(pooled, own, strict=True):
        assert np.array_equal(o1, o2) and r1 == r2
        for k in INFO_KEYS:
            assert np.array_equal(i1[k], i2[k]), k
    assert not np.array_equal(pooled[1][0], pooled[-1][0])  # the dream moved
    other = _run(env, seed=8, options=_pool_context(core, 0))  # another seed: other noise
    assert not np.array_equal(other[-1][0], own[-1][0])


def test_batched_reset_from_contexts_equals_single_envs(core):
    vec = DreamVecEnv(core, 2)
    contexts = [_pool_context(core, 2), _pool_context(core, 0)]
    batched = {k: np.stack([c[k] for c in contexts]) for k in contexts[0] if k != "objects"}
    batched["objects"] = np.stack([core.pool["objects"][i].cpu().numpy() for i in (2, 0)])  # NaN rows: absent
    vec.seed(3)
    obs = vec.reset_from(batched)
    singles = [DreamEnv(core=core) for _ in range(2)]
    first = [s.reset(seed=3 + i, options=contexts[i])[0] for i, s in enumerate(singles)]
    assert np.abs(obs.astype(int) - np.stack(first).astype(int)).max() <= 1
    assert [i["pool_index"] for i in vec.reset_infos] == [-1, -1]
    a = np.full((2, 4), 0.3, np.float32)
    _, r, _, _ = vec.step(a)
    single = [s.step(a[i]) for i, s in enumerate(singles)]
    np.testing.assert_allclose(r, [x[1] for x in single], atol=1e-4)
    vec.step(a)
    next_obs, _, dones, _ = vec.step(a)  # horizon 3: the next episodes come from the pool again
    assert dones.all()
    # the same pool entries single envs draw next, from the same seeded generators
    assert [i["pool_index"] for i in vec.reset_infos] == [s.reset()[1]["pool_index"] for s in singles]
    for row, info in enumerate(vec.reset_infos):  # each starts on its pool entry's last context frame
        np.testing.assert_array_equal(
            next_obs[row], core.pool["frames"][int(info["pool_index"])][-1].cpu().numpy()
        )
    vector = gym.make_vec(
        worldmodel.DREAM_ID, num_envs=2, vectorization_mode="vector_entry_point", checkpoint=core
    )
    vobs, vinfo = vector.reset(seed=3, options=batched)
    assert np.array_equal(vobs, obs) and (vinfo["pool_index"] == -1).all()


@pytest.mark.parametrize(
    "options,key",
    [
        ({"frobs": 1}, "frobs"),
        ({"actions": np.zeros((1, 4))}, "frames"),
        ({"frames": np.zeros((2, 64, 64, 3), np.float32)}, "frames"),
        ({"frames": np.zeros((3, 64, 64, 3), np.uint8)}, "frames"),
        ({"actions": np.zeros((3, 4))}, "actions"),
        ({"actions": np.full((1, 4), np.nan)}, "actions"),
        ({"objects": np.zeros((5, 3))}, "objects"),
        ({"goal": np.zeros(2)}, "goal"),
        ({"target": 0.5}, "target"),
        ({"target": 3}, "target"),
        ({"goal_image": np.zeros((64, 64), np.uint8)}, "goal_image"),
        ({"objects": None}, "objects"),
    ],
)
def test_bad_context_options_name_the_key(core, options, key):
    good = {
        "frames": np.zeros((2, 64, 64, 3), np.uint8),
        "actions": np.zeros((1, 4)),
        "objects": np.zeros((1, 3)),
    }
    if key == "frames" and "frames" not in options:
        good.pop("frames")
    with pytest.raises(ValueError, match=rf"'{key}'") as err:
        DreamEnv(core=core).reset(seed=0, options={**good, **options})
    assert "\n" not in str(err.value)
    with pytest.raises(ValueError, match=rf"env 1: .*'{key}'"):
        DreamVecEnv(core, 2).reset_from([None, {**good, **options}])


# ----------------------------------------------------------------- goal-conditioned observations
def _compute_reward_matches(env, spec, steps=3) -> None:
    """``compute_reward`` of what a step reports equals its reward, alone and batched, and the
    task's reward of the positions in its info (up to float32 rounding)."""
    obs, _ = env.reset(seed=1)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        obs, reward, _, _, info = env.step(rng.uniform(-1, 1, 4).astype(np.float32))
        cr = env.unwrapped.compute_reward
        assert cr(obs["achieved_goal"], obs["desired_goal"], info) == reward
        batch = cr(
            np.stack([obs["achieved_goal"]] * 2),
            np.stack([obs["desired_goal"], obs["achieved_goal"]]),
            [info] * 2,
        )
        assert batch.shape == (2,) and batch[0] == reward
        ee, target, goal = (np.asarray(info[k], np.float64) for k in ("ee_pos", "target_pos", "goal_pos"))
        assert reward == pytest.approx(float(tasks.reward(spec, target, ee, goal)), abs=1e-6)


@pytest.mark.parametrize("task", ["push", "reach"])
def test_goal_conditioned_real_env(task):
    env = PushTableEnv(image_size=16, num_objects=2, task=task, goal_conditioned=True)
    assert env.observation_space["achieved_goal"].shape == env.observation_space["desired_goal"].shape == (3,)
    obs, info = env.reset(seed=2)
    achieved = info["ee_pos"] if task == "reach" else info["target_pos"]
    assert np.array_equal(obs["achieved_goal"], achieved) and np.array_equal(
        obs["desired_goal"], info["goal_pos"]
    )
    _compute_reward_matches(env, env.config.task_spec())
    # The float32 reward differs from the one of the float64 state it reports by rounding only.
    obs, reward, *_, info = env.step(np.zeros(4, np.float32))
    achieved = info["ee_pos"] if task == "reach" else info["target_pos"]
    assert reward == pytest.approx(env.compute_reward(achieved, info["goal_pos"], info), abs=1e-6)
    gym_check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=False, skip_render_check=True)
    assert not hasattr(PushTableEnv(image_size=16), "compute_reward")  # not a GoalEnv without the flag
    if task == "push":
        with pytest.raises(ValueError, match="copy_info_dict"):
            env.compute_reward(obs["achieved_goal"], obs["desired_goal"], {})
    else:  # reach reads no info
        assert env.compute_reward(obs["achieved_goal"], obs["desired_goal"], {}) == pytest.approx(
            -info["distance"]
        )


@pytest.mark.parametrize("task", ["push", "reach"])
def test_goal_conditioned_dream(model, task):
    cfg = DreamConfig(
        reward="learned", obs="latent", task=task, goal_conditioned=True, pool_size=3, horizon=4
    )
    gc = DreamCore(model, cfg, head=identity_head(model), device="cpu")
    env = DreamEnv(core=gc)
    assert env.observation_space["observation"].shape == (model.feature_dim,)
    _compute_reward_matches(env, gc.spec)
    gym_check_env(env, skip_render_check=True)
    sb3_check_env(env, warn=False, skip_render_check=True)
    # The dreamed achieved goal is the state head's reading (the reward's), the desired the goal.
    obs, _, _, _, info = env.step(np.zeros(4, np.float32))
    np.testing.assert_array_equal(obs["achieved_goal"], info["ee_pos" if task == "reach" else "target_pos"])
    with pytest.raises(ValueError, match="goal_conditioned"):
        DreamConfig(goal_conditioned=True, reward="goal-image")


def _sac(env) -> SAC:
    agent = SAC(
        "MultiInputPolicy",
        env,
        replay_buffer_class=HerReplayBuffer,
        replay_buffer_kwargs={
            "n_sampled_goal": 2,
            "goal_selection_strategy": "future",
            "copy_info_dict": True,
        },
        learning_starts=12,
        batch_size=8,
        buffer_size=64,
        gradient_steps=1,
        policy_kwargs={"net_arch": [16], "features_extractor_kwargs": {"cnn_output_dim": 8}},
        device="cpu",
        seed=0,
    )
    agent.set_logger(Logger(folder=None, output_formats=[]))
    return agent


def test_her_trains_in_the_real_env():
    # 36 px: the smallest image SB3's NatureCNN takes.
    env = gym.make(
        worldmodel.PUSH_TABLE_ID, image_size=36, num_objects=1, goal_conditioned=True, max_episode_steps=6
    )
    agent = _sac(env)
    agent.learn(total_timesteps=20)
    assert agent._n_updates == 20 - 12  # one gradient step per step after learning_starts
    lengths = agent.replay_buffer.ep_length[:18, 0]
    assert (lengths == 6).all()  # HER saw whole episodes of the TimeLimit's length
    assert agent.replay_buffer.sample(16).rewards.shape == (16, 1)  # relabelling ran compute_reward
    env.close()


def test_her_trains_in_the_batched_dream(model):
    cfg = DreamConfig(reward="learned", obs="latent", goal_conditioned=True, pool_size=3, horizon=4)
    venv = DreamVecEnv(DreamCore(model, cfg, head=identity_head(model), device="cpu"), 2)
    agent = _sac(venv)
    agent.learn(total_timesteps=24)
    assert agent._n_updates == (24 - 12) // 2  # two envs: one gradient step per vector step
    assert (agent.replay_buffer.ep_length[:12] == 4).all()
    venv.seed(0)
    venv.reset()
    o, r, _, infos = venv.step(np.zeros((2, 4), np.float32))
    relabelled = venv.env_method("compute_reward", o["achieved_goal"], o["desired_goal"], infos, indices=[0])[
        0
    ]
    np.testing.assert_array_equal(relabelled.astype(np.float32), r)


# ----------------------------------------------------------------- MPC inside a dream
class ArmHead(ObjectHead):
    """The arm is the point, scaled into PushTable's reach box: ``(0.2 x, 0.2 y, 0.075)``."""

    def __init__(self) -> None:
        super().__init__(2, hidden=4)

    def forward(self, features: Tensor, query: Tensor) -> Tensor:
        return query

    def end_effector(self, features: Tensor, start: Tensor | None = None) -> Tensor:
        return torch.cat([0.2 * features, torch.full_like(features[:, :1], 0.075)], 1)


def test_mpc_plans_inside_a_dream_and_beats_random():
    core = DreamCore(
        PointModel(),
        DreamConfig(task="reach", pool_size=4, horizon=10, image_size=SIZE),
        head=ArmHead(),
        device="cpu",
    )
    venv = DreamVecEnv(core, 2)
    planner = CEM(CEMConfig.cem(horizon=4, population=64, elites=8, iterations=3), 4)
    objective = LearnedReward(ArmHead(), task=core.spec)
    mpc = MPCAgent(PointModel(), planner, objective, seed=0).attach(venv)
    venv.seed(0)
    planned, _ = evaluate_policy(mpc, venv, n_eval_episodes=4, return_episode_rewards=True, warn=False)
    venv.seed(0)
    random, _ = evaluate_policy(
        RandomAgent(seed=0), venv, n_eval_episodes=4, return_episode_rewards=True, warn=False
    )
    assert np.mean(planned) > np.mean(random) + 0.5, (planned, random)  # measured: -0.48 vs -1.43
    solved, baseline = run_episodes(mpc, venv, 4, seed=0), run_episodes(RandomAgent(seed=0), venv, 4, seed=0)
    assert solved["success_rate"] == 1.0 and baseline["success_rate"] == 0.0  # measured: 4/4, 0/4
    # What the agent read: each episode's reset info, and proprioception equals the dreamed arm.
    venv.reset()
    _, _, _, infos = venv.step(np.zeros((2, 4), np.float32))
    assert np.array_equal(venv.env_method("proprioception", indices=[1])[0], infos[1]["ee_pos"])
    latent = DreamVecEnv(
        DreamCore(
            PointModel(),
            DreamConfig(task="reach", obs="latent", pool_size=2, image_size=SIZE),
            head=ArmHead(),
            device="cpu",
        ),
        1,
    )
    with pytest.raises(ValueError, match="obs='pixels'"):
        MPCAgent(PointModel(), planner, objective).attach(latent)
