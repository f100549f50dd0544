"""The real PushTable env an agent run acts in: pixels, or the world model's latent features of the
real frames (``LatentObservation``) for runs trained on ``obs="latent"``; episodes last the task's
budget.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym

import worldmodel
from worldmodel.envs.latent import LatentObservation
from worldmodel.envs.task import TaskSpec
from worldmodel.rl.config import RunConfig


def load_world_model(checkpoint: str, device: str = "auto"):
    """``worldmodel.dynamics.load`` with a one-line error for a missing file."""
    from worldmodel import dynamics

    if not Path(checkpoint).is_file():
        raise ValueError(f"{checkpoint}: world-model checkpoint not found")
    return dynamics.load(checkpoint, device=device)


def make_real_env(
    image_size: int = 64,
    *,
    render_mode: str | None = None,
    model=None,
    cfg: RunConfig | None = None,
    task: str | None = None,
) -> gym.Env:
    """``worldmodel/PushTable-v0`` at ``image_size`` on ``task`` (default the run's, else push; the
    episode lasts the task's budget), wrapped in ``LatentObservation`` when ``model`` is given
    (latent runs). Module-level so ``SubprocVecEnv`` can pickle it by reference."""
    task = task or (cfg.task if cfg is not None else "push")
    steps = TaskSpec(name=task).budget
    env = gym.make(
        worldmodel.PUSH_TABLE_ID,
        image_size=image_size,
        render_mode=render_mode,
        task=task,
        max_episode_steps=steps,
    )
    if model is not None:
        window = cfg.latent_window if cfg is not None else None
        bound = cfg.latent_bound if cfg is not None else 10.0
        dtype = cfg.dream.get("dtype", "auto") if cfg is not None else "auto"
        task_obs = bool(cfg.dream.get("task_obs", False)) if cfg is not None else False
        env = LatentObservation(env, model, window=window, latent_bound=bound, dtype=dtype, task_obs=task_obs)
    return env


def make_eval_env(cfg: RunConfig, model=None, task: str | None = None) -> gym.Env:
    """The real env a run's policy is evaluated in (frames rendered for videos), on ``task``
    (default the run's).

    ``model``: the world model of a latent run (loaded from ``cfg.checkpoint`` when omitted)."""
    if cfg.obs == "latent":
        model = model if model is not None else load_world_model(cfg.checkpoint, cfg.device)
        return make_real_env(cfg.image_size, render_mode="rgb_array", model=model, cfg=cfg, task=task)
    return make_real_env(cfg.image_size, render_mode="rgb_array", cfg=cfg, task=task)
