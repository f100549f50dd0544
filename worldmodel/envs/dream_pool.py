"""The dream's pool of start contexts, drawn once at construction.

At construction the env draws ``pool_size`` start contexts, once, from ``pool_seed``: fresh
episodes of the real sim (``data=None``: a ``RandomPushPolicy`` rollout of ``context_frames``
steps in ``PushTableEnv``, with its goal, target and ``render_goal()`` image; ``sim_pool``) or the
first frames of ``pool_size`` episodes of a dataset (``data=PATH``, ``split``; the goal image is
the episode's last frame; ``data_pool``). ``DreamCore`` runs the model's ``initial`` on all of
them in one batch; a reset then draws a pool entry, so resetting is a gather.
"""

from __future__ import annotations

import numpy as np

from worldmodel.envs.dream_config import DreamConfig
from worldmodel.envs.task import MAX_OBJECTS, REST_ACTION

_POOL_KEYS = ("frames", "actions", "objects", "ee", "goal", "target", "goal_image")
"""The pool's arrays (``DreamCore.pool``), one row per entry."""


def sim_pool(cfg: DreamConfig, context: int) -> dict[str, np.ndarray]:
    """``pool_size`` fresh sim episodes of ``context`` frames, seeded by ``pool_seed``.

    ``push`` and ``reach``: a ``RandomPushPolicy`` rollout of ``context`` steps in a PushTable of
    that task. ``recorded-goal``: the real env's recorded-goal start, its first frame held still
    (``REST_ACTION``) as the context, as the planner pads it."""
    from worldmodel.envs.policy import RandomPushPolicy, rollout
    from worldmodel.envs.push_table import PushTableEnv

    env = PushTableEnv(image_size=cfg.image_size, task=cfg.task)
    out: dict[str, list] = {k: [] for k in _POOL_KEYS}
    try:
        for i in range(cfg.pool_size):
            env_seed, policy_seed = np.random.SeedSequence(cfg.pool_seed, spawn_key=(i,)).generate_state(2)
            if cfg.task == "recorded-goal":
                obs, info = env.reset(seed=int(env_seed))
                ep = {"frames": np.stack([obs] * context), "actions": np.stack([REST_ACTION] * context)}
                ep["objects"] = _pad_objects(info["object_pos"][: info["num_objects"]])[None]
                ep["states"] = np.asarray(info["ee_pos"], np.float32)[None]
                ep["goal"], ep["target"] = info["goal_pos"], np.array(info["target"], np.int64)
            else:
                ep = rollout(env, RandomPushPolicy(int(policy_seed)), context, int(env_seed))
            out["frames"].append(ep["frames"])
            out["actions"].append(ep["actions"][: context - 1])
            out["objects"].append(ep["objects"][-1])
            out["ee"].append(ep["states"][-1, :3])
            out["goal"].append(ep["goal"])
            out["target"].append(ep["target"])
            out["goal_image"].append(env.render_goal())
    finally:
        env.close()
    return _stack(out)


def data_pool(cfg: DreamConfig, context: int) -> dict[str, np.ndarray]:
    """The first ``context`` frames of ``pool_size`` dataset episodes (chosen by ``pool_seed``)."""
    from worldmodel.data import open_dataset

    probe = open_dataset(cfg.data, cfg.split, seq_len=context, random_offset=False, image_size=cfg.image_size)
    length = int(probe.spec["episode_length"])
    ds = open_dataset(cfg.data, cfg.split, seq_len=length, random_offset=False, image_size=cfg.image_size)
    if not getattr(ds, "has_actions", True):
        raise ValueError(f"{cfg.data}: the dream needs actions in the data (PNG folders have none)")
    rng = np.random.default_rng(cfg.pool_seed)
    picks = rng.permutation(len(ds))[: cfg.pool_size] if len(ds) > cfg.pool_size else np.arange(len(ds))
    out: dict[str, list] = {k: [] for k in _POOL_KEYS}
    for i in picks:
        item = ds[int(i)]
        frames = item["frames"].numpy()
        out["frames"].append(frames[:context])
        out["actions"].append(item["actions"].numpy()[: context - 1].astype(np.float32))
        objects = np.full((MAX_OBJECTS, 3), np.nan)
        if "objects" in item:
            objects = item["objects"].numpy()[context - 1]
        out["objects"].append(_pad_objects(objects))
        states = item["states"].numpy()[context - 1, :3] if "states" in item else np.full(3, np.nan)
        out["ee"].append(states)
        goal, target = _episode_task(item)
        out["goal"].append(goal)
        out["target"].append(target)
        out["goal_image"].append(frames[-1])
    return _stack(out)


def _episode_task(item: dict) -> tuple[np.ndarray, int]:
    """The stored goal and target of a dataset item, or (NaN, -1) when the data keeps none."""
    if "goal" in item and "target" in item:
        return np.asarray(item["goal"], np.float32).reshape(3), int(np.asarray(item["target"]).reshape(-1)[0])
    return np.full(3, np.nan, np.float32), -1


def _pad_objects(objects: np.ndarray) -> np.ndarray:
    out = np.full((MAX_OBJECTS, 3), np.nan, np.float32)
    n = min(len(objects), MAX_OBJECTS)
    out[:n] = objects[:n]
    return out


def _stack(out: dict[str, list]) -> dict[str, np.ndarray]:
    arrays = {k: np.stack(v) for k, v in out.items()}
    arrays["actions"] = arrays["actions"].astype(np.float32)
    arrays["objects"] = arrays["objects"].astype(np.float32)
    arrays["ee"] = arrays["ee"].astype(np.float32)
    arrays["goal"] = arrays["goal"].astype(np.float32)
    arrays["target"] = arrays["target"].astype(np.int64)
    return arrays
