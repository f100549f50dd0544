"""Judging a policy in the real sim: ``evaluate_real`` runs seeded episodes (``seed, seed + 1, ...``,
the same at every periodic evaluation so curves compare like with like) with actions from
``policy.predict(obs, deterministic=True)`` until the TimeLimit. An episode succeeds when
``info["is_success"]`` holds at its last step (SB3's convention); ``final_distance`` is the task's
distance then. ``RandomPolicy`` is the uniform-random baseline with the same ``predict``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from worldmodel.envs.task import wilson_interval
from worldmodel.rl.config import EVAL_SEED
from worldmodel.video import grid, write_video


class RandomPolicy:
    """Uniform random actions in [-1, 1]^4, with SB3's ``predict`` signature (a baseline)."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = np.random.default_rng(seed)

    def predict(self, obs, state=None, episode_start=None, deterministic: bool = True):
        return self.rng.uniform(-1.0, 1.0, 4).astype(np.float32), state


def evaluate_real(
    policy, env: gym.Env, episodes: int, *, seed: int = EVAL_SEED, deterministic: bool = True, record: int = 0
) -> tuple[dict[str, Any], np.ndarray | None]:
    """Run ``episodes`` real episodes (seeds ``seed + i``); returns ``(summary, frames)``.

    ``summary``: ``success_rate``, ``final_distance`` (mean, m), ``episodes``, ``mean_return``,
    ``per_episode`` (``success``, ``final_distance``, ``return``, ``length``, ``seed``).
    ``frames``: uint8 ``(record, T + 1, H, W, 3)`` of the first ``record`` episodes (``None`` if 0).
    """
    rows, videos = [], []
    for i in range(episodes):
        obs, info = env.reset(seed=seed + i)
        frames = [env.render()] if i < record else None
        ret, length, done = 0.0, 0, False
        while not done:
            action, _ = policy.predict(obs, deterministic=deterministic)
            obs, reward, terminated, truncated, info = env.step(action)
            ret, length, done = ret + float(reward), length + 1, bool(terminated or truncated)
            if frames is not None:
                frames.append(env.render())
        rows.append(
            {
                "seed": seed + i,
                "success": bool(info["is_success"]),
                "final_distance": float(info["distance"]),
                "return": ret,
                "length": length,
            }
        )
        if frames is not None:
            videos.append(np.stack(frames))
    successes = sum(r["success"] for r in rows)
    summary = {
        "success_rate": float(np.mean([r["success"] for r in rows])),
        "successes": int(successes),
        "ci95": list(wilson_interval(int(successes), len(rows))),
        "final_distance": float(np.mean([r["final_distance"] for r in rows])),
        "episodes": len(rows),
        "mean_return": float(np.mean([r["return"] for r in rows])),
        "per_episode": rows,
    }
    return summary, _pad_stack(videos) if videos else None


def _pad_stack(videos: list[np.ndarray]) -> np.ndarray:
    """Stack episodes of possibly different lengths, holding each one's last frame."""
    t = max(len(v) for v in videos)
    return np.stack([np.concatenate([v, np.repeat(v[-1:], t - len(v), 0)]) for v in videos])


def write_episodes_video(path: str | os.PathLike, frames: np.ndarray, fps: float = 10.0) -> Path:
    """Episodes ``(N, T, H, W, 3)`` side by side (a grid of up to 4 columns) as MP4 or GIF."""
    return write_video(path, grid(frames, ncols=min(4, len(frames))), fps=fps)
