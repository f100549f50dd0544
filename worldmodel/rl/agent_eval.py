"""Judging a saved agent run in the real sim: ``evaluate_agent(AgentEvalJob(...))``, what
``python -m agents.evaluate`` runs.

The run is rebuilt from ``RUN/config.json`` and ``RUN/checkpoints/last.zip`` (runs of
``agents.train`` and ``agents.train_real`` alike; latent runs reload their world model to encode
the real frames). The zip is read by ``load_agent``, which executes nothing in it: the agent is
rebuilt from the config, and only tensors and the step counters come from the file. With
``random=True`` uniform random actions play instead (the baseline). Episodes reset with seeds
``seed + i`` (default: the seeds of the periodic evaluations during training) and act
deterministically unless ``stochastic``; an episode succeeds when the target is within 5 cm of the
goal at its last step.

The result holds ``success_rate``, ``successes``, ``ci95``, ``final_distance`` (mean, m),
``episodes``, ``per_episode`` and what was judged (``run``, ``algo``, ``task``, ``policy``...);
``evaluate_agent`` writes it to ``json`` and a video of the first ``video_episodes`` episodes to
``video``, after ``on_report`` has seen it (a video that fails loses no figure).

    from worldmodel.rl import AgentEvalJob, evaluate_agent

    result = evaluate_agent(AgentEvalJob("runs/ppo-dream", task="reach", episodes=50))
    result["success_rate"], result["ci95"]
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from worldmodel.files import write_json_atomic
from worldmodel.rl.config import EVAL_SEED, RunConfig, checkpoint_path
from worldmodel.rl.envs import make_eval_env, make_real_env
from worldmodel.rl.evaluation import RandomPolicy, evaluate_real, write_episodes_video
from worldmodel.rl.storage import load_agent


@dataclasses.dataclass
class AgentEvalJob:
    """One real-sim evaluation (the flags of ``python -m agents.evaluate``, which documents each)."""

    run: str | os.PathLike | None = None
    """Run folder of ``agents.train`` / ``agents.train_real``; ``None`` with ``random``."""
    random: bool = False
    """Judge uniform random actions instead of a run."""
    episodes: int = 100
    json: str | os.PathLike | None = None
    """Write the result here (``None``: not written)."""
    video: str | os.PathLike | None = None
    """MP4 or GIF of the first ``video_episodes`` episodes (``None``: none)."""
    video_episodes: int = 4
    seed: int = EVAL_SEED
    """First episode seed (default: as the evaluations during training)."""
    stochastic: bool = False
    """Sample actions instead of the policy's mode."""
    image_size: int = 64
    """``random`` only: the sim's image size."""
    task: str | None = None
    """``push``, ``recorded-goal`` or ``reach`` (``None``: the run's; push for ``random``)."""
    device: str | None = None
    """``auto`` | ``cpu`` | ``cuda`` (``None``: the run's)."""

    def __post_init__(self) -> None:
        if self.random == (self.run is not None):
            raise ValueError("give either a RUN folder or --random")


def evaluate_agent(
    job: AgentEvalJob, on_report: Callable[[dict[str, Any]], None] | None = None
) -> dict[str, Any]:
    """Run the job's episodes; returns the result and writes the job's JSON and video (see the
    module docstring). A run folder without a checkpoint, or one whose files are not plain
    tensors, is a ``ValueError`` naming it."""
    policy, env, about, task = _policy_and_env(job)
    record = job.video_episodes if job.video is not None else 0
    try:
        summary, frames = evaluate_real(
            policy, env, job.episodes, seed=job.seed, deterministic=not job.stochastic, record=record
        )
    finally:
        env.close()
    policy_kind = "random" if job.random else "agent"
    result = {**summary, **about, "task": task, "policy": policy_kind, "seed": job.seed}
    if frames is not None:
        result["video"] = str(job.video)
    if on_report is not None:
        on_report(result)
    # The figures are out before the video is written: a video that fails loses nothing.
    if job.json:
        write_json_atomic(job.json, result)
    if frames is not None:
        write_episodes_video(job.video, frames)
    return result


def summary_line(result: dict[str, Any]) -> str:
    """The result in one line: task, success rate with its 95 % interval, final distance."""
    lo, hi = result["ci95"]
    return (
        f"task {result['task']}: real success rate {result['success_rate']:.3f} (95% interval "
        f"{lo:.2f}-{hi:.2f}) over {result['episodes']} episodes, "
        f"final distance {result['final_distance']:.3f} m"
    )


def _policy_and_env(job: AgentEvalJob):
    """``(policy, env, about, task)``: the run's agent (or random actions), the real env it acts
    in, what the result says about the run, and the task judged."""
    if job.random:
        task = job.task or "push"
        env = make_real_env(job.image_size, render_mode="rgb_array", task=task)
        return RandomPolicy(job.seed), env, {}, task
    run_dir = Path(job.run)
    cfg = RunConfig.load(run_dir)
    if job.device is not None:
        cfg.device = job.device
    ckpt = checkpoint_path(run_dir)
    if not ckpt.is_file():
        raise ValueError(f"{run_dir}: no agent checkpoint yet ({ckpt} is missing)")
    env = make_eval_env(cfg, task=job.task)
    try:
        policy = load_agent(cfg, ckpt, env)  # executes nothing from the run folder
    except BaseException:
        env.close()
        raise
    about = {"run": str(run_dir), "algo": cfg.algo, "env": cfg.env, "obs": cfg.obs}
    about.update(reward=cfg.reward, checkpoint=cfg.checkpoint, timesteps=int(policy.num_timesteps))
    return policy, env, about, job.task or cfg.task
